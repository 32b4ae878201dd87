"""Proxy (reward model) vs gold (the embedded world's judge) for one model's responses.

Gao et al. (2023) measure reward over-optimisation by scoring policy samples with
both the proxy reward model the policy was trained against and a gold reward: the
proxy keeps rising while the gold score peaks and falls. On the embedded dataset
`gpt2_rlhf.train.synthetic.gold.gold_score` is that gold judge. This module returns the mean gold
score and the Pearson correlation between proxy and gold over the responses; a
policy that hacks the proxy shows a high proxy score, a flat or lower gold score
and a weaker correlation. CIs: seeded bootstrap over responses.

With several responses per prompt, `groups` names each response's prompt: the gold
value is the mean of the per-prompt mean gold scores, the correlation stays over all
responses (it measures whether the proxy ranks responses as gold does), and both CIs
resample prompts, each response weighted by its prompt's count (a cluster
bootstrap); `n` is then the number of prompts.
"""

import datasets
import evaluate
import numpy as np

from gpt2_rlhf.evaluation.stats import bootstrap_ci, cluster_counts, group_means, mean_statistic, metric_value

_DESCRIPTION = "Mean gold score and the proxy-gold Pearson correlation, with bootstrap CIs over responses."
_KWARGS_DESCRIPTION = """
Args:
    proxy (list of float): the reward model's score of each response.
    gold (list of float): the gold judge's score of the same responses.
    groups (list of int, optional): the prompt index of each response; CIs then resample prompts.
        Default: every response its own prompt.
    bootstrap_samples (int), seed (int), confidence (float): CIs over prompts.
Returns:
    gold: {value, ci_low, ci_high, n}; correlation: {value, ci_low, ci_high, n}, absent when either
    input is constant (the correlation is undefined).
Examples:
    >>> load_metric("proxy_gold").compute(proxy=[0, 1, 2], gold=[0.0, 0.5, 1.0], bootstrap_samples=0)["correlation"]
    {'value': 1.0, 'ci_low': None, 'ci_high': None, 'n': 3}
"""
_CITATION = "Gao, Schulman and Hilton (2023). Scaling Laws for Reward Model Overoptimization. ICML."


def weighted_pearson(x, y):
    """Pearson correlation of x, y (n,) under resample counts c (b, n); nan where a variance is 0."""
    def stat(c):
        w = c / c.sum(1, keepdims=True)  # (b, n) weights summing to 1
        mx, my = w @ x, w @ y  # (b,)
        cov = w @ (x * y) - mx * my
        vx, vy = w @ (x * x) - mx ** 2, w @ (y * y) - my ** 2
        den = np.sqrt(np.clip(vx, 0, None) * np.clip(vy, 0, None))
        return np.divide(cov, den, out=np.full_like(cov, np.nan), where=den > 1e-12)
    return stat


class ProxyGold(evaluate.Metric):
    def _info(self):
        v = datasets.Value("float64")
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"proxy": v, "gold": v}),
        )

    def _compute(self, proxy, gold, groups=None, bootstrap_samples=1000, seed=0, confidence=0.95):
        x, y = np.asarray(proxy, np.float64), np.asarray(gold, np.float64)  # (N,), (N,) responses
        if x.size == 0:
            raise ValueError("proxy_gold: no scores")
        per_prompt = y if groups is None else group_means(y, groups)  # (n,) prompts
        n = per_prompt.size
        out = {"gold": metric_value(per_prompt.mean(),
                                    bootstrap_ci(mean_statistic(per_prompt), n, bootstrap_samples, seed, confidence), n)}
        corr = weighted_pearson(x, y)
        if groups is not None:  # prompt counts (b, n) -> response weights (b, N)
            expand, response_corr = cluster_counts(groups), corr
            corr = lambda c: response_corr(expand(c))
        r = corr(np.ones((1, n)))[0]
        if np.isfinite(r):
            ci = bootstrap_ci(corr, n, bootstrap_samples, seed, confidence)
            out["correlation"] = metric_value(np.clip(r, -1.0, 1.0), ci, n)
        return out
