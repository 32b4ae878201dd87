"""The one sampler and the one log-prob function: PPO rollouts, reward statistics, evaluation.

Layout conventions (docs/DESIGN.md), which matter for correctness:

* prompts are **left**-padded for generation, so every row's next token is at the
  same column and the batch shares one KV cache;
* a prompt longer than its budget keeps its **last** tokens (the end of a dialogue
  holds the question being answered), and the budget always leaves room for the new
  tokens and the EOS the reward model reads: prompt + max_new_tokens + 1 <= context;
* responses are **right**-padded after the first EOS;
* position ids are ``cumsum(attention_mask) - 1`` (GPT-2 does not derive them from
  the mask), so a left-padded row sees the positions of the unpadded one.

Nothing here changes a tokenizer's state (``padding_side`` and ``truncation_side``
are never set): prompts are tokenised unpadded, cut and padded here.

Why our own decoding loop (``sample``) rather than ``model.generate``: a batch of
``model.generate`` runs every row until the longest response ends; on the embedded
models most responses end within ~15 tokens while a few run to max_new_tokens, and
``sample`` drops a row (and its KV cache) as soon as it emits EOS
(benchmarks/bench_generate.py). Each call draws from its own seeded
``torch.Generator``, so a caller's stream is a function of its seed only (a resumed
PPO run samples what an uninterrupted one would).

Deviations: sampling follows HF's temperature -> top-k -> top-p order, from its own
generator (the same distribution as ``model.generate``, another random stream).
Extras in a model's generation_config.json (repetition penalty, ...) are ignored on
purpose: every caller gets exactly the settings it passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .modeling import context_length, pad_sequences, position_ids_from_mask


@dataclass
class GenerationSettings:
    """Decoding settings; the defaults of PPO rollouts, evaluation and reward statistics."""

    max_new_tokens: int = field(default=48, metadata={"help": "Most tokens to generate per response."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature; 0 means greedy."})
    top_k: int = field(default=0, metadata={"help": "Keep the k most likely tokens (0 = off)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (1.0 = off)."})

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def logprob_temperature(self) -> float:
        """The temperature log-probs of sampled tokens are taken at (1 under greedy decoding)."""
        return 1.0 if self.greedy else self.temperature


DECODING = GenerationSettings()  # the decoding defaults, defined once


@dataclass
class Generation:
    """A batch of prompts and their sampled responses, as tensors and text."""

    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P)
    response_ids: torch.Tensor  # (B, R) right-padded with pad after the first EOS
    response_mask: torch.Tensor  # (B, R) bool, True up to and including the first EOS
    has_eos: torch.Tensor  # (B,) bool
    texts: list[str]  # decoded responses, special tokens dropped


# ----------------------------------------------------------------------------- pure tensor functions


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, R, V) logits, (B, R) tokens -> (B, R) log p(token) of softmax(logits / temperature).

    The sampler drew each token from softmax(logits / T), so the policy's log-prob of
    that token must use the same T; otherwise the PPO ratio and the KL compare a
    different distribution from the one that acted (Huang et al. 2024, 'scale the
    logits by sampling temperature'). Top-k / top-p truncation is ignored, as in TRL.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    # log_softmax(x)[y] = x[y] - logsumexp(x): avoids materialising the (B, R, V) log-softmax
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


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


def first_eos_mask(response_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, R) sampled ids -> (keep (B, R) bool: tokens up to and including the first EOS, has_eos (B,))."""
    is_eos = response_ids == eos_id
    before = is_eos.long().cumsum(-1) - is_eos.long()  # EOS seen strictly before each column
    return before == 0, is_eos.any(-1)


def prompt_budget(context: int, max_prompt_tokens: int, max_new_tokens: int) -> int:
    """Prompt tokens to keep so that prompt + max_new_tokens + EOS fits a context of `context` positions."""
    budget = min(max_prompt_tokens, context - max_new_tokens - 1)
    if budget < 1:
        raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's "
                         f"context of {context} tokens")
    return budget


def encode_prompts(tokenizer, prompts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Prompt texts -> token ids, each cut to its last `max_tokens` tokens (no special tokens added)."""
    return [ids[-max_tokens:] for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]


# ----------------------------------------------------------------------------- model passes


@torch.no_grad()
def sample(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, settings: GenerationSettings, eos_id: int,
           pad_id: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded prompts -> (response ids (B, R'), mask (B, R') bool, has_eos (B,)); R' = longest response.

     1. prefill: one forward over the prompts fills the cache; logits at the last column only;
     2. per step: pick a token for every active row; rows that emitted EOS leave the
        batch (their cache rows are dropped); the rest advance one position;
     3. responses right-padded after the first EOS.
    The caller makes the prompts fit the context (`prompt_budget`).
    """
    device = prompt_ids.device
    B, R = prompt_ids.shape[0], settings.max_new_tokens
    out = torch.full((B, R), pad_id, dtype=torch.long, device=device)  # (B, R) responses
    lengths = torch.zeros(B, dtype=torch.long, device=device)  # tokens per response, EOS included
    has_eos = torch.zeros(B, dtype=torch.bool, device=device)
    was_training = model.training
    model.eval()
    # 1. prefill
    position = position_ids_from_mask(prompt_mask)
    res = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position, use_cache=True,
                logits_to_keep=1)
    cache, logits = res.past_key_values, res.logits[:, -1]  # (B, V)
    rows = torch.arange(B, device=device)  # original row of each active row
    mask, next_pos = prompt_mask, position[:, -1] + 1  # (A, P + t), (A,)
    # 2. one token per step for the active rows
    for t in range(R):
        tok = next_tokens(logits, settings, generator)  # (A,)
        out[rows, t] = tok
        lengths[rows] = t + 1
        done = tok == eos_id
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
    # 3. right padding after the first EOS
    width = int(lengths.max().item()) if B else 0
    keep_mask = torch.arange(width, device=device)[None, :] < lengths[:, None]  # (B, R')
    response = torch.where(keep_mask, out[:, :width], torch.full_like(out[:, :width], pad_id))
    return response, keep_mask, has_eos


def generate(model, tokenizer, prompts: Sequence[str], settings: GenerationSettings, seed: int | None = None,
             max_prompt_tokens: int | None = None) -> Generation:
    """Prompt texts -> one sampled (or greedy) response each, fitted into the model's context.

    A prompt keeps its last min(max_prompt_tokens, context - max_new_tokens - 1) tokens;
    `seed` seeds this call's own generator (None: the global torch RNG).
    """
    device = next(model.parameters()).device
    budget = prompt_budget(context_length(model), max_prompt_tokens or context_length(model), settings.max_new_tokens)
    prompt_ids, prompt_mask = pad_sequences(encode_prompts(tokenizer, prompts, budget), tokenizer.pad_token_id,
                                            "left", device)
    generator = None
    if seed is not None and not settings.greedy:
        generator = torch.Generator(device=device).manual_seed(seed)
    response, keep, has_eos = sample(model, prompt_ids, prompt_mask, settings, tokenizer.eos_token_id,
                                     tokenizer.pad_token_id, generator)
    texts = tokenizer.batch_decode(response, skip_special_tokens=True)
    return Generation(prompt_ids, prompt_mask, response, keep, has_eos, texts)


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


# ----------------------------------------------------------------------------- measuring a policy


def masked_rows(values: torch.Tensor, mask: torch.Tensor) -> list[list[float]]:
    """(B, R) values, (B, R) 0/1 mask -> per row, the values where mask is 1 (right padding assumed)."""
    return [row[m.bool()].tolist() for row, m in zip(values.cpu(), mask.cpu())]


def batches(items: Sequence, batch_size: int):
    """(batch index, slice) over items."""
    for i in range(0, len(items), batch_size):
        yield i // batch_size, items[i:i + batch_size]


@dataclass
class PolicyResult:
    """One model's responses to every prompt, and the per-response numbers the metrics need."""

    texts: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # tokens, EOS not counted
    eos: list[bool] = field(default_factory=list)
    logprobs: list[list[float]] = field(default_factory=list)  # per token, EOS included
    ref_logprobs: list[list[float]] = field(default_factory=list)  # same tokens under the reference (if any)

    def kl(self) -> list[float]:
        """Per response: sum over its tokens of log p_policy - log p_reference (the k1 estimate of KL)."""
        return [sum(a) - sum(b) for a, b in zip(self.logprobs, self.ref_logprobs)]


def measure_policy(model, tokenizer, prompts: Sequence[str], settings: GenerationSettings, seed: int,
                   batch_size: int, max_prompt_tokens: int, reference=None, desc: str = "generate") -> PolicyResult:
    """One response per prompt, with its per-token log-probs under the model (and the reference).

    Batch i is sampled with seed `seed + i`, whatever the model, so every model sees the
    same prompts, settings and seeds. Log-probs are taken at the sampling temperature.
    Used by the evaluation and by PPO's held-out before/after comparison.
    """
    from tqdm.auto import tqdm

    res = PolicyResult()
    n_batches = (len(prompts) + batch_size - 1) // batch_size
    for i, chunk in tqdm(batches(prompts, batch_size), total=n_batches, desc=desc, unit="batch", leave=False):
        gen = generate(model, tokenizer, chunk, settings, seed=seed + i, max_prompt_tokens=max_prompt_tokens)
        args = (gen.prompt_ids, gen.prompt_mask, gen.response_ids, gen.response_mask, settings.logprob_temperature)
        res.logprobs += masked_rows(response_logprobs(model, *args), gen.response_mask)
        if reference is not None:
            res.ref_logprobs += masked_rows(response_logprobs(reference, *args), gen.response_mask)
        res.texts += gen.texts
        res.eos += gen.has_eos.tolist()
        res.lengths += (gen.response_mask.long().sum(1) - gen.has_eos.long()).tolist()
    return res
