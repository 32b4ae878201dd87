"""Reward improvement of model A over model B: as a percentage and in standard deviations.

The seed model card claimed "Reward Improvement: up to 500%+" and "+69.6%"; this
module measures the same quantity honestly and next to a unit that means something:

    difference = mean(scores_a) - mean(scores_b)          (normalised RM scores)
    sd_units   = difference / reference_std               (reference_std: the SFT
                 responses' score std, passed in; default: std of scores_b, ddof=1)
    percent    = 100 * (mean(raw_a) - mean(raw_b)) / |mean(raw_b)|   (raw RM scores)

A pairwise reward model is trained with a shift-invariant loss, so its offset and
therefore `percent` are arbitrary; `percent` is absent when |mean(raw_b)| < 1e-8.

The interval of `difference` is a paired percentile bootstrap over prompts: A's and B's
per-prompt scores answer the same prompts, so a resample draws prompts and the statistic
is the mean of the per-prompt differences a_i - b_i (evaluation/stats.py). `sd_units`'
interval is that interval divided by the fixed `reference_std` (the unit is not
resampled). Both are None when there are fewer than 2 prompts or no resamples.
"""

import datasets
import evaluate
import numpy as np

from gpt2_rlhf.evaluation.stats import bootstrap_ci, mean_statistic

_DESCRIPTION = "Reward improvement of A over B: mean difference, in SD units, and as a percentage of B's raw mean."
_KWARGS_DESCRIPTION = """
Args:
    scores_a, scores_b (list of float): normalised RM scores of A's and B's responses.
    raw_a, raw_b (list of float): the raw RM scores of the same responses.
    reference_std (float, optional): the SD unit; default std(scores_b, ddof=1).
    bootstrap_samples (int): resamples of the paired CI (default None: no CI fields), seed (int), confidence (float).
Returns:
    difference, sd_units, reference_std (float); percent (float, absent when |mean(raw_b)| < 1e-8);
    difference_ci_low/_high, sd_units_ci_low/_high (float or None) when bootstrap_samples is given.
Examples:
    >>> load_metric("reward_improvement").compute(scores_a=[1, 3], scores_b=[0, 2], raw_a=[3, 5], raw_b=[2, 4])
    {'difference': 1.0, 'sd_units': 0.7071067811865475, 'reference_std': 1.4142135623730951, 'percent': 33.333333333333336}
"""
_CITATION = ""


class RewardImprovement(evaluate.Metric):
    def _info(self):
        v = datasets.Value("float64")
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"scores_a": v, "scores_b": v, "raw_a": v, "raw_b": v}),
        )

    def _compute(self, scores_a, scores_b, raw_a, raw_b, reference_std=None, bootstrap_samples=None, seed=0,
                 confidence=0.95):
        a, b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
        if a.size == 0 or b.size == 0:
            raise ValueError("reward_improvement: no scores")
        if reference_std is None:
            if b.size < 2:
                raise ValueError("reward_improvement: need reference_std or at least 2 scores of B for its std")
            reference_std = float(np.std(b, ddof=1))
        if not reference_std > 0:
            raise ValueError(f"reward_improvement: reference_std must be > 0, got {reference_std}")
        diff = float(a.mean() - b.mean())
        out = {"difference": diff, "sd_units": diff / reference_std, "reference_std": float(reference_std)}
        ra, rb = float(np.mean(raw_a)), float(np.mean(raw_b))
        if abs(rb) >= 1e-8:
            out["percent"] = 100.0 * (ra - rb) / abs(rb)
        if bootstrap_samples is not None:
            if a.shape != b.shape:
                raise ValueError(f"reward_improvement: a paired interval needs one score per prompt on both sides, "
                                 f"got {a.size} and {b.size}")
            lo, hi = bootstrap_ci(mean_statistic(a - b), a.size, bootstrap_samples, seed, confidence)  # (n,) pairs
            out.update(difference_ci_low=lo, difference_ci_high=hi,
                       sd_units_ci_low=None if lo is None else lo / reference_std,
                       sd_units_ci_high=None if hi is None else hi / reference_std)
        return out
