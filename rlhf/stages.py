"""The one stage table: every recipe section, its config dataclass and, for a stage, its entry point.

This is the top of the package (it names code in train, evaluation and
model_card), so it is the only place that knows every stage. The packages below
take the table as an argument where they need it (`train.config.load_recipe`).

Entries are "module:attribute" strings, imported when first used: `rlhf data` or
`rlhf --help` do not pay for importing trl or the evaluation.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gpt2_rlhf.train import config as recipe_config


@dataclass(frozen=True)
class Stage:
    """One recipe section: its config class, and `main(recipe, output_dir, resume=...) -> Path` for a stage."""

    config: str
    main: str | None = None


STAGES: dict[str, Stage] = {
    "data": Stage("gpt2_rlhf.train.data:DataConfig"),
    "base": Stage("gpt2_rlhf.train.base:BaseConfig", "gpt2_rlhf.train.base:main"),
    "sft": Stage("gpt2_rlhf.train.sft:SFTStageConfig", "gpt2_rlhf.train.sft:main"),
    "label": Stage("gpt2_rlhf.train.feedback:LabelConfig", "gpt2_rlhf.train.feedback:main"),
    "reward": Stage("gpt2_rlhf.train.reward:RewardStageConfig", "gpt2_rlhf.train.reward:main"),
    "ppo": Stage("gpt2_rlhf.train.ppo.config:PPOConfig", "gpt2_rlhf.train.ppo:main"),
    "eval": Stage("gpt2_rlhf.evaluation.config:EvalConfig", "gpt2_rlhf.evaluation.run:main"),
    "hub": Stage("gpt2_rlhf.model_card.options:HubConfig"),
}

# What train.config needs to read a whole recipe: section name -> "module:Class".
SECTIONS: dict[str, str] = {name: stage.config for name, stage in STAGES.items()}


def resolve(spec: str) -> Any:
    """'module:attribute' -> the attribute."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def stage_main(stage: str) -> Callable[..., Path]:
    main = STAGES[stage].main
    if main is None:
        raise KeyError(f"{stage} is a recipe section, not a stage")
    return resolve(main)


def load_recipe(name_or_path: str | Path = "tiny", overrides: dict[str, Any] | None = None):
    """A whole recipe (every section of the table), from a file or a shipped recipe name."""
    return recipe_config.load_recipe(name_or_path, overrides, sections=SECTIONS)
