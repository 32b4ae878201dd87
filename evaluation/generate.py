"""Model passes for the evaluation: responses with their log-probs, log-probs of given pairs, classifier scores.

Everything streams over prompts in batches and keeps only per-response numbers
(texts, token counts, per-token log-probs): logits exist one batch at a time, and
only at response positions, so 10,000 prompts never hold all logits in memory.
Sampling and log-probs are the training code's own (`gpt2_rlhf.train.sampling`):
what PPO optimised is what the evaluation measures.

Steps for one policy (`gpt2_rlhf.train.sampling.measure_policy`, shared with PPO's
held-out comparison):
 1. batch the prompts; batch i is sampled with seed `seed + i`, the same for every
    model, so models see the same prompts, settings and seeds;
 2. per-token log-probs of the sampled response under the policy and under the
    reference model, at the temperature that was sampled;
 3. keep texts, lengths (EOS not counted), EOS flags and the log-prob lists.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from tqdm.auto import tqdm

from gpt2_rlhf.train.modeling import context_length, pad_sequences
from gpt2_rlhf.train.sampling import batches, encode_prompts, masked_rows, prompt_budget, response_logprobs

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- model passes


@torch.no_grad()
def pair_logprobs(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], batch_size: int,
                  max_prompt_tokens: int, max_response_tokens: int, desc: str = "perplexity") -> list[list[float]]:
    """Per-token log-probs (temperature 1) of `response + EOS` given its prompt, for each pair.

    Prompt and response are tokenised separately (as in generation: the response
    tokens follow the prompt tokens). A response longer than max_response_tokens
    (or than the context minus one) is cut and loses its EOS; a prompt keeps its
    last tokens so that prompt + the batch's longest response fits the context.
    """
    device = next(model.parameters()).device
    context = context_length(model)
    max_response_tokens = min(max_response_tokens, context - 1)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    out: list[list[float]] = []
    n_batches = (len(prompts) + batch_size - 1) // batch_size
    for _, idx in tqdm(batches(list(range(len(prompts))), batch_size), total=n_batches, desc=desc, unit="batch",
                       leave=False):
        resp = [tokenizer(responses[j], add_special_tokens=False)["input_ids"] + [eos] for j in idx]
        resp = [r[:max_response_tokens] for r in resp]
        R = max(len(r) for r in resp)
        # prompt + the batch's longest response fits the context (R counts its EOS already)
        budget = prompt_budget(context, max_prompt_tokens, R - 1)
        prompt_ids, prompt_mask = pad_sequences(encode_prompts(tokenizer, [prompts[j] for j in idx], budget), pad,
                                                "left", device)
        response_ids, response_mask = pad_sequences(resp, pad, "right", device)
        lp = response_logprobs(model, prompt_ids, prompt_mask, response_ids, response_mask)
        out += masked_rows(lp, response_mask)
    return out


def classifier_probs(model, tokenizer, texts: Sequence[str], label: int, batch_size: int) -> list[float]:
    """Probability of class `label` for each text (softmax over labels; sigmoid for a single-logit model).

    The classifier's logits and the label's probability are train.rewards' (the reward classifier's own
    code), so a classifier reads the same text the same way whether it is a reward or a measurement."""
    from gpt2_rlhf.train.rewards import classifier_logits, label_scores

    return [float(p) for p in label_scores(classifier_logits(model, tokenizer, list(texts), batch_size), label,
                                           "probability")]
