"""Mean score with a 95% bootstrap CI: the reward model's (normalised or raw) scores of one model's responses.

The same module summarises any per-response score in the report (the gold judge,
an optional classifier): it is the mean over prompts, and the CI is a seeded
percentile bootstrap over prompts (evaluation/stats.py). With several responses per
prompt the evaluation passes each prompt's mean score, so the bootstrap still
resamples prompts (a cluster bootstrap).
"""

import datasets
import evaluate
import numpy as np

from gpt2_rlhf.evaluation.stats import bootstrap_ci, mean_statistic, metric_value

_DESCRIPTION = "Mean of per-response scores with a percentile bootstrap confidence interval over responses."
_KWARGS_DESCRIPTION = """
Args:
    scores (list of float): one score per prompt (a response's, or the mean of a prompt's responses).
    bootstrap_samples (int): resamples for the CI (default 1000; 0 = no CI).
    seed (int): bootstrap seed (default 0).
    confidence (float): CI level (default 0.95).
Returns:
    value (float): the mean; ci_low, ci_high (float or None: None when n < 2); n (int).
Examples:
    >>> m = load_metric("reward")
    >>> m.compute(scores=[1.0, 2.0, 3.0], bootstrap_samples=0)
    {'value': 2.0, 'ci_low': None, 'ci_high': None, 'n': 3}
"""
_CITATION = "Efron, B. and Tibshirani, R. (1993). An Introduction to the Bootstrap. Chapman & Hall."


class Reward(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"scores": datasets.Value("float64")}),
        )

    def _compute(self, scores, bootstrap_samples=1000, seed=0, confidence=0.95):
        x = np.asarray(scores, dtype=np.float64)  # (n,)
        if x.size == 0:
            raise ValueError("reward: no scores to average")
        ci = bootstrap_ci(mean_statistic(x), x.size, bootstrap_samples, seed, confidence)
        return metric_value(x.mean(), ci, x.size)
