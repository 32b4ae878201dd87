"""Offline alignment: Direct Preference Optimization (DPO) with TRL's ``DPOTrainer``.

Rafailov et al. 2023 ("Direct Preference Optimization: Your Language Model is Secretly a
Reward Model") train the policy on the preference pairs themselves, without a reward
model or sampling: the loss is -log sigmoid(beta * (log-ratio of chosen - log-ratio of
rejected)), each log-ratio being log pi(y|x) - log pi_ref(y|x) summed over the response
tokens, and pi_ref the SFT model. beta * log-ratio is DPO's implicit reward, so DPO
reports a "reward accuracy" (share of pairs whose chosen response gains more implicit
reward than the rejected one) and a "reward margin" (the mean gap).

Steps (``main``):
  1. Inputs: the policy to start from and the frozen reference, both ``OUTPUT/sft``
     (``OUTPUT/base`` when SFT was skipped); the train and test preference rows with the
     SFT stage's rules (``hf_training.load_rows``: a pair whose prompt + longer response +
     EOS exceeds the model's context, or ``max_length``, is counted and dropped, never
     truncated); with feedback labels (``dpo.labels``, which ``rlhf run`` fills with every
     label directory of the feedback rounds), the labelled comparisons too, assembled
     like the final reward model's (``reward.labelled_rows``, ``labelled_repeats`` times).
  2. Train (completion-only: TRL scores only the response tokens, EOS appended), with
     checkpoints in ``OUTPUT/dpo.partial/checkpoints`` (``--resume``).
  3. Measure, with our own code (``train.sampling.response_logprobs``), DPO's implicit
     reward accuracy and margin on held-out test pairs (and, with labels, on the last
     label directory's held-out pairs of policy samples).
  4. Save model + tokenizer + metrics.json + config.yaml through ``StageWriter`` into
     ``OUTPUT/dpo`` (the layout of the other policy stages).

Deviations: TRL's DPO computes the reference log-probs on the fly (one extra forward per
batch) rather than once before training; with feedback rounds the final reward model may
have been warm-started on a replay sample of the earlier pairs (``reward.warm_start``),
while DPO trains on all of them (the set that sample was drawn from).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import yaml

from .config import check, to_plain
from .hf_training import TrainerFields, trainer_field

logger = logging.getLogger(__name__)

# TRL 1.16's pairwise DPO losses (trl/trainer/dpo_config.py, `loss_type`); "sigmoid" is the paper's.
LossType = Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                   "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm"]


@dataclass
class DPOStageConfig(TrainerFields):
    """Offline alignment: DPO on the preference pairs from the SFT model (section ``dpo``): the
    TrainingArguments fields of ``TrainerFields`` (learning rate 1e-6, TRL's default), then its own.

    The budget of DPO is passes over the pairs (``num_train_epochs``), not sampled episodes."""

    learning_rate: float = trainer_field("learning_rate", default=1e-6)

    policy_path: str | None = field(default=None, metadata={
        "help": "Model to start from and reference of the KL-style regulariser (default OUTPUT/sft, else OUTPUT/base)."})
    beta: float = field(default=0.1, metadata={
        "help": "DPO's beta: the implicit reward is beta * log(pi / pi_ref); larger stays closer to the reference "
                "(Rafailov et al. 2023 use 0.1)."})
    loss_type: LossType = field(default="sigmoid", metadata={
        "help": "TRL's DPO loss: sigmoid (the paper's), ipo, hinge, robust, ... (trl DPOConfig.loss_type)."})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "Robust/conservative DPO: the assumed share of flipped labels (0 = off)."})
    labels: list[str] = field(default_factory=list, metadata={"help": (
        "Label directories (written by `rlhf label`) whose train comparisons are added to the dataset pairs; "
        "`rlhf run` fills in every feedback round's, the pairs the final reward model saw.")})
    labelled_repeats: int | None = field(default=None, metadata={"help": (
        "Each labelled comparison appears this many times per epoch (null: reward.labelled_repeats, as the "
        "final reward model's mix).")})

    def __post_init__(self):
        check(self.beta > 0, f"beta: must be positive, got {self.beta}")
        check(0 <= self.label_smoothing < 0.5, f"label_smoothing: must be in [0, 0.5), got {self.label_smoothing}")
        check(self.loss_type != "exo_pair" or self.label_smoothing > 0,
              "loss_type exo_pair needs label_smoothing > 0 (the EXO paper suggests 1e-3)")
        super().__post_init__()
        check(self.labelled_repeats is None or self.labelled_repeats >= 1,
              f"labelled_repeats: must be >= 1 or null, got {self.labelled_repeats}")
        check(self.policy_path is None or bool(self.policy_path.strip()), "policy_path: empty; use null for OUTPUT/sft")

    def resolve(self, reward) -> "DPOStageConfig":
        """A copy whose empty labels / null labelled_repeats are the reward section's: DPO trains on the pairs
        the reward model saw (`rlhf run` passes the final feedback round's reward config, every label so far)."""
        return dataclasses.replace(
            self, labels=list(self.labels or reward.labels),
            labelled_repeats=self.labelled_repeats if self.labelled_repeats is not None else reward.labelled_repeats)


# ----------------------------------------------------------------------------- maths (pure, unit-tested)


def implicit_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """(N,) summed response log-probs under the policy and the reference -> (N,) DPO implicit rewards
    beta * (log pi(y|x) - log pi_ref(y|x)) (Rafailov et al. 2023, eq. 5; TRL's rewards/chosen, rewards/rejected)."""
    return beta * (policy_logps - ref_logps)


def reward_margins(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """(N,) implicit rewards of the chosen and rejected responses -> DPO's accuracy (chosen strictly above
    rejected; a tie, as before any training, is an error), mean margin, and the mean of each side."""
    from .reward import pairwise_accuracy

    return {"accuracy": pairwise_accuracy(chosen, rejected),
            "mean_margin": (chosen - rejected).mean().item() if len(chosen) else float("nan"),
            "chosen_reward": chosen.mean().item() if len(chosen) else float("nan"),
            "rejected_reward": rejected.mean().item() if len(rejected) else float("nan")}


def logged_mean(log_history: Sequence[dict], key: str) -> float | None:
    """A logged metric's mean over the whole run, each window weighted by its steps (as run_train_loss does
    for the loss, so a resumed run reports the number an uninterrupted one would)."""
    total, last, steps = 0.0, 0, 0
    for h in log_history:
        if key in h and h[key] is not None and "step" in h:
            total += h[key] * (h["step"] - last)
            steps += h["step"] - last
            last = h["step"]
    return total / steps if steps else None


# ----------------------------------------------------------------------------- measurement


def split_completion(tokenizer, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids + EOS) as TRL's DPO tokenises a pair: prompt + response is tokenised whole and
    the response starts where it leaves the prompt's own tokenisation (their common prefix)."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full = tokenizer(prompt + response, add_special_tokens=False)["input_ids"]
    n = 0
    while n < min(len(p), len(full)) and p[n] == full[n]:
        n += 1
    return full[:n], full[n:] + [tokenizer.eos_token_id]


@torch.no_grad()
def sequence_logprobs(model, tokenizer, prompts: Sequence[str], responses: Sequence[str],
                      batch_size: int = 16) -> torch.Tensor:
    """(N,) summed log-probs of response + EOS after each prompt (temperature 1), via the project's one
    log-prob function."""
    from .modeling import pad_sequences
    from .sampling import response_logprobs

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(prompts), batch_size):
        pairs = [split_completion(tokenizer, p, r) for p, r in zip(prompts[i:i + batch_size], responses[i:i + batch_size])]
        pids, pmask = pad_sequences([p for p, _ in pairs], tokenizer.pad_token_id, "left", device)
        rids, rmask = pad_sequences([r for _, r in pairs], tokenizer.pad_token_id, "right", device)
        out.append(response_logprobs(model, pids, pmask, rids, rmask.bool()).sum(1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def heldout_margins(policy, ref, tokenizer, rows: Sequence[dict], beta: float, batch_size: int) -> dict[str, Any]:
    """DPO's implicit-reward accuracy and margins of `policy` against `ref` on preference rows (our code)."""
    prompts = [r["prompt"] for r in rows]
    sides = {}
    for side in ("chosen", "rejected"):
        responses = [r[side] for r in rows]
        sides[side] = implicit_rewards(sequence_logprobs(policy, tokenizer, prompts, responses, batch_size),
                                       sequence_logprobs(ref, tokenizer, prompts, responses, batch_size), beta)
    return {**reward_margins(sides["chosen"], sides["rejected"]), "pairs": len(rows)}


# ----------------------------------------------------------------------------- stage


def resolve_policy(cfg: DPOStageConfig, output_dir: Path) -> Path | str:
    """The model DPO starts from (and its reference): dpo.policy_path, else OUTPUT/sft, else OUTPUT/base."""
    from .rundir import starting_policy

    if cfg.policy_path:
        return cfg.policy_path
    path = starting_policy(output_dir, "dpo needs the sft model")
    if path.name == "base":
        logger.warning("no finished %s: DPO starts from (and is regularised toward) the base model", output_dir / "sft")
    return path


def training_rows(recipe, cfg: DPOStageConfig, tokenizer, max_length: int) -> tuple[list[dict], dict[str, Any]]:
    """The dataset train pairs plus every label directory's comparisons x labelled_repeats (the final reward
    model's mix), and a summary of where they came from."""
    from .hf_training import load_rows
    from .reward import labelled_rows

    rows = load_rows(recipe, "train", tokenizer, max_length, cfg.max_train_samples)
    labelled = labelled_rows(cfg.labels, tokenizer, max_length, recipe.data.truncation) if cfg.labels else []
    repeats = cfg.labelled_repeats or 1
    info = {"dataset_pairs": len(rows), "labelled_pairs": len(labelled), "labelled_repeats": repeats,
            "labels": list(cfg.labels)}
    return rows + labelled * repeats, info


def build_trainer(recipe, model, ref, tokenizer, train_rows, output_dir: Path, max_length: int, callbacks=None):
    """The configured DPOTrainer on {prompt, chosen, rejected} rows (dropout off in both models, TRL's default)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from .hf_training import resumable_checkpoints_callback, trainer_arguments

    cfg: DPOStageConfig = recipe.dpo
    args = DPOConfig(**trainer_arguments(cfg, recipe.seed, output_dir, max_length), beta=cfg.beta,
                     loss_type=[cfg.loss_type], label_smoothing=cfg.label_smoothing, disable_dropout=True)
    data = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                              for r in train_rows])
    return DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tokenizer,
                      callbacks=[resumable_checkpoints_callback(), *(callbacks or [])])


DPO_LOGS = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")


def main(recipe, output_dir: Path, resume: bool = False, callbacks: list | None = None) -> Path:
    """`rlhf dpo`: trains OUTPUT/dpo from OUTPUT/sft on the preference pairs and returns it."""
    from .config import stage_config
    from .feedback import read_label_rows
    from .hf_training import last_complete_checkpoint, load_rows, process_state, training_metrics
    from .modeling import ensure_pad_embedding, load_causal_lm, load_tokenizer, saved_context_length
    from .rundir import StageWriter, finite

    cfg: DPOStageConfig = recipe.dpo.resolve(recipe.reward)
    recipe.sections["dpo"] = cfg  # the resolved pairs are what config.yaml records
    output_dir = Path(output_dir)
    state = process_state()
    if state.is_main_process:
        logger.info("dpo config:\n%s", yaml.safe_dump(to_plain(cfg), sort_keys=False))
    t_start = time.time()

    # 1. Inputs, checked before anything is written: the model, the data (rows that fit the context).
    policy_dir = resolve_policy(cfg, output_dir)
    tokenizer = load_tokenizer(policy_dir)
    max_length = min(cfg.max_length or 10**9, saved_context_length(policy_dir))
    train_rows, info = training_rows(recipe, cfg, tokenizer, max_length)
    test_rows = load_rows(recipe, "test", tokenizer, max_length, cfg.max_eval_samples)
    label_dir = Path(cfg.labels[-1]) if cfg.labels else None
    on_policy_rows = read_label_rows(label_dir, "test") if label_dir else []
    torch.manual_seed(recipe.seed)
    model, ref = load_causal_lm(policy_dir), load_causal_lm(policy_dir)
    for m in (model, ref):
        ensure_pad_embedding(m, tokenizer)
    ref.eval().requires_grad_(False)

    with StageWriter(output_dir, "dpo", resume=resume, main_process=state.is_main_process) as writer:
        state.wait_for_everyone()  # the main process has (re)created dpo.partial/
        trainer = build_trainer(recipe, model, ref, tokenizer, train_rows, writer.checkpoints, max_length, callbacks)
        checkpoint = last_complete_checkpoint(writer.checkpoints) if resume else None
        if resume and checkpoint is None:
            logger.info("--resume: no checkpoint in %s, starting from %s", writer.checkpoints, policy_dir)
        metrics: dict[str, Any] = {"init_from": str(policy_dir), "reference": str(policy_dir), "beta": cfg.beta,
                                   "loss_type": cfg.loss_type, "train_pairs": len(train_rows), **info,
                                   "epochs": cfg.num_train_epochs if cfg.max_steps <= 0 else None,
                                   "max_length": max_length, "world_size": state.num_processes}

        # 2. Train (every rank), resuming from the last checkpoint when asked.
        out = trainer.train(resume_from_checkpoint=checkpoint)
        metrics.update(training_metrics(trainer, out, checkpoint))
        history = trainer.state.log_history
        # DPO's own training-time numbers (TRL's implicit-reward logs), over the run and in its last window
        metrics["train"] = {key.split("/")[1]: logged_mean(history, key) for key in DPO_LOGS}
        last = next((h for h in reversed(history) if DPO_LOGS[0] in h), {})
        metrics["train_last"] = {key.split("/")[1]: last.get(key) for key in DPO_LOGS}
        trainer.save_model(str(writer.path))

        if state.is_main_process:
            # 3. Held-out implicit-reward accuracy and margins, by our code (the unwrapped trained model).
            policy = trainer.accelerator.unwrap_model(trainer.model)
            device = next(policy.parameters()).device
            ref.to(device)
            metrics["heldout"] = heldout_margins(policy, ref, tokenizer, test_rows, cfg.beta,
                                                cfg.per_device_eval_batch_size)
            if on_policy_rows:
                metrics["on_policy"] = {**heldout_margins(policy, ref, tokenizer, on_policy_rows, cfg.beta,
                                                         cfg.per_device_eval_batch_size), "source": str(label_dir)}
            tokenizer.save_pretrained(str(writer.path))
            metrics["seconds"] = time.time() - t_start
            logger.info("dpo metrics: %s", {k: v for k, v in metrics.items() if k != "loss_curve"})
        state.wait_for_everyone()
        writer.finish(metrics=finite(metrics), config=stage_config(recipe, "dpo"))
    state.wait_for_everyone()
    return writer.final
