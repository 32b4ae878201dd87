"""Pairwise win rate of model A against model B by reward-model score on the same prompts.

Ties are counted apart (not split): on each prompt A wins when score_a > score_b +
tie_tolerance, loses when score_a < score_b - tie_tolerance, ties otherwise; the
three fractions sum to 1. The evaluation scores identical response texts once, so
identical responses always tie exactly. The CI (seeded percentile bootstrap over
prompts) is the CI of the win fraction.
"""

import datasets
import evaluate
import numpy as np

from gpt2_rlhf.evaluation.stats import bootstrap_ci, mean_statistic

_DESCRIPTION = "Win / tie / loss fractions of A against B on paired scores, with a bootstrap CI of the win rate."
_KWARGS_DESCRIPTION = """
Args:
    scores_a (list of float): model A's score on each prompt.
    scores_b (list of float): model B's score on the same prompts, in the same order.
    tie_tolerance (float): |a - b| <= tie_tolerance is a tie (default 0.0: exact equality).
    bootstrap_samples (int), seed (int), confidence (float): the CI of `win`.
Returns:
    win, tie, loss (float, sum to 1), ci_low, ci_high (float or None when n < 2), n (int).
Examples:
    >>> load_metric("win_rate").compute(scores_a=[1, 0, 2, 5], scores_b=[0, 0, 3, 1], bootstrap_samples=0)
    {'win': 0.5, 'tie': 0.25, 'loss': 0.25, 'ci_low': None, 'ci_high': None, 'n': 4}
"""
_CITATION = "Stiennon et al. (2020). Learning to summarize from human feedback. NeurIPS (win rates against a baseline)."


class WinRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"scores_a": datasets.Value("float64"), "scores_b": datasets.Value("float64")}),
        )

    def _compute(self, scores_a, scores_b, tie_tolerance=0.0, bootstrap_samples=1000, seed=0, confidence=0.95):
        a, b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)  # (n,), (n,)
        if a.size == 0:
            raise ValueError("win_rate: no paired scores")
        d = a - b
        win = (d > tie_tolerance).astype(np.float64)
        loss = (d < -tie_tolerance).astype(np.float64)
        tie = 1.0 - win - loss
        lo, hi = bootstrap_ci(mean_statistic(win), a.size, bootstrap_samples, seed, confidence)
        return {"win": float(win.mean()), "tie": float(tie.mean()), "loss": float(loss.mean()),
                "ci_low": lo, "ci_high": hi, "n": int(a.size)}
