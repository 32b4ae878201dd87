"""Stage 1: supervised fine-tuning (SFT) on the chosen responses, with TRL's ``SFTTrainer``.

Steps (``main``):
  1. Load the train and test preference rows; keep ``prompt`` and ``chosen``
     as a prompt/completion dataset (the rejected responses are not used here).
  2. Load the base model and tokenizer from ``OUTPUT/base``.
  3. Train with the next-token loss on the completion tokens only (TRL masks
     the prompt with -100; EOS is appended to every completion so the policy
     learns to stop). Sequences are capped at the model's context
     (``n_positions``).
  4. Measure, with our own code, the per-token negative log-likelihood of the
     held-out chosen responses before (= the base model) and after training;
     perplexity = exp(mean NLL per completion token).
  5. Save model + tokenizer + metrics through ``StageWriter`` into ``OUTPUT/sft``.

Held-out split: the data's **test** split (capped at ``max_eval_samples``), not a
slice of train. The test prompts are also the ones evaluation generates from,
so SFT's perplexity and the evaluation stage talk about the same prompts; no
test row is ever trained on.

Multi-process: ``torchrun --nproc_per_node 2 -m gpt2_rlhf.cli sft ...`` (gloo on
CPU) or ``accelerate launch`` on GPUs. Every rank trains; only the main process
touches the run directory, the others wait at barriers.

Deviations from InstructGPT's SFT (Ouyang et al. 2022): one pass (or
``max_steps``) over HH chosen responses rather than 16 epochs over labeller
demonstrations; no checkpoint selection by reward-model score.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from .config import to_plain
from .hf_training import TrainerFields, resumable_checkpoints_callback, trainer_arguments
from .modeling import saved_context_length

logger = logging.getLogger(__name__)


@dataclass
class SFTStageConfig(TrainerFields):
    """Stage 1: supervised fine-tuning (section ``sft``): the TrainingArguments fields of ``TrainerFields``,
    with its defaults (learning rate 5e-5, the seed card's)."""


# ----------------------------------------------------------------------------- maths


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL and token count over labelled positions.

    logits (B, T, V), labels (B, T) with -100 where no loss is taken. Position t
    predicts labels[t + 1] (the causal-LM shift). Returns (sum NLL (), count ()).
    """
    shift_logits = logits[:, :-1].float()  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    mask = shift_labels != -100
    nll = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.clamp(min=0).reshape(-1), reduction="none"
    ).view_as(shift_labels)
    return (nll * mask).sum(), mask.sum()


@torch.no_grad()
def heldout_nll(model, dataset, collator, batch_size: int) -> tuple[float, int]:
    """Mean NLL per labelled (completion) token over a tokenized dataset; returns (mean, tokens)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = torch.zeros(()), torch.zeros((), dtype=torch.long)
    for i in range(0, len(dataset), batch_size):
        batch = collator([dataset[j] for j in range(i, min(i + batch_size, len(dataset)))])
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        s, n = token_nll(logits.cpu(), batch["labels"])
        total += s
        count += n
    model.train(was_training)
    n = int(count)
    return (float(total) / n if n else float("nan")), n


# ----------------------------------------------------------------------------- stage


def prompt_completion(rows: list[dict]):
    """Preference rows -> a datasets.Dataset of {prompt, completion=chosen} (TRL's prompt-completion format)."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows])


def build_trainer(recipe, model, tokenizer, train_rows, eval_rows, output_dir: Path, max_length: int, callbacks=None):
    """The configured SFTTrainer (also used by tests to inspect collated batches)."""
    from trl import SFTConfig, SFTTrainer

    cfg: SFTStageConfig = recipe.sft
    args = SFTConfig(**trainer_arguments(cfg, recipe.seed, output_dir, max_length),
                     completion_only_loss=True, packing=False)
    return SFTTrainer(model=model, args=args, train_dataset=prompt_completion(train_rows),
                      eval_dataset=prompt_completion(eval_rows) if eval_rows else None, processing_class=tokenizer,
                      callbacks=[resumable_checkpoints_callback(), *(callbacks or [])])


def main(recipe, output_dir: Path, resume: bool = False, callbacks: list | None = None) -> Path:
    """Runs SFT into OUTPUT/sft and returns it. `callbacks`: extra transformers TrainerCallbacks."""
    from .hf_training import last_complete_checkpoint, load_rows, process_state, training_metrics
    from .rundir import finite
    from .modeling import ensure_pad_embedding, load_causal_lm, load_tokenizer
    from .config import stage_config
    from .rundir import StageWriter, require_stage

    cfg: SFTStageConfig = recipe.sft
    output_dir = Path(output_dir)
    state = process_state()
    if state.is_main_process:
        logger.info("sft config:\n%s", yaml.safe_dump(to_plain(cfg), sort_keys=False))
    t_start = time.time()

    # 1-2. Inputs: data first (its errors name the dataset), then the base model.
    base_dir = require_stage(output_dir / "base", "sft needs the base model")
    tokenizer = load_tokenizer(base_dir)
    max_length = min(cfg.max_length or 10**9, saved_context_length(base_dir))
    train_rows = load_rows(recipe, "train", tokenizer, max_length, cfg.max_train_samples)
    eval_rows = load_rows(recipe, "test", tokenizer, max_length, cfg.max_eval_samples)
    torch.manual_seed(recipe.seed)
    model = load_causal_lm(base_dir)
    ensure_pad_embedding(model, tokenizer)

    with StageWriter(output_dir, "sft", resume=resume, main_process=state.is_main_process) as writer:
        state.wait_for_everyone()  # the main process has (re)created sft.partial/
        trainer = build_trainer(recipe, model, tokenizer, train_rows, eval_rows, writer.checkpoints, max_length,
                                callbacks)
        checkpoint = last_complete_checkpoint(writer.checkpoints) if resume else None
        if resume and checkpoint is None:
            logger.info("--resume: no checkpoint in %s, starting from the base model", writer.checkpoints)

        # 4a. The base model's held-out NLL (same tokens, same code as after training).
        metrics: dict[str, Any] = {"train_rows": len(trainer.train_dataset), "max_length": max_length,
                                   "world_size": state.num_processes}
        if trainer.eval_dataset is not None and state.is_main_process:
            nll, ntok = heldout_nll(model, trainer.eval_dataset, trainer.data_collator, cfg.per_device_eval_batch_size)
            metrics.update(base_eval_loss=nll, base_eval_perplexity=math.exp(nll))

        # 3. Train (every rank), resuming from the last checkpoint when asked.
        out = trainer.train(resume_from_checkpoint=checkpoint)
        metrics.update(training_metrics(trainer, out, checkpoint))
        # 4b. Held-out NLL/perplexity of the fine-tuned model, by our code (main process, unwrapped model).
        if trainer.eval_dataset is not None and state.is_main_process:
            nll, ntok = heldout_nll(trainer.model, trainer.eval_dataset, trainer.data_collator,
                                    cfg.per_device_eval_batch_size)
            metrics.update(eval_loss=nll, eval_perplexity=math.exp(nll), eval_rows=len(trainer.eval_dataset),
                           eval_tokens=ntok)
        # 5. Save (Trainer.save_model writes only on the main process) and swap sft.partial -> sft.
        trainer.save_model(str(writer.path))
        if state.is_main_process:
            tokenizer.save_pretrained(str(writer.path))
            metrics["seconds"] = time.time() - t_start
            logger.info("sft metrics: %s", {k: v for k, v in metrics.items() if k != "loss_curve"})
        state.wait_for_everyone()
        writer.finish(metrics=finite(metrics), config=stage_config(recipe, "sft"))
    state.wait_for_everyone()
    return writer.final
