"""Model passes for the evaluation: generation, log-probs of responses, reward and classifier scores.

Everything streams over prompts in batches and keeps only per-response numbers
(texts, token counts, per-token log-probs): logits exist one batch at a time, and
only at response positions, so 10,000 prompts never hold all logits in memory.

Steps for one policy (`run_policy`):
 1. batch the prompts (left padding, KV cache: `decode`); batch i is decoded with
    seed `seed + i`, the same for every model, so models see the same prompts,
    settings and seeds;
 2. per-token log-probs of the sampled response under the policy and under the
    reference model (`response_logprobs`), at the temperature that was sampled;
 3. keep texts, lengths (EOS not counted), EOS flags and the log-prob lists.

Why our own decoding loop (`decode`) rather than `gpt2_rlhf.train.modeling.generate`
(`model.generate`): a batch of `model.generate` runs every row until the longest
response ends, and on the embedded models most responses end within ~15 tokens
while a few run to max_new_tokens; `decode` drops a row from the batch (and its KV
cache) as soon as it emits EOS, which is what makes batched evaluation >= 5x faster
than one prompt at a time (benchmarks/bench_generate.py). It returns the same
`gpt2_rlhf.train.modeling.Generation` (left-padded prompts, responses right-padded after the
first EOS) and its greedy outputs equal `gpt2_rlhf.train.modeling.generate`'s (tested).

Deviations: the KL log-probs use `logits / temperature` but ignore top-k / top-p
truncation (TRL's PPOTrainer does the same); under greedy decoding they use T = 1.
Sampling follows HF's temperature -> top-k -> top-p order but draws from its own
seeded generator, so sampled texts differ from `model.generate`'s for the same
seed (same distribution, different random stream). Extras in a model's
generation_config.json (repetition penalty, ...) are ignored on purpose: every
model gets exactly the recorded decoding settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import torch
from tqdm.auto import tqdm

from gpt2_rlhf.train.modeling import Generation, GenerationSettings, context_length, position_ids_from_mask

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- pure tensor functions


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, R, V) next-token logits, (B, R) chosen ids -> (B, R) log p(id) under softmax(logits / T)."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # (B, R, V)
    return logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(A, V) logits -> the same with everything below the k-th largest set to -inf (k <= 0: unchanged).

    Ties with the k-th value are kept, as HF's TopKLogitsWarper does.
    """
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (A, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """(A, V) logits -> nucleus filtering: keep the smallest top set with probability >= p (p >= 1: unchanged).

    HF's TopPLogitsWarper rule: sort ascending, drop tokens whose cumulative
    probability is <= 1 - p, always keep the most likely token.
    """
    if p >= 1.0:
        return logits
    sorted_logits, idx = torch.sort(logits, descending=False, dim=-1)
    cum = sorted_logits.softmax(-1).cumsum(-1)  # (A, V) ascending
    drop = cum <= 1.0 - p
    drop[..., -1] = False
    return logits.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))


def next_tokens(logits: torch.Tensor, settings: GenerationSettings, generator: torch.Generator | None) -> torch.Tensor:
    """(A, V) last-position logits -> (A,) next token ids: argmax, or a temperature/top-k/top-p sample."""
    if settings.greedy:
        return logits.argmax(-1)
    logits = top_p_filter(top_k_filter(logits.float() / settings.temperature, settings.top_k), settings.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def masked_rows(values: torch.Tensor, mask: torch.Tensor) -> list[list[float]]:
    """(B, R) values, (B, R) 0/1 mask -> per row, the values where mask is 1 (right padding assumed)."""
    return [row[m.bool()].tolist() for row, m in zip(values.cpu(), mask.cpu())]


def prompt_budget(model, max_prompt_tokens: int, max_new_tokens: int) -> int:
    """Prompt tokens we may keep so that prompt + response fits in the context."""
    budget = min(max_prompt_tokens, context_length(model) - max_new_tokens)
    if budget < 1:
        raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's "
                         f"context of {context_length(model)} tokens")
    return budget


# ----------------------------------------------------------------------------- model passes


@torch.no_grad()
def response_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_ids: torch.Tensor,
                      response_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, R) log-probs of right-padded response tokens after left-padded prompts; padding positions are 0.

    Only the last R + 1 positions get logits (`logits_to_keep`), so memory is
    B x R x V, not B x (P + R) x V. Position ids come from the mask, so a
    left-padded row sees the same positions as the unpadded prompt.
    """
    R = response_ids.shape[1]
    if R == 0:
        return torch.zeros_like(response_ids, dtype=torch.float32)
    ids = torch.cat([prompt_ids, response_ids], 1)  # (B, P + R)
    mask = torch.cat([prompt_mask, response_mask.long()], 1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), logits_to_keep=R + 1)
    logits = out.logits[:, :-1]  # (B, R, V): position P - 1 + t predicts response token t
    lp = token_logprobs(logits, response_ids, temperature)
    return lp * response_mask.to(lp.dtype)


@torch.no_grad()
def decode(model, tokenizer, prompts: Sequence[str], settings: GenerationSettings, seed: int | None = None,
           max_prompt_tokens: int | None = None) -> Generation:
    """Batched, left-padded, KV-cached decoding that drops each row as soon as it emits EOS.

     1. encode the prompts left-padded (a long prompt keeps its end);
     2. prefill: one forward over the prompts fills the cache; logits at the last column only;
     3. per step: pick a token for every active row; rows that emitted EOS leave the
        batch (their cache rows are dropped); the rest advance one position;
     4. assemble responses right-padded after the first EOS, as `gpt2_rlhf.train.modeling.generate` does.
    """
    device = next(model.parameters()).device
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    generator = None
    if seed is not None and not settings.greedy:
        generator = torch.Generator(device=device).manual_seed(seed)
    # 1. left-padded prompts
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, truncation=max_prompt_tokens is not None,
                    max_length=max_prompt_tokens, add_special_tokens=False)
    prompt_ids, prompt_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    B, R = prompt_ids.shape[0], settings.max_new_tokens
    out = torch.full((B, R), pad, dtype=torch.long, device=device)  # (B, R) responses
    lengths = torch.zeros(B, dtype=torch.long, device=device)  # tokens per response, EOS included
    has_eos = torch.zeros(B, dtype=torch.bool, device=device)
    was_training = model.training
    model.eval()
    # 2. prefill
    position = position_ids_from_mask(prompt_mask)
    res = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position, use_cache=True,
                logits_to_keep=1)
    cache, logits = res.past_key_values, res.logits[:, -1]  # (B, V)
    rows = torch.arange(B, device=device)  # original row of each active row
    mask, next_pos = prompt_mask, position[:, -1] + 1  # (A, P + t), (A,)
    # 3. one token per step for the active rows
    for t in range(R):
        tok = next_tokens(logits, settings, generator)  # (A,)
        out[rows, t] = tok
        lengths[rows] = t + 1
        done = tok == eos
        has_eos[rows[done]] = True
        if t == R - 1:
            break
        if done.any():
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            cache.batch_select_indices(keep)
            rows, tok, mask, next_pos = rows[keep], tok[keep], mask[keep], next_pos[keep]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
        res = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                    past_key_values=cache, use_cache=True)
        cache, logits = res.past_key_values, res.logits[:, -1]
        next_pos = next_pos + 1
    model.train(was_training)
    # 4. responses right-padded after the first EOS
    width = int(lengths.max().item()) if B else 0
    keep_mask = torch.arange(width, device=device)[None, :] < lengths[:, None]  # (B, R')
    response = torch.where(keep_mask, out[:, :width], torch.full_like(out[:, :width], pad))
    texts = tokenizer.batch_decode(response, skip_special_tokens=True)
    return Generation(prompt_ids, prompt_mask, response, keep_mask, has_eos, texts)


@dataclass
class PolicyResult:
    """One model's responses to every prompt, and the per-response numbers the metrics need."""

    texts: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # tokens, EOS not counted
    eos: list[bool] = field(default_factory=list)
    logprobs: list[list[float]] = field(default_factory=list)  # per token, EOS included
    ref_logprobs: list[list[float]] = field(default_factory=list)  # same tokens under the reference (if any)


def batches(items: Sequence, batch_size: int):
    for i in range(0, len(items), batch_size):
        yield i // batch_size, items[i:i + batch_size]


def run_policy(model, tokenizer, prompts: Sequence[str], settings: GenerationSettings, seed: int, batch_size: int,
               max_prompt_tokens: int, reference=None, desc: str = "generate") -> PolicyResult:
    """Generates one response per prompt and measures it (steps in the module docstring)."""
    tokenizer.truncation_side = "left"  # a long prompt keeps its end ("...\n\nAssistant:")
    budget = prompt_budget(model, max_prompt_tokens, settings.max_new_tokens)
    temperature = 1.0 if settings.greedy else settings.temperature
    res = PolicyResult()
    n_batches = (len(prompts) + batch_size - 1) // batch_size
    for i, chunk in tqdm(batches(prompts, batch_size), total=n_batches, desc=desc, unit="batch", leave=False):
        # 1. the same seed per batch index for every model
        gen = decode(model, tokenizer, chunk, settings, seed=seed + i, max_prompt_tokens=budget)
        # 2. log-probs under the policy and the reference, at the sampling temperature
        lp = response_logprobs(model, gen.prompt_ids, gen.prompt_mask, gen.response_ids, gen.response_mask, temperature)
        res.logprobs += masked_rows(lp, gen.response_mask)
        if reference is not None:
            rp = response_logprobs(reference, gen.prompt_ids, gen.prompt_mask, gen.response_ids, gen.response_mask,
                                   temperature)
            res.ref_logprobs += masked_rows(rp, gen.response_mask)
        # 3. texts, lengths without EOS, EOS flags
        res.texts += gen.texts
        res.eos += gen.has_eos.tolist()
        res.lengths += (gen.response_mask.long().sum(1) - gen.has_eos.long()).tolist()
    return res


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
    max_response_tokens = min(max_response_tokens, context_length(model) - 1)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    out: list[list[float]] = []
    n_batches = (len(prompts) + batch_size - 1) // batch_size
    for _, idx in tqdm(batches(list(range(len(prompts))), batch_size), total=n_batches, desc=desc, unit="batch",
                       leave=False):
        resp = [tokenizer(responses[j], add_special_tokens=False)["input_ids"] + [eos] for j in idx]
        resp = [r[:max_response_tokens] for r in resp]
        R = max(len(r) for r in resp)
        tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
        enc = tokenizer([prompts[j] for j in idx], return_tensors="pt", padding=True, truncation=True,
                        max_length=prompt_budget(model, max_prompt_tokens, R), add_special_tokens=False)
        response_ids = torch.full((len(idx), R), pad, dtype=torch.long)
        response_mask = torch.zeros((len(idx), R), dtype=torch.long)
        for k, r in enumerate(resp):
            response_ids[k, :len(r)] = torch.tensor(r, dtype=torch.long)
            response_mask[k, :len(r)] = 1
        lp = response_logprobs(model, enc["input_ids"].to(device), enc["attention_mask"].to(device),
                               response_ids.to(device), response_mask.to(device))
        out += masked_rows(lp, response_mask)
    tokenizer.padding_side = "left"
    return out


@torch.no_grad()
def classifier_probs(model, tokenizer, texts: Sequence[str], label: int, batch_size: int) -> list[float]:
    """Probability of class `label` for each text (softmax over labels; sigmoid for a single-logit model)."""
    device = next(model.parameters()).device
    probs: list[float] = []
    tokenizer.padding_side, tokenizer.truncation_side = "right", "left"
    max_len = min(getattr(tokenizer, "model_max_length", 512) or 512, 512)
    # an empty response would be a row of padding only; one space keeps it a real (neutral) input
    for _, chunk in batches([t if t else " " for t in texts], batch_size):
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_len).to(device)
        logits = model(**enc).logits.float()  # (B, L)
        p = torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, -1)[:, label]
        probs += p.cpu().tolist()
    return probs
