"""PPO maths for language models: small pure tensor functions, each unit-tested by hand.

Shapes: B = episodes (rows), R = response tokens (columns), V = vocabulary. ``mask``
is a (B, R) 0/1 (or bool) tensor that is 1 on real response tokens (up to and
including the first EOS) and 0 on the right padding after it. Every function
here is masked so that padding never contributes to a mean, a variance, a
return or a loss.

Sources: Ziegler et al. 2019, "Fine-Tuning Language Models from Human
Preferences" (lm-human-preferences: per-token KL penalty, score at the last
token, adaptive KL controller); Schulman et al. 2017 (PPO clipped objective)
and 2016 (GAE); Huang et al. 2024, "The N Implementation Details of RLHF with
PPO" (masked whitening, value clipping, temperature-scaled log-probs);
Schulman 2020, "Approximating KL Divergence" (k1/k3 estimators).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- masked statistics


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over mask==1 entries (all of them, or per row with dim=1). Empty rows give 0."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x over mask==1 entries; Bessel-corrected like torch.var by default (as TRL/lm-human-preferences)."""
    mask = mask.to(x.dtype)
    n = mask.sum()
    mean = (x * mask).sum() / n.clamp(min=1.0)
    var = (((x - mean) ** 2) * mask).sum() / n.clamp(min=1.0)
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def whiten(x: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
           shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) on the mask (padding set to 0); with shift_mean=False the mean is added back.

    Split from `masked_whiten` so that a multi-process run can pass statistics of the
    global batch (all processes), not of its shard.
    """
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Whitening over real tokens only (Huang et al. 2024, 'advantage whitening')."""
    return whiten(x, mask, masked_mean(x, mask), masked_var(x, mask), shift_mean, eps)


# ----------------------------------------------------------------------------- entropy (log-probs: train.sampling.token_logprobs)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, R, V) -> (B, R) entropy of softmax(logits / temperature) in nats."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


# ----------------------------------------------------------------------------- KL and rewards


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) for tokens sampled from pi; (B, R) -> (B, R).

    k1 = log pi - log ref (unbiased, can be negative per token; Ziegler et al. 2019).
    k3 = (r - 1) - log r with r = ref / pi (unbiased, always >= 0, lower variance;
    Schulman 2020, "Approximating KL Divergence").
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio  # (r - 1) - log r with log r = -log_ratio
    raise ValueError(f"kl estimator must be 'k1' or 'k3', got {estimator!r}")


def apply_missing_eos_penalty(scores: torch.Tensor, has_eos: torch.Tensor, penalty: float | None) -> torch.Tensor:
    """(B,) scores -> scores + penalty where the response never emitted EOS (penalty None = off).

    Truncated responses are unfinished; without a penalty the policy learns to ramble
    until the length limit (Huang et al. 2024, 'EOS trick').
    """
    if penalty is None:
        return scores
    return torch.where(has_eos.bool(), scores, scores + penalty)


def per_token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """The RL reward of each response token: -kl_coef * KL_t, plus the sequence score at the last real token.

    scores (B,), kl (B, R), mask (B, R) -> (B, R). Padding gets 0. A row with an
    empty mask gets its score at column 0 (cannot happen after sampling: a response
    has at least one token).
    """
    mask = mask.to(kl.dtype)
    rewards = -kl_coef * kl * mask
    R = mask.shape[1]
    cols = torch.arange(R, device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), cols, torch.zeros_like(cols)).max(1).values  # (B,) last real column
    return rewards.scatter_add(1, last.unsqueeze(1), scores.to(rewards.dtype).unsqueeze(1))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over right-padded episodes.

    rewards, values, mask: (B, R) -> (advantages (B, R), returns (B, R)), zero on padding.
    delta_t = r_t + gamma * V_{t+1} - V_t with V = 0 past the last real token (the
    episode ends there), A_t = sum_k (gamma*lam)^k delta_{t+k}. The sum is one
    (B, R) x (R, R) matmul with an upper-triangular discount matrix instead of a
    Python loop over tokens; R is at most a few hundred, so R^2 is small.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    next_values = F.pad(values[:, 1:], (0, 1))  # (B, R) V_{t+1}, 0 after the last column
    deltas = (rewards + gamma * next_values - values) * mask
    R = rewards.shape[1]
    idx = torch.arange(R, device=rewards.device)
    power = (idx.unsqueeze(0) - idx.unsqueeze(1)).to(values.dtype)  # [t, k] = k - t
    discount = torch.where(power >= 0, (gamma * lam) ** power.clamp(min=0), torch.zeros_like(power))  # (R, R)
    advantages = (deltas @ discount.T) * mask  # A[b, t] = sum_k delta[b, k] (gamma lam)^(k - t)
    returns = (advantages + values) * mask
    return advantages, returns


# ----------------------------------------------------------------------------- losses


@dataclass
class PolicyLossStats:
    clipfrac: torch.Tensor  # share of tokens whose ratio left [1 - clip, 1 + clip] and was clipped
    approx_kl: torch.Tensor  # 0.5 * mean (log ratio)^2, the old-vs-new policy drift
    ratio_mean: torch.Tensor


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                cliprange: float) -> tuple[torch.Tensor, PolicyLossStats]:
    """Clipped surrogate objective (Schulman et al. 2017, eq. 7), as a loss to minimise, masked mean over tokens."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = PolicyLossStats(
            clipfrac=masked_mean((clipped > unclipped).float(), mask),
            approx_kl=0.5 * masked_mean(log_ratio**2, mask),
            ratio_mean=masked_mean(ratio, mask),
        )
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss 0.5 * max((V - G)^2, (clip(V, V_old +- c) - G)^2), masked mean; returns (loss, clipfrac).

    Value clipping as in lm-human-preferences and OpenAI baselines (Huang et al. 2024).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    err = (values - returns) ** 2
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((err_clipped > err).float(), mask)
    return loss, clipfrac


# ----------------------------------------------------------------------------- KL coefficient


class FixedKLController:
    """A constant KL coefficient (the seed card's 0.1)."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al. 2019, section 2.2: steer the KL coefficient toward a target KL.

    e = clip(KL / target - 1, -0.2, 0.2);  beta <- beta * (1 + e * n_steps / horizon)
    where KL is the mean per-episode KL of the last batch and n_steps the episodes in it.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[G - V] / Var[G] over real tokens: 1 is a perfect critic, <= 0 a useless one."""
    var_returns = masked_var(returns, mask).item()
    if var_returns == 0 or math.isnan(var_returns):
        return float("nan")
    return 1.0 - masked_var(returns - values, mask).item() / var_returns
