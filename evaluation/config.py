"""The `eval` section of a recipe: what `rlhf evaluate` generates and measures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gpt2_rlhf.train.config import check
from gpt2_rlhf.train.ppo.config import PPOConfig
from gpt2_rlhf.train.rewards import check_reward_fields
from gpt2_rlhf.train.sampling import DECODING, GenerationSettings

from .policies import MODEL_KEYS, POLICY_KEYS
# Seed offset between the passes of eval.samples_per_prompt: pass j samples batch i with seed + j * stride + i.
# A prime far above any batch count, so no two (pass, batch) pairs share a seed.
SAMPLE_SEED_STRIDE = 1_000_003


@dataclass
class EvalConfig:
    """Evaluation of base, SFT and every trained policy (PPO, DPO, RLOO) on the same held-out prompts
    (docs/report-schema.md)."""

    # ---- prompts
    n_prompts: int = field(default=64, metadata={"help": "Held-out prompts to evaluate (0 = every prompt of the split or file)."})
    split: str = field(default="test", metadata={"help": "Dataset split the prompts and preference pairs come from."})
    prompts_file: str | None = field(default=None, metadata={
        "help": "Prompts from this file instead of the split: JSONL with 'prompt' (and optionally 'chosen'/'rejected'), "
                "JSONL in HH format ('chosen'/'rejected' full dialogues), or .txt with one prompt per line."})
    # ---- decoding (the same for every model)
    mode: Literal["sampled", "greedy"] = field(default="sampled", metadata={"help": "Decoding: sampled, or greedy (argmax)."})
    max_new_tokens: int = field(default=DECODING.max_new_tokens, metadata={"help": "Most tokens generated per response."})
    temperature: float = field(default=DECODING.temperature, metadata={"help": "Sampling temperature (sampled mode)."})
    top_k: int = field(default=DECODING.top_k, metadata={"help": "Sample from the k most likely tokens (0 = off; sampled mode)."})
    top_p: float = field(default=DECODING.top_p, metadata={"help": "Nucleus sampling mass (1.0 = off; sampled mode)."})
    max_prompt_tokens: int = field(default=256, metadata={
        "help": "Prompts longer than this keep their last tokens; also capped so prompt + response fits the model."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generation / scoring batch."})
    seed: int | None = field(default=None, metadata={
        "help": "Evaluation seed (decoding and bootstrap); default: the recipe's seed."})
    samples_per_prompt: int = field(default=1, metadata={
        "help": "Responses k each model samples per prompt. Sample 0 is the one-sample evaluation exactly (batch i: "
                "seed + i); sample j is another pass over the same prompts with seed + j * 1000003 + i, the same "
                "for every model. Per-prompt metrics (reward, gold, KL, length, EOS, classifier, win rates) use "
                "each prompt's mean over its k responses, diversity counts all responses, and every CI resamples "
                "prompts (a cluster bootstrap). Sampled mode only (greedy decoding repeats one response)."})
    # ---- metrics
    bootstrap_samples: int = field(default=1000, metadata={"help": "Bootstrap resamples for every confidence interval (0 = no CIs)."})
    confidence: float = field(default=0.95, metadata={"help": "Confidence level of the bootstrap intervals."})
    reference: str = field(default="sft", metadata={"help": f"Model key the KL is measured against ({', '.join(MODEL_KEYS)})."})
    judge_aggregate: Literal["min", "mean"] = field(default=PPOConfig.monitor_aggregate, metadata={"help": (
        "How the held-out judges' scores of one response combine into metrics.judges: min (the worst case) or "
        "mean; the default is ppo.monitor_aggregate's, so the report's judges row is the monitor's.")})
    curve_prompts: int = field(default=128, metadata={
        "help": "Prompts (the first N evaluation prompts) on which every PPO snapshot is measured for the "
                "overoptimisation curve: KL to SFT, reward, gold (0 = no curve)."})
    perplexity_max_tokens: int = field(default=256, metadata={
        "help": "Held-out responses longer than this are cut (and lose their EOS) for perplexity."})
    # ---- models
    models: list[str] = field(default_factory=lambda: list(MODEL_KEYS), metadata={
        "help": f"Model keys to evaluate ({', '.join(MODEL_KEYS)}), in order; a key whose RUN_DIR/<key> is missing is "
                "skipped with a warning."})
    base_model: str | None = field(default=None, metadata={"help": "Base model directory or Hub id (default RUN_DIR/base)."})
    sft_model: str | None = field(default=None, metadata={"help": "SFT model directory or Hub id (default RUN_DIR/sft)."})
    ppo_model: str | None = field(default=None, metadata={"help": "PPO model directory or Hub id (default RUN_DIR/ppo)."})
    dpo_model: str | None = field(default=None, metadata={"help": "DPO model directory or Hub id (default RUN_DIR/dpo)."})
    rloo_model: str | None = field(default=None, metadata={"help": "RLOO model directory or Hub id (default RUN_DIR/rloo)."})
    reward_model: str | None = field(default=None, metadata={"help": "Reward model directory or Hub id (default RUN_DIR/reward)."})
    # ---- a reward without a reward model (train.rewards); default: the reward model, and in a run without
    # one, the reward function or classifier the PPO stage was trained with (its config.yaml)
    reward_function: str | None = field(default=None, metadata={"help": (
        "'module:function' that scores the responses instead of the reward model (either signature of "
        "ppo.reward_function). Default: the reward model; a run without one is scored with the reward PPO was "
        "trained with (RUN_DIR/ppo/config.yaml), and the report says which.")})
    reward_classifier: str | None = field(default=None, metadata={"help": (
        "A sequence classifier (local folder or Hub id) whose label score is the reward instead of the reward "
        "model (as ppo.reward_classifier).")})
    reward_classifier_label: str | None = field(default=None, metadata={"help": (
        "The reward classifier's rewarded label, name or index (None: the last label).")})
    reward_classifier_score: Literal["log_odds", "logit", "probability"] = field(default="log_odds", metadata={
        "help": "The reward from the classifier: log_odds of the label, its logit, or its probability."})
    reward_classifier_text: Literal["full", "response"] = field(default="full", metadata={
        "help": "What the reward classifier reads: prompt + response (full) or the response."})
    classifier_model: str | None = field(default=None, metadata={
        "help": "Optional text classifier (path or Hub id, e.g. a toxicity model) whose label probability is averaged per model."})
    classifier_label: str | None = field(default=None, metadata={
        "help": "Label of classifier_model to average (name or index; default: the last label)."})
    reference_metrics: list[str] = field(default_factory=list, metadata={
        "help": "Extra evaluate metrics (a local script/folder or a Hub id such as rouge) computed per model with "
                "predictions = its responses and references = the held-out chosen responses; needs pairs."})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, or auto (cuda when available)."})
    # ---- reproduction
    tolerance_rel: float = field(default=0.05, metadata={
        "help": "Relative tolerance `rlhf reproduce` accepts when it recomputes a reported number."})
    tolerance_abs: float = field(default=0.02, metadata={
        "help": "Absolute tolerance `rlhf reproduce` accepts (added to the relative one)."})

    def __post_init__(self):
        check(self.n_prompts >= 0, f"n_prompts must be >= 0 (0 = all), got {self.n_prompts}")
        check(self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        check(self.mode == "greedy" or self.temperature > 0,
              f"temperature must be > 0 in sampled mode, got {self.temperature} (use mode: greedy for argmax)")
        check(self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}")
        check(0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}")
        check(self.max_prompt_tokens >= 1, f"max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.samples_per_prompt >= 1, f"samples_per_prompt must be >= 1, got {self.samples_per_prompt}")
        check(self.samples_per_prompt == 1 or self.mode == "sampled",
              f"samples_per_prompt {self.samples_per_prompt} needs mode: sampled (greedy decoding gives the same "
              "response every time)")
        check(self.bootstrap_samples >= 0, f"bootstrap_samples must be >= 0, got {self.bootstrap_samples}")
        check(0.0 < self.confidence < 1.0, f"confidence must be in (0, 1), got {self.confidence}")
        check(self.curve_prompts >= 0, f"curve_prompts must be >= 0 (0 = no curve), got {self.curve_prompts}")
        check(self.perplexity_max_tokens >= 1, f"perplexity_max_tokens must be >= 1, got {self.perplexity_max_tokens}")
        check(len(self.models) >= 1, f"models must name at least one of {', '.join(MODEL_KEYS)}")
        bad = [m for m in self.models if m not in MODEL_KEYS]
        check(not bad, f"models: unknown key(s) {bad}; choose from {list(MODEL_KEYS)}")
        check(len(set(self.models)) == len(self.models), f"models: repeated key in {self.models}")
        check(self.reference in MODEL_KEYS, f"reference must be one of {list(MODEL_KEYS)}, got {self.reference!r}")
        check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
              f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        check(self.classifier_label is None or self.classifier_model is not None,
              "classifier_label needs classifier_model (the classifier whose label it names)")
        check(self.tolerance_rel >= 0 and self.tolerance_abs >= 0, "tolerance_rel and tolerance_abs must be >= 0")
        check_reward_fields(self, "")

    @property
    def reward_spec(self):
        """The reward function or classifier the evaluation scores with instead of a reward model, or None."""
        from gpt2_rlhf.train.rewards import RewardSpec

        return RewardSpec.of(self)

    @property
    def generation(self) -> GenerationSettings:
        """The decoding settings every model gets (temperature 0 means greedy in train.sampling.generate)."""
        greedy = self.mode == "greedy"
        return GenerationSettings(max_new_tokens=self.max_new_tokens, temperature=0.0 if greedy else self.temperature,
                                  top_k=0 if greedy else self.top_k, top_p=1.0 if greedy else self.top_p)

    def model_override(self, key: str) -> str | None:
        """`eval.<key>_model`: the directory or Hub id that replaces RUN_DIR/<key>, or None."""
        return getattr(self, f"{key}_model")
