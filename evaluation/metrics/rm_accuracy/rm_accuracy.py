"""Reward-model accuracy on held-out preference pairs, beside a length-only baseline.

accuracy: fraction of pairs where the RM scores `chosen` above `rejected` (a tie
counts 0.5, so a constant RM gets exactly 0.5). length_baseline_accuracy: the same
pairs judged by "the longer response wins" (characters; ties 0.5). HH-RLHF's
chosen responses are often longer, so an RM can look good by measuring length
(Singhal et al. 2023); its accuracy means something only above this baseline.
mean_margin: mean of score(chosen) - score(rejected). CI: bootstrap over pairs.
"""

import datasets
import evaluate
import numpy as np

from gpt2_rlhf.evaluation.stats import bootstrap_ci, mean_statistic

_DESCRIPTION = "Pairwise accuracy of a reward model with a bootstrap CI, its mean margin and a length baseline."
_KWARGS_DESCRIPTION = """
Args:
    chosen_scores, rejected_scores (list of float): RM scores of each pair's responses.
    chosen_lengths, rejected_lengths (list of int): the responses' lengths (characters).
    bootstrap_samples (int), seed (int), confidence (float): CI of the accuracy over pairs.
Returns:
    accuracy, accuracy_ci_low, accuracy_ci_high (None when n < 2), mean_margin, length_baseline_accuracy, n_pairs.
Examples:
    >>> load_metric("rm_accuracy").compute(chosen_scores=[2, 1], rejected_scores=[1, 1], chosen_lengths=[5, 3],
    ...                                    rejected_lengths=[4, 9], bootstrap_samples=0)["accuracy"]
    0.75
"""
_CITATION = "Singhal et al. (2023). A Long Way to Go: Investigating Length Correlations in RLHF. arXiv:2310.03716."


def pair_accuracy(a, b):
    """(n,) per-pair credit: 1 when a > b, 0.5 on a tie, 0 when a < b."""
    return (a > b).astype(np.float64) + 0.5 * (a == b)


class RmAccuracy(evaluate.Metric):
    def _info(self):
        f, i = datasets.Value("float64"), datasets.Value("int64")
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"chosen_scores": f, "rejected_scores": f, "chosen_lengths": i, "rejected_lengths": i}),
        )

    def _compute(self, chosen_scores, rejected_scores, chosen_lengths, rejected_lengths,
                 bootstrap_samples=1000, seed=0, confidence=0.95):
        c, r = np.asarray(chosen_scores, np.float64), np.asarray(rejected_scores, np.float64)  # (n,), (n,)
        if c.size == 0:
            raise ValueError("rm_accuracy: no pairs")
        correct = pair_accuracy(c, r)
        lo, hi = bootstrap_ci(mean_statistic(correct), c.size, bootstrap_samples, seed, confidence)
        length = pair_accuracy(np.asarray(chosen_lengths, np.float64), np.asarray(rejected_lengths, np.float64))
        return {"accuracy": float(correct.mean()), "accuracy_ci_low": lo, "accuracy_ci_high": hi,
                "mean_margin": float((c - r).mean()), "length_baseline_accuracy": float(length.mean()),
                "n_pairs": int(c.size)}
