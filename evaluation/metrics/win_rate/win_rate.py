"""Pairwise win rate of model A against model B by reward-model score on the same prompts.

Ties are counted apart (not split): on each prompt A wins when score_a > score_b +
tie_tolerance, loses when score_a < score_b - tie_tolerance, ties otherwise; the
three fractions sum to 1. The evaluation scores identical response texts once, so
identical responses always tie exactly. The CI (seeded percentile bootstrap over
prompts) is the CI of the win fraction.

win_rate_ties_half = win + tie / 2: a tie counts as half a win, the convention of
AlpacaEval and Chatbot Arena when ties are frequent (on the embedded world SFT and PPO
tie on about half the prompts, both at the gold maximum), so that "no better and no
worse" reads 0.5 rather than a low win rate. Its CI (the same bootstrap resamples) is
`win_rate_ties_half_ci_low` / `_ci_high`. With several responses per prompt the
evaluation passes each prompt's mean score: a prompt is won on the means.
"""

import datasets
import evaluate
import numpy as np

from gpt2_rlhf.evaluation.stats import bootstrap_ci, mean_statistic

_DESCRIPTION = "Win / tie / loss fractions of A against B on paired scores, with a bootstrap CI of the win rate."
_KWARGS_DESCRIPTION = """
Args:
    scores_a (list of float): model A's score on each prompt (with several responses: their mean).
    scores_b (list of float): model B's score on the same prompts, in the same order.
    tie_tolerance (float): |a - b| <= tie_tolerance is a tie (default 0.0: exact equality).
    bootstrap_samples (int), seed (int), confidence (float): the CIs of `win` and `win_rate_ties_half`.
Returns:
    win, tie, loss (float, sum to 1), ci_low, ci_high (the CI of win; float or None when n < 2), n (int),
    win_rate_ties_half (float: win + tie / 2), win_rate_ties_half_ci_low, win_rate_ties_half_ci_high.
Examples:
    >>> load_metric("win_rate").compute(scores_a=[1, 0, 2, 5], scores_b=[0, 0, 3, 1], bootstrap_samples=0)
    {'win': 0.5, 'tie': 0.25, 'loss': 0.25, 'ci_low': None, 'ci_high': None, 'n': 4, 'win_rate_ties_half': 0.625, 'win_rate_ties_half_ci_low': None, 'win_rate_ties_half_ci_high': None}
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
        half = win + 0.5 * tie  # (n,) per-prompt credit: 1, 0.5 or 0
        lo, hi = bootstrap_ci(mean_statistic(win), a.size, bootstrap_samples, seed, confidence)
        # the same seed: the same resamples as win's CI, so the two intervals describe one bootstrap
        half_lo, half_hi = bootstrap_ci(mean_statistic(half), a.size, bootstrap_samples, seed, confidence)
        return {"win": float(win.mean()), "tie": float(tie.mean()), "loss": float(loss.mean()),
                "ci_low": lo, "ci_high": hi, "n": int(a.size), "win_rate_ties_half": float(half.mean()),
                "win_rate_ties_half_ci_low": half_lo, "win_rate_ties_half_ci_high": half_hi}
