"""One evaluation over every policy present: base, SFT, PPO, DPO, RLOO on the same prompts and seeds.

The DPO and RLOO stages' directories are made here as their stages write them (a Hugging Face model
directory, config.yaml, metrics.json, COMPLETE; no snapshots, no critic): `dpo/` is a copy of the SFT
model, so with the same prompts and seeds it must answer exactly as SFT does, and `rloo/` a copy of
the base model. Tiny random models (tests/test_evaluation.py's), a few seconds per evaluation.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from gpt2_rlhf.evaluation.policies import MODEL_KEYS, POLICY_KEYS, model_pairs
from gpt2_rlhf.evaluation.report import comparison_summary, table, training_seconds
from gpt2_rlhf.evaluation.schema import validate_report
from gpt2_rlhf.train.rundir import write_json

from tests.test_evaluation import eval_recipe, make_tiny_run

DPO_SECONDS = 4.5  # the fake DPO stage's training time (a Hugging Face trainer's `train_seconds`)


def add_policy(run: Path, key: str, weights_of: str, metrics: dict) -> None:
    """RUN/<key>/ laid out like a policy stage's output: a copy of RUN/<weights_of>'s model, its config.yaml,
    metrics.json and COMPLETE."""
    dest = run / key
    shutil.copytree(run / weights_of, dest)
    (dest / "metrics.jsonl").unlink(missing_ok=True)  # PPO's log: not a DPO or RLOO file
    write_json(dest / "metrics.json", metrics)
    (dest / "config.yaml").write_text(f"seed: 0\n{key}:\n  learning_rate: 1.0e-05\n")
    write_json(dest / "COMPLETE", {"stage": key})


@pytest.fixture(scope="module")
def five_run(tmp_path_factory) -> Path:
    """base, sft, ppo, reward (random tiny models) plus dpo (= SFT's weights) and rloo (= base's weights,
    no training time recorded)."""
    run = make_tiny_run(tmp_path_factory.mktemp("compare") / "run")
    write_json(run / "ppo" / "metrics.json", {"episodes": 40, "train_s": 12.0})
    add_policy(run, "dpo", "sft", {"train_loss": 0.69, "train_seconds": DPO_SECONDS})
    add_policy(run, "rloo", "base", {"episodes": 40})
    return run


def evaluate(run: Path, models: list[str], **overrides) -> tuple[dict, list[dict], Path]:
    from gpt2_rlhf.evaluation.run import main

    torch.set_num_threads(1)
    out = main(eval_recipe(**{"eval.models": ",".join(models), **overrides}), run)
    report = json.loads((out / "report.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return report, samples, out


@pytest.fixture(scope="module")
def evaluated_all(five_run):
    return evaluate(five_run, list(MODEL_KEYS))


# ----------------------------------------------------------------------------- the policies' table


def test_one_table_of_policies_and_their_pairs():
    assert POLICY_KEYS == ("ppo", "dpo", "rloo")
    assert model_pairs(["base", "sft", "ppo"]) == [("ppo", "sft"), ("ppo", "base"), ("sft", "base")]
    assert model_pairs(["base", "sft", "dpo"]) == [("dpo", "sft"), ("dpo", "base"), ("sft", "base")]
    assert model_pairs(["sft", "rloo", "ppo"]) == [("ppo", "sft"), ("rloo", "sft"), ("ppo", "rloo")]
    assert [f"{a}_vs_{b}" for a, b in model_pairs(MODEL_KEYS)] == [
        "ppo_vs_sft", "ppo_vs_base", "dpo_vs_sft", "dpo_vs_base", "rloo_vs_sft", "rloo_vs_base",
        "ppo_vs_dpo", "ppo_vs_rloo", "dpo_vs_rloo", "sft_vs_base"]


def test_every_model_key_has_an_override_flag():
    """`--eval.<key>_model` for every model of the table: a policy added there without its flag fails here."""
    import dataclasses

    from gpt2_rlhf.evaluation.config import EvalConfig

    names = {f.name: f for f in dataclasses.fields(EvalConfig)}
    for key in MODEL_KEYS:
        assert f"{key}_model" in names and names[f"{key}_model"].metadata["help"]
    assert EvalConfig().models == list(MODEL_KEYS)
    assert EvalConfig(dpo_model="x/y").model_override("dpo") == "x/y"


# ----------------------------------------------------------------------------- the comparison, by hand


def V(value, lo=None, hi=None, n=10):
    return {"value": value, "ci_low": lo, "ci_high": hi, "n": n}


def hand_metrics():
    """SFT gold 0.5; PPO 0.8 at KL 3.0; DPO 0.6 at KL 0.5; RLOO 0.4 at KL 2.0 (a loss)."""
    return {
        "reward": {"sft": V(0.0, -0.1, 0.1), "ppo": V(1.0, 0.9, 1.1), "dpo": V(0.3, 0.2, 0.4),
                   "rloo": V(0.95, 0.85, 1.05)},
        "gold": {"sft": V(0.5, 0.45, 0.55), "ppo": V(0.8, 0.75, 0.85), "dpo": V(0.6, 0.55, 0.65),
                 "rloo": V(0.4, 0.35, 0.45)},
        "kl_to_reference": {"sft": V(0.0), "ppo": V(3.0, 2.9, 3.1), "dpo": V(0.5, 0.4, 0.6),
                            "rloo": V(2.0, 1.9, 2.1)},
    }


def test_comparison_by_hand():
    c = comparison_summary(hand_metrics(), {"ppo": 30.0, "dpo": 2.0, "rloo": None}, "sft")
    assert c["policies"] == ["ppo", "dpo", "rloo"]
    assert c["gold"]["ranking"] == ["ppo", "dpo", "rloo"] and c["gold"]["best"] == "ppo"
    assert c["gold"]["separated"] is True  # 0.75 > 0.65 and 0.75 > 0.45
    assert "PPO is best by mean gold-judge score" in c["gold"]["text"]
    # reward: PPO 1.0 [0.9, 1.1] and RLOO 0.95 [0.85, 1.05] overlap: highest, but not separated
    assert c["reward"]["best"] == "ppo" and c["reward"]["separated"] is False
    assert "no policy is best" in c["reward"]["text"] and "RLOO" in c["reward"]["text"]
    # per nat of KL on gold: PPO 0.3 / 3.0 = 0.1, DPO 0.1 / 0.5 = 0.2, RLOO -0.1 / 2.0 = -0.05
    per_kl = c["per_kl"]
    assert per_kl["metric"] == "gold" and per_kl["best"] == "dpo"
    assert per_kl["values"]["ppo"]["per_nat"] == pytest.approx(0.1)
    assert per_kl["values"]["dpo"]["per_nat"] == pytest.approx(0.2)
    assert per_kl["values"]["rloo"]["per_nat"] == pytest.approx(-0.05)
    # per second: PPO 0.3 / 30 = 0.01, DPO 0.1 / 2 = 0.05, RLOO unknown (no training time)
    per_s = c["per_second"]
    assert per_s["best"] == "dpo" and per_s["values"]["dpo"]["per_second"] == pytest.approx(0.05)
    assert per_s["values"]["ppo"]["per_second"] == pytest.approx(0.01)
    assert per_s["values"]["rloo"] == {"gain": pytest.approx(-0.1), "train_s": "unknown", "per_second": "unknown"}
    assert "RLOO unknown" in per_s["text"]


def test_comparison_unknown_none_and_reward_only():
    m = hand_metrics()
    c = comparison_summary(m, {}, "sft")
    assert c["per_second"]["best"] == "unknown"  # no stage recorded its time
    assert all(v["per_second"] == "unknown" for v in c["per_second"]["values"].values())
    worse = {**m, "gold": {k: V(0.5 - 0.1 * (k != "sft"), 0.3, 0.6) for k in m["gold"]}}
    c = comparison_summary(worse, {"ppo": 1.0, "dpo": 1.0, "rloo": 1.0}, "sft")
    assert c["per_kl"]["best"] == "none" and c["per_second"]["best"] == "none"  # every policy loses gold
    assert "no policy with a known KL gains over SFT" in c["per_kl"]["text"]
    no_gold = {k: v for k, v in m.items() if k != "gold"}
    c = comparison_summary(no_gold, {"ppo": 10.0}, "sft")
    assert "gold" not in c and c["per_kl"]["metric"] == "reward" and c["per_kl"]["best"] == "dpo"  # 0.3/0.5
    zero_kl = {**m, "kl_to_reference": {**m["kl_to_reference"], "dpo": V(0.0)}}
    assert comparison_summary(zero_kl, {}, "sft")["per_kl"]["values"]["dpo"]["per_nat"] == "unknown"
    assert "per_kl" not in comparison_summary(m, {}, "base")  # KL not against SFT: no gain over SFT per nat
    assert comparison_summary({"reward": {"sft": V(0.0)}}, {}, "sft") == {}  # no trained policy


def test_training_seconds_reads_both_spellings_and_sums_rounds():
    assert training_seconds([{"train_s": 2.5}, {"train_seconds": 4}]) == 6.5
    assert training_seconds([{"train_s": 2.5}, {"episodes": 3}]) is None  # a round without its time
    assert training_seconds([{}]) is None and training_seconds([]) is None


# ----------------------------------------------------------------------------- the evaluation


@pytest.mark.parametrize("models", [
    ["base", "sft", "ppo"],
    ["base", "sft", "ppo", "dpo"],
    ["base", "sft", "ppo", "dpo", "rloo"],
], ids=["3-models", "4-models", "5-models"])
def test_every_policy_present_is_compared(five_run, evaluated_all, models):
    report, samples, out = evaluated_all if len(models) == 5 else evaluate(five_run, models)
    validate_report(report)
    pols = [m for m in models if m in POLICY_KEYS]
    assert list(report["models"]) == models
    pairs = [f"{a}_vs_{b}" for a, b in model_pairs(models)]
    assert list(report["win_rates"]) == pairs and list(report["gold_win_rates"]) == pairs
    assert list(report["reward_improvement"]) == pairs
    for name, per_model in report["metrics"].items():  # every metric for every model
        assert set(per_model) - {"chosen"} == set(models), name
    ids = {f["id"] for f in report["findings"]}
    for p in pols:
        assert {f"{p}_beats_sft_reward", f"{p}_beats_base_reward", f"{p}_beats_sft_gold", f"{p}_gold_win_rate"} <= ids
    assert ("dpo_reward_hacking" in ids) is False  # DPO never optimised the reward model
    assert ("rloo_reward_hacking" in ids) == ("rloo" in models)
    assert "ppo_overoptimisation" in ids and "overoptimisation" in report  # PPO's curve, as before
    comp = report["comparison"]
    assert comp["policies"] == pols
    rewards = {p: report["metrics"]["reward"][p]["value"] for p in pols}
    assert comp["reward"]["best"] == max(pols, key=lambda p: (rewards[p], -pols.index(p)))
    assert comp["per_second"]["values"]["ppo"]["train_s"] == 12.0
    assert ("policies" in report["plots"]) == (len(pols) > 1)
    assert all((out / rel).stat().st_size > 1000 for rel in report["plots"].values())
    assert all(set(s["responses"]) == set(models) for s in samples)
    printed = table(report)
    assert printed.splitlines()[0].split() == ["metric", *models, "chosen", "(dataset)"]
    assert "comparison (reward):" in printed and "comparison (per_second):" in printed


def test_same_prompts_and_seeds_for_every_policy(evaluated_all):
    """DPO here is SFT's weights: on the same prompts with the same seeds it writes exactly SFT's responses,
    ties SFT on every prompt, and its KL to SFT is exactly zero (so its gain per nat is unknown)."""
    report, samples, _ = evaluated_all
    assert all(s["responses"]["dpo"] == s["responses"]["sft"] for s in samples)
    assert all(s["responses"]["rloo"] == s["responses"]["base"] for s in samples)  # base's weights
    w = report["win_rates"]["dpo_vs_sft"]
    assert (w["win"], w["tie"], w["loss"]) == (0.0, 1.0, 0.0)
    assert report["metrics"]["kl_to_reference"]["dpo"]["value"] == pytest.approx(0.0, abs=1e-6)
    per_kl = report["comparison"]["per_kl"]["values"]["dpo"]
    assert per_kl["gain"] == 0.0
    per_s = report["comparison"]["per_second"]["values"]
    assert per_s["dpo"] == {"gain": 0.0, "train_s": DPO_SECONDS, "per_second": 0.0}
    assert per_s["rloo"]["train_s"] == "unknown" and per_s["rloo"]["per_second"] == "unknown"
    assert report["training"]["dpo"]["train_seconds"] == DPO_SECONDS and "rloo" in report["training"]
    for a, b in (("ppo", "dpo"), ("ppo", "rloo"), ("dpo", "rloo")):  # the policies against each other
        assert report["win_rates"][f"{a}_vs_{b}"]["n"] == report["dataset"]["n_prompts"]


# ----------------------------------------------------------------------------- a DPO-only run


@pytest.fixture(scope="module")
def dpo_run(five_run, tmp_path_factory):
    """base, sft, reward and dpo: no ppo directory at all."""
    run = tmp_path_factory.mktemp("dpo_only") / "run"
    for key in ("base", "sft", "reward", "dpo"):
        shutil.copytree(five_run / key, run / key)
    shutil.copytree(five_run / "_tok", run / "_tok")
    return run


def test_a_dpo_only_run_evaluates_renders_and_reproduces(dpo_run, capsys):
    from gpt2_rlhf.model_card.render import render_card
    from gpt2_rlhf.model_card.reproduce import format_outcome, reproduce

    report, _, _ = evaluate(dpo_run, list(MODEL_KEYS), **{"eval.curve_prompts": 128})
    validate_report(report)
    assert list(report["models"]) == ["base", "sft", "dpo"]
    assert "overoptimisation" not in report and "ppo_training" not in report["plots"]
    assert report["comparison"]["policies"] == ["dpo"] and "policies" not in report["plots"]
    card = render_card(dpo_run).read_text()
    head = "\n".join(card.split("\n---\n", 1)[1].splitlines()[:12])
    assert "DPO" in head and "PPO" not in head
    assert "- dpo\n" in card.split("\n---\n", 1)[0]  # the metadata's tag
    outcome = reproduce(str(dpo_run))
    assert outcome.passed, format_outcome(str(dpo_run), outcome)
    assert any(c.section == "comparison" for c in outcome.checks)
    assert any(c.name == "dpo.revision" for c in outcome.checks)
    # an edited DPO number on the card fails at once, with the card's number as the card's and its line
    from gpt2_rlhf.model_card.context import value_cell

    readme = dpo_run / "card" / "README.md"
    shown = value_cell(report["metrics"]["gold"]["dpo"]).split(" ")[0]
    lines = readme.read_text().split("\n")
    n = next(i for i, line in enumerate(lines) if line.startswith("- **Gold judge**"))
    lines[n] = lines[n].replace(f"DPO scores {shown}", "DPO scores 0.1234", 1)
    readme.write_text("\n".join(lines))
    bad = reproduce(str(dpo_run))
    assert [(c.reported, c.reproduced, c.labels) for c in bad.failed] == [("0.1234", shown, ("card says", "report says"))]
    assert bad.failed[0].detail.startswith(f"README.md line {n + 1}: - **Gold judge**")
