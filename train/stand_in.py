"""A GPT-2-shaped stand-in for a Hub checkpoint, built offline.

The real recipe (`configs/gpt2-hh.yaml`) starts from ``gpt2`` on the Hub: 12 blocks,
width 768, 12 heads, a 50,257-token byte-level BPE vocabulary, a 1,024-token context
(Radford et al. 2019). Without the Hub, this module builds a directory with exactly
those shapes and conventions, so that ``base.model: /path/to/it`` exercises the real
recipe's code path (the 50k-column LM head, 1,024-token contexts, padding added by the
base stage) on any machine:

* the tokenizer is a byte-level BPE with 50,000 merges on top of the 256 bytes, and
  ``<|endoftext|>`` as its last id (50,256) and as BOS, EOS and UNK; no pad token (the
  base stage adds one and resizes the embeddings, as it does for ``gpt2``);
* the model is ``GPT2LMHeadModel(GPT2Config(...))`` with the Hub config's values
  (``gelu_new``, dropout 0.1, tied embeddings) and GPT-2's initialisation (random weights).

Deviations, on purpose: the weights are random (this measures cost and exercises shapes,
not quality); the BPE is trained on the recipe's dialogues, and because those hold only a
few thousand distinct words, on seeded pseudo-words as well until the merge table is as
large as GPT-2's (without them the vocabulary would stop near 2,000 tokens and the LM head,
the largest matrix, would be 25x too small).

    python -m gpt2_rlhf.train.stand_in --out /tmp/gpt2-124m            # gpt2 shapes, ~10 s
    rlhf run --config gpt2-hh --base.model /tmp/gpt2-124m --data.dataset embedded ...

Sizes: ``gpt2`` (124M), ``gpt2-medium`` (355M), ``gpt2-large`` (774M), ``gpt2-xl`` (1.5B),
the shapes of the four OpenAI checkpoints.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path
from typing import Sequence

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 50257     # 256 bytes + 50,000 merges + <|endoftext|>
CONTEXT = 1024
# (n_layer, n_embd, n_head) of the Hub checkpoints' config.json files.
SHAPES: dict[str, tuple[int, int, int]] = {
    "gpt2": (12, 768, 12),
    "gpt2-medium": (24, 1024, 16),
    "gpt2-large": (36, 1280, 20),
    "gpt2-xl": (48, 1600, 25),
}

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiouy"


def pseudo_words(n: int, seed: int) -> list[str]:
    """`n` pronounceable letter strings of 2-4 syllables, deterministic in `seed` (filler for the BPE)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        syllables = rng.randint(2, 4)
        out.append("".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS)
                           + (rng.choice(_CONSONANTS) if rng.random() < 0.3 else "") for _ in range(syllables)))
    return out


def train_gpt2_tokenizer(texts: Sequence[str], vocab_size: int = VOCAB_SIZE, seed: int = 0,
                         filler_words: int = 60_000):
    """A byte-level BPE with GPT-2's conventions and exactly `vocab_size` tokens, the last one EOS.

    `texts` come first in the corpus; seeded pseudo-words fill the merge table when the texts
    alone cannot (BPE stops when no pair is left to merge). Raises ValueError if even with the
    filler the table stays short (a very large `vocab_size`: raise `filler_words`).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = pseudo_words(filler_words, seed)
    filler = [" ".join(words[i:i + 50]) for i in range(0, len(words), 50)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # min_frequency 1: the filler's words occur once each; the dialogues' frequent pairs merge first anyway.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([*texts, *filler], trainer=trainer)
    if tok.get_vocab_size() != vocab_size - 1:
        raise ValueError(f"the BPE reached {tok.get_vocab_size()} tokens, not {vocab_size - 1}: "
                         f"raise filler_words ({filler_words})")
    tok.add_special_tokens([EOS_TOKEN])  # appended: id vocab_size - 1, as 50256 in gpt2
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN,
                                   unk_token=EOS_TOKEN, model_max_length=CONTEXT)


def build_model(size: str, tokenizer, seed: int = 0):
    """GPT2LMHeadModel with the Hub config of `size` and GPT-2's random initialisation."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if size not in SHAPES:
        raise ValueError(f"size: unknown {size!r}; one of {', '.join(SHAPES)}")
    n_layer, n_embd, n_head = SHAPES[size]
    eos = tokenizer.eos_token_id
    # GPT2Config's defaults are the Hub gpt2 config (gelu_new, dropout 0.1, layer-norm eps 1e-5).
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=CONTEXT, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.generation_config.bos_token_id = eos
    model.generation_config.eos_token_id = eos
    return model


def corpus(dataset: str) -> list[str]:
    """The train dialogues of a preference dataset (any `data.dataset` value), chosen and rejected."""
    from .base import dialogue_texts
    from .data import DataConfig, load_preferences

    rows, _ = load_preferences(DataConfig(dataset=dataset), "train")
    return dialogue_texts(rows)


def build(out: str | Path, size: str = "gpt2", dataset: str = "embedded", seed: int = 0) -> Path:
    """Writes the stand-in to `out` (a Hugging Face model directory); refuses to overwrite a non-empty one."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty; choose a new --out")
    t0 = time.time()
    tokenizer = train_gpt2_tokenizer(corpus(dataset), seed=seed)
    model = build_model(size, tokenizer, seed=seed)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=False)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    info = {"size": size, "params": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer),
            "n_positions": CONTEXT, "tokenizer_corpus": dataset, "seed": seed, "seconds": time.time() - t0,
            "weights": "random (GPT-2 initialisation)"}
    (tmp / "stand_in.json").write_text(json.dumps(info, indent=1) + "\n")
    tmp.rename(out)
    logger.info("stand-in %s: %d parameters, vocab %d -> %s", size, info["params"], info["vocab_size"], out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpt2_rlhf.train.stand_in", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="new directory for the model and tokenizer")
    p.add_argument("--size", default="gpt2", choices=list(SHAPES), help="which checkpoint's shapes")
    p.add_argument("--dataset", default="embedded", help="preference data whose dialogues train the BPE")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build(args.out, args.size, args.dataset, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
