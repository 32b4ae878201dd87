"""Shared fixtures: one micro run (base, sft, reward) for the whole session, and tiny models.

`micro_run` is the input of the PPO, evaluation, card and Space tests: treat it as
read-only (copy it with `copy_run` before writing into it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

MICRO_STAGES = ("base", "sft", "reward")


def pytest_configure(config):
    # Tiny models gain nothing from intra-op threads, and on a shared 2-core machine
    # OpenMP spin-waiting makes 2 threads ~20x slower than 1. RLHF_TEST_THREADS overrides.
    torch.set_num_threads(int(os.environ.get("RLHF_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory) -> Path:
    """A run directory with finished base/, sft/ and reward/ from the micro recipe (seed 0), and recipe.yaml.

    Built once per session (a few seconds to train). Do not write into it.
    """
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.pipeline import run_stage

    out = tmp_path_factory.mktemp("micro_run")
    recipe = load_recipe("micro")
    recipe.save(out / "recipe.yaml")
    for stage in MICRO_STAGES:
        run_stage(stage, recipe, out)
    return out


def copy_run(run_dir: Path, dest: Path, stages=MICRO_STAGES) -> Path:
    """A writable copy of some finished stages of a run directory."""
    dest.mkdir(parents=True, exist_ok=True)
    if (run_dir / "recipe.yaml").exists():
        shutil.copy(run_dir / "recipe.yaml", dest / "recipe.yaml")
    for stage in stages:
        shutil.copytree(run_dir / stage, dest / stage)
    return dest


@pytest.fixture
def hub_offline(monkeypatch):
    """HF_HUB_OFFLINE=1, also where the libraries already read it at import (their module-level flags)."""
    import sys

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for module, attr in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE")):
        if module in sys.modules:
            monkeypatch.setattr(sys.modules[module], attr, True)


@pytest.fixture
def micro_recipe():
    """The micro recipe, freshly loaded (safe to modify)."""
    from gpt2_rlhf.stages import load_recipe

    return load_recipe("micro")


TINY_TEXTS = [
    "\n\nHuman: How do I grow tomatoes?\n\nAssistant: Water them deeply twice a week.",
    "\n\nHuman: How do I grow tomatoes?\n\nAssistant: I can't help with that.",
    "\n\nHuman: Any tips for learning Spanish?\n\nAssistant: Practice a little every day. Use flashcards.",
    "\n\nHuman: Any tips for learning Spanish?\n\nAssistant: Use flashcards. Use flashcards. Use flashcards.",
    "\n\nHuman: How can I sleep better?\n\nAssistant: Keep a regular bedtime and a dark, cool room.",
    "\n\nHuman: How can I sleep better?\n\nAssistant: Ask someone else, idiot.",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer trained on a handful of dialogues (EOS id 0, PAD id 1)."""
    from gpt2_rlhf.train.base import train_tokenizer

    return train_tokenizer(TINY_TEXTS * 4, vocab_size=320, min_frequency=2)


@pytest.fixture
def tiny_lm(tiny_tokenizer):
    """A fresh 2-layer, 32-wide GPT2LMHeadModel (seed 0) for the tiny tokenizer."""
    from gpt2_rlhf.train.base import BaseConfig, build_model

    torch.manual_seed(0)
    cfg = BaseConfig(vocab_size=320, n_layer=2, n_embd=32, n_head=2, n_positions=64)
    return build_model(cfg, tiny_tokenizer)
