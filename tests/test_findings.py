"""The report's findings: the text, `holds` and `good` of every outcome, from hand-made numbers; and the
card shows each finding once, marked by `good`."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from gpt2_rlhf.evaluation.report import (
    curve_summary,
    findings,
    gold_win_rate_finding,
    hacking_finding,
    on_policy_finding,
    overoptimisation_finding,
    table,
)


def V(value, lo, hi, n=10):
    return {"value": value, "ci_low": lo, "ci_high": hi, "n": n}


# a's value against b = V(0.0, -0.2, 0.2), in each outcome a comparison can have
OUTCOMES = {
    "beats": (V(1.0, 0.8, 1.2), V(0.0, -0.2, 0.2)),
    "overlaps": (V(0.1, -0.1, 0.3), V(0.0, -0.2, 0.2)),
    "below": (V(-1.0, -1.2, -0.8), V(0.0, -0.2, 0.2)),
    "no_ci": (V(1.0, None, None, 1), V(0.0, None, None, 1)),
}
STARTS = {"beats": "PPO beats SFT on", "overlaps": "PPO does not beat SFT on", "below": "PPO does not beat SFT on",
          "no_ci": "PPO against SFT on"}


def by_id(out: list[dict]) -> dict[str, dict]:
    ids = [f["id"] for f in out]
    assert len(ids) == len(set(ids)), ids
    return {f["id"]: f for f in out}


def test_every_finding_has_id_holds_good_and_text():
    ppo, sft = OUTCOMES["beats"]
    out = findings({"reward": {"sft": sft, "ppo": ppo}, "gold": {"sft": sft, "ppo": ppo}},
                   {"accuracy": 0.8, "length_baseline_accuracy": 0.6, "n_pairs": 10})
    for f in out:
        assert set(f) == {"id", "holds", "good", "text"}
        assert isinstance(f["holds"], bool) and isinstance(f["good"], bool) and f["text"].endswith(".")


@pytest.mark.parametrize("reward, gold", list(itertools.product(OUTCOMES, OUTCOMES)))
def test_reward_and_gold_comparisons_and_hacking_for_every_outcome(reward, gold):
    (rp, rs), (gp, gs) = OUTCOMES[reward], OUTCOMES[gold]
    out = by_id(findings({"reward": {"sft": rs, "ppo": rp}, "gold": {"sft": gs, "ppo": gp}}, {}))
    assert list(out) == ["ppo_beats_sft_reward", "ppo_beats_sft_gold", "ppo_reward_hacking"]

    for fid, outcome, what in (("ppo_beats_sft_reward", reward, "mean normalised reward"),
                               ("ppo_beats_sft_gold", gold, "mean gold-judge score")):
        f = out[fid]
        assert f["holds"] is f["good"] is (outcome == "beats")
        assert f["text"].startswith(f"{STARTS[outcome]} {what}")
        assert ("do not overlap" in f["text"]) is (outcome == "beats")
        assert ("SFT is above" in f["text"]) is (outcome == "below")
        assert ("no difference is claimed" in f["text"]) is (outcome == "no_ci")

    hack = out["ppo_reward_hacking"]
    if reward != "beats" or gold == "no_ci":  # no proxy gain, or no gold interval: nothing to judge
        assert (hack["holds"], hack["good"]) == (False, False)
        assert hack["text"].startswith("Reward hacking not assessed: ")
    elif gold == "beats":
        assert (hack["holds"], hack["good"]) == (False, True)
        assert hack["text"].startswith("No reward hacking detected: ")
    else:
        assert (hack["holds"], hack["good"]) == (True, False)
        assert hack["text"].startswith("Reward hacking detected: ")
    # the numbers are in the text, with their intervals
    assert f"{rp['value']:.3f}" in hack["text"] and f"{gp['value']:.3f}" in hack["text"]


def test_hacking_is_judged_with_intervals_not_point_estimates():
    # gold's mean is above SFT's, but the intervals overlap: that is no evidence the proxy gain is real
    f = hacking_finding({"ppo": V(2.0, 1.9, 2.1), "sft": V(0.0, -0.1, 0.1)},
                        {"ppo": V(0.62, 0.5, 0.74), "sft": V(0.6, 0.5, 0.7)})
    assert f["holds"] and not f["good"] and f["text"].startswith("Reward hacking detected: ")
    # a proxy mean far above SFT's inside wide intervals is no gain to hack
    f = hacking_finding({"ppo": V(2.0, -1.0, 5.0), "sft": V(0.0, -0.1, 0.1)},
                        {"ppo": V(0.1, 0.0, 0.2), "sft": V(0.6, 0.5, 0.7)})
    assert not f["holds"] and f["text"].startswith("Reward hacking not assessed: PPO does not beat SFT")
    f = hacking_finding({"ppo": V(2.0, None, None, 1), "sft": V(0.0, None, None, 1)},
                        {"ppo": V(0.1, None, None, 1), "sft": V(0.6, None, None, 1)})
    assert "too few prompts" in f["text"]


@pytest.mark.parametrize("a, b", [("ppo", "base"), ("sft", "base")])
@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_other_pairs_name_their_models(a, b, outcome):
    va, vb = OUTCOMES[outcome]
    out = by_id(findings({"reward": {b: vb, a: va}}, {}))
    f = out[f"{a}_beats_{b}_reward"]
    names = {"ppo": "PPO", "sft": "SFT", "base": "base"}
    assert f["holds"] is f["good"] is (outcome == "beats")
    start = STARTS[outcome].replace("PPO", "{a}").replace("SFT", "{b}").format(a=names[a], b=names[b])
    assert f["text"].startswith(start)


def test_all_three_models_give_the_findings_in_report_order():
    ppo, sft = OUTCOMES["beats"]
    metrics = {"reward": {"base": sft, "sft": sft, "ppo": ppo}, "gold": {"base": sft, "sft": sft, "ppo": ppo}}
    assert [f["id"] for f in findings(metrics, {})] == [
        "ppo_beats_sft_reward", "ppo_beats_base_reward", "sft_beats_base_reward", "ppo_beats_sft_gold",
        "ppo_beats_base_gold", "ppo_reward_hacking"]


def test_the_chosen_reference_row_is_not_a_model():
    ppo, sft = OUTCOMES["beats"]
    metrics = {"reward": {"sft": sft, "ppo": ppo, "chosen": ppo}, "gold": {"sft": sft, "ppo": ppo, "chosen": ppo}}
    ids = [f["id"] for f in findings(metrics, {})]
    assert ids == ["ppo_beats_sft_reward", "ppo_beats_sft_gold", "ppo_reward_hacking"]
    assert not any("chosen" in i for i in ids)


@pytest.mark.parametrize("acc, base, holds, verb", [(0.8, 0.6, True, "beats"), (0.6, 0.6, False, "does not beat"),
                                                    (0.5, 0.7, False, "does not beat")])
def test_reward_model_against_the_length_baseline(acc, base, holds, verb):
    rm = {"accuracy": acc, "accuracy_ci_low": acc - 0.1, "accuracy_ci_high": acc + 0.1,
          "length_baseline_accuracy": base, "n_pairs": 12}
    f = by_id(findings({"reward": {"ppo": V(0, None, None, 1)}}, rm))["rm_beats_length_baseline"]
    assert f["holds"] is f["good"] is holds
    assert f["text"].startswith(f"The reward model {verb} the length-only baseline on held-out pairs: ")
    assert f"{acc:.3f}" in f["text"] and f"{base:.3f}" in f["text"] and "n=12 pairs" in f["text"]


ON_POLICY = {"accuracy": 0.8, "length_baseline_accuracy": 0.55, "initial_accuracy": 0.5, "rank_correlation": 0.4,
             "pairs": 96, "prompts": 48, "source": "gold"}


@pytest.mark.parametrize("acc, holds", [(0.8, True), (0.75, True), (0.7, False)])
def test_on_policy_accuracy(acc, holds):
    f = by_id(findings({"reward": {"ppo": V(0, None, None, 1)}}, {"on_policy": {**ON_POLICY, "accuracy": acc}}))
    f = f["rm_on_policy_accuracy"]
    assert f["holds"] is f["good"] is holds
    word = "at least" if holds else "below"
    assert f["text"].startswith(f"The reward model's accuracy on held-out pairs of policy samples is {word} 0.75: "
                                f"{acc:.3f} (96 pairs from 48 prompts), labelled by gold, against 0.550 for the "
                                f"length-only baseline and 0.500 for the reward model before training")
    assert "rank correlation of its scores with gold is 0.400" in f["text"]


def test_on_policy_accuracy_without_optional_parts_and_absent():
    f = on_policy_finding({"accuracy": 0.6, "rank_correlation": None})
    assert f["text"] == "The reward model's accuracy on held-out pairs of policy samples is below 0.75: 0.600."
    assert not f["good"] and not f["holds"]
    assert "rm_on_policy_accuracy" not in by_id(findings({"reward": {"ppo": V(0, None, None, 1)}}, {}))


def win_entry(win, tie, n=20):
    half = win + tie / 2
    return {"win": win, "tie": tie, "loss": 1 - win - tie, "ci_low": win - 0.1, "ci_high": win + 0.1, "n": n,
            "win_rate_ties_half": half, "win_rate_ties_half_ci_low": half - 0.05, "win_rate_ties_half_ci_high": half + 0.05}


@pytest.mark.parametrize("win, tie, holds", [
    (0.7, 0.1, True),
    (0.5, 0.1, True),    # 0.55 with ties counted half
    (0.35, 0.5, True),   # ties on half the prompts (both at the gold maximum): 0.35 wins + 0.25 -> 0.6
    (0.45, 0.1, False),  # 0.5: a coin flip
    (0.52, 0.0, False),  # no ties: the plain win rate
])
def test_gold_win_rate_counts_ties_half(win, tie, holds):
    w = win_entry(win, tie)
    ppo, sft = OUTCOMES["beats"]
    out = by_id(findings({"reward": {"sft": sft, "ppo": ppo}}, {}, {"ppo_vs_sft": w}))
    f = out["ppo_gold_win_rate"]
    assert f["holds"] is f["good"] is holds
    half = w["win_rate_ties_half"]
    assert f["text"] == (
        f"PPO's gold win rate against SFT, ties counted half, is {'at least' if holds else 'below'} 0.55: "
        f"{half:.3f} over 20 prompts, 95% CI {half - 0.05:.3f} to {half + 0.05:.3f}; the gold judge prefers "
        f"PPO's responses on a fraction {win:.3f} of the prompts, ties on {tie:.3f} and prefers SFT's on "
        f"{1 - win - tie:.3f}.")
    no_ci = {**w, "win_rate_ties_half_ci_low": None, "win_rate_ties_half_ci_high": None}
    assert gold_win_rate_finding(no_ci)["text"].count("no CI") == 1


def test_gold_win_rate_of_an_entry_without_ties_half_computes_it():
    w = {"win": 0.4, "tie": 0.4, "loss": 0.2, "ci_low": 0.3, "ci_high": 0.5, "n": 20}
    f = gold_win_rate_finding(w)
    assert f["holds"] and ": 0.600 over 20 prompts, no CI;" in f["text"]


def test_no_gold_win_rate_finding_without_the_ppo_sft_pair():
    ppo, base = OUTCOMES["beats"]
    w = {"win": 0.7, "tie": 0.1, "loss": 0.2, "ci_low": 0.6, "ci_high": 0.8, "n": 20}
    assert "ppo_gold_win_rate" not in by_id(findings({"reward": {"base": base, "ppo": ppo}}, {}, {"ppo_vs_base": w}))


# ----------------------------------------------------------------------------- the overoptimisation curve


def curve(gold: list[dict], reward: list[dict]) -> dict:
    points = [{"label": "sft" if i == 0 else f"ppo/update-{i:06d}", "round": 0 if i == 0 else 1,
               "kl": V(float(i), None, None), "sqrt_kl": float(i) ** 0.5, "reward": r, "gold": g}
              for i, (g, r) in enumerate(zip(gold, reward))]
    return {"prompts": 10, "points": points, **curve_summary(points)}


LOW, MID, HIGH = V(0.2, 0.1, 0.3), V(0.5, 0.4, 0.6), V(0.8, 0.7, 0.9)
WIDE = V(0.45, 0.0, 1.0)  # inside every other interval


@pytest.mark.parametrize("gold, reward, holds, good, start", [
    ([LOW, MID, HIGH], [LOW, MID, HIGH], False, True, "No overoptimisation detected: "),  # gold peaks at the end
    ([LOW, HIGH, LOW], [LOW, MID, HIGH], True, False, "Overoptimisation detected: "),  # Gao et al.'s curve
    ([LOW, HIGH, LOW], [LOW, HIGH, HIGH], False, False, "No overoptimisation detected, but gold falls after its peak: "),
    ([LOW, HIGH, WIDE], [LOW, MID, HIGH], False, True, "No overoptimisation detected: "),  # no significant fall
    ([LOW, HIGH, WIDE], [LOW, HIGH, HIGH], False, True, "No overoptimisation detected: "),  # neither
])
def test_overoptimisation(gold, reward, holds, good, start):
    c = curve(gold, reward)
    f = overoptimisation_finding(c)
    assert f["id"] == "ppo_overoptimisation" and (f["holds"], f["good"]) == (holds, good)
    assert f["text"].startswith(start)
    peak = c["gold_peak"]
    assert c["points"][peak["index"]]["gold"] is max(gold, key=lambda v: v["value"])
    assert c["proxy_rises_past_gold_peak"] is (peak["index"] < 2 and reward[2]["ci_low"] > reward[peak["index"]]["ci_high"])
    if peak["index"] < 2:
        assert f"Gold peak {c['points'][peak['index']]['label']} at sqrt KL" in f["text"]
    assert by_id(findings({"reward": {"ppo": V(0, None, None, 1)}}, {}, None, c))["ppo_overoptimisation"] == f


def test_no_overoptimisation_finding_without_gold_or_with_one_point():
    c = curve([LOW, HIGH], [LOW, HIGH])
    for p in c["points"]:
        del p["gold"]
    no_gold = {"prompts": 10, "points": c["points"], **curve_summary(c["points"])}
    assert "gold_peak" not in no_gold
    one = curve([LOW], [LOW])
    for cv in (no_gold, one):
        assert "ppo_overoptimisation" not in by_id(findings({"reward": {"ppo": V(0, None, None, 1)}}, {}, None, cv))


def test_the_first_highest_gold_point_is_the_peak():
    c = curve([LOW, HIGH, HIGH], [LOW, LOW, HIGH])
    assert c["gold_peak"]["index"] == 1 and c["gold_peak"]["label"] == "ppo/update-000001"


# ----------------------------------------------------------------------------- the terminal table


def test_table_marks_by_good_and_shows_the_chosen_column():
    ppo, sft = OUTCOMES["beats"]
    metrics = {"reward": {"sft": sft, "ppo": ppo, "chosen": ppo}, "gold": {"sft": sft, "ppo": OUTCOMES["below"][0]}}
    report = {"models": {"sft": {}, "ppo": {}}, "metrics": metrics, "win_rates": {}, "reward_improvement": {},
              "findings": findings(metrics, {})}
    text = table(report)
    assert text.splitlines()[0].split() == ["metric", "sft", "ppo", "chosen", "(dataset)"]
    assert "[-] ppo_reward_hacking: Reward hacking detected" in text
    assert "[+] ppo_beats_sft_reward" in text and "[-] ppo_beats_sft_gold" in text


# ----------------------------------------------------------------------------- the cards


def finding_texts_on(card: str, report: dict) -> dict[str, int]:
    flat = " ".join(card.split())
    return {f["id"]: flat.count(" ".join(f["text"].split())) for f in report["findings"]}


def test_no_finding_appears_twice_on_any_card(tmp_path):
    from gpt2_rlhf.model_card.options import CardOptions
    from gpt2_rlhf.model_card.render import render_texts
    from gpt2_rlhf.model_card.sources import CardSources
    from tests.fake_run import make_run

    for seed in range(4):
        run = make_run(tmp_path / f"run{seed}", seed=seed)
        report = json.loads((run / "eval/report.json").read_text())
        cards = render_texts(CardSources.from_run_dir(run), CardOptions())
        for rel, card in cards.items():
            counts = finding_texts_on(card, report)
            assert all(c <= 1 for c in counts.values()), (rel, counts)
        policy = finding_texts_on(cards["README.md"], report)
        assert all(c == 1 for c in policy.values()), policy
        assert "Not established by this evaluation: " not in cards["README.md"]
        reward = finding_texts_on(cards["reward/README.md"], report)
        assert {i for i, c in reward.items() if c} == {"rm_beats_length_baseline", "rm_on_policy_accuracy"}


def hacked_run(tmp_path):
    from tests.fake_run import make_run

    run = make_run(tmp_path / "run")
    report = json.loads((run / "eval/report.json").read_text())
    m = report["metrics"]
    m["reward"]["ppo"], m["reward"]["sft"] = V(2.0, 1.9, 2.1, 24), V(0.0, -0.1, 0.1, 24)
    m["gold"]["ppo"], m["gold"]["sft"] = V(0.4, 0.3, 0.5, 24), V(0.6, 0.5, 0.7, 24)
    report["findings"] = findings(m, report["reward_model"], report["gold_win_rates"], report["overoptimisation"])
    (run / "eval/report.json").write_text(json.dumps(report))
    return run, report


def test_a_detected_failure_is_stated_first_once_and_marked_by_good(tmp_path):
    from gpt2_rlhf.model_card.options import CardOptions
    from gpt2_rlhf.model_card.render import render_texts
    from gpt2_rlhf.model_card.sources import CardSources

    run, report = hacked_run(tmp_path)
    card = render_texts(CardSources.from_run_dir(run), CardOptions())["README.md"]
    hack = next(f for f in report["findings"] if f["id"] == "ppo_reward_hacking")
    assert hack["holds"] and not hack["good"] and hack["text"].startswith("Reward hacking detected: ")
    assert finding_texts_on(card, report)["ppo_reward_hacking"] == 1
    top = card.index("> **Read this first.**")
    assert card.index(hack["text"]) > top and card.index(hack["text"]) < card.index("## Training")
    assert "- ❌ `ppo_reward_hacking`: stated under **Read this first**" in card
    limitations = card[card.index("## Limitations"):card.index("## Citation")]
    assert "`ppo_reward_hacking`" in limitations and "Reward hacking detected" not in limitations


def test_marks_come_from_good_not_holds(tmp_path):
    from gpt2_rlhf.model_card.options import CardOptions
    from gpt2_rlhf.model_card.render import render_texts
    from gpt2_rlhf.model_card.sources import CardSources

    run, report = hacked_run(tmp_path)
    m = report["metrics"]
    m["gold"]["ppo"] = V(0.9, 0.8, 1.0, 24)  # gold follows the proxy: no hacking
    report["findings"] = findings(m, report["reward_model"], report["gold_win_rates"], report["overoptimisation"])
    (run / "eval/report.json").write_text(json.dumps(report))
    card = render_texts(CardSources.from_run_dir(run), CardOptions())["README.md"]
    hack = next(f for f in report["findings"] if f["id"] == "ppo_reward_hacking")
    assert not hack["holds"] and hack["good"]
    assert f"- ✅ {hack['text']}" in card and "Read this first" not in card
    assert "`ppo_reward_hacking`" not in card  # good: not referred to under Limitations
    for f in report["findings"]:
        assert f"- {'✅' if f['good'] else '❌'} {' '.join(f['text'].split())}" in card


def test_a_report_without_good_marks_by_the_meaning_of_its_id():
    from gpt2_rlhf.model_card.context import findings as card_findings

    report = {"findings": [{"id": "ppo_reward_hacking", "holds": True, "text": "Reward hacking."},
                           {"id": "ppo_beats_sft_reward", "holds": True, "text": "PPO beats SFT."}]}
    marks = {f["id"]: (f["mark"], f["warned"]) for f in card_findings(report)}
    assert marks == {"ppo_reward_hacking": ("❌", True), "ppo_beats_sft_reward": ("✅", False)}


def test_without_on_policy_pairs_the_cards_say_so(tmp_path):
    from gpt2_rlhf.model_card.options import CardOptions
    from gpt2_rlhf.model_card.render import render_texts
    from gpt2_rlhf.model_card.sources import CardSources
    from tests.fake_run import make_run

    run = make_run(tmp_path / "run")
    report = json.loads((run / "eval/report.json").read_text())
    del report["reward_model"]["on_policy"]
    report["findings"] = [f for f in report["findings"] if f["id"] != "rm_on_policy_accuracy"]
    (run / "eval/report.json").write_text(json.dumps(report))
    cards = render_texts(CardSources.from_run_dir(run), CardOptions())
    for rel in ("README.md", "reward/README.md"):
        assert "The reward model was not measured on policy samples" in cards[rel], rel
        assert "policy samples (" not in cards[rel]
        assert re.search(r"\| trained reward model \| [\d.]+ \[", cards[rel])
