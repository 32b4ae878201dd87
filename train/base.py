"""The base model: the policy every later stage starts from.

Two ways to get one (``base.model`` in the recipe):

* ``"embedded"`` (default): train our own, offline, in a minute on a CPU.
  1. Train a byte-level BPE tokenizer (the GPT-2 scheme, Radford et al. 2019)
     on the train split's dialogue text, with ``<|endoftext|>`` as EOS/BOS and a
     separate ``<|pad|>`` (a pad equal to EOS would hide the EOS that ends a
     response behind the padding mask).
  2. Build a small ``GPT2LMHeadModel`` sized by this config.
  3. Pretrain it briefly with next-token prediction on the full dialogues,
     chosen AND rejected (+ EOS): a mixed-quality "base" that has learned the
     format and the language but not which answers are good. SFT improves on it.
* a Hub id (``gpt2``) or a local path: loaded with ``gpt2_rlhf.train.modeling``, a pad
  token added and the embeddings resized, then saved as is (no training).

Output: ``OUTPUT/base/`` (safetensors model + tokenizer), ``metrics.json`` and
``config.yaml`` through ``gpt2_rlhf.train.rundir.StageWriter``.

Deviations from GPT-2 pretraining, on purpose: a tiny model and corpus; the
documents are packed into blocks of ``block_size`` tokens separated by EOS (as
GPT-2 did) and blocks are drawn uniformly at random with replacement; a plain
torch loop instead of ``Trainer`` (this is not an RLHF stage, and a loop of
twenty lines is easier to read and to make bit-for-bit deterministic); the
activation is ``gelu_pytorch_tanh``, GPT-2's tanh-GELU through torch's fused
kernel (the same function as ``gelu_new``, faster on CPU).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import yaml
from tqdm.auto import tqdm

from .config import check, to_plain

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


@dataclass
class BaseConfig:
    """Stage 0: the base model (section ``base``)."""

    model: str = field(default="embedded", metadata={
        "help": "'embedded' trains our own tiny GPT-2 on the data's dialogues; anything else is a Hub id "
                "(e.g. gpt2) or a local path, loaded and saved with a pad token added."})
    vocab_size: int = field(default=3000, metadata={"help": "Embedded: BPE vocabulary size, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "Embedded: a pair is merged only if seen this often."})
    n_layer: int = field(default=4, metadata={"help": "Embedded: transformer blocks."})
    n_embd: int = field(default=128, metadata={"help": "Embedded: model width."})
    n_head: int = field(default=4, metadata={"help": "Embedded: attention heads (must divide n_embd)."})
    n_positions: int = field(default=256, metadata={"help": "Embedded: context length; SFT/RM/PPO cap sequences at it."})
    dropout: float = field(default=0.0, metadata={"help": "Embedded: dropout in embeddings, attention and residuals."})
    steps: int = field(default=600, metadata={"help": "Embedded: pretraining optimizer steps (0 = untrained)."})
    batch_size: int = field(default=16, metadata={"help": "Embedded: blocks per step."})
    block_size: int | None = field(default=None, metadata={
        "help": "Embedded: tokens per pretraining block (default: n_positions)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Embedded: peak AdamW learning rate."})
    warmup_steps: int = field(default=30, metadata={"help": "Embedded: linear warmup steps, then cosine decay to 10%."})
    weight_decay: float = field(default=0.01, metadata={"help": "Embedded: AdamW weight decay (matrices only)."})
    eval_blocks: int = field(default=64, metadata={"help": "Embedded: held-out test-split blocks for the final eval loss."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Hub model: allow custom code (off: safe)."})

    def __post_init__(self):
        check(bool(self.model.strip()), "model: must be 'embedded', a Hub id or a local path")
        for name in ("vocab_size", "n_layer", "n_embd", "n_head", "n_positions", "batch_size", "min_frequency"):
            check(getattr(self, name) > 0, f"{name}: must be positive, got {getattr(self, name)}")
        check(self.vocab_size >= 258, f"vocab_size: must be at least 258 (256 bytes + 2 special tokens), "
                                          f"got {self.vocab_size}")
        check(self.n_embd % self.n_head == 0, f"n_head: {self.n_head} does not divide n_embd {self.n_embd}")
        check(self.steps >= 0, f"steps: must be >= 0, got {self.steps}")
        check(self.warmup_steps >= 0, f"warmup_steps: must be >= 0, got {self.warmup_steps}")
        check(self.learning_rate > 0, f"learning_rate: must be positive, got {self.learning_rate}")
        check(0.0 <= self.dropout < 1.0, f"dropout: must be in [0, 1), got {self.dropout}")
        check(self.eval_blocks >= 0, f"eval_blocks: must be >= 0, got {self.eval_blocks}")
        if self.block_size is not None:
            check(0 < self.block_size <= self.n_positions,
                  f"block_size: must be in (0, n_positions={self.n_positions}], got {self.block_size}")

    @property
    def embedded(self) -> bool:
        return self.model == "embedded"


# ----------------------------------------------------------------------------- tokenizer


def dialogue_texts(rows: Sequence[dict]) -> list[str]:
    """Full dialogues of preference rows: prompt + chosen and prompt + rejected (a mixed-quality corpus)."""
    return [r["prompt"] + r[k] for r in rows for k in ("chosen", "rejected")]


def train_tokenizer(texts: Sequence[str], vocab_size: int, min_frequency: int = 2):
    """Byte-level BPE (GPT-2's scheme) trained on `texts`, wrapped as a PreTrainedTokenizerFast.

    Byte-level means every string round-trips exactly (no unknown token). No
    special token is added around a text (as with gpt2), so SFT/RM/PPO see the
    same ids whichever tokenizer they use.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        padding_side="left",  # the generation convention of train.modeling.load_tokenizer
        model_max_length=None,
    )


# ----------------------------------------------------------------------------- pretraining maths


def pack_blocks(docs: Sequence[Sequence[int]], eos_id: int, block_size: int) -> torch.Tensor:
    """Token lists -> (N, block_size) blocks of the stream doc0 EOS doc1 EOS ...; the ragged tail is dropped."""
    stream = [t for doc in docs for t in (*doc, eos_id)]
    n = len(stream) // block_size
    if n == 0:
        raise ValueError(f"the corpus has {len(stream)} tokens, fewer than one block of {block_size}")
    return torch.tensor(stream[: n * block_size], dtype=torch.long).view(n, block_size)


def lr_factor(step: int, warmup_steps: int, total_steps: int, final: float = 0.1) -> float:
    """Linear warmup from 0 to 1 over warmup_steps, then cosine decay to `final` at total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_model(cfg: BaseConfig, tokenizer):
    """A fresh GPT2LMHeadModel sized by cfg, with the tokenizer's special ids recorded."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        # GPT-2's tanh-approximated GELU, computed by torch's fused kernel rather than gelu_new's
        # eight Python-level ops: the same function, ~25% faster training on CPU.
        activation_function="gelu_pytorch_tanh",
    )
    model = GPT2LMHeadModel(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.eos_token_id
    return model


@torch.no_grad()
def mean_loss(model, blocks: torch.Tensor, batch_size: int) -> float:
    """Mean next-token loss over (N, T) blocks (every block has T-1 predicted tokens, so batch means average)."""
    if len(blocks) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(blocks), batch_size):
        b = blocks[i:i + batch_size]
        total += model(input_ids=b, labels=b).loss.item() * len(b)
    model.train(was_training)
    return total / len(blocks)


def pretrain(model, blocks: torch.Tensor, cfg: BaseConfig, seed: int) -> dict:
    """Plain next-token pretraining on random blocks; returns measured metrics."""
    gen = torch.Generator().manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate, betas=(0.9, 0.95))
    model.train()
    losses: list[float] = []
    t0 = time.time()
    bar = tqdm(range(cfg.steps), desc="base pretraining", dynamic_ncols=True)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cfg.learning_rate * lr_factor(step, cfg.warmup_steps, cfg.steps)
        idx = torch.randint(len(blocks), (cfg.batch_size,), generator=gen)
        batch = blocks[idx]  # (B, T)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == cfg.steps - 1:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    seconds = time.time() - t0
    tail = losses[-10:]
    return {
        "initial_loss": losses[0] if losses else None,
        "final_loss": sum(tail) / len(tail) if tail else None,  # mean of the last 10 steps
        "tokens_per_second": cfg.steps * cfg.batch_size * blocks.shape[1] / seconds if cfg.steps else None,
        "train_seconds": seconds,
    }


# ----------------------------------------------------------------------------- stage


def _load_hub_base(cfg: BaseConfig):
    from .modeling import ensure_pad_embedding, load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    model = load_causal_lm(cfg.model, trust_remote_code=cfg.trust_remote_code)
    ensure_pad_embedding(model, tokenizer)
    return tokenizer, model


def main(recipe, output_dir: Path, resume: bool = False) -> Path:
    """Builds OUTPUT/base; `resume` has nothing to resume (the stage is short) and simply reruns."""
    from .config import stage_config
    from .rundir import StageWriter, finite
    from .hf_training import process_state

    cfg: BaseConfig = recipe.base
    state = process_state()  # torchrun/accelerate: only the main process works, the others wait
    logger.info("base config:\n%s", yaml.safe_dump(to_plain(cfg), sort_keys=False))
    t_start = time.time()
    torch.manual_seed(recipe.seed)

    # 1. Inputs first (data or Hub model): a failure here writes nothing.
    metrics: dict = {"model": cfg.model}
    if cfg.embedded:
        from .hf_training import load_rows

        train_rows = load_rows(recipe, "train")
        test_rows = load_rows(recipe, "test")
    else:
        tokenizer, model = _load_hub_base(cfg)

    with StageWriter(output_dir, "base", resume=resume, main_process=state.is_main_process) as writer:
        if state.is_main_process:
            if cfg.embedded:
                # 2. Tokenizer on the train dialogues only (the test split stays unseen).
                tokenizer = train_tokenizer(dialogue_texts(train_rows), cfg.vocab_size, cfg.min_frequency)
                logger.info("tokenizer: %d tokens (eos %d, pad %d)", len(tokenizer), tokenizer.eos_token_id,
                            tokenizer.pad_token_id)
                # 3. Model, 4. pretraining on chosen and rejected dialogues.
                model = build_model(cfg, tokenizer)
                block = cfg.block_size or cfg.n_positions
                encode = lambda texts: tokenizer(list(texts), add_special_tokens=False)["input_ids"]  # noqa: E731
                try:
                    blocks = pack_blocks(encode(dialogue_texts(train_rows)), tokenizer.eos_token_id, block)
                except ValueError as e:
                    raise ValueError(f"data {recipe.data.dataset!r}: train split too small to pretrain on: {e}") from None
                eval_docs = encode(dialogue_texts(test_rows))
                enough = sum(len(d) + 1 for d in eval_docs) >= block and cfg.eval_blocks
                eval_blocks = (pack_blocks(eval_docs, tokenizer.eos_token_id, block)[: cfg.eval_blocks] if enough
                               else torch.zeros(0, block, dtype=torch.long))  # too little test text: eval_loss null
                logger.info("pretraining on %d blocks of %d tokens (%d train pairs)", len(blocks), block,
                            len(train_rows))
                metrics.update(pretrain(model, blocks, cfg, recipe.seed))
                metrics.update(steps=cfg.steps, train_blocks=len(blocks), block_size=block,
                               vocab_size=len(tokenizer), eval_loss=mean_loss(model, eval_blocks, cfg.batch_size),
                               eval_blocks=len(eval_blocks))
            else:
                metrics.update(steps=0, vocab_size=len(tokenizer))
            metrics["params"] = sum(p.numel() for p in model.parameters())
            metrics["n_positions"] = model.config.n_positions
            model.save_pretrained(writer.path, safe_serialization=True)
            tokenizer.save_pretrained(writer.path)
            metrics["seconds"] = time.time() - t_start
            logger.info("base metrics: %s", metrics)
        writer.finish(metrics=finite(metrics), config=stage_config(recipe, "base"))
    state.wait_for_everyone()
    return writer.final
