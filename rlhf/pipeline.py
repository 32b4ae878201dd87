"""`rlhf run`: every stage of a recipe in order, each handing over through files.

A finished stage is reused when its recorded config equals the one the recipe
resolves to now, and every stage before it was reused too; otherwise it reruns
(and so does everything after it). `--force` reruns everything.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import yaml

from gpt2_rlhf.train.config import STAGE_ORDER, Recipe, stage_config, to_plain
from gpt2_rlhf.train.rundir import is_complete, write_json

from .stages import stage_main

logger = logging.getLogger(__name__)


def _up_to_date(recipe: Recipe, stage: str, stage_dir: Path) -> bool:
    cfg = stage_dir / "config.yaml"
    if not (is_complete(stage_dir) and cfg.exists()):
        return False
    try:
        return yaml.safe_load(cfg.read_text()) == to_plain(stage_config(recipe, stage))
    except yaml.YAMLError:
        return False


def run_stage(stage: str, recipe: Recipe, output_dir: Path, resume: bool = False) -> Path:
    """Runs one stage and returns its finished directory."""
    logger.info("stage %s -> %s", stage, output_dir / stage)
    t0 = time.time()
    out = stage_main(stage)(recipe, Path(output_dir), resume=resume)
    logger.info("stage %s finished in %.1f s", stage, time.time() - t0)
    return out


def check_data(recipe: Recipe) -> None:
    """Reads the splits the recipe's stages use, with its bad-row policy; DataError (one line) on bad data.

    Every stage reads the data before it writes, but `rlhf run` writes recipe.yaml
    first: checking here keeps a bad dataset from touching an existing run
    directory at all. (Rows too long for the context are checked by each stage,
    which knows its tokenizer.)
    """
    from gpt2_rlhf.train.data import load_preferences

    stages = set(recipe.stages)
    # Which stage reads which split: base (embedded) / sft / reward both; ppo the
    # train split, and the test split for its held-out comparison; eval the test
    # split unless it reads a prompts file.
    train = bool(stages & {"sft", "reward", "ppo"}) or ("base" in stages and recipe.base.model == "embedded")
    test = (bool(stages & {"sft", "reward"}) or ("base" in stages and recipe.base.model == "embedded")
            or ("ppo" in stages and recipe.ppo.eval_prompts > 0) or ("eval" in stages and not recipe.eval.prompts_file))
    splits = [recipe.data.train_split] * train + [recipe.data.test_split] * test
    for split in dict.fromkeys(splits):
        load_preferences(recipe.data, split)


def run_pipeline(recipe: Recipe, output_dir: Path, force: bool = False, resume: bool = False) -> dict[str, float]:
    """Runs recipe.stages in order; returns seconds per stage (0 for a reused stage)."""
    check_data(recipe)
    output_dir.mkdir(parents=True, exist_ok=True)
    recipe.save(output_dir / "recipe.yaml")
    logger.info("resolved recipe (%s):\n%s", recipe.source, yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    timings: dict[str, float] = {}
    rerun = force
    for stage in [s for s in STAGE_ORDER if s in recipe.stages]:
        stage_dir = output_dir / stage
        if not rerun and _up_to_date(recipe, stage, stage_dir):
            logger.info("stage %s: finished output matches the recipe, reusing %s", stage, stage_dir)
            timings[stage] = 0.0
            continue
        rerun = True  # everything downstream of a rerun stage reruns too
        t0 = time.time()
        run_stage(stage, recipe, output_dir, resume=resume)
        timings[stage] = round(time.time() - t0, 1)
    write_json(output_dir / "timings.json", timings)
    logger.info("run complete in %s: %s", output_dir, timings)
    return timings
