"""Tiny run directories for the Space tests: random GPT-2s, a byte-level BPE, a reward model.

Built in seconds, offline: a byte-level BPE tokenizer trained with `tokenizers` on a
few sentences (pad distinct from EOS, as the project's tokenizers are), 2-layer
GPT-2 policies for base/sft/ppo, and a GPT2ForSequenceClassification reward model
with a reward_stats.json, laid out as docs/DESIGN.md's run directory.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import torch

CORPUS = [
    "Human: How do I make tea? Assistant: Boil water, add the tea, wait three minutes.",
    "Human: What is a reward model? Assistant: A model that scores responses.",
    "Hello there, how are you today? I am fine, thank you for asking.",
    "The quick brown fox jumps over the lazy dog. <b>bold</b> & <script>x</script>",
] * 20


SCALE = 3.0  # embedding scale: makes random logits less flat, so models and seeds differ visibly
REWARD_STATS = {"mean": 0.25, "std": 2.0, "n": 64, "source": "test fixture"}


def make_tokenizer(path: Path | None = None):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>", "<|pad|>"],
                            show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                  bos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<|pad|>")
    tok.padding_side = "left"
    if path is not None:
        tok.save_pretrained(path)
    return tok


def _config(tok, n_positions: int = 96):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                      bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def make_policy(path: Path, tok, seed: int):
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(_config(tok))
    # Random GPT-2 logits are nearly flat; sharpen them a little.
    with torch.no_grad():
        model.transformer.wte.weight.mul_(SCALE)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model


def make_reward(path: Path, tok, seed: int = 99, stats: dict | None = REWARD_STATS):
    from transformers import GPT2ForSequenceClassification

    torch.manual_seed(seed)
    cfg = _config(tok)
    cfg.num_labels = 1
    model = GPT2ForSequenceClassification(cfg)
    with torch.no_grad():
        model.score.weight.mul_(50.0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    if stats is not None:
        (path / "reward_stats.json").write_text(json.dumps(stats))
    return model


def make_run(root: Path, sft: bool = True, extra: tuple[str, ...] = ()) -> Path:
    """A finished run directory: base/, sft/ (optional), ppo/, reward/ and the `extra` policy stages (dpo, rloo),
    each with COMPLETE."""
    root.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer()
    stages = {"base": 1, "ppo": 3} | ({"sft": 2} if sft else {}) | {s: 4 + i for i, s in enumerate(extra)}
    for stage, seed in stages.items():
        (root / stage).mkdir()
        make_policy(root / stage, tok, seed)
    (root / "reward").mkdir()
    make_reward(root / "reward", tok)
    for stage in [*stages, "reward"]:
        (root / stage / "COMPLETE").write_text(json.dumps({"stage": stage}))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScriptedLM(torch.nn.Module):
    """A causal-LM stand-in that emits `script` one token per step (then EOS), whatever the prompt.

    It follows the calling convention space.inference uses (input_ids, past_key_values,
    use_cache -> .logits, .past_key_values); its "cache" is the step counter.
    """

    def __init__(self, script: list[int], vocab_size: int, eos_id: int, n_positions: int = 96, delay_s: float = 0.0):
        super().__init__()
        from types import SimpleNamespace

        self.script, self.vocab_size, self.eos_id = list(script), vocab_size, eos_id
        self.delay_s = delay_s  # seconds per step: a slow model, so a test can watch both sides stream
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # so next(parameters()) gives a device
        self.config = SimpleNamespace(n_positions=n_positions)
        self.calls: list[torch.Tensor] = []

    def forward(self, input_ids, past_key_values=None, use_cache=True):
        from types import SimpleNamespace

        import time

        self.calls.append(input_ids)
        if self.delay_s:
            time.sleep(self.delay_s)
        step = 0 if past_key_values is None else past_key_values
        tok = self.script[step] if step < len(self.script) else self.eos_id
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], self.vocab_size)
        logits[:, -1, tok] = 100.0
        return SimpleNamespace(logits=logits, past_key_values=step + 1)
