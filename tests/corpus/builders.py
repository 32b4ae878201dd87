"""Inputs the reliability tests need and do not store: a finished run directory with
tiny untrained models (seconds to build, no training), a reward model with a
foreign tokenizer, a model directory holding pickle weights only, a 1 MB row.

Test fixtures only: nothing here is measured or reported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CORPUS = Path(__file__).resolve().parent


def fabricate_run(root: Path, recipe_name: str = "micro", seed: int = 0) -> Path:
    """`root` becomes a finished run: base/, sft/ (one tiny GPT-2), reward/ (a scalar head on it), recipe.yaml.

    Every stage directory is written through StageWriter with the config.yaml the
    recipe resolves to, so `rlhf run --config micro` would reuse them as they are.
    """
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from gpt2_rlhf.train.base import BaseConfig, build_model, dialogue_texts, train_tokenizer
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train.data import load_preferences
    from gpt2_rlhf.train.config import stage_config
    from gpt2_rlhf.train.rundir import StageWriter

    recipe = load_recipe(recipe_name)
    rows, _ = load_preferences(recipe.data, recipe.data.train_split)
    tokenizer = train_tokenizer(dialogue_texts(rows[:64]), vocab_size=300)
    torch.manual_seed(seed)
    lm = build_model(BaseConfig(vocab_size=300, n_layer=1, n_embd=16, n_head=2, n_positions=128), tokenizer)
    for stage in ("base", "sft"):
        with StageWriter(root, stage) as w:
            lm.save_pretrained(w.path)
            tokenizer.save_pretrained(w.path)
            w.finish(metrics={"fabricated": True}, config=stage_config(recipe, stage))
    rm = GPT2ForSequenceClassification(GPT2Config(**{**lm.config.to_dict(), "num_labels": 1, "id2label": None,
                                                      "label2id": None}))
    with StageWriter(root, "reward") as w:
        rm.save_pretrained(w.path)
        tokenizer.save_pretrained(w.path)
        (w.path / "reward_stats.json").write_text(json.dumps({"mean": 0.0, "std": 1.0, "n": 2, "source": "fabricated"}))
        w.finish(metrics={"fabricated": True}, config=stage_config(recipe, "reward"))
    recipe.save(root / "recipe.yaml")
    return root


def foreign_reward_model(path: Path) -> Path:
    """A reward model (GPT-2 + scalar head + reward_stats.json) whose BPE vocabulary is not the run's."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from gpt2_rlhf.train.base import train_tokenizer

    texts = ["\n\nHuman: zebra quantum violin harbour\n\nAssistant: marble orchid falcon tundra"] * 20
    tokenizer = train_tokenizer(texts, vocab_size=280)
    rm = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=16, n_layer=1,
                                                  n_head=2, num_labels=1, pad_token_id=tokenizer.pad_token_id))
    path.mkdir(parents=True, exist_ok=True)
    rm.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "reward_stats.json").write_text(json.dumps({"mean": 0.0, "std": 1.0, "n": 2, "source": "foreign"}))
    return path


def pickle_only_model(model_dir: Path, path: Path) -> Path:
    """A copy of a saved causal LM whose weights are a pickle (pytorch_model.bin), with no safetensors file."""
    import torch
    from safetensors.torch import load_file

    path.mkdir(parents=True, exist_ok=True)
    torch.save(load_file(model_dir / "model.safetensors"), path / "pytorch_model.bin")
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, path / name)
    return path


def huge_row_file(path: Path, size: int = 1_000_000) -> Path:
    """A JSONL file of one valid HH pair whose prompt is `size` characters long."""
    words = "tell me about rivers and lakes please "
    question = (words * (size // len(words) + 1))[:size]
    prompt = f"\n\nHuman: {question}\n\nAssistant:"
    path.write_text(json.dumps({"chosen": prompt + " Rivers flow to the sea.", "rejected": prompt + " No."}) + "\n")
    return path
