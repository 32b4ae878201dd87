"""The base-model stage: tokenizer, pretraining maths, determinism, saved outputs, the Hub path offline."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2_rlhf.train.base import BaseConfig, build_model, lr_factor, pack_blocks, pretrain, train_tokenizer

from conftest import TINY_TEXTS

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("text", [
    TINY_TEXTS[0],
    "\n\nHuman: naïve café – “quotes” 😀 and \t tabs\n\nAssistant:  two spaces",
    "words the tokenizer never saw: zyxwvut 12345 {}[]<>",
    "",
])
def test_tokenizer_round_trips_text(tiny_tokenizer, text):
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text
    assert tiny_tokenizer.unk_token_id is None or tiny_tokenizer.unk_token_id not in ids  # byte-level: no unknowns


def test_tokenizer_special_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.eos_token == "<|endoftext|>" and tok.bos_token == tok.eos_token
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id != tok.eos_token_id
    # no BOS/EOS added around a text: SFT, RM and PPO all see the same ids
    assert tok("Hello", add_special_tokens=True)["input_ids"] == tok("Hello", add_special_tokens=False)["input_ids"]
    # the EOS string is parsed as the single special token
    assert tok("Hi<|endoftext|>", add_special_tokens=False)["input_ids"][-1] == tok.eos_token_id
    assert len(tok) <= 320


def test_tokenizer_training_is_deterministic():
    a = train_tokenizer(TINY_TEXTS * 4, vocab_size=300)
    b = train_tokenizer(TINY_TEXTS * 4, vocab_size=300)
    assert a.get_vocab() == b.get_vocab()


# ----------------------------------------------------------------------------- maths


def test_pack_blocks_by_hand():
    blocks = pack_blocks([[5, 6], [7], [8, 9, 10]], eos_id=0, block_size=3)
    # stream 5 6 0 7 0 8 9 10 0 -> three blocks, no tail
    assert blocks.tolist() == [[5, 6, 0], [7, 0, 8], [9, 10, 0]]
    assert pack_blocks([[1, 2, 3]], eos_id=0, block_size=3).tolist() == [[1, 2, 3]]  # tail EOS dropped
    with pytest.raises(ValueError, match="fewer than one block"):
        pack_blocks([[1]], eos_id=0, block_size=3)


def test_lr_factor_by_hand():
    assert lr_factor(0, 4, 14) == pytest.approx(0.25)
    assert lr_factor(3, 4, 14) == pytest.approx(1.0)
    assert lr_factor(4, 4, 14) == pytest.approx(1.0)  # cosine starts at its peak
    assert lr_factor(9, 4, 14) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: (1 + cos(pi/2)) / 2
    assert lr_factor(14, 4, 14) == pytest.approx(0.1)
    assert lr_factor(0, 0, 10) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- training


def _blocks(tok, block=16):
    docs = tok(TINY_TEXTS, add_special_tokens=False)["input_ids"]
    return pack_blocks(docs, tok.eos_token_id, block)


def test_a_training_step_changes_every_parameter(tiny_tokenizer, tiny_lm):
    before = {n: p.detach().clone() for n, p in tiny_lm.named_parameters()}
    cfg = BaseConfig(steps=1, batch_size=4, learning_rate=1e-3, warmup_steps=0)
    out = pretrain(tiny_lm, _blocks(tiny_tokenizer), cfg, seed=0)
    assert math.isfinite(out["final_loss"])
    unchanged = [n for n, p in tiny_lm.named_parameters() if torch.equal(p, before[n])]
    # wpe rows past the block length get no gradient, but the tensor as a whole moves
    assert unchanged == []


def test_pretraining_lowers_the_loss(tiny_tokenizer, tiny_lm):
    cfg = BaseConfig(steps=30, batch_size=4, learning_rate=3e-3, warmup_steps=3)
    out = pretrain(tiny_lm, _blocks(tiny_tokenizer), cfg, seed=0)
    assert out["final_loss"] < out["initial_loss"] - 1.0


def test_same_seed_same_weights(tiny_tokenizer):
    cfg = BaseConfig(vocab_size=320, n_layer=2, n_embd=32, n_head=2, n_positions=64, steps=3, batch_size=4,
                     warmup_steps=1)

    def run():
        torch.manual_seed(7)
        model = build_model(cfg, tiny_tokenizer)
        pretrain(model, _blocks(tiny_tokenizer), cfg, seed=7)
        return model.state_dict()

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(8)
    c = build_model(cfg, tiny_tokenizer).state_dict()
    assert not torch.equal(a["transformer.h.0.attn.c_attn.weight"], c["transformer.h.0.attn.c_attn.weight"])


def test_saved_model_reloads_with_identical_outputs(tiny_tokenizer, tiny_lm, tmp_path):
    from gpt2_rlhf.train.modeling import load_causal_lm, load_tokenizer

    tiny_lm.save_pretrained(tmp_path, safe_serialization=True)
    tiny_tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    model, tok = load_causal_lm(tmp_path).eval(), load_tokenizer(tmp_path)
    assert tok.pad_token_id == tiny_tokenizer.pad_token_id and tok.eos_token_id == tiny_tokenizer.eos_token_id
    ids = torch.tensor([tok(TINY_TEXTS[2], add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(tiny_lm.eval()(ids).logits, model(ids).logits)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("bad, match", [
    ({"n_embd": 30, "n_head": 4}, "n_head"),
    ({"vocab_size": 100}, "vocab_size"),
    ({"block_size": 999}, "block_size"),
    ({"dropout": 1.0}, "dropout"),
    ({"model": " "}, "model"),
])
def test_bad_config_is_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        BaseConfig(**bad)


# ----------------------------------------------------------------------------- the stage


def test_micro_base_stage_outputs(micro_run):
    from gpt2_rlhf.train.modeling import load_causal_lm, load_tokenizer
    from gpt2_rlhf.train.rundir import require_stage

    base = require_stage(micro_run / "base", "base")
    metrics = json.loads((base / "metrics.json").read_text())
    for key in ("final_loss", "initial_loss", "steps", "params", "tokens_per_second", "seconds", "eval_loss"):
        assert metrics[key] is not None, key
    assert metrics["steps"] == 20 and metrics["final_loss"] < metrics["initial_loss"]
    assert (base / "model.safetensors").exists() and (base / "config.yaml").exists()
    tok, model = load_tokenizer(base), load_causal_lm(base)
    assert model.config.n_positions == 128 and model.get_input_embeddings().weight.shape[0] == len(tok)
    assert metrics["params"] == sum(p.numel() for p in model.parameters())
    assert tok.pad_token_id != tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id


def _offline_env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("HF_HOME", None)
    return env


def test_real_recipe_base_offline_fails_in_one_line_naming_gpt2(tmp_path):
    from gpt2_rlhf.stages import load_recipe

    assert load_recipe("gpt2-hh").base.model == "gpt2"
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "gpt2_rlhf.cli", "base", "--config", str(ROOT / "configs/gpt2-hh.yaml"),
                           "--output-dir", str(out)], env=_offline_env(), capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rlhf base: error")]
    assert len(lines) == 1 and "'gpt2'" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (out / "base").exists() and not (out / "base.partial").exists()


def test_base_stage_is_deterministic_for_a_seed(micro_recipe, tmp_path):
    from safetensors.torch import load_file

    from gpt2_rlhf.train import base

    micro_recipe.base.steps = 4
    a = base.main(micro_recipe, tmp_path / "a")
    b = base.main(micro_recipe, tmp_path / "b")
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    micro_recipe.seed = 1
    c = base.main(micro_recipe, tmp_path / "c")
    assert not torch.equal(wa["transformer.h.0.mlp.c_fc.weight"], load_file(c / "model.safetensors")["transformer.h.0.mlp.c_fc.weight"])
