"""Every metric module and the shared statistics, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpt2_rlhf.evaluation.metrics import LOCAL_METRICS, METRICS_DIR, MetricLoadError, load_metric
from gpt2_rlhf.evaluation.stats import (bootstrap_ci, cluster_counts, group_means, jackknife_ci, mean_statistic,
                                        metric_value, ratio_statistic, resample_counts, unique_ratio_loo)

NO_CI = {"bootstrap_samples": 0}


@pytest.fixture(scope="module")
def metric():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_metric(name)
        return cache[name]

    return get


def close(a, b):
    return a == pytest.approx(b, abs=1e-12)


# ----------------------------------------------------------------------------- shared statistics


def test_resample_counts_are_seeded_draws_of_n_items():
    a = np.concatenate(list(resample_counts(5, 300, seed=3, chunk=128)))
    b = np.concatenate(list(resample_counts(5, 300, seed=3, chunk=128)))
    assert a.shape == (300, 5) and (a.sum(1) == 5).all() and (a == b).all()
    assert not (a == np.concatenate(list(resample_counts(5, 300, seed=4, chunk=128)))).all()


@pytest.mark.parametrize("counts, expected", [
    ([[1, 1, 1]], [2.0]),          # the full sample: mean of 1, 2, 3
    ([[3, 0, 0]], [1.0]),          # item 0 drawn three times
    ([[0, 1, 2]], [(2 + 6) / 3]),  # 2 once, 3 twice
])
def test_mean_statistic_by_hand(counts, expected):
    assert mean_statistic(np.array([1.0, 2.0, 3.0]))(np.array(counts, float)).tolist() == pytest.approx(expected)


def test_ratio_statistic_by_hand_and_zero_denominator():
    stat = ratio_statistic(np.array([4.0, 1.0, 0.0]), np.array([2.0, 1.0, 0.0]))
    # (4 + 1) / (2 + 1); (0) / (0) -> 0; 2*4 / (2*2) = 2
    assert stat(np.array([[1, 1, 1], [0, 0, 3], [2, 0, 1]], float)).tolist() == pytest.approx([5 / 3, 0.0, 2.0])


@pytest.mark.parametrize("values, expected", [
    ([7.0], (None, None)),          # a single prompt: no interval
    ([2.5, 2.5, 2.5], (2.5, 2.5)),  # no spread: the interval is the point
    ([0.0, 1.0], (0.0, 1.0)),       # resample means are 0, .5, 1 w.p. 1/4, 1/2, 1/4: 2.5% -> 0, 97.5% -> 1
])
def test_bootstrap_ci_by_hand(values, expected):
    x = np.array(values)
    lo, hi = bootstrap_ci(mean_statistic(x), len(x), n_resamples=2000, seed=0)
    assert (lo, hi) == expected


def test_bootstrap_ci_contains_the_mean_and_is_seeded():
    x = np.random.default_rng(0).normal(size=50)
    ci = bootstrap_ci(mean_statistic(x), 50, 500, seed=1)
    assert ci[0] < x.mean() < ci[1]
    assert ci == bootstrap_ci(mean_statistic(x), 50, 500, seed=1)
    assert bootstrap_ci(mean_statistic(x), 50, 0, seed=1) == (None, None)


def test_unique_ratio_leave_one_out_by_hand():
    # ids per item: {0,1,0}, {0,1}, {2}: 3 unique / 6 total; leaving out item 0 -> 3/3, item 1 -> 3/4,
    # item 2 (the only holder of id 2) -> 2/5
    value, loo = unique_ratio_loo([np.array([0, 1, 0]), np.array([0, 1]), np.array([2])])
    assert close(value, 0.5) and loo.tolist() == pytest.approx([1.0, 0.75, 0.4])


def test_jackknife_ci_by_hand():
    loo = np.array([1.0, 0.75, 0.4])
    # mean .716667; squared deviations sum .181667; se = sqrt(2/3 * .181667) = .348010; z = 1.959964
    lo, hi = jackknife_ci(0.5, loo, 0.95)
    assert lo == pytest.approx(0.5 - 1.959964 * 0.348010, abs=1e-5) and hi == pytest.approx(0.5 + 0.682085, abs=1e-5)
    assert jackknife_ci(0.5, loo, 0.95, (0.0, 1.0)) == (0.0, 1.0)
    assert jackknife_ci(0.5, np.array([0.5])) == (None, None)


def test_group_means_by_hand():
    # sample-major: two passes over three prompts; prompt 0 got 1 and 3, prompt 1 got 2 and 2, prompt 2 got 0 and 5
    got = group_means([1.0, 2.0, 0.0, 3.0, 2.0, 5.0], [0, 1, 2, 0, 1, 2])
    assert got.tolist() == [2.0, 2.0, 2.5]
    assert group_means([4.0, 6.0, 1.0], [1, 1, 0]).tolist() == [1.0, 5.0]  # unequal group sizes
    x = np.array([0.1, 0.7, 1 / 3])  # one response per prompt: the values themselves, bit for bit
    assert group_means(x, [0, 1, 2]).tolist() == x.tolist()
    with pytest.raises(ValueError, match=r"group\(s\) \[1\] have no values"):
        group_means([1.0, 2.0], [0, 2])
    with pytest.raises(ValueError, match="2 values but 3 group indices"):
        group_means([1.0, 2.0], [0, 1, 1])


def test_cluster_counts_give_each_member_its_groups_count():
    c = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]])  # two resamples over three prompts
    assert cluster_counts([0, 1, 2, 0, 1, 2])(c).tolist() == [[2, 0, 1, 2, 0, 1], [0, 3, 0, 0, 3, 0]]


def test_metric_value_rejects_non_finite():
    assert metric_value(np.float32(1.5), (None, None), 1) == {"value": 1.5, "ci_low": None, "ci_high": None, "n": 1}
    with pytest.raises(ValueError, match="not finite"):
        metric_value(float("nan"), (None, None), 1)


# ----------------------------------------------------------------------------- reward (mean score)


@pytest.mark.parametrize("scores, value", [([1.0, 2.0, 3.0], 2.0), ([-0.5], -0.5), ([0.0, 0.0], 0.0)])
def test_reward_mean(metric, scores, value):
    out = metric("reward").compute(scores=scores, **NO_CI)
    assert out == {"value": value, "ci_low": None, "ci_high": None, "n": len(scores)}


def test_reward_single_prompt_has_no_ci_even_with_bootstrap(metric):
    assert metric("reward").compute(scores=[4.0], bootstrap_samples=100)["ci_low"] is None


def test_reward_ci_bounds_the_mean(metric):
    out = metric("reward").compute(scores=[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], bootstrap_samples=500, seed=0)
    assert out["ci_low"] < 2.5 < out["ci_high"] and out["n"] == 6


def test_reward_empty_is_an_error(metric):
    with pytest.raises(ValueError, match="no scores"):
        metric("reward").compute(scores=[])


# ----------------------------------------------------------------------------- win rate


@pytest.mark.parametrize("a, b, kwargs, expected", [
    ([1, 0, 2, 5], [0, 0, 3, 1], {}, (0.5, 0.25, 0.25)),       # win, tie, loss, win
    ([1, 1, 1], [1, 1, 1], {}, (0.0, 1.0, 0.0)),                 # identical responses: all ties
    ([2.0], [1.0], {}, (1.0, 0.0, 0.0)),                         # a single prompt
    ([1.0, 1.4, 0.0], [1.2, 1.0, 1.0], {"tie_tolerance": 0.3}, (1 / 3, 1 / 3, 1 / 3)),  # |.2| tie, .4 win, -1 loss
])
def test_win_rate_by_hand(metric, a, b, kwargs, expected):
    out = metric("win_rate").compute(scores_a=a, scores_b=b, **kwargs, **NO_CI)
    assert (out["win"], out["tie"], out["loss"]) == pytest.approx(expected)
    assert out["n"] == len(a) and out["ci_low"] is None


def test_win_rate_ci_is_of_the_win_fraction(metric):
    out = metric("win_rate").compute(scores_a=[1, 1, 0, 0], scores_b=[0, 0, 0, 1], bootstrap_samples=500, seed=0)
    assert out["win"] == 0.5 and 0.0 <= out["ci_low"] <= 0.5 <= out["ci_high"] <= 1.0


@pytest.mark.parametrize("a, b, half", [
    ([1, 0, 2, 5], [0, 0, 3, 1], 0.625),  # 2 wins, 1 tie, 1 loss: (2 + 0.5) / 4
    ([1, 1, 1], [1, 1, 1], 0.5),          # all ties: a coin flip, not a loss
    ([0, 0], [1, 1], 0.0),
])
def test_win_rate_ties_half_by_hand(metric, a, b, half):
    out = metric("win_rate").compute(scores_a=a, scores_b=b, **NO_CI)
    assert out["win_rate_ties_half"] == pytest.approx(half) == out["win"] + out["tie"] / 2
    assert out["win_rate_ties_half_ci_low"] is None and out["win_rate_ties_half_ci_high"] is None


def test_win_rate_ties_half_has_its_own_ci(metric):
    # every prompt a tie or a win: the win fraction's interval is wide, ties-half sits in [0.5, 1]
    out = metric("win_rate").compute(scores_a=[1, 1, 0, 0, 1, 0], scores_b=[0, 0, 0, 0, 0, 0],
                                     bootstrap_samples=500, seed=0)
    assert out["win_rate_ties_half"] == 0.75
    assert 0.5 <= out["win_rate_ties_half_ci_low"] <= 0.75 <= out["win_rate_ties_half_ci_high"] <= 1.0
    assert out["win_rate_ties_half_ci_low"] > out["ci_low"]  # the same resamples, half a point per tie more


# ----------------------------------------------------------------------------- reward improvement


def test_reward_improvement_by_hand(metric):
    out = metric("reward_improvement").compute(scores_a=[1, 3], scores_b=[0, 2], raw_a=[3, 5], raw_b=[2, 4])
    # difference 1; std([0, 2], ddof=1) = sqrt(2); raw means 4 vs 3 -> +33.3%
    assert close(out["difference"], 1.0) and close(out["reference_std"], math.sqrt(2))
    assert close(out["sd_units"], 1 / math.sqrt(2)) and close(out["percent"], 100 / 3)


def test_reward_improvement_reference_std_and_negative_base(metric):
    out = metric("reward_improvement").compute(scores_a=[0.5], scores_b=[-0.5], raw_a=[-1.0], raw_b=[-2.0],
                                               reference_std=0.5)
    # a single prompt works once the SD unit is given; percent uses |raw_b|: (-1 - -2) / 2 = +50%
    assert out == {"difference": 1.0, "sd_units": 2.0, "reference_std": 0.5, "percent": 50.0}


def test_reward_improvement_percent_absent_at_zero_base(metric):
    out = metric("reward_improvement").compute(scores_a=[1, 2], scores_b=[0, 1], raw_a=[1, 1], raw_b=[1, -1])
    assert "percent" not in out and close(out["sd_units"], 1 / math.sqrt(0.5))


def test_reward_improvement_paired_interval_by_hand(metric):
    """The interval resamples prompts, A's and B's scores of a prompt together: with every per-prompt
    difference 1.0 each resample's mean difference is 1.0, so the interval is [1, 1] (unpaired, it would not
    be); sd_units' interval is it over the fixed unit."""
    ri = metric("reward_improvement")
    out = ri.compute(scores_a=[1, 2, 5], scores_b=[0, 1, 4], raw_a=[1, 2, 5], raw_b=[0, 1, 4], reference_std=2.0,
                     bootstrap_samples=200, seed=3)
    assert out["difference_ci_low"] == pytest.approx(1.0) and out["difference_ci_high"] == pytest.approx(1.0)
    assert out["sd_units_ci_low"] == pytest.approx(0.5) and out["sd_units_ci_high"] == pytest.approx(0.5)
    # differences 2 and 0: every resample's mean is 0, 1 or 2, and the 95% interval spans them
    out = ri.compute(scores_a=[2, 0], scores_b=[0, 0], raw_a=[2, 0], raw_b=[1, 1], reference_std=1.0,
                     bootstrap_samples=400, seed=0)
    assert (out["difference_ci_low"], out["difference_ci_high"]) == (0.0, 2.0) and out["difference"] == 1.0
    one = ri.compute(scores_a=[1], scores_b=[0], raw_a=[1], raw_b=[1], reference_std=1.0, bootstrap_samples=200)
    assert one["difference_ci_low"] is None and one["sd_units_ci_high"] is None  # one prompt: no interval
    none = ri.compute(scores_a=[1, 2], scores_b=[0, 1], raw_a=[1, 2], raw_b=[1, 1], bootstrap_samples=0)
    assert none["difference_ci_low"] is None  # no resamples: no interval
    assert "difference_ci_low" not in ri.compute(scores_a=[1, 2], scores_b=[0, 1], raw_a=[1, 2], raw_b=[1, 1])


def test_reward_improvement_needs_a_positive_unit(metric):
    with pytest.raises(ValueError, match="reference_std"):
        metric("reward_improvement").compute(scores_a=[1, 2], scores_b=[1, 1], raw_a=[1, 2], raw_b=[1, 1])


# ----------------------------------------------------------------------------- KL


@pytest.mark.parametrize("lp, rp, value", [
    ([[-1.0, -2.0], []], [[-1.5, -3.0], []], 0.75),  # (0.5 + 1.0) and an empty response (0) -> mean .75
    ([[-2.0]], [[-1.0]], -1.0),                      # a single response; the estimate can be negative
    ([[-1.0, -1.0]], [[-1.0, -1.0]], 0.0),           # the reference itself
])
def test_kl_by_hand(metric, lp, rp, value):
    out = metric("kl").compute(logprobs=lp, ref_logprobs=rp, **NO_CI)
    assert close(out["value"], value) and out["n"] == len(lp)


def test_kl_length_mismatch_names_the_response(metric):
    with pytest.raises(ValueError, match="response 1 has 1 policy"):
        metric("kl").compute(logprobs=[[-1.0], [-1.0]], ref_logprobs=[[-1.0], [-1.0, -2.0]])


# ----------------------------------------------------------------------------- perplexity


@pytest.mark.parametrize("lp, value", [
    ([[-1.0, -3.0], [-2.0]], math.e ** 2),     # token-weighted: 6 nats / 3 tokens
    ([[-math.log(2)]], 2.0),                   # one token at p = 1/2
    ([[-math.log(4), -math.log(4)], []], 4.0),  # an empty response adds no tokens
])
def test_perplexity_by_hand(metric, lp, value):
    out = metric("perplexity").compute(logprobs=lp, **NO_CI)
    assert out["value"] == pytest.approx(value) and out["n"] == len(lp)


def test_perplexity_ci_is_exp_of_the_nll_interval(metric):
    out = metric("perplexity").compute(logprobs=[[-1.0], [-3.0], [-2.0], [-2.0]], bootstrap_samples=500, seed=0)
    assert math.e <= out["ci_low"] < out["value"] < out["ci_high"] <= math.e ** 3


def test_perplexity_without_tokens_is_an_error(metric):
    with pytest.raises(ValueError, match="no tokens"):
        metric("perplexity").compute(logprobs=[[], []])


# ----------------------------------------------------------------------------- diversity


@pytest.mark.parametrize("responses, d1, d2, uniq", [
    (["a b a", "a b", ""], 2 / 5, 2 / 3, 1.0),   # unigrams a b a a b; bigrams (a b)(b a)(a b); "" adds none
    (["x y", "x y"], 2 / 4, 1 / 2, 1 / 2),       # a repeated response
    (["", ""], 0.0, 0.0, 1 / 2),                 # empty responses: no n-grams -> 0
    (["one"], 1.0, 0.0, 1.0),                    # a single one-word response has no bigram
    (["A a"], 1.0, 1.0, 1.0),                    # case is kept
])
def test_diversity_by_hand(metric, responses, d1, d2, uniq):
    out = metric("diversity").compute(responses=responses, **NO_CI)
    assert close(out["distinct_1"]["value"], d1) and close(out["distinct_2"]["value"], d2)
    assert close(out["unique_responses"]["value"], uniq)
    assert all(v["n"] == len(responses) and v["ci_low"] is None for v in out.values())


def test_diversity_ci_is_the_jackknife_interval(metric):
    out = metric("diversity").compute(responses=["a b c", "d e f", "g h i", "a b c", "x y"], bootstrap_samples=10)
    for v in out.values():
        assert 0.0 <= v["ci_low"] <= v["value"] <= v["ci_high"] <= 1.0


# ----------------------------------------------------------------------------- response stats


@pytest.mark.parametrize("lengths, eos, length, rate", [
    ([0, 4], [True, False], 2.0, 0.5),   # an empty response that ended at once
    ([3], [True], 3.0, 1.0),             # a single prompt
    ([48, 48, 48], [False] * 3, 48.0, 0.0),
])
def test_response_stats_by_hand(metric, lengths, eos, length, rate):
    out = metric("response_stats").compute(lengths=lengths, eos=eos, **NO_CI)
    assert out["response_length"]["value"] == length and out["eos_rate"]["value"] == rate


def test_response_stats_take_per_prompt_means(metric):
    # two prompts, each the mean of its responses: lengths 2.5 and 4, half of one prompt's responses ended
    out = metric("response_stats").compute(lengths=[2.5, 4.0], eos=[0.5, 1.0], **NO_CI)
    assert out["response_length"]["value"] == 3.25 and out["eos_rate"]["value"] == 0.75
    assert out["eos_rate"]["n"] == 2
    with pytest.raises(ValueError, match="EOS rate outside"):
        metric("response_stats").compute(lengths=[1.0], eos=[1.5], **NO_CI)


# ----------------------------------------------------------------------------- proxy vs gold


@pytest.mark.parametrize("proxy, gold, mean, corr", [
    ([0, 1, 2], [0.0, 0.5, 1.0], 0.5, 1.0),
    ([0, 1, 2], [1.0, 0.5, 0.0], 0.5, -1.0),        # the proxy rewards what the judge punishes
    ([1, 2, 3, 4], [0.0, 1.0, 1.0, 0.0], 0.5, 0.0),  # uncorrelated
    ([0, 1], [0.3, 0.3], 0.3, None),                # constant gold: correlation undefined -> absent
])
def test_proxy_gold_by_hand(metric, proxy, gold, mean, corr):
    out = metric("proxy_gold").compute(proxy=proxy, gold=gold, **NO_CI)
    assert close(out["gold"]["value"], mean)
    if corr is None:
        assert "correlation" not in out
    else:
        assert out["correlation"]["value"] == pytest.approx(corr, abs=1e-12)


# ----------------------------------------------------------------------------- reward-model accuracy


@pytest.mark.parametrize("c, r, cl, rl, acc, margin, length_acc", [
    ([2, 1], [1, 1], [5, 3], [4, 9], 0.75, 0.5, 0.5),   # a win and a tie; longer wins once
    ([0, 0, 0], [1, 1, 1], [1, 1, 1], [1, 1, 1], 0.0, -1.0, 0.5),  # always wrong; equal lengths tie
    ([3.0], [1.0], [10], [2], 1.0, 2.0, 1.0),           # a single pair
])
def test_rm_accuracy_by_hand(metric, c, r, cl, rl, acc, margin, length_acc):
    out = metric("rm_accuracy").compute(chosen_scores=c, rejected_scores=r, chosen_lengths=cl, rejected_lengths=rl,
                                        **NO_CI)
    assert (out["accuracy"], out["mean_margin"], out["length_baseline_accuracy"]) == pytest.approx((acc, margin, length_acc))
    assert out["n_pairs"] == len(c) and out["accuracy_ci_low"] is None


# ----------------------------------------------------------------------------- loading


def test_every_shipped_metric_loads_by_name_and_path(metric):
    import evaluate

    for name in LOCAL_METRICS:
        assert isinstance(metric(name), evaluate.Metric)
    assert load_metric(METRICS_DIR / "reward").compute(scores=[1.0], **NO_CI)["value"] == 1.0
    assert load_metric(METRICS_DIR / "reward" / "reward.py").compute(scores=[3.0], **NO_CI)["value"] == 3.0


def test_hub_metric_offline_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MetricLoadError) as e:
        load_metric("rouge")
    assert "'rouge'" in str(e.value) and "\n" not in str(e.value) and "HF_HUB_OFFLINE" in str(e.value)


def test_folder_without_script_is_an_error(tmp_path):
    (tmp_path / "mymetric").mkdir()
    with pytest.raises(MetricLoadError, match="no script mymetric.py"):
        load_metric(tmp_path / "mymetric")


def test_unwritable_modules_cache_falls_back_to_a_private_one(monkeypatch):
    import errno

    import evaluate

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/home/user/.cache/huggingface/modules")

    monkeypatch.setattr(evaluate, "load", read_only)
    assert load_metric("win_rate").compute(scores_a=[1.0], scores_b=[0.0], **NO_CI)["win"] == 1.0


# ----------------------------------------------------------------------------- several responses per prompt


def test_kl_averages_each_prompts_responses_first(metric):
    # prompt 0: responses with KL 1 and 3; prompt 1: KL 0 and 0 (sample-major order)
    lp, rp = [[-1.0], [-2.0], [0.0], [-2.0]], [[-2.0], [-2.0], [-3.0], [-2.0]]
    out = metric("kl").compute(logprobs=lp, ref_logprobs=rp, groups=[0, 1, 0, 1], **NO_CI)
    assert out == {"value": 1.0, "ci_low": None, "ci_high": None, "n": 2}


def test_diversity_over_all_responses_jackknife_over_prompts(metric):
    responses = ["a b", "a c", "a b", "d"]  # prompt 0: "a b", "a b"; prompt 1: "a c", "d"
    out = metric("diversity").compute(responses=responses, groups=[0, 1, 0, 1], bootstrap_samples=1, confidence=0.95)
    flat = metric("diversity").compute(responses=responses, bootstrap_samples=1, confidence=0.95)
    for name in ("distinct_1", "distinct_2", "unique_responses"):
        assert out[name]["value"] == flat[name]["value"] and out[name]["n"] == 2 and flat[name]["n"] == 4
    assert out["unique_responses"]["value"] == 3 / 4 and out["distinct_1"]["value"] == 4 / 7
    # leave out prompt 0: 3 words, 3 unique -> 1; leave out prompt 1: "a b a b" -> 2 / 4
    value, loo = unique_ratio_loo([np.array([0, 1, 0, 1]), np.array([0, 2, 3])])
    se = math.sqrt(1 / 2 * ((1.0 - 0.75) ** 2 + (0.5 - 0.75) ** 2))
    assert value == 4 / 7 and loo.tolist() == [1.0, 0.5]
    assert out["distinct_1"]["ci_low"] == pytest.approx(max(0.0, 4 / 7 - 1.959963984540054 * se))


def test_constant_per_prompt_means_give_a_degenerate_interval(metric):
    """The bootstrap resamples prompts, not responses: two responses per prompt that differ (0 and 1) but
    average the same on every prompt leave no spread to resample. A bootstrap over responses would not."""
    gold = [0.0, 1.0, 0.25, 1.0, 0.0, 0.75]  # 3 prompts x 2 passes, sample-major: means 0.5, 0.5, 0.5
    groups = [0, 1, 2, 0, 1, 2]
    boot = {"bootstrap_samples": 300, "seed": 0}
    g = metric("proxy_gold").compute(proxy=[0.0, 2.0, 1.0, 1.0, 0.0, 3.0], gold=gold, groups=groups, **boot)
    assert g["gold"] == {"value": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": 3}
    assert "correlation" in g and g["correlation"]["n"] == 3  # over all 6 responses, prompts resampled
    responses = metric("reward").compute(scores=gold, **boot)
    assert responses["ci_low"] < 0.5 < responses["ci_high"]  # what resampling responses would claim
    lp = [[v] for v in gold]
    kl = metric("kl").compute(logprobs=lp, ref_logprobs=[[0.0]] * 6, groups=groups, **boot)
    assert (kl["value"], kl["ci_low"], kl["ci_high"], kl["n"]) == (0.5, 0.5, 0.5, 3)


def test_proxy_gold_correlation_is_over_responses_with_prompts_resampled(metric):
    proxy, gold = [0.0, 1.0, 2.0, 3.0], [0.0, 0.2, 0.9, 1.0]
    flat = metric("proxy_gold").compute(proxy=proxy, gold=gold, **NO_CI)
    grouped = metric("proxy_gold").compute(proxy=proxy, gold=gold, groups=[0, 1, 0, 1], **NO_CI)
    assert grouped["correlation"]["value"] == flat["correlation"]["value"]  # the same responses
    assert grouped["gold"]["value"] == pytest.approx(flat["gold"]["value"]) and grouped["gold"]["n"] == 2
    # one response per prompt: groups 0..n-1 give exactly the ungrouped numbers
    boot = {"bootstrap_samples": 200, "seed": 3}
    assert (metric("proxy_gold").compute(proxy=proxy, gold=gold, groups=[0, 1, 2, 3], **boot)
            == metric("proxy_gold").compute(proxy=proxy, gold=gold, **boot))
