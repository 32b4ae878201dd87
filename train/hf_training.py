"""What the SFT, reward and DPO stages share: each trains a Hugging Face model through a TRL trainer.

Their rows (validated, too-long pairs counted and dropped), this process's place under
torchrun / accelerate launch, device settings, checkpoints that survive a kill
(`--resume`), the TrainingArguments fields their configs declare (`TrainerFields`) and
map onto (`trainer_arguments`), and the metrics of a run.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from .config import check

logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16"]


def check_scheduler(name: str) -> None:
    """An unknown scheduler name fails with the recipe, not inside the trainer after the stage started."""
    from transformers.trainer_utils import SchedulerType

    names = [s.value for s in SchedulerType]
    check(name in names, f"lr_scheduler_type: {name!r} is not one of {', '.join(names)}")


@dataclass
class TrainerFields:
    """The TrainingArguments-backed fields of the SFT, reward and DPO sections, each declared once here.

    A stage config inherits them (`SFTStageConfig(TrainerFields)`); a stage whose default differs
    redeclares that field with `trainer_field(name, default=...)`, which keeps this help text (and
    the field's place). `trainer_arguments` maps them onto TRL's configs."""

    learning_rate: float = field(default=5e-5, metadata={"help": (
        "Peak AdamW learning rate (defaults: SFT 5e-5 and reward model 1e-5 as in the seed card, DPO 1e-6 as "
        "in TRL).")})
    num_train_epochs: float = field(default=1.0, metadata={
        "help": "Passes over the training examples (ignored when max_steps > 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; > 0 overrides num_train_epochs."})
    per_device_train_batch_size: int = field(default=8, metadata={
        "help": "Examples per device per micro-batch (sequences for SFT, pairs for the reward model and DPO)."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": (
        "Texts (prompt + response) per batch when the stage measures with its own code: SFT's held-out "
        "perplexity, the reward model's scores and its statistics samples, DPO's held-out log-probs.")})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    lr_scheduler_type: str = field(default="linear", metadata={
        "help": "transformers scheduler name (linear, cosine, constant, ...)."})
    warmup_steps: float = field(default=0.0, metadata={
        "help": "Warmup steps (a value < 1 is a fraction of all steps)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_length: int | None = field(default=None, metadata={"help": (
        "Token cap on prompt + response + EOS, the longer response of a pair (default: the model's n_positions); "
        "a row over it is dropped or its prompt cut, as data.truncation says.")})
    max_train_samples: int | None = field(default=None, metadata={"help": (
        "Use at most this many of the dataset's train rows (null: all; the reward model's and DPO's labelled "
        "comparisons come on top).")})
    max_eval_samples: int | None = field(default=256, metadata={"help": (
        "Held-out test rows measured after training: SFT's perplexity, the reward model's accuracy, DPO's "
        "implicit-reward accuracy (null: all).")})
    logging_steps: int = field(default=10, metadata={"help": "Log the train loss every this many steps."})
    save_steps: int = field(default=200, metadata={"help": (
        "Checkpoint (into the stage's .partial/checkpoints, e.g. sft.partial/checkpoints) every this many steps.")})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept for --resume."})
    precision: Precision = field(default="auto", metadata={
        "help": "auto: bf16 on a GPU that supports it, fp32 otherwise (bf16 is never used on CPU)."})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "Recompute activations to save GPU memory (always off on CPU)."})

    def __post_init__(self):
        check(self.learning_rate > 0, f"learning_rate: must be positive, got {self.learning_rate}")
        check(self.num_train_epochs > 0 or self.max_steps > 0, "num_train_epochs or max_steps must be positive")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "logging_steps", "save_steps", "save_total_limit"):
            check(getattr(self, name) > 0, f"{name}: must be positive, got {getattr(self, name)}")
        check(self.warmup_steps >= 0, f"warmup_steps: must be >= 0, got {self.warmup_steps}")
        check(self.max_length is None or self.max_length > 1, f"max_length: must be > 1, got {self.max_length}")
        for name in ("max_train_samples", "max_eval_samples"):
            v = getattr(self, name)
            check(v is None or v > 0, f"{name}: must be positive or null, got {v}")
        check_scheduler(self.lr_scheduler_type)


def trainer_field(name: str, **default: Any) -> Any:
    """TrainerFields' field `name` with its help text, for a subclass whose default differs
    (`trainer_field("learning_rate", default=1e-5)`) or a config that does not inherit the others (RLOO's
    precision). Without `default` the field keeps TrainerFields' default."""
    f = TrainerFields.__dataclass_fields__[name]
    if not default:
        default = ({"default": f.default} if f.default is not dataclasses.MISSING
                   else {"default_factory": f.default_factory})
    return field(**default, metadata=f.metadata)


def device_settings(precision: str = "auto", gradient_checkpointing: bool = False) -> dict[str, Any]:
    """TrainingArguments for this machine. TRL defaults bf16 and gradient checkpointing ON; on CPU both only
    cost time (bf16 matmuls are emulated, and the small models here fit easily), so the code decides."""
    cuda = torch.cuda.is_available()
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if precision == "bf16" and not bf16_ok:
        logger.warning("precision bf16 asked for, but %s: training in fp32", "no GPU" if not cuda else "GPU lacks bf16")
    bf16 = bf16_ok and precision in ("auto", "bf16")
    if gradient_checkpointing and not cuda:
        logger.info("gradient checkpointing is off on CPU")
    return {"use_cpu": not cuda, "bf16": bf16, "fp16": False,
            # transformers 5 renamed gradient_checkpointing; TRL defaults the old name to True
            "activation_checkpointing": gradient_checkpointing and cuda,
            "report_to": "none", "dataloader_num_workers": 0}


def process_state():
    """accelerate's view of this process (rank, world size), initialising torch.distributed under
    torchrun / accelerate launch. On CPU it must be asked for explicitly (cpu=True), or every rank
    believes it is the only, main, process."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint-N in `folder` that transformers can resume from exactly, or None.

    Skipped: a torn checkpoint (transformers writes checkpoint-N/ in place, its
    trainer_state.json last, so a kill during a save leaves one that
    `get_last_checkpoint` would pick and fail to load), and a checkpoint taken at
    the last step (resuming from it, transformers trains one step more than
    max_steps: its loop checks for the end only after a step).
    """
    import json

    if not Path(folder).is_dir():
        return None
    found = sorted((int(p.name.split("-")[-1]), p) for p in Path(folder).glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[-1].isdigit())
    for _, ckpt in reversed(found):
        try:
            state = json.loads((ckpt / "trainer_state.json").read_text())
        except (OSError, ValueError):
            logger.warning("skipping %s: unfinished checkpoint (no readable trainer_state.json)", ckpt)
            continue
        if state.get("max_steps") and state.get("global_step", 0) >= state["max_steps"]:
            logger.warning("skipping %s: taken at the last step (resuming from it would add a step)", ckpt)
            continue
        return str(ckpt)
    return None


def run_train_loss(log_history: list[dict]) -> float | None:
    """Mean per-step train loss of the whole run from the logged windows: sum(loss_i * steps_i) / steps.

    transformers' `training_loss` covers only the steps run since the last (re)start,
    so a resumed run would report a different number for the same model; the log
    history is restored from the checkpoint, and `ResumableCheckpoints` makes sure
    no logging window straddles a checkpoint or leaves the last steps out.
    """
    total, last = 0.0, 0
    for h in log_history:
        if "loss" in h:
            total += h["loss"] * (h["step"] - last)
            last = h["step"]
    return total / last if last else None


def resumable_checkpoints_callback():
    """A TrainerCallback (after transformers' DefaultFlowCallback) that makes --resume exact:

    * it also logs at every checkpoint step and at the last step (see run_train_loss);
    * it takes no checkpoint at the last step: the stage saves the final model right
      after training, and resuming from such a checkpoint would add a step (see
      last_complete_checkpoint); a kill after the last step redoes the steps since
      the previous checkpoint instead, with the same result.
    """
    from transformers import TrainerCallback

    class ResumableCheckpoints(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if (args.save_steps and step % int(args.save_steps) == 0) or step >= state.max_steps:
                control.should_log = True
            if step >= state.max_steps:
                control.should_save = False
            return control

    return ResumableCheckpoints()


def load_rows(recipe, split: str, tokenizer=None, max_length: int | None = None, limit: int | None = None) -> list[dict]:
    """Preference rows of the recipe's "train" or "test" split through train.data (validated there).

    With a tokenizer, rows whose prompt + longer response + EOS exceed `max_length`
    tokens are counted and dropped by train.data (policy `on_bad_rows`), never
    silently truncated. `limit` keeps the first rows.
    """
    from .data import load_preferences

    name = {"train": recipe.data.train_split, "test": recipe.data.test_split}[split]
    # train.data checks prompt + response without EOS; we append one, hence - 1.
    rows, report = load_preferences(recipe.data, name, tokenizer=tokenizer,
                                    max_length=max_length - 1 if max_length else None)
    dropped = getattr(report, "problems", {}) or {}
    if any(dropped.values()):
        logger.warning("%s split: dropped rows %s", name, {k: v for k, v in dropped.items() if v})
    if not rows:
        raise ValueError(f"data {recipe.data.dataset!r}: the {name} split has no usable rows")
    return list(rows)[:limit] if limit else list(rows)


def trainer_arguments(cfg, seed: int, output_dir: Path, max_length: int) -> dict[str, Any]:
    """The TrainingArguments of the SFT, reward and DPO stages (SFTConfig / RewardConfig / DPOConfig kwargs).

    `cfg` is a TrainerFields (SFTStageConfig, RewardStageConfig or DPOStageConfig). Checkpoints
    every `save_steps` into `output_dir` (the stage's .partial checkpoints), no Trainer
    evaluation (our code measures held-out numbers), seeds for weights and data order.
    """
    return dict(
        output_dir=str(output_dir),
        learning_rate=cfg.learning_rate, num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, max_length=max_length,
        logging_steps=cfg.logging_steps, logging_first_step=True, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, eval_strategy="no", seed=seed, data_seed=seed,
        **device_settings(cfg.precision, cfg.gradient_checkpointing),
    )


def training_metrics(trainer, train_output, checkpoint: str | None) -> dict[str, Any]:
    """What a finished Trainer run reports: loss, steps, the checkpoint resumed from, speed, the loss curve."""
    history = trainer.state.log_history
    return dict(
        train_loss=run_train_loss(history), global_step=trainer.state.global_step,
        resumed_from_step=int(Path(checkpoint).name.split("-")[-1]) if checkpoint else None,
        samples_per_second=train_output.metrics.get("train_samples_per_second"),
        train_seconds=train_output.metrics.get("train_runtime"),
        loss_curve=[{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h],
    )
