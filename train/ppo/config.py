"""`PPOConfig`: the `ppo:` section of a recipe. Every field is documented once, here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import check
from ..rewards import check_reward_fields
from ..sampling import DECODING, GenerationSettings


@dataclass
class PPOConfig:
    """Stage 3: PPO against the reward model (or a Python reward function) with a KL penalty.

    Defaults are the seed model card's (lr 1e-5, KL coefficient 0.1, clip 0.2) and the
    RLHF PPO recipe of Ziegler et al. 2019 / Huang et al. 2024 for the rest.
    """

    # --- inputs (None = the run directory's stages)
    policy_path: str | None = field(default=None, metadata={
        "help": "Initial policy (HF causal LM dir or Hub id); default OUTPUT/sft, else OUTPUT/base."})
    ref_path: str | None = field(default=None, metadata={
        "help": "Frozen reference policy for the KL penalty; default: the initial policy."})
    reward_model_path: str | None = field(default=None, metadata={
        "help": "Reward model dir (GPT2ForSequenceClassification + reward_stats.json); default OUTPUT/reward."})
    value_model_path: str | None = field(default=None, metadata={
        "help": "Critic initialisation (sequence-classification dir); default: the reward model, or the policy "
                "backbone with a fresh scalar head when a reward function is used without a reward model."})
    reward_function: str | None = field(default=None, metadata={
        "help": "'module:function' used instead of the reward model: f(prompts, responses) -> list[float], or TRL's "
                "reward_funcs style f(prompts, completions, **kwargs) -> list[float]; e.g. "
                "gpt2_rlhf.train.rewards:contains_good."})
    reward_classifier: str | None = field(default=None, metadata={
        "help": "A sequence classifier (local folder or Hub id, safetensors weights; e.g. a sentiment model) whose "
                "score of reward_classifier_label is the reward, instead of the reward model."})
    reward_classifier_label: str | None = field(default=None, metadata={
        "help": "The classifier's label that is rewarded: its name (e.g. POSITIVE) or index (None: the last label)."})
    reward_classifier_score: Literal["log_odds", "logit", "probability"] = field(default="log_odds", metadata={
        "help": "The reward from the classifier: log_odds = log p/(1-p) of the label (> 0 exactly when the "
                "classifier picks it), logit (the raw logit, as TRL's IMDB example), or probability."})
    reward_classifier_text: Literal["full", "response"] = field(default="full", metadata={
        "help": "What the classifier reads: full = prompt + response (the whole continued text), or the response."})
    normalise_reward: bool = field(default=True, metadata={
        "help": "Normalise reward-model scores with reward_stats.json ((raw - mean) / std) before use."})

    # --- episodes and batches
    total_episodes: int = field(default=10_000, metadata={"help": "Episodes (prompt + sampled response) to train on."})
    batch_size: int = field(default=64, metadata={
        "help": "Episodes per PPO update (rollout batch), summed over processes."})
    num_mini_batches: int = field(default=1, metadata={"help": "Minibatches per PPO epoch (one optimiser step each)."})
    gradient_accumulation_steps: int = field(default=1, metadata={
        "help": "Micro-batches per minibatch whose gradients are summed before a step."})
    ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch."})
    max_prompt_tokens: int = field(default=128, metadata={"help": "Prompts longer than this keep their last tokens."})
    rollout_batch_size: int = field(default=0, metadata={
        "help": "Episodes per generate/forward call in rollouts (0 = the whole per-process batch)."})

    # --- sampling (the rollout policy; the same temperature scales every log-prob)
    max_new_tokens: int = field(default=DECODING.max_new_tokens, metadata={"help": "Most response tokens per episode."})
    temperature: float = field(default=DECODING.temperature, metadata={"help": "Sampling temperature for rollouts (> 0)."})
    top_k: int = field(default=DECODING.top_k, metadata={"help": "Top-k sampling in rollouts (0 = off)."})
    top_p: float = field(default=DECODING.top_p, metadata={"help": "Nucleus sampling in rollouts (1.0 = off)."})

    # --- reward shaping
    missing_eos_penalty: float | None = field(default=-1.0, metadata={
        "help": "Added to the score of a response that hit max_new_tokens without EOS (null = off)."})
    kl_coef: float = field(default=0.1, metadata={"help": "KL penalty coefficient (initial value when adaptive)."})
    kl_estimator: Literal["k1", "k3"] = field(default="k1", metadata={
        "help": "Per-token KL estimator in the reward: k1 = log pi - log ref, k3 = (r - 1) - log r."})
    adaptive_kl: bool = field(default=False, metadata={
        "help": "Adapt kl_coef toward target_kl with Ziegler et al.'s proportional controller."})
    target_kl: float = field(default=6.0, metadata={"help": "Target mean KL per episode (nats) for adaptive_kl."})
    kl_horizon: int = field(default=10_000, metadata={"help": "Controller horizon in episodes for adaptive_kl."})

    # --- PPO
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate of the policy."})
    value_learning_rate: float | None = field(default=None, metadata={
        "help": "AdamW learning rate of the critic (null = learning_rate)."})
    lr_schedule: Literal["linear", "constant"] = field(default="linear", metadata={
        "help": "Learning-rate schedule over the updates: linear decay to 0, or constant."})
    warmup_updates: int = field(default=0, metadata={"help": "Updates of linear warm-up."})
    adam_eps: float = field(default=1e-5, metadata={"help": "AdamW epsilon (1e-5 as in lm-human-preferences)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clip per model (0 = off)."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor of GAE."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    cliprange: float = field(default=0.2, metadata={"help": "PPO policy ratio clip range."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip range around the rollout values."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Whiten advantages over the batch's tokens."})
    shared_value_head: bool = field(default=False, metadata={
        "help": "Critic = a scalar head on the policy backbone instead of a separate value model."})
    continue_critic: bool = field(default=True, metadata={"help": (
        "In feedback rounds 2+ (`rlhf run`), start the critic from the previous round's (its critic/) rather than "
        "from the new reward model, whose head has never predicted this policy's returns.")})

    # --- bookkeeping
    seed_offset: int = field(default=3, metadata={"help": "Added to the recipe seed for this stage."})
    save_every: int = field(default=10, metadata={"help": "Checkpoint every N updates (0 = never)."})
    snapshot_every: int = field(default=0, metadata={"help": (
        "Keep the policy every N updates in snapshots/ (the evaluation's overoptimisation curve; 0 = never).")})
    eval_prompts: int = field(default=64, metadata={
        "help": "Held-out test prompts for the before/after comparison at the end (0 = skip)."})
    eval_batch_size: int = field(default=32, metadata={"help": "Batch size of the before/after comparison (and the monitor's)."})

    # --- the reward-hacking monitor (train/ppo/monitor.py): proxy vs judges PPO never sees, no gold needed
    monitor_every: int = field(default=0, metadata={"help": (
        "Measure the policy every N updates (and before the first) on fixed held-out prompts: proxy, judges, "
        "their disagreement, KL, length, distinct-n, into metrics.jsonl and ppo/monitor.json (0 = off).")})
    monitor_prompts: int = field(default=64, metadata={"help": "Held-out test prompts the monitor samples (the first N)."})
    monitor_samples_per_prompt: int = field(default=1, metadata={"help": (
        "Responses per monitor prompt (each prompt's mean is one bootstrap unit).")})
    monitor_judges: list[str] = field(default_factory=list, metadata={"help": (
        "Judge reward-model directories; empty: every <reward model>/judges/<name>/ the reward stage trained "
        "(reward.judges, reward.judge_holdout). Without judges the monitor measures but never warns.")})
    monitor_aggregate: Literal["min", "mean"] = field(default="min", metadata={"help": (
        "How the judges' scores of one response combine into the judge column: min (the worst case, Coste et "
        "al. 2023's WCO: a response counts as good only when every judge says so, so one judge PPO has found "
        "a way around cannot carry the ensemble) or mean.")})
    monitor_patience: int = field(default=1, metadata={"help": (
        "Warn when the judges have set no new best for this many points while the proxy pulled away from them "
        "since their best.")})
    monitor_z: float = field(default=2.0, metadata={"help": (
        "The divergence (the proxy's rise since the judges' best plus the judges' fall, each in units of its "
        "spread over the prompts at the first point) must exceed this many paired-bootstrap standard errors "
        "(over the fixed prompts).")})
    monitor_bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples of the prompts for the noise band."})
    monitor_pick_se: float = field(default=1.0, metadata={"help": (
        "The judges' pick: the earliest of their successive bests within this many paired-bootstrap standard "
        "errors of the best (the one-standard-error rule); 0 = the best point itself.")})
    monitor_keep_best: bool = field(default=False, metadata={"help": (
        "The stage's policy is the one at the judges' best point instead of the last (the pick is always in "
        "monitor.json).")})
    monitor_early_stop: bool = field(default=False, metadata={"help": "Stop training at the first warning."})

    def __post_init__(self):
        check(self.total_episodes > 0, f"total_episodes must be > 0, got {self.total_episodes}")
        check(self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}")
        check(self.num_mini_batches > 0 and self.gradient_accumulation_steps > 0,
              "num_mini_batches and gradient_accumulation_steps must be >= 1")
        check(self.batch_size % (self.num_mini_batches * self.gradient_accumulation_steps) == 0,
              f"batch_size ({self.batch_size}) must be divisible by num_mini_batches * gradient_accumulation_steps "
              f"({self.num_mini_batches} * {self.gradient_accumulation_steps})")
        check(self.total_episodes >= self.batch_size,
              f"total_episodes ({self.total_episodes}) must be at least batch_size ({self.batch_size})")
        check(self.ppo_epochs > 0, f"ppo_epochs must be >= 1, got {self.ppo_epochs}")
        check(self.max_new_tokens > 0, f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        check(self.max_prompt_tokens > 0, f"max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")
        check(self.rollout_batch_size >= 0, f"rollout_batch_size must be >= 0, got {self.rollout_batch_size}")
        check(self.temperature > 0, f"temperature must be > 0 for PPO rollouts (sampling), got {self.temperature}")
        check(self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}")
        check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        check(self.kl_coef >= 0, f"kl_coef must be >= 0, got {self.kl_coef}")
        check(self.kl_estimator in ("k1", "k3"), f"kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")
        check(self.target_kl > 0 and self.kl_horizon > 0, "target_kl and kl_horizon must be > 0")
        check(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        check(self.value_learning_rate is None or self.value_learning_rate > 0, "value_learning_rate must be > 0")
        check(0 <= self.gamma <= 1 and 0 <= self.lam <= 1, "gamma and lam must be in [0, 1]")
        check(self.cliprange > 0 and self.cliprange_value > 0, "cliprange and cliprange_value must be > 0")
        check(self.vf_coef >= 0, f"vf_coef must be >= 0, got {self.vf_coef}")
        check(self.max_grad_norm >= 0, f"max_grad_norm must be >= 0, got {self.max_grad_norm}")
        check(self.snapshot_every >= 0, f"snapshot_every must be >= 0, got {self.snapshot_every}")
        check(self.save_every >= 0 and self.eval_prompts >= 0 and self.eval_batch_size > 0,
              "save_every and eval_prompts must be >= 0 and eval_batch_size > 0")
        check(self.monitor_every >= 0, f"monitor_every must be >= 0, got {self.monitor_every}")
        for name in ("monitor_prompts", "monitor_samples_per_prompt", "monitor_patience"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.monitor_z >= 0, f"monitor_z must be >= 0, got {self.monitor_z}")
        check(self.monitor_pick_se >= 0, f"monitor_pick_se must be >= 0, got {self.monitor_pick_se}")
        check(self.monitor_bootstrap >= 2, f"monitor_bootstrap must be >= 2, got {self.monitor_bootstrap}")
        check(self.warmup_updates >= 0, f"warmup_updates must be >= 0, got {self.warmup_updates}")
        check_reward_fields(self, "")

    @property
    def reward_spec(self):
        """The reward function or classifier replacing the reward model (train.rewards.RewardSpec), or None."""
        from ..rewards import RewardSpec

        return RewardSpec.of(self)

    @property
    def num_updates(self) -> int:
        return self.total_episodes // self.batch_size

    @property
    def generation(self) -> GenerationSettings:
        """The rollout's decoding settings (also those of the held-out before/after comparison)."""
        return GenerationSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_k=self.top_k,
                                  top_p=self.top_p)
