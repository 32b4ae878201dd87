"""Smoke tests for the benchmark scripts that have no timing target (they must not rot)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reward_ceiling_on_the_micro_run(micro_run, capsys):
    ceiling = _load("reward_ceiling")
    assert ceiling.main(["--run-dir", str(micro_run), "--n-prompts", "5", "--samples", "4"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n_prompts"] == 5 and out["samples"] == 4
    assert set(out["best_of_n"]) == {"2", "4"}
    # best-of-n includes the first sample, so it never scores below it; gains grow with n
    gains = [out["best_of_n"][k]["score_gain_in_sft_std"] for k in ("2", "4")]
    assert 0 <= gains[0] <= gains[1]
    assert math.isclose(out["best_of_n"]["4"]["kl_bound"], math.log(4) - 3 / 4, abs_tol=1e-4)
    assert 0 <= out["sft_gold"] <= 1  # the micro recipe uses the embedded dataset
    # the gold judge's own best-of-n: the best gold among more samples is never lower, and at least the proxy's
    oracle = [out["gold_best_of_n"][k]["gold"] for k in ("2", "4")]
    assert oracle[0] <= oracle[1] <= 1
    assert all(out["gold_best_of_n"][k]["gold"] >= out["best_of_n"][k]["gold"] for k in ("2", "4"))
    # the gold judge agrees with every embedded label: chosen responses score above rejected ones
    assert out["dataset_chosen"]["gold"] > out["dataset_rejected"]["gold"]


def test_reward_ceiling_names_a_missing_run(tmp_path, capsys):
    ceiling = _load("reward_ceiling")
    assert ceiling.main(["--run-dir", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_reward_ceiling_refuses_empty_sampling(tmp_path, capsys):
    ceiling = _load("reward_ceiling")
    with pytest.raises(SystemExit) as e:
        ceiling.main(["--run-dir", str(tmp_path), "--samples", "0"])
    assert e.value.code == 2 and "--samples (0)" in capsys.readouterr().err


def test_feedback_benchmark_variants_and_summary(tmp_path, capsys, monkeypatch):
    """The variants keep the PPO budget equal, and a summary of finished runs reports the ceiling share."""
    from fake_run import make_run

    fb = _load("feedback")
    assert fb.overrides("no_labels", 3, 1024) == {"stages": "base,sft,reward,ppo,eval", "ppo.total_episodes": "3072"}
    assert fb.overrides("one_round", 3, 1024)["label.rounds"] == "1"
    assert fb.overrides("one_round", 3, 1024)["ppo.total_episodes"] == "3072"
    assert fb.overrides("noisy", 3, 1024)["label.flip_rate"] == "0.2"
    assert fb.overrides("ceiling", 3, 1024)["ppo.reward_function"] == "train.rewards:gold"
    with pytest.raises(ValueError, match="unknown variant"):
        fb.overrides("bogus", 3, 1024)
    full, ceiling = make_run(tmp_path / "full"), make_run(tmp_path / "ceiling", seed=1)
    for run, ppo in ((full, 0.76), (ceiling, 0.8)):  # gold gains 0.06 and 0.10 over SFT: a share of 0.6
        path = run / "eval/report.json"
        report = json.loads(path.read_text())
        report["metrics"]["gold"]["sft"]["value"], report["metrics"]["gold"]["ppo"]["value"] = 0.7, ppo
        path.write_text(json.dumps(report))
    monkeypatch.setattr("sys.argv", ["feedback.py", "--out", str(tmp_path / "out"),
                                     "--runs", f"full={full},ceiling={ceiling}"])
    assert fb.main() == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["variants"]["ceiling"]["share_of_ceiling_gain"] == 1.0
    assert line["variants"]["full"]["share_of_ceiling_gain"] == 0.6


def test_claim_benchmark_checks_each_criterion(tmp_path, capsys, monkeypatch):
    """Every check of the claim flips on its own threshold; the table names what fails; the exit code says it."""
    from fake_run import make_run

    claim = _load("claim")

    def run(name, sft=(0.70, 0.68, 0.72), ppo=(0.80, 0.78, 0.82), win=0.6, kl=4.0, hacking=False, on_policy=0.8):
        root = make_run(tmp_path / name)
        path = root / "eval/report.json"
        report = json.loads(path.read_text())
        report["metrics"]["gold"]["sft"] = dict(zip(("value", "ci_low", "ci_high"), sft), n=400)
        report["metrics"]["gold"]["ppo"] = dict(zip(("value", "ci_low", "ci_high"), ppo), n=400)
        report["gold_win_rates"] = {"ppo_vs_sft": {"win_rate_ties_half": win}}
        report["metrics"]["kl_to_reference"]["ppo"]["value"] = kl
        report["findings"] = [f for f in report["findings"] if f["id"] != "ppo_reward_hacking"] + [
            {"id": "ppo_reward_hacking", "holds": hacking, "good": not hacking, "text": "..."}]
        path.write_text(json.dumps(report))
        (root / "reward").mkdir(exist_ok=True)
        (root / "reward" / "metrics.json").write_text(json.dumps({"on_policy": {"accuracy": on_policy}}))
        return root

    good = run("good")
    assert claim.checks(good)["holds"]
    assert not claim.checks(run("overlap", ppo=(0.75, 0.71, 0.79)))["checks"]["gold_ci"]
    assert not claim.checks(run("win", win=0.549))["checks"]["win_rate"]
    assert not claim.checks(run("kl", kl=6.01))["checks"]["kl"]
    assert not claim.checks(run("hack", hacking=True))["checks"]["no_hacking"]
    assert not claim.checks(run("rm", on_policy=0.74))["checks"]["on_policy"]
    # the ceiling: gold gains 0.10 against the ceiling's 0.12 is a share of 0.83; 0.10 against 0.2 fails
    ceiling = run("ceiling", ppo=(0.82, 0.80, 0.84))
    assert claim.checks(good, ceiling)["share_of_ceiling_gain"] == pytest.approx(0.1 / 0.12)
    assert not claim.checks(good, run("high", ppo=(0.90, 0.88, 0.92)))["checks"]["ceiling"]
    monkeypatch.setattr("sys.argv", ["claim.py", "--out", str(tmp_path / "out"),
                                     "--runs", f"a={good},b={tmp_path / 'kl'}", "--ceiling", f"a={ceiling}"])
    assert claim.main() == 1
    out = capsys.readouterr().out
    assert "| a |" in out and "all hold" in out and "fails: kl" in out
    line = json.loads(out.strip().splitlines()[-1])
    assert line["runs"]["a"]["holds"] and not line["runs"]["b"]["holds"] and line["all_hold"] is False


def test_monitor_benchmark_reads_gold_off_the_many_prompt_curve():
    """benchmarks/monitor.py's assess: gold's peak, the warning's distance and the pick's loss come from the
    many-prompt gold curve when there is one, the monitor's own few-prompt gold otherwise."""
    from tests.fake_run import make_monitor

    bench = _load("monitor")
    monitor = make_monitor("warning", gold=True, seconds=4.0, overhead_per_update_s=0.5, seconds_per_point=1.0)
    own = bench.assess(monitor)  # own gold 0.50, 0.62, 0.70, 0.58: peak at point 2, the pick (point 1) 0.08 lower
    assert own["gold_peak"] == {"point": 2, "update": 4, "gold": 0.70} and own["gold_prompts"] == 8
    assert own["first_warning"]["points_after_gold_peak"] == 1 and own["warning_within_2_points"]
    assert own["gold_lost_by_judges_pick"] == pytest.approx(0.08) and not own["pick_within_0.03"]
    curve = [{"update": u, "prompts": 400, "gold": g, "proxy": 0.0, "judge": 0.0}
             for u, g in ((0, 0.50), (2, 0.66), (4, 0.64), (6, 0.40))]
    many = bench.assess(monitor, curve)  # the curve's peak is the pick's point: nothing lost
    assert many["gold_peak"]["point"] == 1 and many["gold_prompts"] == 400
    assert many["gold_lost_by_judges_pick"] == 0.0 and many["pick_within_0.03"]
    assert many["first_warning"]["points_after_gold_peak"] == 2 and many["monitor_points_gold"][2] == 0.70
    assert "gold (400)" in bench.table({**monitor, "points": [{**p, "proxy_se": 0, "judge_se": 0, "judges": {},
                                                                 "disagreement": 0, "kl": 0, "length": 1,
                                                                 "distinct_2": 1} for p in monitor["points"]]}, many)
    # with the per-prompt scores the run is graded by this tree's rule (a replay), under any patience or z.
    # Two prompts, judges 0.0, 0.3, 0.2, 0.1 and proxy 0.0, 0.2, 0.4, 0.6 with no spread but at point 3
    # (+-0.5): the divergence since point 1 is 0.3 at point 2 and 0.6 at point 3, whose paired
    # bootstrap se over the two prompts is about 0.354 (band 0.53 at z 1.5, 0.71 at z 2).
    for p, spread in zip(monitor["points"], (0.0, 0.0, 0.0, 0.5)):
        p["per_prompt"] = {"judge": [p["judge"]] * 2, "proxy": [p["proxy"] + spread, p["proxy"] - spread]}
    monitor["settings"].update(patience=2, z=2.0, pick_se=1.0, bootstrap=2000, seed=0)
    gold = [c["gold"] for c in curve]
    replayed = bench.assess(monitor, curve)
    assert replayed["replayed"] and replayed["first_warning"] is None  # point 3: 0.6 < 0.71
    assert replayed["judges_pick"]["point"] == 1 and replayed["fired"] == [False] * 4
    sens = bench.sensitivity(monitor, gold)
    assert sens["p1 z2"] == {"points_after_gold_peak": 1, "gold_lost_by_judges_pick": 0.0}  # point 2, no spread
    assert sens["p2 z1.5"]["points_after_gold_peak"] == 2  # point 3: 0.6 > 0.53
    assert sens["p2 z2"]["points_after_gold_peak"] is None and sens["p3 z1.5"]["points_after_gold_peak"] is None
    checks, warn, pick = bench.replay(monitor, patience=2, z=1.5)
    assert warn == 3 and checks[3]["divergence"] == pytest.approx(0.6) and pick == 1
    with pytest.raises(SystemExit, match="snapshot_every"):
        bench.assess(monitor, curve[:3])


def test_monitor_benchmark_early_rounds_make_the_monitor_round_the_next_feedback_round(tmp_path):
    """--early-rounds: the monitor recipe's one round labels the last early policy, its proxy and judges train
    on the early labels too, and the pushed PPO continues that policy and critic against SFT."""
    from gpt2_rlhf.pipeline import plan
    from gpt2_rlhf.stages import load_recipe

    bench = _load("monitor")
    early, shared = tmp_path / "early", tmp_path / "shared"
    labels = [early / "label_round1", early / "label"]
    overrides = bench.early_overrides(early, labels, shared)
    recipe = load_recipe(Path(__file__).resolve().parent.parent / "configs" / "monitor.yaml", overrides)
    steps = {s.stage: s for s in plan(recipe, shared)}
    assert steps["label"].recipe.label.policy == str(early / "ppo")
    # the early labels first, then the monitor round's own
    assert steps["reward"].recipe.reward.labels == [str(p) for p in labels] + [str(shared / "label")]
    ppo = steps["ppo"].recipe.ppo
    assert (ppo.policy_path, ppo.value_model_path, ppo.ref_path) == (
        str(early / "ppo"), str(early / "ppo" / "critic"), str(shared / "sft"))
    assert ppo.reward_model_path == str(shared / "reward") and ppo.kl_coef == 0.0
