"""Perplexity of a model on given responses (held-out chosen or rejected), from per-token log-probs.

Corpus-level perplexity, as language-model papers report it:

    PPL = exp( - sum_i sum_t log p(y_it | x_i, y_i<t) / sum_i T_i )

i.e. every token weighs the same (a mean of per-response perplexities would let
short responses dominate). The bootstrap resamples responses and recomputes the
ratio, so the CI is that of the corpus statistic. Responses with zero tokens add
nothing. The model passes (prompt-conditioned, EOS appended) happen in
evaluation/generate.py. Not the Hub's `perplexity` metric, which loads a model
itself and averages per-text perplexities.
"""

import datasets
import evaluate
import numpy as np

from gpt2_rlhf.evaluation.stats import bootstrap_ci, metric_value, ratio_statistic

_DESCRIPTION = "Token-weighted perplexity exp(total NLL / total tokens) with a bootstrap CI over responses."
_KWARGS_DESCRIPTION = """
Args:
    logprobs (list of list of float): per-token natural-log probabilities of each response.
    bootstrap_samples (int), seed (int), confidence (float): CI over responses.
Returns:
    value (float), ci_low, ci_high (float or None when n < 2), n (int: responses).
Examples:
    >>> load_metric("perplexity").compute(logprobs=[[-1.0, -3.0], [-2.0]], bootstrap_samples=0)
    {'value': 7.38905609893065, 'ci_low': None, 'ci_high': None, 'n': 2}
"""
_CITATION = "Jelinek et al. (1977). Perplexity: a measure of the difficulty of speech recognition tasks. JASA 62."


class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"logprobs": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(self, logprobs, bootstrap_samples=1000, seed=0, confidence=0.95):
        nll = np.array([-float(np.sum(lp)) for lp in logprobs], dtype=np.float64)  # (n,)
        tokens = np.array([len(lp) for lp in logprobs], dtype=np.float64)  # (n,)
        if tokens.sum() == 0:
            raise ValueError("perplexity: no tokens to score")
        mean_nll = ratio_statistic(nll, tokens)
        lo, hi = bootstrap_ci(mean_nll, len(nll), bootstrap_samples, seed, confidence)
        ci = (None, None) if lo is None else (np.exp(lo), np.exp(hi))  # exp is monotone: percentiles commute
        return metric_value(np.exp(nll.sum() / tokens.sum()), ci, len(nll))
