"""Online alignment without a critic: REINFORCE Leave-One-Out (RLOO) with TRL's ``RLOOTrainer``.

Ahmadian et al. 2024 ("Back to Basics: Revisiting REINFORCE Style Optimization for
Learning from Human Feedback"; Kool et al. 2019 for the estimator): sample k responses
per prompt, reward each with the sequence score minus kl_coef * its summed k1 KL to the
reference, and use as baseline the mean reward of the other k - 1 responses of the same
prompt. No value model, so a step costs less than PPO's; it is what TRL offers for
online training since it removed PPOTrainer (1.13).

The reward is PPO's, computed the same way: the reward model (``OUTPUT/reward``) on
prompt + response + EOS (EOS appended to a response that has none), read at the last
real token, normalised with ``reward_stats.json`` ((raw - mean) / std); or a Python
reward function / classifier (``train.rewards.RewardSpec``); plus the missing-EOS
penalty. TRL then subtracts beta * KL and forms the leave-one-out advantages.

Settings that PPO has are taken from the ``ppo:`` section unless the ``rloo:`` section
sets them (``resolve``, which ``rlhf run`` applies so that config.yaml records the
values used). The mapping onto TRL's RLOOConfig (read off trl/trainer/rloo_config.py
and rloo_trainer.py, TRL 1.16; the same as ../shared/bench/trl_rloo_baseline.py):

==========================  =============================================================
ppo / rloo field            TRL RLOOConfig
==========================  =============================================================
kl_coef                     beta (k1 KL summed over the response, subtracted from the reward)
temperature, top_k, top_p   temperature, top_k, top_p (log-probs at the same temperature)
max_new_tokens              max_completion_length
max_prompt_tokens           (ours: prompts are cut to their last tokens before TRL sees them)
batch_size                  generation_batch_size: completions per update = prompts x num_generations
num_mini_batches            steps_per_generation (per_device_train_batch_size = batch_size / it)
ppo_epochs                  num_iterations (passes over each generation batch)
cliprange                   epsilon
total_episodes              max_steps = total_episodes / batch_size x num_mini_batches x num_iterations
learning_rate, lr_schedule  learning_rate, lr_scheduler_type (decay over the optimizer steps)
warmup_updates              warmup_steps = warmup_updates x num_mini_batches x num_iterations
max_grad_norm, adam_eps,    max_grad_norm, adam_epsilon, weight_decay
weight_decay
save_every                  save_steps (in updates, so a checkpoint falls between generation batches)
==========================  =============================================================

Deviations from our PPO, forced by TRL: generation stops at EOS only (as our sampler
does); stopping at the HH turn marker ("\\n\\nHuman:") would need ``stop_strings``, which
``generate`` accepts only with a tokenizer argument that TRL does not pass, and TRL's
completion mask ends at EOS only. ``ppo.kl_estimator`` k3 and ``ppo.adaptive_kl`` have
no RLOO counterpart (TRL uses a fixed beta and k1; a warning says so). TRL's log-prob
forward passes no position ids, so GPT-2 sees left-padded prompts at shifted positions
in the loss and KL (generation uses mask-based positions). The ratio, clip and loss are
per sequence, and a batch holds batch_size / num_generations distinct prompts.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
import yaml

from .config import check, to_plain
from .hf_training import Precision, trainer_field
from .rewards import check_reward_fields
from .sampling import GenerationSettings

logger = logging.getLogger(__name__)

# rloo field -> the ppo field it defaults to (None in the rloo section = the ppo section's value)
FROM_PPO: dict[str, str] = {
    "reward_model_path": "reward_model_path", "reward_function": "reward_function",
    "reward_classifier": "reward_classifier", "reward_classifier_label": "reward_classifier_label",
    "reward_classifier_score": "reward_classifier_score", "reward_classifier_text": "reward_classifier_text",
    "normalise_reward": "normalise_reward", "missing_eos_penalty": "missing_eos_penalty",
    "total_episodes": "total_episodes", "batch_size": "batch_size", "num_mini_batches": "num_mini_batches",
    "num_iterations": "ppo_epochs", "max_prompt_tokens": "max_prompt_tokens", "max_new_tokens": "max_new_tokens",
    "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "kl_coef": "kl_coef",
    "cliprange": "cliprange", "learning_rate": "learning_rate", "lr_schedule": "lr_schedule",
    "warmup_updates": "warmup_updates", "adam_eps": "adam_eps", "weight_decay": "weight_decay",
    "max_grad_norm": "max_grad_norm", "seed_offset": "seed_offset", "save_every": "save_every",
    "eval_prompts": "eval_prompts", "eval_batch_size": "eval_batch_size",
}


def _ppo(name: str, what: str) -> dict[str, Any]:
    return {"default": None, "metadata": {"help": f"{what} (null: ppo.{FROM_PPO[name]})."}}


@dataclass
class RLOOStageConfig:
    """Online alignment: TRL's RLOO from the SFT model against PPO's reward (section ``rloo``).

    Every null field takes the ppo section's value (module docstring: the mapping onto TRL). Its checkpoint and
    device fields are the SFT/reward/DPO ones (``hf_training.TrainerFields``); the optimiser's follow PPO's."""

    # --- inputs and the reward
    policy_path: str | None = field(default=None, metadata={
        "help": "Initial policy and KL reference (default OUTPUT/sft, else OUTPUT/base)."})
    reward_model_path: str | None = field(**_ppo("reward_model_path", "Reward model dir (default OUTPUT/reward)"))
    reward_function: str | None = field(**_ppo("reward_function", "'module:function' used instead of the reward model"))
    reward_classifier: str | None = field(**_ppo("reward_classifier", "A sequence classifier used as the reward"))
    reward_classifier_label: str | None = field(**_ppo("reward_classifier_label", "The classifier's rewarded label"))
    reward_classifier_score: Literal["log_odds", "logit", "probability"] | None = field(
        **_ppo("reward_classifier_score", "log_odds, logit or probability of the classifier's label"))
    reward_classifier_text: Literal["full", "response"] | None = field(
        **_ppo("reward_classifier_text", "What the classifier reads: full or response"))
    normalise_reward: bool | None = field(**_ppo("normalise_reward", "Normalise reward-model scores with reward_stats.json"))
    missing_eos_penalty: float | None = field(**_ppo(
        "missing_eos_penalty", "Added to the score of a response without EOS; 0 = off"))

    # --- episodes, batches, sampling
    total_episodes: int | None = field(**_ppo("total_episodes", "Completions to sample in all"))
    batch_size: int | None = field(**_ppo("batch_size", "Completions per update (generation batch), over processes"))
    num_generations: int = field(default=4, metadata={
        "help": "Completions per prompt (k); the leave-one-out baseline of one is the mean of the other k - 1."})
    num_mini_batches: int | None = field(**_ppo("num_mini_batches", "Optimizer steps per pass over a generation batch"))
    num_iterations: int | None = field(**_ppo("num_iterations", "Passes over each generation batch"))
    max_prompt_tokens: int | None = field(**_ppo("max_prompt_tokens", "Prompts longer than this keep their last tokens"))
    max_new_tokens: int | None = field(**_ppo("max_new_tokens", "Most response tokens per completion"))
    temperature: float | None = field(**_ppo("temperature", "Sampling temperature (> 0)"))
    top_k: int | None = field(**_ppo("top_k", "Top-k sampling (0 = off)"))
    top_p: float | None = field(**_ppo("top_p", "Nucleus sampling (1.0 = off)"))

    # --- the objective and the optimiser
    kl_coef: float | None = field(**_ppo("kl_coef", "KL coefficient, TRL's beta"))
    cliprange: float | None = field(**_ppo("cliprange", "Ratio clip range, TRL's epsilon"))
    normalize_advantages: bool = field(default=False, metadata={
        "help": "Normalise the advantages over each generation batch (TRL's option; the RLOO paper does not)."})
    learning_rate: float | None = field(**_ppo("learning_rate", "AdamW learning rate"))
    lr_schedule: Literal["linear", "constant"] | None = field(**_ppo("lr_schedule", "Learning-rate schedule"))
    warmup_updates: int | None = field(**_ppo("warmup_updates", "Updates of linear warm-up"))
    adam_eps: float | None = field(**_ppo("adam_eps", "AdamW epsilon"))
    weight_decay: float | None = field(**_ppo("weight_decay", "AdamW weight decay"))
    max_grad_norm: float | None = field(**_ppo("max_grad_norm", "Gradient-norm clip (0 = off)"))

    # --- bookkeeping
    seed_offset: int | None = field(**_ppo("seed_offset", "Added to the recipe seed for this stage"))
    save_every: int | None = field(**_ppo("save_every", "Checkpoint every N updates (0 = never)"))
    save_total_limit: int = trainer_field("save_total_limit")
    eval_prompts: int | None = field(**_ppo("eval_prompts", "Held-out prompts for the SFT vs RLOO comparison (0 = skip)"))
    eval_batch_size: int | None = field(**_ppo("eval_batch_size", "Batch size of the held-out comparison"))
    precision: Precision = trainer_field("precision")
    gradient_checkpointing: bool = trainer_field("gradient_checkpointing")

    def __post_init__(self):
        positive = ("total_episodes", "batch_size", "num_mini_batches", "num_iterations", "max_prompt_tokens",
                    "max_new_tokens", "temperature", "learning_rate", "cliprange", "eval_batch_size", "adam_eps")
        for name in positive:
            v = getattr(self, name)
            check(v is None or v > 0, f"{name}: must be positive, got {v}")
        check(self.num_generations >= 2, f"num_generations: RLOO needs at least 2 completions per prompt, got "
                                         f"{self.num_generations}")
        for name in ("kl_coef", "top_k", "warmup_updates", "weight_decay", "max_grad_norm", "save_every",
                     "eval_prompts", "seed_offset"):
            v = getattr(self, name)
            check(v is None or v >= 0, f"{name}: must be >= 0, got {v}")
        check(self.top_p is None or 0 < self.top_p <= 1, f"top_p: must be in (0, 1], got {self.top_p}")
        check(self.save_total_limit > 0, f"save_total_limit: must be positive, got {self.save_total_limit}")
        check(self.policy_path is None or bool(self.policy_path.strip()), "policy_path: empty; use null for OUTPUT/sft")
        from types import SimpleNamespace

        # the classifier settings' null means "inherit"; checked here as their defaults
        check_reward_fields(SimpleNamespace(**{**vars(self), "reward_classifier_score": self.reward_classifier_score
                                               or "log_odds", "reward_classifier_text": self.reward_classifier_text
                                               or "full"}), "")
        if None not in (self.batch_size, self.num_mini_batches):
            check(self.batch_size % self.num_generations == 0,
                  f"batch_size ({self.batch_size}) must be divisible by num_generations ({self.num_generations})")
            check(self.batch_size % self.num_mini_batches == 0,
                  f"batch_size ({self.batch_size}) must be divisible by num_mini_batches ({self.num_mini_batches})")
        if None not in (self.batch_size, self.total_episodes):
            check(self.total_episodes >= self.batch_size,
                  f"total_episodes ({self.total_episodes}) must be at least batch_size ({self.batch_size})")

    # ------------------------------------------------------------------ resolved values

    def resolve(self, ppo) -> "RLOOStageConfig":
        """A copy with every null field set from the ppo section (and checked again); itself when none is null.

        The reward is inherited as a whole: when this section names none of reward_model_path, reward_function,
        reward_classifier, the ppo section's reward (and classifier settings) is used."""
        own_reward = any(getattr(self, k) is not None for k in ("reward_model_path", "reward_function",
                                                                 "reward_classifier"))
        values = {}
        for name, src in FROM_PPO.items():
            if getattr(self, name) is not None:
                continue
            if name.startswith("reward_") and own_reward:
                continue  # a reward of its own: the classifier settings default to RewardSpec's
            value = getattr(ppo, src)
            if name == "missing_eos_penalty" and value is None:
                value = 0.0  # PPO's null (off) is 0 here, where null means "inherit"
            values[name] = value
        if not values:
            return self
        try:
            return dataclasses.replace(self, **values)
        except ValueError as e:  # a check that only fails with the inherited values: say where they came from
            from .config import ConfigError

            raise ConfigError(f"rloo (with the ppo section's {', '.join(FROM_PPO[k] for k in values)}): {e}") from e

    @property
    def resolved(self) -> bool:
        return all(getattr(self, name) is not None for name in FROM_PPO if not name.startswith("reward_"))

    @property
    def reward_spec(self):
        """The reward function or classifier replacing the reward model (train.rewards.RewardSpec), or None."""
        from .rewards import RewardSpec

        return RewardSpec.of(self)

    @property
    def generation(self) -> GenerationSettings:
        """The sampling settings (also those of the held-out comparison)."""
        return GenerationSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_k=self.top_k,
                                  top_p=self.top_p)

    @property
    def updates(self) -> int:
        """Generation batches (one sample-and-learn round each; a PPO update's counterpart)."""
        return self.total_episodes // self.batch_size

    @property
    def steps_per_update(self) -> int:
        """Optimizer steps per generation batch."""
        return self.num_mini_batches * self.num_iterations


# ----------------------------------------------------------------------------- pure helpers


def cut_prompt(tokenizer, prompt: str, max_tokens: int) -> str:
    """The prompt's text cut to its last `max_tokens` tokens (TRL tokenises prompts without truncation).

    Decoding the kept ids and re-encoding them can merge tokens differently; the cut moves
    right until the text re-encodes within the budget."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return prompt
    for start in range(len(ids) - max_tokens, len(ids)):
        text = tokenizer.decode(ids[start:], skip_special_tokens=False)
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_tokens:
            return text
    return ""


def has_eos(completion_ids: Sequence[Sequence[int]], eos_id: int) -> torch.Tensor:
    """(B,) bool: whether each TRL completion (ids up to and including its first EOS) ended with EOS."""
    return torch.tensor([bool(len(ids)) and int(ids[-1]) == eos_id for ids in completion_ids], dtype=torch.bool)


def trl_arguments(cfg: RLOOStageConfig, seed: int, output_dir: Path, world_size: int = 1) -> dict[str, Any]:
    """RLOOConfig kwargs of a resolved config (module docstring: the mapping)."""
    from .hf_training import device_settings

    check(cfg.resolved, "rloo config: unresolved fields (call resolve(recipe.ppo) first)")
    per_step = cfg.batch_size // cfg.num_mini_batches
    check(per_step % world_size == 0, f"rloo.batch_size / num_mini_batches ({per_step}) must be divisible by the "
                                      f"number of processes ({world_size})")
    steps = cfg.steps_per_update
    return dict(
        output_dir=str(output_dir), seed=seed, data_seed=seed,
        per_device_train_batch_size=per_step // world_size, gradient_accumulation_steps=1,
        steps_per_generation=cfg.num_mini_batches, num_generations=cfg.num_generations,
        num_iterations=cfg.num_iterations, max_steps=cfg.updates * steps,
        max_completion_length=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
        beta=cfg.kl_coef, epsilon=cfg.cliprange, normalize_advantages=cfg.normalize_advantages,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_schedule, warmup_steps=cfg.warmup_updates * steps,
        adam_epsilon=cfg.adam_eps, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
        disable_dropout=True,  # as PPO: sample and score without dropout (Huang et al. 2024)
        logging_steps=steps,  # one log row per update
        save_strategy="steps" if cfg.save_every else "no", save_steps=max(cfg.save_every, 1) * steps,
        save_total_limit=cfg.save_total_limit, eval_strategy="no", use_vllm=False, disable_tqdm=True,
        **device_settings(cfg.precision, cfg.gradient_checkpointing),
    )


# ----------------------------------------------------------------------------- the reward TRL calls


class TRLReward:
    """A TRL ``reward_funcs`` callable, ``f(prompts, completions, completion_ids, **kwargs) -> list[float]``:
    PPO's score of each completion plus the missing-EOS penalty."""

    def __init__(self, score: Callable[[list[str], list[str], list[list[int]]], torch.Tensor], eos_id: int,
                 missing_eos_penalty: float, name: str):
        self.score, self.eos_id, self.penalty = score, eos_id, missing_eos_penalty
        self.__name__ = name  # TRL names the reward's logs after it

    def __call__(self, prompts, completions, completion_ids=None, **kwargs) -> list[float]:
        from .ppo.core import apply_missing_eos_penalty

        ids = [list(c) for c in completion_ids]
        scores = self.score(list(prompts), list(completions), ids).float().cpu()
        return apply_missing_eos_penalty(scores, has_eos(ids, self.eos_id), self.penalty or None).tolist()


def reward_model_scores(rm, tokenizer, normalise: bool) -> Callable:
    """PPO's reward-model score (train.ppo.trainer.RewardModelScorer): prompt ids + sampled ids, EOS appended
    where missing, right-padded, read at the last real token; normalised with reward_stats.json. A reward
    model with another vocabulary reads the decoded text instead (RewardModel.score, EOS appended)."""
    from .modeling import pad_sequences
    from .ppo.trainer import append_eos_where_missing

    same_vocab = rm.tokenizer.get_vocab() == tokenizer.get_vocab()

    @torch.no_grad()
    def score(prompts: list[str], completions: list[str], completion_ids: list[list[int]]) -> torch.Tensor:
        if same_vocab:
            device = next(rm.model.parameters()).device
            seqs = [tokenizer(p, add_special_tokens=False)["input_ids"] + c for p, c in zip(prompts, completion_ids)]
            ids, mask = pad_sequences(seqs, tokenizer.pad_token_id, "right", device)
            ids, mask = append_eos_where_missing(ids, mask, has_eos(completion_ids, tokenizer.eos_token_id).to(device),
                                                 tokenizer.eos_token_id, tokenizer.pad_token_id)
            raw = rm.score_ids(ids, mask)
        else:
            raw = rm.score(prompts, completions)
        return rm.normalise(raw) if normalise else raw

    return score


def function_scores(fn: Callable[[list[str], list[str]], list[float]]) -> Callable:
    """A (prompts, responses) reward (train.rewards: checked, either signature) as a score of completions."""
    def score(prompts: list[str], completions: list[str], completion_ids: list[list[int]]) -> torch.Tensor:
        return torch.tensor([float(v) for v in fn(prompts, completions)], dtype=torch.float32)

    return score


# ----------------------------------------------------------------------------- the stage


def resolve_inputs(cfg: RLOOStageConfig, output_dir: Path) -> dict[str, str | None]:
    """The policy (also the KL reference) and the reward model; StageError names a missing one."""
    from .rundir import is_complete, require_stage, starting_policy

    out: dict[str, str | None] = {}
    out["policy"] = cfg.policy_path or str(starting_policy(output_dir, "rloo policy"))
    if cfg.reward_model_path:
        out["reward"] = cfg.reward_model_path
    elif cfg.reward_spec is None:
        out["reward"] = str(require_stage(output_dir / "reward", "rloo reward model"))
    else:
        out["reward"] = str(output_dir / "reward") if is_complete(output_dir / "reward") else None
    return out


def history_rows(log_history: Sequence[dict]) -> list[dict[str, Any]]:
    """One row per update from TRL's log: step, reward (with the penalty, before KL), KL, length, ...

    TRL logs the KL per token (summed KL / completion tokens of the generation batch) and the mean
    completion length (tokens, EOS included): their product is the mean KL summed over a response,
    PPO's `kl` (one generation per log row, logging_steps = steps_per_update)."""
    keys = {"reward": "reward", "reward_std": "reward_std", "kl": "kl_per_token", "completions/mean_length": "length",
            "completions/clipped_ratio": "clipped_ratio", "loss": "loss", "learning_rate": "learning_rate"}
    rows = [{"step": h["step"], **{out: h.get(k) for k, out in keys.items()}} for h in log_history if "reward" in h]
    for r in rows:
        r["kl"] = r["kl_per_token"] * r["length"] if None not in (r["kl_per_token"], r["length"]) else None
    return rows


def main(recipe, output_dir: Path, resume: bool = False, callbacks: list | None = None) -> Path:
    """`rlhf rloo`: trains OUTPUT/rloo from OUTPUT/sft against PPO's reward and returns it."""
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    from .config import stage_config
    from .dpo import logged_mean
    from .hf_training import last_complete_checkpoint, process_state, resumable_checkpoints_callback, training_metrics
    from .modeling import RewardModel, context_length, ensure_pad_embedding, load_causal_lm, load_tokenizer
    from .ppo import compare_policies, load_training_prompts, prompt_only, score_dataset_responses
    from .rundir import StageWriter, finite
    from .sampling import prompt_budget

    cfg: RLOOStageConfig = recipe.rloo.resolve(recipe.ppo)
    recipe.sections["rloo"] = cfg  # the resolved values are what config.yaml records
    output_dir = Path(output_dir)
    state = process_state()
    seed = recipe.seed + cfg.seed_offset
    if recipe.ppo.kl_estimator != "k1" or recipe.ppo.adaptive_kl:
        logger.warning("rloo: TRL's RLOO uses a fixed beta and the k1 KL; ppo.kl_estimator %s / adaptive_kl %s "
                       "do not apply", recipe.ppo.kl_estimator, recipe.ppo.adaptive_kl)

    # 1. Inputs, checked before anything is written.
    paths = resolve_inputs(cfg, output_dir)
    spec = cfg.reward_spec
    tokenizer = load_tokenizer(paths["policy"])
    torch.manual_seed(seed)
    policy = load_causal_lm(paths["policy"])
    ensure_pad_embedding(policy, tokenizer)
    try:
        budget = prompt_budget(context_length(policy), cfg.max_prompt_tokens, cfg.max_new_tokens)
    except ValueError as e:
        raise ValueError(f"rloo.max_new_tokens ({cfg.max_new_tokens}): {e}") from e
    # PPO's prompts (a PPO section asking for RLOO's held-out prompts: the function reads PPOConfig's fields)
    train_prompts, test_prompts, test_rows, prompt_info = load_training_prompts(
        recipe, dataclasses.replace(recipe.ppo, eval_prompts=cfg.eval_prompts), tokenizer, budget)
    if not train_prompts:
        raise ValueError(f"data {recipe.data.dataset!r}: no training prompts for RLOO")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rm = RewardModel.load(paths["reward"]) if paths["reward"] else None
    if spec is not None:
        reward_fn = spec.load(device, cfg.eval_batch_size)
        reward = TRLReward(function_scores(reward_fn), tokenizer.eos_token_id, cfg.missing_eos_penalty,
                           spec.name.rsplit(":", 1)[-1])
    else:
        reward_fn = None
        rm.model.to(device).eval()
        reward = TRLReward(reward_model_scores(rm, tokenizer, cfg.normalise_reward), tokenizer.eos_token_id,
                           cfg.missing_eos_penalty, "reward_model")
    logger.info("rloo config:\n%s", yaml.safe_dump(to_plain(cfg), sort_keys=False))
    logger.info("rloo inputs: %s; %d training prompts (%s), %d updates of %d completions (%d prompts x %d)", paths,
                len(train_prompts), prompt_info["source"], cfg.updates, cfg.batch_size,
                cfg.batch_size // cfg.num_generations, cfg.num_generations)
    data = Dataset.from_dict({"prompt": [cut_prompt(tokenizer, p, budget) for p in train_prompts]})
    gold_fn = None
    if str(recipe.data.dataset) == "embedded" and not prompt_only(recipe):
        from .synthetic.gold import gold_score as gold_fn

    with StageWriter(output_dir, "rloo", resume=resume, main_process=state.is_main_process) as writer:
        state.wait_for_everyone()
        args = RLOOConfig(**trl_arguments(cfg, seed, writer.checkpoints, state.num_processes))
        trainer = RLOOTrainer(model=policy, reward_funcs=reward, args=args, train_dataset=data,
                              processing_class=tokenizer,
                              callbacks=[resumable_checkpoints_callback(), *(callbacks or [])])
        checkpoint = last_complete_checkpoint(writer.checkpoints) if resume else None
        if resume and checkpoint is None:
            logger.info("--resume: no checkpoint in %s, starting from %s", writer.checkpoints, paths["policy"])
        t0 = time.time()
        out = trainer.train(resume_from_checkpoint=checkpoint)
        train_s = time.time() - t0
        history = trainer.state.log_history
        rows = history_rows(history)
        metrics: dict[str, Any] = {
            **training_metrics(trainer, out, checkpoint),
            "updates": cfg.updates, "episodes": cfg.updates * cfg.batch_size, "train_s": round(train_s, 2),
            "episodes_per_second": round(cfg.updates * cfg.batch_size / train_s, 3) if train_s > 0 else None,
            "num_generations": cfg.num_generations, "kl_coef": cfg.kl_coef,
            "mean_reward": logged_mean(history, "reward"), "final": rows[-1] if rows else {},
            "history": rows, "inputs": paths, "processes": state.num_processes, "prompts": prompt_info,
            "reward": spec.describe(reward_fn) if spec is not None else {"kind": "reward_model", "path": paths["reward"]},
        }
        trainer.save_model(str(writer.path))
        if state.is_main_process:
            # the held-out comparison of PPO's metrics.json: SFT vs RLOO on the same prompts and seeds
            trained = trainer.accelerator.unwrap_model(trainer.model)
            if cfg.eval_prompts and test_prompts:
                ref = load_causal_lm(paths["policy"]).to(device)
                ensure_pad_embedding(ref, tokenizer)
                prompts = test_prompts[: cfg.eval_prompts]
                cmp = compare_policies({"sft": ref, "rloo": trained}, ref, tokenizer, prompts, cfg, reward_model=rm,
                                       reward_fn=reward_fn, gold_fn=gold_fn, seed=seed + 1,
                                       batch_size=cfg.eval_batch_size)
                if test_rows:
                    chosen = {}
                    for row in test_rows:
                        chosen.setdefault(row["prompt"], row["chosen"])
                    cmp["chosen"] = score_dataset_responses(prompts, [chosen[p] for p in prompts], rm, gold_fn,
                                                            cfg.eval_batch_size)
                metrics["comparison"] = cmp
                logger.info("rloo held-out comparison: %s", cmp)
            tokenizer.save_pretrained(str(writer.path))
            logger.info("rloo metrics: %s", {k: v for k, v in metrics.items() if k not in ("loss_curve", "history")})
        state.wait_for_everyone()
        writer.finish(metrics=finite(metrics), config=stage_config(recipe, "rloo"))
    state.wait_for_everyone()
    return writer.final
