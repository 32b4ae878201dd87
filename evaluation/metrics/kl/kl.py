"""KL of a policy to the reference on the policy's own samples.

The standard Monte-Carlo estimate used in RLHF (Ziegler et al. 2019; Stiennon et
al. 2020; TRL's PPOTrainer logs the same quantity): for a response y ~ pi,

    KL(pi || pi_ref) ~ sum_t [log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)]

averaged over responses. The model passes happen in evaluation/generate.py; this
module takes the per-token log-probs of each response under both models. An empty
response (zero tokens) contributes 0. The estimate is unbiased but can be negative
on a finite sample.

With several responses per prompt, `groups` names each response's prompt: the
per-response estimates are averaged per prompt first, and the bootstrap resamples
prompts (a cluster bootstrap: evaluation/stats.py); `n` is then the number of prompts.
"""

import datasets
import evaluate
import numpy as np

from gpt2_rlhf.evaluation.stats import bootstrap_ci, group_means, mean_statistic, metric_value

_DESCRIPTION = "Mean summed per-token log-prob difference log pi - log pi_ref over a policy's own responses."
_KWARGS_DESCRIPTION = """
Args:
    logprobs (list of list of float): per-token log-probs of each response under the policy.
    ref_logprobs (list of list of float): the same tokens under the reference model (same lengths).
    groups (list of int, optional): the prompt index of each response; the value is the mean of the
        per-prompt means and the CI resamples prompts. Default: every response its own prompt.
    bootstrap_samples (int), seed (int), confidence (float): CI over prompts.
Returns:
    value (float), ci_low, ci_high (float or None when n < 2), n (int).
Examples:
    >>> load_metric("kl").compute(logprobs=[[-1.0, -2.0], []], ref_logprobs=[[-1.5, -3.0], []], bootstrap_samples=0)
    {'value': 0.75, 'ci_low': None, 'ci_high': None, 'n': 2}
"""
_CITATION = "Ziegler et al. (2019). Fine-Tuning Language Models from Human Preferences. arXiv:1909.08593."


class KL(evaluate.Metric):
    def _info(self):
        seq = datasets.Sequence(datasets.Value("float64"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"logprobs": seq, "ref_logprobs": seq}),
        )

    def _compute(self, logprobs, ref_logprobs, groups=None, bootstrap_samples=1000, seed=0, confidence=0.95):
        if len(logprobs) == 0:
            raise ValueError("kl: no responses")
        per_response = np.empty(len(logprobs))  # (n,) summed log-ratio per response
        for i, (lp, rp) in enumerate(zip(logprobs, ref_logprobs)):
            if len(lp) != len(rp):
                raise ValueError(f"kl: response {i} has {len(lp)} policy log-probs but {len(rp)} reference log-probs")
            per_response[i] = float(np.sum(np.asarray(lp, np.float64) - np.asarray(rp, np.float64)))
        per_prompt = per_response if groups is None else group_means(per_response, groups)  # (n prompts,)
        ci = bootstrap_ci(mean_statistic(per_prompt), len(per_prompt), bootstrap_samples, seed, confidence)
        return metric_value(per_prompt.mean(), ci, len(per_prompt))
