"""Model helpers shared by every stage, the evaluation and the Space.

Loading is safe by default: safetensors only and ``trust_remote_code`` off (the
caller must ask for it). Padding conventions, which matter for correctness:

* position ids are always ``cumsum(attention_mask) - 1``, so a left-padded row
  sees the same positions as the unpadded one (GPT-2 does not derive positions
  from the mask by itself);
* the sampler and its padding rules live in ``sampling``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

logger = logging.getLogger(__name__)

REWARD_STATS = "reward_stats.json"


# ----------------------------------------------------------------------------- loading


def hub_error(what: str, name: str, err: Exception) -> Exception:
    """One clear line, naming the path or id, for a model or tokenizer that could not be loaded."""
    if Path(name).exists():
        detail = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        return OSError(f"could not load {what} from {name}: {detail or type(err).__name__}")
    return OSError(
        f"could not load {what} {name!r}: not a local directory and not fetchable from the Hugging Face Hub "
        f"(offline or HF_HUB_OFFLINE=1?): {type(err).__name__}"
    )


def _refuse_pickle_weights(name_or_path: str | Path, what: str) -> None:
    """A local model folder with only pickle weights (*.bin, *.pt) is refused before transformers sees it:
    unpickling runs arbitrary code, so we load safetensors only."""
    p = Path(name_or_path)
    if p.is_dir() and not any(p.glob("*.safetensors")):
        pickles = sorted(q.name for q in p.iterdir() if q.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
        if pickles:
            raise OSError(f"{what} {p}: only pickle weights ({', '.join(pickles)}); gpt2-rlhf loads safetensors "
                          f"only (unpickling can run code): convert them to model.safetensors first")


def load_tokenizer(name_or_path: str | Path, padding_side: str = "left", trust_remote_code: bool = False):
    """A tokenizer with a pad token distinct from EOS when possible (GPT-2 has none: we add one)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise hub_error("tokenizer", str(name_or_path), e) from e
    tok.padding_side = padding_side
    if tok.pad_token_id is None:
        # gpt2 ships without a pad token. Reusing EOS as pad would hide the EOS that
        # ends a response behind the padding mask, so we add a real one; models get
        # their embeddings resized by `ensure_pad_embedding`.
        tok.add_special_tokens({"pad_token": "<|pad|>"})
    return tok


def ensure_pad_embedding(model, tokenizer) -> None:
    """Grows the embedding matrix when the tokenizer gained a pad token, and records pad/eos ids."""
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id


def load_causal_lm(name_or_path: str | Path, dtype: torch.dtype | None = None, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    _refuse_pickle_weights(name_or_path, "model")
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(name_or_path), use_safetensors=True, trust_remote_code=trust_remote_code, dtype=dtype or torch.float32
        )
    except (OSError, ValueError) as e:
        raise hub_error("model", str(name_or_path), e) from e


def load_sequence_classifier(name_or_path: str | Path, trust_remote_code: bool = False, **kwargs):
    from transformers import AutoModelForSequenceClassification

    _refuse_pickle_weights(name_or_path, "reward model")
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            str(name_or_path), num_labels=1, use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs
        )
    except (OSError, ValueError) as e:
        raise hub_error("reward model", str(name_or_path), e) from e


def load_text_classifier(name_or_path: str | Path, what: str = "classifier", trust_remote_code: bool = False):
    """(model, tokenizer) of a multi-label sequence classifier (a sentiment or toxicity model; local folder or
    Hub id), eval mode: safetensors weights only; the tokenizer pads on the right and truncates on the left
    (a long text keeps its end); without a pad token it pads with EOS (or UNK), and the model is told which
    id that is (GPT-2 style classifiers find the last real token by it)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _refuse_pickle_weights(name_or_path, what)
    try:
        # trust_remote_code explicitly off by default: left out, transformers asks on stdin for custom code.
        tok = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(name_or_path), use_safetensors=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise hub_error(what, str(name_or_path), e) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    if getattr(model.config, "pad_token_id", None) is None and tok.pad_token_id is not None:
        model.config.pad_token_id = tok.pad_token_id
    tok.padding_side, tok.truncation_side = "right", "left"
    return model.eval(), tok


def disable_dropout(model: torch.nn.Module) -> None:
    """RLHF wants deterministic log-probs: dropout off everywhere (Huang et al. 2024, detail 'disable dropout').

    Both the modules (p = 0) and the config's rates, so that a model saved afterwards, or a
    module that reads the config at run time, stays without dropout.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    cfg = getattr(model, "config", None)
    for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout", "dropout", "attention_dropout"):
        if cfg is not None and hasattr(cfg, name):
            setattr(cfg, name, 0.0)


# ----------------------------------------------------------------------------- tensors


def context_length(model_or_config) -> int:
    """Positions a model can attend over (GPT-2: n_positions), from the model or its config."""
    cfg = getattr(model_or_config, "config", model_or_config)
    return int(getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 1024)


def saved_context_length(model_dir: str | Path) -> int:
    """The context length recorded in a saved model's config (custom config code is never run)."""
    from transformers import AutoConfig

    return context_length(AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False))


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> (B, T) positions counting only real tokens; padding gets 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "left",
                  device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> (B, T) ids and 0/1 mask, padded on `side` ('left': the generation layout)."""
    T = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            cols = slice(T - len(s), T) if side == "left" else slice(0, len(s))
            ids[i, cols] = torch.tensor(list(s), dtype=torch.long)
            mask[i, cols] = 1
    return ids.to(device), mask.to(device)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> (B,) column of the last real token in each row (any padding side)."""
    T = attention_mask.shape[-1]
    cols = torch.arange(T, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), cols, torch.full_like(cols, -1)).max(-1).values.clamp(min=0)


def sequence_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) ids, any padding -> (B,) scalar head of a *ForSequenceClassification model at the last real token.

    We do not rely on the library's pooling (which searches for the pad id): we
    pool at `last_token_index(attention_mask)`, so the score never comes from padding.
    """
    out = model.base_model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
    )
    values = model.score(out.last_hidden_state).squeeze(-1).float()  # (B, T)
    idx = last_token_index(attention_mask)
    return values[torch.arange(values.shape[0], device=values.device), idx]


# ----------------------------------------------------------------------------- reward model


@dataclass
class RewardStats:
    """Normalisation statistics stored with the reward model (lm-human-preferences normalises the RM)."""

    mean: float = 0.0
    std: float = 1.0
    n: int = 0
    source: str = "none"

    @classmethod
    def load(cls, model_dir: str | Path) -> "RewardStats":
        p = Path(model_dir) / REWARD_STATS
        if not p.exists():
            return cls()
        d = json.loads(p.read_text())
        return cls(float(d["mean"]), float(d["std"]), int(d.get("n", 0)), str(d.get("source", "")))


class RewardModel:
    """A reward model: GPT-2 + scalar head, its tokenizer and its normalisation statistics."""

    def __init__(self, model, tokenizer, stats: RewardStats | None = None, name: str = ""):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.stats = stats or RewardStats()
        self.name = name

    @classmethod
    def load(cls, name_or_path: str | Path, trust_remote_code: bool = False) -> "RewardModel":
        tok = load_tokenizer(name_or_path, padding_side="right", trust_remote_code=trust_remote_code)
        model = load_sequence_classifier(name_or_path, trust_remote_code=trust_remote_code)
        ensure_pad_embedding(model, tok)
        disable_dropout(model)
        return cls(model, tok, RewardStats.load(name_or_path), str(name_or_path))

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.stats.mean) / max(self.stats.std, 1e-8)

    @torch.no_grad()
    def score_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids with any padding -> (B,) raw scores at the last real token."""
        return sequence_scores(self.model, input_ids, attention_mask)

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32,
              normalised: bool = False, max_length: int | None = None) -> torch.Tensor:
        """Raw (or normalised) scores of prompt + response texts, batched, right-padded."""
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(prompts), batch_size):
            texts = [p + r + self.tokenizer.eos_token for p, r in zip(prompts[i:i + batch_size], responses[i:i + batch_size])]
            ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            if max_length:  # a long text keeps its end (the response and the EOS the score is read at)
                ids = [t[-max_length:] for t in ids]
            ids, mask = pad_sequences(ids, self.tokenizer.pad_token_id, "left" if max_length else "right", device)
            out.append(self.score_ids(ids, mask).cpu())
        raw = torch.cat(out) if out else torch.zeros(0)
        return self.normalise(raw) if normalised else raw
