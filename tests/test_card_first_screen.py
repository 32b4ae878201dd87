"""The card leads with the result: what the model is and one plain claim per headline result on its first
screen, numbers rounded to their interval's precision, no sentence that contradicts the findings; and
`rlhf reproduce` checks the card against its report at once, naming the line and labelling each side.

On fabricated runs (tests/fake_run.py): no model is loaded, so each test takes a fraction of a second.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gpt2_rlhf.cli import main
from gpt2_rlhf.evaluation.report import comparison_summary, findings, training_seconds
from gpt2_rlhf.evaluation.schema import validate_report
from gpt2_rlhf.model_card.context import claims_context
from gpt2_rlhf.model_card.markdown import fmt_ci, fmt_count
from gpt2_rlhf.model_card.options import CardOptions
from gpt2_rlhf.model_card.render import render_card, render_texts
from gpt2_rlhf.model_card.sources import CardSources
from tests.fake_run import make_run

FIRST_SCREEN = 40  # lines of the card body (below the YAML front matter, which the Hub does not show)


def body(card: str) -> str:
    return card.split("\n---\n", 1)[1]


def first_screen(card: str) -> str:
    return "\n".join(body(card).splitlines()[:FIRST_SCREEN])


def V(value, lo, hi, n=24):
    return {"value": value, "ci_low": lo, "ci_high": hi, "n": n}


def rewrite(run: Path, edit) -> dict:
    """Applies `edit` to the run's report, then states its findings and comparison again from the numbers
    (as the evaluation does), validates it and writes it back."""
    path = run / "eval" / "report.json"
    report = json.loads(path.read_text())
    edit(report)
    report["findings"] = findings(report["metrics"], report.get("reward_model") or {}, report.get("gold_win_rates"),
                                  report.get("overoptimisation"), reward=report.get("reward"))
    seconds = {p: training_seconds([report["training"].get(p) or {}]) for p in report["comparison"]["policies"]}
    report["comparison"] = comparison_summary(report["metrics"], seconds, report["reference"],
                                              reward=report["reward"])
    validate_report(report)
    path.write_text(json.dumps(report))
    return report


def card_of(run: Path) -> str:
    return render_texts(CardSources.from_run_dir(run), CardOptions())["README.md"]


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path / "run")


# ----------------------------------------------------------------------------- the first screen


@pytest.mark.parametrize("models", [("base", "sft", "ppo"), ("base", "sft", "dpo"),
                                    ("base", "sft", "ppo", "dpo", "rloo")], ids=["ppo", "dpo-only", "five"])
def test_the_first_screen_says_what_the_model_is_and_every_headline_claim(tmp_path, models):
    run = make_run(tmp_path / "run", models=models)
    report = json.loads((run / "eval/report.json").read_text())
    policy = models[2]
    card = render_card(run).read_text()
    top = first_screen(card)
    m = report["metrics"]
    # what the model is: its size, its base, the data and its size
    assert f"{fmt_count(report['models'][policy]['parameters'])}-parameter GPT-2" in top
    assert "`embedded`" in top and f"{report['training']['sft']['train_rows']} training pairs" in top
    assert f"evaluated on {report['dataset']['n_prompts']} held-out prompts" in top
    # one claim per headline result, with its interval at the interval's precision
    name = {"ppo": "PPO", "dpo": "DPO"}[policy]
    cell = lambda v: fmt_ci(v["value"], v["ci_low"], v["ci_high"])
    assert f"{name} scores {cell(m['gold'][policy])}, SFT {cell(m['gold']['sft'])}" in top
    assert f"{name} scores {cell(m['reward'][policy])}, SFT {cell(m['reward']['sft'])}" in top
    w = report["win_rates"][f"{policy}_vs_sft"]
    assert f"higher on a fraction {fmt_ci(w['win'], w['ci_low'], w['ci_high'])} of the prompts" in top
    g = report["gold_win_rates"][f"{policy}_vs_sft"]
    assert fmt_ci(g["win_rate_ties_half"], g["win_rate_ties_half_ci_low"], g["win_rate_ties_half_ci_high"]) in top
    assert f"**KL to SFT**: {cell(m['kl_to_reference'][policy])} nats per response" in top
    # the compact results table: one column per model, on the first screen too
    header = next(line for line in top.splitlines() if line.startswith("| result | Base | SFT"))
    assert header.count("|") == len(models) + 2
    assert "| KL to SFT (nats per response) |" in top
    # below it: intended and out-of-scope use; the hyperparameters folded, under the results
    text = body(card)
    assert text.index("## Intended use") < text.index("## Out-of-scope use") < text.index("## Results")
    assert text.index("## Results") < text.index("## Training") < text.index("<details>")
    assert text.count("<details>") == text.count("</details>") >= 3


def test_numbers_are_rounded_to_their_intervals_precision(run):
    """0.83123 in [0.79543, 0.86712]: a half-width of 0.036, two significant digits -> three decimals."""
    def edit(r):
        r["metrics"]["gold"]["ppo"] = V(0.83123, 0.79543, 0.86712)
        r["metrics"]["reward"]["ppo"] = V(1.23456, 0.61234, 1.85432)  # half-width 0.62 -> two decimals
    rewrite(run, edit)
    top = first_screen(card_of(run))
    assert "PPO scores 0.831 [0.795, 0.867]" in top and "PPO scores 1.23 [0.61, 1.85]" in top
    assert "0.83123" not in top and "0.8312" not in top


def test_reward_improvement_lines_carry_intervals_or_say_why_not(run):
    card = card_of(run)
    r = json.loads((run / "eval/report.json").read_text())["reward_improvement"]["ppo_vs_sft"]
    row = next(line for line in card.splitlines() if line.startswith("| PPO (RLHF) vs SFT | ") and "[" in line
               and fmt_ci(r["sd_units"], r["sd_units_ci_low"], r["sd_units_ci_high"]) in line)
    assert fmt_ci(r["difference"], r["difference_ci_low"], r["difference_ci_high"]) in row
    assert "paired bootstrap" in card

    def older(rep):  # a report from before the intervals
        for v in rep["reward_improvement"].values():
            for k in ("difference_ci_low", "difference_ci_high", "sd_units_ci_low", "sd_units_ci_high"):
                v.pop(k)
    path = run / "eval/report.json"
    rep = json.loads(path.read_text())
    older(rep)
    path.write_text(json.dumps(rep))
    assert "PPO (RLHF) vs SFT: no interval, the report predates" in card_of(run)


# ----------------------------------------------------------------------------- no contradiction


CLAIM = {"above": "above SFT, the intervals do not overlap", "below": "below SFT, the intervals do not overlap",
         "overlap": "no difference from SFT established, the intervals overlap",
         "unassessed": "not assessed, too few prompts for an interval"}
OUTCOMES = {  # (PPO, SFT) values of one metric for each outcome of its finding
    "above": (V(0.9, 0.85, 0.95), V(0.5, 0.45, 0.55)),
    "below": (V(0.3, 0.25, 0.35), V(0.5, 0.45, 0.55)),
    "overlap": (V(0.52, 0.4, 0.6), V(0.5, 0.45, 0.55)),
    "unassessed": (V(0.9, None, None, 1), V(0.5, None, None, 1)),
}


def claim_line(card: str, what: str) -> str:
    return next(line for line in first_screen(card).splitlines() if line.startswith(f"- **{what}"))


@pytest.mark.parametrize("gold", list(OUTCOMES))
@pytest.mark.parametrize("reward", list(OUTCOMES))
def test_no_card_sentence_contradicts_the_findings(run, gold, reward):
    def edit(r):
        r["metrics"]["gold"]["ppo"], r["metrics"]["gold"]["sft"] = OUTCOMES[gold]
        r["metrics"]["reward"]["ppo"], r["metrics"]["reward"]["sft"] = OUTCOMES[reward]
    report = rewrite(run, edit)
    card = card_of(run)
    by_id = {f["id"]: f for f in report["findings"]}
    for metric, what, outcome in (("gold", "Gold judge", gold), ("reward", "Reward model", reward)):
        line = claim_line(card, what)
        assert CLAIM[outcome] in line, (metric, line)
        holds = by_id[f"ppo_beats_sft_{metric}"]["holds"]
        assert holds == (outcome == "above")  # the finding and the sentence say the same
        assert ("above SFT" in line) == holds
    hacking = by_id["ppo_reward_hacking"]
    warned = "**Read this first.**" in first_screen(card)
    assert warned == (hacking["holds"] and not hacking["good"])  # a detected hacking is stated first
    if warned:
        assert " ".join(hacking["text"].split()) in first_screen(card)
    # the findings list repeats every finding's own text or points to where it is stated
    for f in report["findings"]:
        assert " ".join(f["text"].split()) in card or f"`{f['id']}`: stated under **Read this first**" in card


@pytest.mark.parametrize("reached", [True, False])
def test_the_gold_win_rate_claim_follows_its_finding(run, reached):
    def edit(r):
        w = r["gold_win_rates"]["ppo_vs_sft"]
        w.update(win=0.5 if reached else 0.3, tie=0.2, loss=0.3 if reached else 0.5)
        w["win_rate_ties_half"] = w["win"] + w["tie"] / 2
        w["win_rate_ties_half_ci_low"], w["win_rate_ties_half_ci_high"] = (w["win_rate_ties_half"] - 0.05,
                                                                           w["win_rate_ties_half"] + 0.05)
    report = rewrite(run, edit)
    assert next(f for f in report["findings"] if f["id"] == "ppo_gold_win_rate")["holds"] is reached
    line = claim_line(card_of(run), "Win rate against SFT")
    assert ("at least the 0.55" in line) is reached and ("below the 0.55" in line) is not reached
    assert claims_context(report, "ppo")["gold_win"]["reached"] is reached


def test_the_policies_compared_state_the_reports_comparison(tmp_path):
    run = make_run(tmp_path / "run", models=("base", "sft", "ppo", "dpo", "rloo"))
    report = json.loads((run / "eval/report.json").read_text())
    card = card_of(run)
    for key in ("gold", "reward", "per_kl", "per_second"):
        assert " ".join(report["comparison"][key]["text"].split()) in card
    assert "### The policies compared" in card and "| RLOO |" in card and "unknown" in card


# ----------------------------------------------------------------------------- reproduce, at once


def test_reproduce_on_an_edited_card_fails_at_once_with_its_labels_and_line(run, capsys):
    """No rerun: the fabricated models cannot even load, so a passing check here was never re-measured."""
    render_card(run)
    path = run / "card" / "README.md"
    card = path.read_text()
    report = json.loads((run / "eval/report.json").read_text())
    v = report["metrics"]["gold"]["ppo"]
    shown = fmt_ci(v["value"], v["ci_low"], v["ci_high"]).split(" ")[0]
    lines = card.split("\n")
    n = next(i for i, line in enumerate(lines) if line.startswith("- **Gold judge**"))
    edited = shown[:-1] + ("1" if shown[-1] != "1" else "2")
    lines[n] = lines[n].replace(f"PPO scores {shown}", f"PPO scores {edited}", 1)
    path.write_text("\n".join(lines))
    t0 = time.perf_counter()
    assert main(["reproduce", str(run)]) == 1
    assert time.perf_counter() - t0 < 5
    out = capsys.readouterr().out
    assert f"card says {edited}, report says {shown}" in out
    assert f"README.md line {n + 1}: - **Gold judge**" in out
    assert "the evaluation was not rerun" in out and "1 MISMATCH" in out

    # the metadata: the model-index value, named by its line
    path.write_text(card.replace(f"value: {v['value']!r}", "value: 0.999", 1))
    line = next(i for i, ln in enumerate(path.read_text().split("\n"), 1) if ln.strip() == "value: 0.999")
    assert main(["reproduce", str(run)]) == 1
    out = capsys.readouterr().out
    assert f"card says 0.999, report says {v['value']:.6g}" in out and f"README.md line {line}:" in out


def test_datasets_metadata_names_the_training_data(tmp_path):
    """An evaluation on a local prompts file still lists the Hub data the SFT stage trained on."""
    import yaml
    from huggingface_hub import ModelCard

    run = make_run(tmp_path / "run", gold=False)
    cfg = yaml.safe_load((run / "sft/config.yaml").read_text())
    cfg["data"]["dataset"] = "Anthropic/hh-rlhf"
    (run / "sft/config.yaml").write_text(yaml.safe_dump(cfg))
    report = json.loads((run / "eval/report.json").read_text())
    report["dataset"]["name"] = str(tmp_path / "prompts.jsonl")
    (run / "eval/report.json").write_text(json.dumps(report))
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "Hi"}\n')
    assert ModelCard(card_of(run)).data.datasets == ["Anthropic/hh-rlhf"]
