"""`rlhf run`: every stage of a recipe in order, each handing over through files, then the card.

A finished stage is reused when its recorded config equals the one the recipe
resolves to now, and every stage before it was reused too; otherwise it reruns
(and so does everything after it). `--force` reruns everything.

Feedback rounds (Bai et al. 2022's iterated online RLHF, with the same stages in a
loop rather than a new trainer): when the recipe has the `label` stage, label ->
reward -> ppo runs `label.rounds` times. Round r < R writes `label_round<r>`,
`reward_round<r>`, `ppo_round<r>`; the last round writes `label`, `reward`, `ppo`,
so evaluation, the card and the Space read the final models where they always do.
Round r labels the previous round's PPO samples (round 1: SFT's), trains a fresh
reward model from SFT on the dataset plus every label so far (or, with
reward.warm_start, continues the previous round's on its new labels plus a replay
of earlier pairs), and continues the
previous round's PPO policy with the KL penalty still measured against SFT, and
(ppo.continue_critic) the previous round's critic.

The other alignment methods (`dpo`, `rloo`: TRL's DPOTrainer and RLOOTrainer) run
once, from SFT, after the last round and before the evaluation: DPO on the pairs the
final reward model saw (the dataset pairs plus every round's labels), RLOO against the
final reward model with PPO's settings where they apply (train/rloo.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from gpt2_rlhf.train.config import STAGE_ORDER, Recipe, stage_config, to_plain
from gpt2_rlhf.train.ppo import CRITIC
from gpt2_rlhf.train.rundir import COMPLETE, is_complete, write_json

from .stages import stage_main

logger = logging.getLogger(__name__)


LOOP = ("label", "reward", "ppo")
# The other alignment methods: trained once from SFT after the final reward model (and the last feedback
# round), before the evaluation, on the final round's data (DPO: the pairs the final reward model saw;
# RLOO: PPO's reward, the final reward model).
METHODS = ("dpo", "rloo")


@dataclass(frozen=True)
class Step:
    """One stage run: its section, its output directory name, its feedback round and its resolved recipe."""

    stage: str
    name: str
    round: int
    recipe: Recipe


def round_name(stage: str, r: int, rounds: int) -> str:
    """The directory of `stage` in feedback round r of `rounds` (the last round keeps the plain name)."""
    return stage if r == rounds else f"{stage}_round{r}"


def _with(recipe: Recipe, **sections) -> Recipe:
    """A copy of the recipe with some sections replaced (the caller's recipe is not changed)."""
    for name in recipe.table:  # materialise the defaults, so the copy resolves the same sections
        getattr(recipe, name)
    return Recipe(seed=recipe.seed, stages=list(recipe.stages), sections={**recipe.sections, **sections},
                  source=recipe.source, table=dict(recipe.table))


def _methods(recipe: Recipe, reward, rounds: int) -> list[Step]:
    """The dpo and rloo runs of the recipe, their inherited settings resolved into their sections (so that
    config.yaml records them and reuse compares them): DPO's pairs from `reward` (the final reward model's
    config), RLOO's unset settings from the ppo section."""
    stages = [s for s in METHODS if s in recipe.stages]
    if not stages:
        return []
    sections = {}
    if "dpo" in stages:
        sections["dpo"] = recipe.dpo.resolve(reward)
    if "rloo" in stages:
        sections["rloo"] = recipe.rloo.resolve(recipe.ppo)
    step_recipe = _with(recipe, **sections)
    return [Step(s, s, rounds, step_recipe) for s in stages]


def plan(recipe: Recipe, output_dir: Path) -> list[Step]:
    """The stage runs of `rlhf run`, in order, with every feedback round's inputs written into its config."""
    stages = [s for s in STAGE_ORDER if s in recipe.stages]
    if "label" not in stages:
        methods = {s.stage: s for s in _methods(recipe, recipe.reward, 1)}
        return [methods.get(s) or Step(s, s, 1, recipe) for s in stages]
    rounds = recipe.label.rounds
    out = Path(output_dir)
    steps = [Step(s, s, 1, recipe) for s in stages if s not in LOOP and s not in METHODS and s != "eval"]
    sft = out / ("sft" if "sft" in stages or (out / "sft").is_dir() else "base")
    for r in range(1, rounds + 1):
        prev = out / round_name("ppo", r - 1, rounds) if r > 1 and "ppo" in stages else None
        label = dataclasses.replace(recipe.label, seed_offset=recipe.label.seed_offset + 10 * (r - 1),
                                    policy=str(prev) if prev and recipe.label.policy == "auto" else recipe.label.policy)
        labels = [str(out / round_name("label", q, rounds)) for q in range(1, r + 1)]
        reward = dataclasses.replace(
            recipe.reward, labels=[*recipe.reward.labels, *labels],
            init_from=str(out / round_name("reward", r - 1, rounds)) if recipe.reward.warm_start and r > 1
            else recipe.reward.init_from)
        ppo_cfg = recipe.ppo
        ppo = dataclasses.replace(
            ppo_cfg, seed_offset=ppo_cfg.seed_offset + 10 * (r - 1),
            policy_path=ppo_cfg.policy_path or (str(prev) if prev else None),
            ref_path=ppo_cfg.ref_path or (str(sft) if prev else None),
            reward_model_path=ppo_cfg.reward_model_path or (
                str(out / round_name("reward", r, rounds)) if "reward" in stages and ppo_cfg.reward_function is None
                else None),
            value_model_path=ppo_cfg.value_model_path or (
                str(prev / CRITIC) if prev and ppo_cfg.continue_critic and not ppo_cfg.shared_value_head else None))
        step_recipe = _with(recipe, label=label, reward=reward, ppo=ppo)
        steps += [Step(s, round_name(s, r, rounds), r, step_recipe) for s in stages if s in LOOP]
    steps += _methods(recipe, reward, rounds)
    steps += [Step("eval", "eval", rounds, recipe)] if "eval" in stages else []
    return steps


def moved(value, old_root: str, new_root: str):
    """A recorded config with the run directory it was written in (`old_root`) read as `new_root`: the
    input stages it names by absolute path are the same stages of the moved or copied run."""
    if isinstance(value, dict):
        return {k: moved(v, old_root, new_root) for k, v in value.items()}
    if isinstance(value, list):
        return [moved(v, old_root, new_root) for v in value]
    if isinstance(value, str) and (value == old_root or value.startswith(old_root + "/")):
        return new_root + value[len(old_root):]
    return value


def _up_to_date(recipe: Recipe, stage: str, stage_dir: Path) -> bool:
    cfg = stage_dir / "config.yaml"
    if not (is_complete(stage_dir) and cfg.exists()):
        return False
    try:
        recorded = yaml.safe_load(cfg.read_text())
        marker = json.loads((stage_dir / COMPLETE).read_text())
    except (yaml.YAMLError, ValueError):
        return False
    wanted = to_plain(stage_config(recipe, stage))
    if recorded == wanted:
        return True
    # the same stage written under another run directory (the run was moved or copied since): its input
    # stages' paths start with the directory it was written in (COMPLETE's run_dir, as the stage was given it)
    old_root = marker.get("run_dir") if isinstance(marker, dict) else None
    here = str(stage_dir.parent)
    return isinstance(old_root, str) and old_root != here and moved(recorded, old_root, here) == wanted


def run_stage(stage: str, recipe: Recipe, output_dir: Path, resume: bool = False, name: str | None = None,
              round_index: int = 1) -> Path:
    """Runs one stage (into OUTPUT/<name>, default OUTPUT/<stage>) and returns its finished directory."""
    name = name or stage
    logger.info("stage %s -> %s", name, output_dir / name)
    t0 = time.time()
    kwargs = {"name": name} if stage in LOOP else {}
    if stage == "ppo":
        kwargs["round_index"] = round_index
    out = stage_main(stage)(recipe, Path(output_dir), resume=resume, **kwargs)
    logger.info("stage %s finished in %.1f s", name, time.time() - t0)
    return out


def check_data(recipe: Recipe) -> None:
    """Reads the splits the recipe's stages use, with its bad-row policy; DataError (one line) on bad data.

    Every stage reads the data before it writes, but `rlhf run` writes recipe.yaml
    first: checking here keeps a bad dataset from touching an existing run
    directory at all. (Rows too long for the context are checked by each stage,
    which knows its tokenizer.)
    """
    from gpt2_rlhf.train.data import check_prompts, load_preferences

    stages = set(recipe.stages)
    # Which stage reads which split: base (embedded) / sft / reward both; ppo the
    # train split, and the test split for its held-out comparison; eval the test
    # split unless it reads a prompts file.
    # label samples train prompts, and test prompts for its held-out pairs.
    # With prompt-only data (the `prompts` section), ppo and eval read its splits instead.
    # dpo reads both splits like sft; rloo reads what ppo reads (its held-out prompts: rloo.eval_prompts).
    own = recipe.prompts.enabled
    rloo_eval = "rloo" in stages and recipe.rloo.resolve(recipe.ppo).eval_prompts > 0
    train = (bool(stages & {"sft", "label", "reward", "dpo"}) or (bool(stages & {"ppo", "rloo"}) and not own)
             or ("base" in stages and recipe.base.model == "embedded"))
    test = (bool(stages & {"sft", "reward", "dpo"}) or ("base" in stages and recipe.base.model == "embedded")
            or ((("ppo" in stages and recipe.ppo.eval_prompts > 0) or rloo_eval) and not own)
            or ("eval" in stages and not recipe.eval.prompts_file and not own)
            or ("label" in stages and recipe.label.test_prompts > 0))
    splits = [recipe.data.train_split] * train + [recipe.data.test_split] * test
    for split in dict.fromkeys(splits):
        load_preferences(recipe.data, split)
    if own:
        check_prompts(recipe.prompts, [recipe.prompts.train_split] * bool(stages & {"ppo", "rloo"})
                      + [recipe.prompts.test_split] * (("ppo" in stages and recipe.ppo.eval_prompts > 0) or rloo_eval
                                                       or ("eval" in stages and not recipe.eval.prompts_file)))


def run_pipeline(recipe: Recipe, output_dir: Path, force: bool = False, resume: bool = False) -> dict[str, float]:
    """Runs recipe.stages in order; returns seconds per stage (0 for a reused stage)."""
    check_data(recipe)
    output_dir.mkdir(parents=True, exist_ok=True)
    recipe.save(output_dir / "recipe.yaml")
    logger.info("resolved recipe (%s):\n%s", recipe.source, yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    timings: dict[str, float] = {}
    rerun = force
    for step in plan(recipe, output_dir):
        stage_dir = output_dir / step.name
        if not rerun and _up_to_date(step.recipe, step.stage, stage_dir):
            logger.info("stage %s: finished output matches the recipe, reusing %s", step.name, stage_dir)
            timings[step.name] = 0.0
            continue
        rerun = True  # everything downstream of a rerun stage reruns too
        t0 = time.time()
        run_stage(step.stage, step.recipe, output_dir, resume=resume, name=step.name, round_index=step.round)
        timings[step.name] = round(time.time() - t0, 1)
    if "eval" in recipe.stages:
        # the publishable result from one command: the card, rendered from the report just written
        from gpt2_rlhf.model_card.render import render_card

        t0 = time.time()
        logger.info("model card: %s", render_card(output_dir))
        timings["card"] = round(time.time() - t0, 1)
    write_json(output_dir / "timings.json", timings)
    logger.info("run complete in %s: %s", output_dir, timings)
    return timings
