"""The reward-hacking monitor: its maths by hand, the warning and the judges' pick, and the stage on the
micro recipe (judges from the reward stage, no gold needed)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gpt2_rlhf.train.ppo.monitor import (bootstrap_se, distinct_n, ensemble_disagreement, first_warning, judges_pick,
                                        records, spread, warnings)

from conftest import copy_run

# ----------------------------------------------------------------------------- maths by hand


def test_distinct_n_by_hand():
    texts = ["a b a b", "a b"]
    assert distinct_n(texts, 1) == pytest.approx(2 / 6)  # a, b among 6 words
    assert distinct_n(texts, 2) == pytest.approx(2 / 4)  # (a b), (b a) among (a b), (b a), (a b), (a b)
    assert distinct_n(["one"], 2) == 0.0 and distinct_n([], 1) == 0.0


def test_bootstrap_se_by_hand():
    assert bootstrap_se(torch.ones(5), 200, 0) == 0.0  # no spread, no noise
    assert bootstrap_se(torch.tensor([3.0]), 200, 0) == 0.0
    # two prompts 0 and 2: a resampled mean is 0, 1 or 2 with p 1/4, 1/2, 1/4: variance 1/2
    assert bootstrap_se(torch.tensor([0.0, 2.0]), 20000, 0) == pytest.approx(math.sqrt(0.5), rel=0.03)
    assert bootstrap_se(torch.tensor([0.0, 2.0]), 500, 1) == bootstrap_se(torch.tensor([0.0, 2.0]), 500, 1)


def test_ensemble_disagreement_by_hand():
    scores = torch.tensor([[0.0, 2.0], [2.0, 2.0]])  # 2 judges x 2 responses
    assert ensemble_disagreement(scores) == pytest.approx(math.sqrt(2) / 2)  # std sqrt(2), then 0
    assert ensemble_disagreement(torch.tensor([[1.0, 5.0]])) == 0.0  # one judge: no ensemble


def _flat(means, P=4):
    """(T,) means -> (T, P) per-prompt scores with no spread around them (a zero noise band)."""
    return torch.tensor(means).unsqueeze(1).repeat(1, P)


def test_warning_fires_when_the_proxy_rises_past_the_judges_best():
    proxy = _flat([0.0, 1.0, 2.0, 3.0, 4.0])
    judge = _flat([0.0, 1.0, 0.5, 0.4, 0.3])  # best at point 1
    checks = warnings(proxy, judge, patience=2, z=2.0)
    assert [c["best"] for c in checks] == [0, 1, 1, 1, 1]
    assert [c["fired"] for c in checks] == [False, False, False, True, True]  # 2 points without a new best
    assert checks[3]["proxy_rise"] == pytest.approx(2.0) and checks[3]["judge_drop"] == pytest.approx(0.6)
    assert checks[3]["band"] == 0.0
    assert first_warning(checks) == 3
    assert first_warning(warnings(proxy, judge, patience=1, z=2.0)) == 2


def test_records_and_the_one_standard_error_pick_by_hand():
    assert records([0.0, -0.1, 0.2, 0.2, 0.5, 0.1]) == [0, 2, 4]  # a tie is not a new best
    # per prompt +-1 around each mean: point 2 beats point 0 by 0.3 on average, its paired gap is
    # (0.3 + 1, 0.3 - 1, 0.3 + 1, 0.3 - 1): a bootstrap se of about 0.5, so 0.3 is within one se
    noise = torch.tensor([1.0, -1.0, 1.0, -1.0])
    judge = torch.stack([torch.zeros(4), torch.full((4,), -0.5), 0.3 + noise])  # (3 points, 4 prompts)
    assert judges_pick(judge, None) == 2  # se_rule 0: the best point
    assert judges_pick(judge, None, se_rule=1.0, samples=2000) == 0  # within one se of the best: the earliest
    assert judges_pick(judge, None, se_rule=0.5, samples=2000) == 2  # 0.3 > 0.5 * ~0.5
    assert judges_pick(judge, 1, se_rule=1.0) == 0  # no candidates after the first warning
    # without noise a later best is always preferred: the gap's se is 0
    assert judges_pick(_flat([0.0, 0.1, 0.05]), None, se_rule=1.0) == 1


def test_no_warning_while_the_judges_keep_rising_or_the_proxy_stays_in_its_band():
    rising = _flat([0.0, 0.1, 0.2, 0.3, 0.4])
    assert first_warning(warnings(_flat([0.0, 1.0, 2.0, 3.0, 4.0]), rising, 2, 2.0)) is None
    # the proxy "rises" by 0.1 on average, but per prompt by +1.1, -0.9, +1.1, -0.9: its band is ~1 wide
    noisy = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.1, -0.9, 1.1, -0.9], [1.1, -0.9, 1.1, -0.9]])
    flat = _flat([0.0, 0.0, 0.0, 0.0])  # the judges' best is the start (the earliest of equal means)
    checks = warnings(noisy, flat, patience=2, z=2.0)
    assert checks[3]["proxy_rise"] == pytest.approx(0.1) and checks[3]["divergence"] == pytest.approx(0.1)
    assert checks[3]["band"] > 0.1 and first_warning(checks) is None
    # the same rise with no spread fires
    assert first_warning(warnings(_flat([0.0, 0.0, 0.1, 0.1]), flat, patience=2, z=2.0)) == 2


def test_warning_fires_when_the_judges_fall_while_the_proxy_holds_not_when_both_fall():
    judge = _flat([0.0, 0.5, 0.2, -0.3])  # best at point 1, then falling
    holds = warnings(_flat([0.0, 0.4, 0.4, 0.4]), judge, patience=1, z=2.0)
    assert [c["fired"] for c in holds] == [False, False, True, True]
    assert holds[3]["proxy_rise"] == pytest.approx(0.0) and holds[3]["judge_drop"] == pytest.approx(0.8)
    assert holds[3]["divergence"] == pytest.approx(0.8)
    # the proxy falls as far as the judges: a worse policy by both, not a divergence
    assert first_warning(warnings(_flat([0.0, 0.5, 0.2, -0.3]), judge, patience=1, z=2.0)) is None
    # the proxy falls less than the judges: the gap widens by the difference
    partly = warnings(_flat([0.0, 0.5, 0.4, 0.3]), judge, patience=1, z=2.0)
    assert partly[3]["divergence"] == pytest.approx(0.6) and partly[3]["fired"]


def test_the_divergence_is_in_units_of_each_scores_spread_at_the_first_point():
    """A proxy on another scale (a reward function in [0, 1]) is compared with the judges in units of
    each one's spread over the prompts at point 0: here 0.5 for the proxy, 2 for the judges."""
    start_p, start_j = torch.tensor([0.0, 0.5, 1.0]), torch.tensor([-2.0, 0.0, 2.0])  # std 0.5 and 2
    proxy = torch.stack([start_p, start_p + 0.25, start_p + 0.25])  # +0.25: half a spread
    judge = torch.stack([start_j, start_j + 1.0, start_j - 1.0])  # best at 1, then -2.0: one spread down
    checks = warnings(proxy, judge, patience=1, z=2.0)
    assert checks[2]["proxy_rise"] == pytest.approx(0.0) and checks[2]["judge_drop"] == pytest.approx(2.0)
    assert checks[2]["divergence"] == pytest.approx(1.0) and checks[2]["band"] == 0.0 and checks[2]["fired"]
    assert spread(torch.tensor([0.3, 0.3])) == 1.0 and spread(torch.tensor([1.0])) == 1.0


def test_the_judges_best_is_the_earliest_maximum():
    checks = warnings(_flat([0.0, 1.0, 2.0]), _flat([0.5, 0.5, 0.2]), patience=1, z=0.0)
    assert [c["best"] for c in checks] == [0, 0, 0] and [c["fired"] for c in checks] == [False, True, True]


# ----------------------------------------------------------------------------- the trainer: stop, keep best


def _scripted_monitor(cfg, tok, ref, proxy_means, judge_means):
    """A Monitor whose proxy and judge return scripted values per measurement (call n -> means[n])."""
    from gpt2_rlhf.train.ppo.monitor import Monitor

    calls = {"proxy": 0, "judge": 0}

    def scripted(key, means):
        def fn(prompts, responses):
            v = means[min(calls[key], len(means) - 1)]
            calls[key] += 1
            return torch.full((len(prompts),), float(v))
        return fn

    from test_ppo_trainer import PROMPTS

    return Monitor(cfg, PROMPTS[:4], tok, ref, scripted("proxy", proxy_means),
                   {"j": scripted("judge", judge_means)}, gold=None, seed=0)


def test_early_stop_and_keep_best_in_the_trainer(tmp_path):
    from test_ppo_trainer import _cfg, _params, _trainer, build_tiny_models

    from gpt2_rlhf.train.modeling import load_causal_lm, load_tokenizer

    tiny = build_tiny_models(tmp_path / "models")
    cfg = _cfg(total_episodes=48, batch_size=8, monitor_every=1, monitor_patience=1, monitor_z=2.0,
               monitor_keep_best=True, monitor_early_stop=True, eval_batch_size=4)
    tok = load_tokenizer(tiny["policy"])
    ref = load_causal_lm(tiny["policy"])
    # points at updates 0, 1, 2, ...: the judges peak at update 1, the proxy keeps rising
    monitor = _scripted_monitor(cfg, tok, ref, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.0, 1.0, 0.5, 0.2, 0.1, 0.0, 0.0])
    tr = _trainer(tiny, cfg, monitor=monitor, best_dir=tmp_path / "best", metrics_path=tmp_path / "m.jsonl")
    rows = tr.train()
    # update 2: one point without a new best, proxy +1 with no spread -> warning -> stop (of 6 updates)
    assert tr.stopped_at == 2 and len(rows) == 2
    assert rows[0]["monitor_warning"] == 0 and rows[1]["monitor_warning"] == 1 and "monitor_message" in rows[1]
    written = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert written[1]["monitor_proxy"] == pytest.approx(2.0) and written[1]["monitor_judge"] == pytest.approx(0.5)
    assert monitor.best_index() == 1
    after_training = _params(tr.policy)
    assert tr.load_best() == 1  # the policy after update 1 comes back
    best = _params(tr.policy)
    assert any(not torch.equal(best[k], after_training[k]) for k in best)
    report = monitor.report(len(rows), cfg.num_updates, {}, "update 1", tr.stopped_at)
    assert report["verdict"] == "warning" and report["first_warning"]["update"] == 2
    assert report["judges_pick"]["update"] == 1 and report["stopped_early_at"] == 2
    assert [p["update"] for p in report["points"]] == [0, 1, 2]


@pytest.mark.parametrize("aggregate,expected", [("min", -0.5), ("mean", 0.25)])
def test_judges_combine_per_response_by_the_aggregate(tmp_path, aggregate, expected):
    """Two judges scoring every response +1.0 and -0.5: the judge column is their minimum (the worst case,
    the default) or their mean; each judge keeps its own mean."""
    from test_ppo_trainer import PROMPTS, _cfg, build_tiny_models

    from gpt2_rlhf.train.modeling import load_causal_lm, load_tokenizer
    from gpt2_rlhf.train.ppo.monitor import Monitor

    tiny = build_tiny_models(tmp_path / "models")
    cfg = _cfg(monitor_every=1, eval_batch_size=4, monitor_aggregate=aggregate)
    tok, ref = load_tokenizer(tiny["policy"]), load_causal_lm(tiny["policy"])
    const = lambda v: (lambda ps, rs: torch.full((len(ps),), v))
    monitor = Monitor(cfg, PROMPTS[:4], tok, ref, const(0.0), {"a": const(1.0), "b": const(-0.5)})
    point = monitor.measure(ref, 0)
    assert point["judge"] == pytest.approx(expected) and point["judges"] == pytest.approx({"a": 1.0, "b": -0.5})
    assert point["disagreement"] == pytest.approx(torch.tensor([1.0, -0.5]).std().item())
    assert monitor.report(0, 1, {}, "last", None)["settings"]["aggregate"] == aggregate


def test_the_judges_pick_ignores_points_after_the_first_warning(tmp_path):
    """The judges fall after update 1 and the proxy keeps rising (a warning at update 2); a late judge
    rise at update 4 is not picked: by then the judges may be hacked too."""
    from test_ppo_trainer import _cfg, _trainer, build_tiny_models

    from gpt2_rlhf.train.modeling import load_causal_lm, load_tokenizer

    tiny = build_tiny_models(tmp_path / "models")
    cfg = _cfg(total_episodes=32, batch_size=8, monitor_every=1, monitor_patience=1, eval_batch_size=4)
    tok, ref = load_tokenizer(tiny["policy"]), load_causal_lm(tiny["policy"])
    monitor = _scripted_monitor(cfg, tok, ref, [0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.5, 0.2, 2.0])
    _trainer(tiny, cfg, monitor=monitor).train()
    assert [p["update"] for p in monitor.points] == [0, 1, 2, 3, 4]
    assert monitor.points[2]["check"]["fired"] and max(p["judge"] for p in monitor.points) == 2.0
    assert monitor.best_index() == 1
    assert monitor.report(4, 4, {}, "last", None)["judges_pick"]["update"] == 1


def test_monitor_state_survives_a_resume(tmp_path):
    from test_ppo_trainer import _cfg, _trainer, build_tiny_models

    from gpt2_rlhf.train.modeling import load_causal_lm, load_tokenizer

    tiny = build_tiny_models(tmp_path / "models")
    cfg = _cfg(total_episodes=32, batch_size=8, monitor_every=2, save_every=2, eval_batch_size=4)
    tok, ref = load_tokenizer(tiny["policy"]), load_causal_lm(tiny["policy"])
    proxy, judge = [0.0, 1.0, 2.0], [0.0, 0.5, 0.7]
    a = _trainer(tiny, cfg, monitor=_scripted_monitor(cfg, tok, ref, proxy, judge), checkpoint_dir=tmp_path / "c")
    a.num_updates = 3  # stops after update 3 (checkpoint at 2)
    a.train()
    b = _trainer(tiny, cfg, monitor=_scripted_monitor(cfg, tok, ref, proxy[2:], judge[2:]),
                 checkpoint_dir=tmp_path / "c")
    b.train(resume=True)
    assert [p["update"] for p in b.monitor.points] == [0, 2, 4]  # no second starting point after the resume
    assert [p["judge"] for p in b.monitor.points] == pytest.approx([0.0, 0.5, 0.7])


# ----------------------------------------------------------------------------- the stage on the micro recipe


@pytest.fixture(scope="module")
def judged_run(micro_run, tmp_path_factory):
    """micro_run with a reward stage that also trains a held-out judge and one seed judge, each on its pairs
    plus half as many augmented ones."""
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train import reward

    run = copy_run(micro_run, tmp_path_factory.mktemp("judged"), stages=("base", "sft"))
    recipe = load_recipe("micro", {"reward.judges": "1", "reward.judge_holdout": "0.25", "reward.max_steps": "3",
                                   "reward.judge_augment": "0.5"})
    reward.main(recipe, run)
    return run


def test_reward_stage_trains_and_reports_the_judges(judged_run):
    from gpt2_rlhf.train.modeling import RewardModel

    m = json.loads((judged_run / "reward" / "metrics.json").read_text())
    j = m["judges"]
    assert set(j["models"]) == {"holdout", "seed-101"}
    assert j["held_out_dataset_pairs"] == 64 and m["dataset_pairs"] == 192 and m["held_out_pairs"] == 64
    for name, own in (("holdout", 64), ("seed-101", 256)):  # its own pairs, then the augmented ones
        extra = j["models"][name]["augmented_pairs"]
        assert 0 < extra <= own // 2 and j["models"][name]["train_pairs"] == own + extra, name
    assert "augmented_pairs" not in m  # the proxy trains on the preference pairs only
    assert j["seconds"] > 0 and all(v["seconds"] > 0 for v in j["models"].values())
    ensemble = j["models"]["seed-101"]["accuracy"]
    assert j["proxy_accuracy_loss"] == pytest.approx(ensemble - m["accuracy"])
    proxy_w = RewardModel.load(judged_run / "reward").model.score.weight
    for name in ("holdout", "seed-101"):
        d = judged_run / "reward" / "judges" / name
        judge = RewardModel.load(d)
        assert judge.stats.std > 0 and "normalisation samples" in judge.stats.source
        assert not torch.equal(judge.model.score.weight, proxy_w)  # trained apart from the proxy


def test_monitor_on_the_micro_recipe(judged_run, tmp_path):
    """The stage with the monitor on (micro recipe, no gold used): metrics.jsonl columns, ppo/monitor.json,
    its overhead per update; keep_best makes the judges' pick the stage's policy."""
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train.ppo import main

    run = copy_run(judged_run, tmp_path / "run", stages=("base", "sft", "reward"))
    recipe = load_recipe("micro", {"ppo.monitor_every": "2", "ppo.monitor_prompts": "6", "ppo.monitor_keep_best": "true",
                                   "ppo.snapshot_every": "2"})
    out = main(recipe, run)
    mon = json.loads((out / "monitor.json").read_text())
    assert mon["settings"]["judges"] == ["holdout", "seed-101"] and mon["settings"]["prompts"] == 6
    assert [p["update"] for p in mon["points"]] == [0, 2, 4]
    for p in mon["points"]:
        for key in ("proxy", "proxy_se", "judge", "judge_se", "disagreement", "kl", "length", "distinct_1",
                    "distinct_2", "seconds"):
            assert math.isfinite(p[key]), key
        assert set(p["judges"]) == {"holdout", "seed-101"}
    assert mon["points"][0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the start is the reference
    assert mon["verdict"] in ("warning", "no warning") and mon["updates_done"] == 4
    assert mon["overhead_per_update_s"] == pytest.approx(mon["seconds"] / 4, abs=1e-3) and mon["seconds"] > 0
    pick = mon["judges_pick"]
    warned = mon["first_warning"]["point"] if mon["first_warning"] else 2
    assert pick["point"] == max(range(warned + 1), key=lambda i: mon["points"][i]["judge"])
    assert mon["settings"]["aggregate"] == "min"
    assert mon["policy_kept"] == f"update {pick['update']} (the judges' pick)"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [("monitor_proxy" in r) for r in rows] == [False, True, False, True]
    assert rows[1]["monitor_judge"] == pytest.approx(mon["points"][1]["judge"], abs=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["monitor"]["verdict"] == mon["verdict"]
    if pick["update"] not in (0, 4):  # the kept policy is the snapshot at the pick, not the last one
        from safetensors.torch import load_file

        kept, snap = load_file(out / "model.safetensors"), load_file(out / pick["path"] / "model.safetensors")
        assert all(torch.equal(kept[k], snap[k]) for k in kept)


def test_monitor_without_judges_measures_but_never_warns(micro_run, tmp_path):
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train.ppo import main

    run = copy_run(micro_run, tmp_path / "run")
    out = main(load_recipe("micro", {"ppo.monitor_every": "4", "ppo.monitor_prompts": "4"}), run)
    mon = json.loads((out / "monitor.json").read_text())
    assert mon["verdict"] == "no judges" and "judges_pick" not in mon
    assert [p["update"] for p in mon["points"]] == [0, 4] and "judge" not in mon["points"][0]


def test_bad_monitor_settings_are_one_line_errors():
    from gpt2_rlhf.train.config import ConfigError
    from gpt2_rlhf.stages import load_recipe

    with pytest.raises(ConfigError, match="monitor_patience"):
        load_recipe("micro", {"ppo.monitor_patience": "0"})
    with pytest.raises(ConfigError, match="judge_holdout"):
        load_recipe("micro", {"reward.judge_holdout": "1.0"})
