"""Diversity of a model's responses: distinct-1, distinct-2 and the unique-response rate.

distinct-n (Li et al. 2016): unique n-grams / total n-grams over all responses of
one model (corpus level), on whitespace-split words, case kept. A response shorter
than n words has no n-grams; with no n-grams at all distinct-n is 0.0.
unique_responses: distinct response strings / responses. RL against a reward model
tends to collapse onto a few high-reward phrasings (Kirk et al. 2024); this is
where that shows. CIs: jackknife (leave one response out) normal intervals, clipped
to [0, 1]. Deviation from the report's other metrics: not a bootstrap, because
resampling with replacement duplicates responses, which reads as repetition and
biases a unique-count statistic downwards (every resample would sit below the
full-sample value).

With several responses per prompt, `groups` names each response's prompt: the values
are still over all responses, and the jackknife leaves out one prompt (all its
responses) at a time, so `n` is the number of prompts (a cluster jackknife: responses
to one prompt are not independent).
"""

import datasets
import evaluate
import numpy as np

from gpt2_rlhf.evaluation.stats import jackknife_ci, metric_value, unique_ratio_loo

_DESCRIPTION = "distinct-1, distinct-2 (unique / total word n-grams) and unique_responses (unique / total responses)."
_KWARGS_DESCRIPTION = """
Args:
    responses (list of str): one model's responses.
    groups (list of int, optional): the prompt index of each response (the jackknife leaves out a whole
        prompt). Default: every response its own prompt.
    confidence (float): CI level; bootstrap_samples (0 = no CI) and seed are accepted for a uniform call.
Returns:
    distinct_1, distinct_2, unique_responses: each {value, ci_low, ci_high, n}.
Examples:
    >>> load_metric("diversity").compute(responses=["a b a", "a b"], bootstrap_samples=0)["distinct_1"]
    {'value': 0.4, 'ci_low': None, 'ci_high': None, 'n': 2}
"""
_CITATION = ("Li et al. (2016). A Diversity-Promoting Objective Function for Neural Conversation Models. NAACL. "
             "Kirk et al. (2024). Understanding the Effects of RLHF on LLM Generalisation and Diversity. ICLR.")


def ngram_ids(responses, n, vocab):
    """Each response -> int array of its word n-gram ids (ids shared through `vocab`)."""
    out = []
    for text in responses:
        words = text.split()
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        out.append(np.array([vocab.setdefault(g, len(vocab)) for g in grams], dtype=np.int64))
    return out


def by_group(item_ids, groups):
    """Per-response id arrays -> per-group arrays (the concatenation of the group's members, in order)."""
    n_groups = max(groups) + 1 if len(groups) else 0
    members = [[] for _ in range(n_groups)]
    for ids, g in zip(item_ids, groups):
        members[g].append(ids)
    if any(not m for m in members):
        raise ValueError("diversity: a group index without responses")
    return [np.concatenate(m) for m in members]


class Diversity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"responses": datasets.Value("string")}),
        )

    def _compute(self, responses, groups=None, bootstrap_samples=1000, seed=0, confidence=0.95):
        if len(responses) == 0:
            raise ValueError("diversity: no responses")
        if groups is not None and len(groups) != len(responses):
            raise ValueError(f"diversity: {len(responses)} responses but {len(groups)} group indices")
        strings = {}
        per_item = {
            "distinct_1": ngram_ids(responses, 1, {}),
            "distinct_2": ngram_ids(responses, 2, {}),
            # a whole response is one "gram": unique strings / responses
            "unique_responses": [np.array([strings.setdefault(r, len(strings))]) for r in responses],
        }
        if groups is not None:  # one item per prompt: the ids of all its responses (n-grams stay within a response)
            per_item = {name: by_group(ids, groups) for name, ids in per_item.items()}
        n = len(per_item["unique_responses"])
        out = {}
        for name, ids in per_item.items():
            value, loo = unique_ratio_loo(ids)
            ci = jackknife_ci(value, loo, confidence, (0.0, 1.0)) if bootstrap_samples else (None, None)
            out[name] = metric_value(value, ci, n)
        return out
