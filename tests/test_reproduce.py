"""`rlhf reproduce`: a card's numbers against its report, and the report against a rerun of the evaluation."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, constants

from gpt2_rlhf.model_card import reproduce as rep
from gpt2_rlhf.model_card.markdown import numbers_in
from gpt2_rlhf.model_card.options import CardOptions
from gpt2_rlhf.model_card.render import render_card, render_texts
from gpt2_rlhf.model_card.sources import CardSources
from tests.fake_run import make_report, make_run
from tests.hub_stub import HubStub
from gpt2_rlhf.cli import main

TOKEN = "hf_reproduceStubToken"


def same(report: dict, paths: dict) -> dict:
    """A rerun that measures exactly what was reported."""
    return copy.deepcopy(report)


@pytest.fixture
def carded(tmp_path) -> Path:
    run = make_run(tmp_path / "run")
    render_card(run)
    return run


# ----------------------------------------------------------------------------- pure comparisons


def test_within_is_the_reports_rule():
    assert rep.within(1.0, 1.04, rel=0.05, abs_=0.0)
    assert not rep.within(1.0, 1.06, rel=0.05, abs_=0.0)
    assert rep.within(0.0, 0.019, rel=0.05, abs_=0.02)
    assert not rep.within(-2.0, -2.3, rel=0.05, abs_=0.02)  # 0.3 > 0.02 + 0.1


def test_compare_reports_flags_exactly_what_moved():
    old = make_report(seed=3)
    assert all(c.ok for c in rep.compare_reports(old, copy.deepcopy(old), 0.02, 0.001))

    new = copy.deepcopy(old)
    new["metrics"]["reward"]["ppo"]["value"] *= 1.01  # inside 0.001 + 2%
    new["metrics"]["kl_to_reference"]["ppo"]["value"] += 1.0  # outside
    new["metrics"]["distinct_2"]["sft"]["n"] += 1  # counts are exact
    new["win_rates"]["ppo_vs_sft"]["win"] += 0.2
    new["findings"][0]["holds"] = not new["findings"][0]["holds"]
    new["models"]["ppo"]["revision"] = "sha256:" + "f" * 64  # other weights
    del new["reward_model"]["mean_margin"]
    new["reference_metrics"]["rouge"]["base"]["rougeL"] += 0.5
    failed = {c.name for c in rep.compare_reports(old, new, 0.02, 0.001) if not c.ok}
    assert failed == {"kl_to_reference.ppo.value", "distinct_2.sft.n", "ppo_vs_sft.win", old["findings"][0]["id"],
                      "ppo.revision", "reward_model.mean_margin", "rouge.base.rougeL"}


def test_compare_settings_ignores_where_the_models_were():
    old = make_report()
    new = copy.deepcopy(old)
    new["config"]["eval"]["ppo_model"] = "/tmp/elsewhere"
    assert all(c.ok for c in rep.compare_settings(old, new))
    new["config"]["eval"]["max_prompts"] = 3
    new["decoding"]["temperature"] = 1.0
    bad = [c for c in rep.compare_settings(old, new) if not c.ok]
    assert {c.name for c in bad} == {"decoding", "config"} and "max_prompts" in bad[-1].detail


# ----------------------------------------------------------------------------- card against report


def test_card_then_reproduce_passes(carded, monkeypatch, capsys):
    outcome = rep.reproduce(str(carded), evaluate=same)
    assert outcome.passed and len(outcome.checks) > 100
    monkeypatch.setattr(rep, "rerun_evaluation", same)
    assert main(["reproduce", str(carded)]) == 0
    out = capsys.readouterr().out
    assert "REPRODUCED" in out and "FAIL" not in out
    assert re.search(r"metrics\s+reward\.ppo\.value\s+\S+\s+\S+\s+±\S+\s+PASS", out)


def results_table_lines(card: str) -> list[int]:
    lines = card.splitlines()
    start = lines.index("## Results")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("#"))
    return [i for i in range(start, end) if lines[i].startswith("| ") and numbers_in(lines[i])]


def alter(number: str) -> str:
    """A different number that reads like the original."""
    return number[:-1] + ("1" if number[-1] != "1" else "2")


def test_altering_any_number_of_the_results_table_fails(carded):
    card = (carded / "card/README.md").read_text()
    expected = render_texts(CardSources.from_run_dir(carded), CardOptions())["README.md"]
    assert all(c.ok for c in rep.compare_card_text(card, expected, "README.md"))
    lines = card.splitlines()
    tried = 0
    for i in results_table_lines(card):
        for m in re.finditer(r"(?<![\w.+\-])-?\d+(?:\.\d+)?(?:e-?\d+)?", lines[i]):
            changed = lines[i][:m.start()] + alter(m.group()) + lines[i][m.end():]
            altered = "\n".join(lines[:i] + [changed] + lines[i + 1:])
            checks = rep.compare_card_text(altered, expected, "README.md")
            assert [c for c in checks if not c.ok], f"not caught: {changed}"
            tried += 1
    assert tried >= 60  # 11 metrics x 3 models, values and CIs


def test_an_edited_card_fails_the_command(carded, monkeypatch, capsys):
    monkeypatch.setattr(rep, "rerun_evaluation", same)
    path = carded / "card/README.md"
    card = path.read_text()
    line = next(ln for ln in card.splitlines() if ln.startswith("| Distinct-2 |"))
    number = numbers_in(line)[0]
    path.write_text(card.replace(line, line.replace(number, alter(number), 1)))
    assert main(["reproduce", str(carded)]) == 1
    out = capsys.readouterr().out
    n = next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if ln.startswith("| Distinct-2 |"))
    assert f"card says {alter(number)}, report says {number}" in out  # the edit is the card's, not a rerun's
    assert f"README.md line {n}: | Distinct-2 |" in out  # the line of the file, front matter counted
    assert "1 MISMATCH" in out and "was not rerun" in out


def test_a_number_in_the_prose_or_the_metadata_differs(carded):
    path = carded / "card/README.md"
    card = path.read_text()
    report = json.loads((carded / "eval/report.json").read_text())
    value = report["metrics"]["reward"]["ppo"]["value"]
    path.write_text(card.replace(f"value: {value!r}", "value: 0.999", 1))
    failed = [c for c in rep.reproduce(str(carded), evaluate=same).failed]
    assert [c.name for c in failed] == ["model-index mean normalised reward"]
    assert failed[0].reported == 0.999 and failed[0].reproduced == value  # the card's claim, the report's value
    assert failed[0].labels == ("card says", "report says")
    line = next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if ln.strip() == "value: 0.999")
    assert failed[0].detail.startswith(f"README.md line {line}:")
    path.write_text(card.replace("on 24 held-out prompts", "on 240 held-out prompts", 1))
    failed = rep.reproduce(str(carded), evaluate=same).failed
    assert len(failed) == 1 and failed[0].reported == "240" and failed[0].reproduced == "24"


def test_a_stale_card_fails_after_the_report_changes(carded):
    report = json.loads((carded / "eval/report.json").read_text())
    report["metrics"]["eos_rate"]["base"]["value"] = 0.123456
    (carded / "eval/report.json").write_text(json.dumps(report))
    failed = rep.reproduce(str(carded), evaluate=same).failed
    assert failed and all(c.section == "card" for c in failed)


# ----------------------------------------------------------------------------- report against rerun


def test_a_rerun_that_differs_fails_and_tolerance_is_stated(carded, monkeypatch, capsys):
    def drifted(report, paths):
        new = copy.deepcopy(report)
        new["metrics"]["reward"]["ppo"]["value"] *= 1.03
        return new

    monkeypatch.setattr(rep, "rerun_evaluation", drifted)
    assert main(["reproduce", str(carded)]) == 1
    out = capsys.readouterr().out
    assert "tolerance: |new - old| <= 0.001 + 0.02 * |old| (recorded in the report)" in out
    assert "FAIL metrics reward.ppo.value" in out
    assert main(["reproduce", str(carded), "--tolerance", "0.05"]) == 0
    assert "0.05 * |old| (--tolerance)" in capsys.readouterr().out


def test_the_rerun_gets_the_recorded_settings_and_the_run_models(carded):
    seen = {}

    def spy(report, paths):
        seen.update(paths)
        return copy.deepcopy(report)

    rep.reproduce(str(carded), evaluate=spy)
    assert seen == {k: str(carded / k) for k in ("base", "sft", "ppo", "reward")}


def test_missing_card_or_target_is_a_one_line_error(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert main(["reproduce", str(run)]) == 2
    assert "rlhf card" in capsys.readouterr().err
    assert main(["reproduce", "./no/such/run"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "no such run directory" in err[0]


# ----------------------------------------------------------------------------- from the Hub


@pytest.fixture
def online(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))


def test_reproduce_a_pushed_repo(tmp_path, online):
    from gpt2_rlhf.model_card.publish import push

    run = make_run(tmp_path / "run", hub={"base_repo_id": "alice/tiny-base"})
    seen = {}

    def spy(report, paths):
        seen.update(paths)
        return copy.deepcopy(report)

    with HubStub(token=TOKEN) as hub:
        push(run, "alice/tiny", sft_repo_id="alice/tiny-sft", reward_repo_id="alice/tiny-rm", endpoint=hub.url,
             token=TOKEN, out=lambda s: None)
        outcome = rep.reproduce("alice/tiny", evaluate=spy, endpoint=hub.url)
    assert outcome.passed, rep.format_outcome("alice/tiny", outcome)
    for key in ("base", "sft", "ppo", "reward"):
        assert (Path(seen[key]) / "model.safetensors").read_bytes() == (run / key / "model.safetensors").read_bytes()


def test_a_repo_without_its_base_model_says_what_to_push(tmp_path, online):
    from gpt2_rlhf.model_card.publish import push

    run = make_run(tmp_path / "run")
    with HubStub(token=TOKEN) as hub:
        push(run, "alice/tiny", sft_repo_id="alice/tiny-sft", reward_repo_id="alice/tiny-rm", endpoint=hub.url,
             token=TOKEN, out=lambda s: None)
        with pytest.raises(rep.CardError, match="base model was a local directory .* --base-repo-id"):
            rep.reproduce("alice/tiny", evaluate=same, endpoint=hub.url)


def test_a_hub_repo_offline_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["reproduce", "alice/gpt2-rlhf-tiny"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "alice/gpt2-rlhf-tiny" in err[0] and "unreachable" in err[0]


# ----------------------------------------------------------------------------- the real thing


@pytest.mark.slow
def test_embedded_run_card_then_reproduce_reruns_the_evaluation(micro_run, tmp_path, capsys):
    """Real models (the session's micro run), the real evaluation twice: card, reproduce passes; an edit fails."""
    from tests.conftest import copy_run
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.pipeline import run_stage

    run = copy_run(micro_run, tmp_path / "run")
    recipe = load_recipe(run / "recipe.yaml", {"ppo.batch_size": 16, "ppo.total_episodes": 32, "ppo.max_new_tokens": 12,
                                                "ppo.eval_prompts": 0, "eval.n_prompts": 8,
                                                "eval.bootstrap_samples": 50, "eval.max_new_tokens": 12,
                                                "eval.batch_size": 8})
    run_stage("ppo", recipe, run)
    run_stage("eval", recipe, run)
    assert main(["card", str(run)]) == 0
    assert ModelCard.load(run / "card/README.md").data.eval_results  # a PPO card with its model-index
    assert main(["reproduce", str(run)]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "REPRODUCED" in out and re.search(r"models\s+sft\.revision\s+sha256:", out)

    path = run / "card/README.md"
    card = path.read_text()
    line = next(ln for ln in card.splitlines() if ln.startswith("| Reward (normalised RM score) |"))
    number = numbers_in(line)[0]
    path.write_text(card.replace(line, line.replace(number, alter(number), 1)))
    assert main(["reproduce", str(run)]) == 1
    assert "MISMATCH" in capsys.readouterr().out


# ----------------------------------------------------------------------------- several samples per prompt


def test_a_report_with_several_samples_per_prompt_reproduces(tmp_path):
    """A real evaluation with two samples per prompt on tiny models, rerun by `rlhf reproduce`'s own rerun:
    the same k passes and seeds, so every number, the new fields included, reproduces; another k fails."""
    import torch

    from gpt2_rlhf.evaluation.run import main as evaluate
    from tests.test_evaluation import eval_recipe, make_tiny_run

    torch.set_num_threads(1)
    run = make_tiny_run(tmp_path / "run")
    out = evaluate(eval_recipe(**{"eval.samples_per_prompt": "2", "eval.n_prompts": "4", "eval.curve_prompts": "0"}),
                   run)
    report = json.loads((out / "report.json").read_text())
    assert report["decoding"]["samples_per_prompt"] == 2
    new = rep.rerun_evaluation(report, {k: str(run / k) for k in ("base", "sft", "ppo", "reward")})
    tol = report["tolerance"]
    checks = rep.compare_settings(report, new) + rep.compare_reports(report, new, tol["default_rel"], tol["default_abs"])
    assert [c for c in checks if not c.ok] == []
    names = {c.name for c in checks}
    assert {"n_responses", "ppo_vs_sft.win_rate_ties_half", "ppo_vs_sft.win_rate_ties_half_ci_low",
            "ppo_gold_win_rate"} <= names
    one = copy.deepcopy(new)
    one["decoding"]["samples_per_prompt"] = 1
    one["dataset"]["n_responses"] = 4
    failed = {c.name for c in rep.compare_settings(report, one) + rep.compare_reports(report, one, 0.05, 0.02)
              if not c.ok}
    assert failed == {"decoding", "n_responses"}


def older(report: dict) -> dict:
    """`report` as the evaluation wrote it before several samples per prompt: no samples_per_prompt,
    n_responses or win_rate_ties_half, and ppo_gold_win_rate judged on the plain win rate."""
    old = copy.deepcopy(report)
    del old["decoding"]["samples_per_prompt"], old["config"]["eval"]["samples_per_prompt"]
    del old["dataset"]["n_responses"]
    for section in ("win_rates", "gold_win_rates"):
        for w in old[section].values():
            for key in ("win_rate_ties_half", "win_rate_ties_half_ci_low", "win_rate_ties_half_ci_high"):
                del w[key]
    f = next(f for f in old["findings"] if f["id"] == "ppo_gold_win_rate")
    f["holds"] = f["good"] = old["gold_win_rates"]["ppo_vs_sft"]["win"] >= 0.55
    return old


def test_an_older_report_is_rerun_as_one_sample_per_prompt(tmp_path):
    run = make_run(tmp_path / "run")
    report = json.loads((run / "eval/report.json").read_text())
    old = older(report)
    (run / "eval/report.json").write_text(json.dumps(old))
    render_card(run)

    def rerun_today(recorded, paths):  # today's evaluation of the same settings: k = 1, the new fields
        new = copy.deepcopy(report)
        new["decoding"]["samples_per_prompt"] = new["config"]["eval"]["samples_per_prompt"] = 1
        f = next(f for f in new["findings"] if f["id"] == "ppo_gold_win_rate")
        f["holds"] = f["good"] = not f["holds"]  # judged with ties counted half: may differ
        return new

    outcome = rep.reproduce(str(run), evaluate=rerun_today)
    assert outcome.passed, rep.format_outcome(str(run), outcome)
    assert "ppo_gold_win_rate" not in {c.name for c in outcome.checks}
    assert any(n.startswith("finding ppo_gold_win_rate not compared") for n in outcome.notes)
    # a rerun with more samples per prompt than the recorded run is not the recorded settings
    def more_samples(recorded, paths):
        new = rerun_today(recorded, paths)
        new["decoding"]["samples_per_prompt"] = 4
        return new

    assert {c.name for c in rep.reproduce(str(run), evaluate=more_samples).failed} == {"decoding"}
