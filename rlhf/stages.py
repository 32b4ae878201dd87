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
    "prompts": Stage("gpt2_rlhf.train.data:PromptsConfig"),
    "base": Stage("gpt2_rlhf.train.base:BaseConfig", "gpt2_rlhf.train.base:main"),
    "sft": Stage("gpt2_rlhf.train.sft:SFTStageConfig", "gpt2_rlhf.train.sft:main"),
    "label": Stage("gpt2_rlhf.train.feedback:LabelConfig", "gpt2_rlhf.train.feedback:main"),
    "reward": Stage("gpt2_rlhf.train.reward:RewardStageConfig", "gpt2_rlhf.train.reward:main"),
    "ppo": Stage("gpt2_rlhf.train.ppo.config:PPOConfig", "gpt2_rlhf.train.ppo:main"),
    "dpo": Stage("gpt2_rlhf.train.dpo:DPOStageConfig", "gpt2_rlhf.train.dpo:main"),
    "rloo": Stage("gpt2_rlhf.train.rloo:RLOOStageConfig", "gpt2_rlhf.train.rloo:main"),
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


def unneeded_stages(recipe) -> dict[str, str]:
    """Stages in `recipe.stages` whose output no later stage reads, with the reason (`rlhf run` skips them).

    The reward model, when PPO (and RLOO, when listed) is trained with a reward function or classifier and
    there is no feedback stage (whose rounds retrain and use it): the evaluation then scores with PPO's
    reward too, and the critic starts from the policy's backbone."""
    stages = set(recipe.stages)
    out = {}
    # the online methods that would read it (RLOO takes PPO's reward unless its section names its own);
    # DPO never reads a reward model
    readers = ([("PPO", recipe.ppo)] if "ppo" in stages else []) + (
        [("RLOO", recipe.rloo.resolve(recipe.ppo))] if "rloo" in stages else [])
    # (with PPO present: the evaluation of a run without a reward model scores with the reward in ppo/config.yaml)
    if "reward" in stages and "ppo" in stages and "label" not in stages and all(
            cfg.reward_spec is not None and cfg.reward_model_path is None for _, cfg in readers):
        spec = readers[0][1].reward_spec
        out["reward"] = (f"{' and '.join(n for n, _ in readers)} {'is' if len(readers) == 1 else 'are'} trained "
                         f"with the reward {spec.kind} {spec.name}, not a reward model, and no feedback stage "
                         "retrains one; the evaluation scores with the same reward")
    return out
