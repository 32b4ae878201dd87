"""Response length and EOS rate of one model's responses.

response_length: mean number of generated tokens (the model's tokenizer), EOS not
counted. eos_rate: fraction of responses that ended with EOS within max_new_tokens;
a low rate means responses were cut off (their reward-model score then judges a
truncated text). CIs: seeded bootstrap over the items given: responses, or prompts
when the evaluation passes each prompt's mean over its responses (a mean length and
the fraction of its responses that ended with EOS).
"""

import datasets
import evaluate
import numpy as np

from gpt2_rlhf.evaluation.stats import bootstrap_ci, mean_statistic, metric_value

_DESCRIPTION = "Mean response length in tokens and the fraction of responses that ended with EOS."
_KWARGS_DESCRIPTION = """
Args:
    lengths (list of float): tokens per response, EOS not counted (or a prompt's mean over its responses).
    eos (list of float): 1.0 / 0.0 (or bool) whether each response ended with EOS (or a prompt's fraction).
    bootstrap_samples (int), seed (int), confidence (float): CI over the items.
Returns:
    response_length, eos_rate: each {value, ci_low, ci_high, n}.
Examples:
    >>> load_metric("response_stats").compute(lengths=[0, 4], eos=[True, False], bootstrap_samples=0)["eos_rate"]
    {'value': 0.5, 'ci_low': None, 'ci_high': None, 'n': 2}
"""
_CITATION = ""


class ResponseStats(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"lengths": datasets.Value("float64"), "eos": datasets.Value("float64")}),
        )

    def _compute(self, lengths, eos, bootstrap_samples=1000, seed=0, confidence=0.95):
        lengths = np.asarray(lengths, np.float64)  # (n,)
        eos = np.asarray(eos, np.float64)  # (n,) 0/1
        if lengths.size == 0:
            raise ValueError("response_stats: no responses")
        if (lengths < 0).any():
            raise ValueError("response_stats: negative length")
        if ((eos < 0) | (eos > 1)).any():
            raise ValueError("response_stats: an EOS rate outside [0, 1]")
        n = lengths.size
        return {
            "response_length": metric_value(lengths.mean(), bootstrap_ci(mean_statistic(lengths), n, bootstrap_samples, seed, confidence), n),
            "eos_rate": metric_value(eos.mean(), bootstrap_ci(mean_statistic(eos), n, bootstrap_samples, seed, confidence), n),
        }
