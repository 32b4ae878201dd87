"""The GPT-2-124M-shaped stand-in (train/stand_in.py): the Hub gpt2's shapes and conventions, offline."""

from __future__ import annotations

import json

import pytest
import torch

from gpt2_rlhf.train import stand_in


def test_pseudo_words_are_deterministic_and_distinct_by_seed():
    assert stand_in.pseudo_words(50, 0) == stand_in.pseudo_words(50, 0)
    assert stand_in.pseudo_words(50, 0) != stand_in.pseudo_words(50, 1)
    assert all(w.isalpha() and w.islower() for w in stand_in.pseudo_words(200, 3))


def test_tokenizer_has_gpt2_conventions_at_any_size():
    texts = ["\n\nHuman: How do I sleep better?\n\nAssistant: Go to bed at the same time."] * 20
    tok = stand_in.train_gpt2_tokenizer(texts, vocab_size=1200, filler_words=3000)
    assert len(tok) == 1200
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 1199  # the last id, as 50256 in gpt2
    assert tok.bos_token_id == tok.eos_token_id == tok.unk_token_id
    assert tok.pad_token is None  # the base stage adds one, as for gpt2
    assert tok.model_max_length == 1024
    text = texts[0] + " Résumé ✓"
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level: every string round-trips
    # the dialogue's frequent words were merged before the filler's
    assert len(tok(texts[0])["input_ids"]) < len(texts[0]) / 3


def test_tokenizer_too_small_corpus_raises_naming_the_knob():
    with pytest.raises(ValueError, match="filler_words"):
        stand_in.train_gpt2_tokenizer(["ab"], vocab_size=5000, filler_words=10)


def test_model_has_the_hub_gpt2_config_and_parameter_count():
    tok = type("Tok", (), {"eos_token_id": 50256, "__len__": lambda self: 50257})()
    with torch.device("meta"):  # shapes only: no 500 MB of weights
        model = stand_in.build_model("gpt2", tok)
    c = model.config
    assert (c.n_layer, c.n_embd, c.n_head, c.vocab_size, c.n_positions) == (12, 768, 12, 50257, 1024)
    assert c.activation_function == "gelu_new" and c.resid_pdrop == 0.1 and c.tie_word_embeddings
    assert sum(p.numel() for p in model.parameters()) == 124_439_808  # the Hub gpt2's count
    with pytest.raises(ValueError, match="size"):
        stand_in.build_model("gpt3", tok)


@pytest.mark.slow
def test_base_stage_treats_the_stand_in_like_hub_gpt2(tmp_path, monkeypatch):
    """Build the full 124M stand-in, then `base.model: <its path>`: the base stage adds a pad and resizes."""
    from gpt2_rlhf.stages import load_recipe, stage_main

    out = stand_in.build(tmp_path / "gpt2-124m")
    info = json.loads((out / "stand_in.json").read_text())
    assert info["params"] == 124_439_808 and info["vocab_size"] == 50257
    with pytest.raises(FileExistsError):
        stand_in.build(out)  # never overwrites

    recipe = load_recipe("gpt2-hh", {"base.model": str(out), "data.dataset": "embedded"})
    final = stage_main("base")(recipe, tmp_path / "run")
    m = json.loads((final / "metrics.json").read_text())
    assert m["vocab_size"] == 50258 and m["n_positions"] == 1024  # + <|pad|>, as for gpt2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(final)
    assert tok.pad_token is not None and tok.pad_token_id == 50257 and tok.eos_token_id == 50256
