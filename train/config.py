"""Recipes: one dataclass per stage, numbers in YAML, command-line flags on top.

A recipe is a YAML file with one section per stage (``data``, ``prompts``, ``base``, ``sft``,
``reward``, ``ppo``, ``eval``, ``hub``) plus a few run-wide keys (``seed``,
``stages``). Each section maps onto that stage's config dataclass, whose fields
document themselves through ``field(metadata={"help": ...})``.

Why not TRL's ``TrlParser``: it maps flat flags onto a list of dataclasses, and
our stages share field names (``learning_rate`` exists in SFT, reward and PPO),
so we need sections. We keep its two promises: YAML first, flags override
(``--sft.learning_rate 1e-4``), and an unknown key is an error, never ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A recipe or flag that cannot be used; the message names the file and key."""


# Section name -> "module:Class": the training sections. A whole recipe also has the
# evaluation's and the Hub's sections; their table (gpt2_rlhf.stages.SECTIONS) sits above
# every package and is passed to `load_recipe`, so this package never names the ones above it.
# Imported lazily so that `rlhf data` does not pay for importing trl.
TRAIN_SECTIONS: dict[str, str] = {
    "data": "gpt2_rlhf.train.data:DataConfig",
    "prompts": "gpt2_rlhf.train.data:PromptsConfig",
    "base": "gpt2_rlhf.train.base:BaseConfig",
    "sft": "gpt2_rlhf.train.sft:SFTStageConfig",
    "label": "gpt2_rlhf.train.feedback:LabelConfig",
    "reward": "gpt2_rlhf.train.reward:RewardStageConfig",
    "ppo": "gpt2_rlhf.train.ppo.config:PPOConfig",
    "dpo": "gpt2_rlhf.train.dpo:DPOStageConfig",
    "rloo": "gpt2_rlhf.train.rloo:RLOOStageConfig",
}

# dpo and rloo are the other alignment methods beside ppo (trained from SFT after the final reward model,
# before the evaluation): a recipe compares them by listing them (configs/compare.yaml).
STAGE_ORDER = ("base", "sft", "label", "reward", "ppo", "dpo", "rloo", "eval")
# A recipe without `stages:` runs these (the feedback stage `label`, dpo and rloo are asked for by name).
DEFAULT_STAGES = ("base", "sft", "reward", "ppo", "eval")

def _recipes_dir() -> Path:
    """Installed: train/recipes (package data mapped from configs/). Source tree: configs/."""
    installed = Path(__file__).resolve().parent / "recipes"
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / "configs"


RECIPES_DIR = _recipes_dir()


def section_class(name: str, sections: dict[str, str] | None = None) -> type:
    module, _, cls = (sections or TRAIN_SECTIONS)[name].partition(":")
    return getattr(importlib.import_module(module), cls)


@dataclass
class Recipe:
    """A whole run: run-wide settings and one config per stage."""

    seed: int = field(default=0, metadata={"help": "Seed for every stage (each stage may add its own offset)."})
    stages: list[str] = field(
        default_factory=lambda: list(DEFAULT_STAGES),
        metadata={"help": "Stages `rlhf run` executes, in order; any subset of base, sft, label, reward, ppo, dpo, "
                         "rloo, eval."},
    )
    sections: dict[str, Any] = field(default_factory=dict, metadata={"help": "Stage configs by section name."})
    source: str = field(default="<defaults>", metadata={"help": "Where the recipe came from (file path)."})
    table: dict[str, str] = field(default_factory=lambda: dict(TRAIN_SECTIONS),
                                  metadata={"help": "Section name -> 'module:Class' of its config."})

    def __getattr__(self, name: str) -> Any:  # recipe.sft, recipe.ppo, ...
        sections = self.__dict__.get("sections", {})
        table = self.__dict__.get("table", TRAIN_SECTIONS)
        if name in sections:  # a section built by the caller (e.g. `rlhf reproduce`'s eval) counts as well
            return sections[name]
        if name in table:
            sections[name] = section_class(name, table)()
            return sections[name]
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seed": self.seed, "stages": list(self.stages)}
        for name in [*self.table, *(k for k in self.sections if k not in self.table)]:
            if name in self.sections:
                out[name] = to_plain(self.sections[name])
        return out

    def save(self, path: str | Path) -> None:
        write_yaml(self.to_dict(), path)


# ----------------------------------------------------------------------------- conversion


def to_plain(obj: Any) -> Any:
    """Dataclass -> plain dict/list/scalars, safe for YAML and JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_yaml(data: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_plain(data), sort_keys=False))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Casts a YAML/CLI value to the annotated type, or raises ConfigError naming `where`.

    PyYAML reads `5e-5` as a string (YAML 1.1 wants `5.0e-5`), so floats are
    parsed from strings here rather than trusted to the YAML loader.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null", "~") and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: cannot use {value!r}")
    if tp is Any:
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return build(tp, value, where)
    return value


def build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Builds dataclass `cls` from a mapping; unknown keys and bad values raise ConfigError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: unknown key '{key}'{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ validation
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: {e}") from e


def update(obj: Any, dotted: str, raw: Any, where: str) -> None:
    """Sets `obj.<dotted>` from a raw (string) value, coercing to the field's type."""
    head, _, rest = dotted.partition(".")
    hints = typing.get_type_hints(type(obj))
    if head not in hints:
        raise ConfigError(f"{where}: unknown key '{dotted}'")
    if rest:
        update(getattr(obj, head), rest, raw, where)
    else:
        setattr(obj, head, _coerce(raw, hints[head], where))


def validate(obj: Any, where: str) -> Any:
    """Re-runs __post_init__ checks after overrides by rebuilding the dataclass."""
    return build(type(obj), {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}, where)


# ----------------------------------------------------------------------------- recipes


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file path, or the name of a shipped recipe (`tiny`, `micro`, `gpt2-hh`)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = RECIPES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():  # a shipped name wins over a same-named folder (`rlhf run` in a dir holding tiny/)
        return shipped
    if p.exists():
        raise ConfigError(f"recipe {str(name_or_path)!r}: is a directory, not a YAML file")
    names = sorted(q.stem for q in RECIPES_DIR.glob("*.yaml"))
    raise ConfigError(f"recipe {str(name_or_path)!r}: no such file, and not a shipped recipe ({', '.join(names)})")


def load_recipe(name_or_path: str | Path = "tiny", overrides: dict[str, Any] | None = None,
                sections: dict[str, str] | None = None) -> Recipe:
    """Reads a recipe YAML, applies `{"sft.learning_rate": "1e-4", ...}` overrides, validates.

    `sections`: the recipe's section table (default: the training sections only; a whole
    recipe file is read with gpt2_rlhf.stages.load_recipe, which passes every section).
    """
    table = sections or TRAIN_SECTIONS
    path = recipe_path(name_or_path)
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)  # where the parser gave up (0-based)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML{at}: {what}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    recipe = Recipe(source=where, table=dict(table))
    for key, value in raw.items():
        if key == "seed":
            recipe.seed = _coerce(value, int, f"{where}: seed")
        elif key == "stages":
            recipe.stages = _coerce(value, list[str], f"{where}: stages")
        elif key in table:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: section '{key}' must be a mapping")
            recipe.sections[key] = build(section_class(key, table), value, f"{where}: {key}")
        else:
            close = difflib.get_close_matches(str(key), [*table, "seed", "stages"], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: unknown key '{key}'{hint}")
    # Every flag is set first and each touched section validated once, after all of them: checked one by
    # one, `--ppo.batch_size 4 --ppo.total_episodes 8` failed on the first flag applied against the other's
    # YAML value ("total_episodes (8) must be at least batch_size (64)").
    touched: dict[str, list[str]] = {}  # section -> the flags that changed it, in order
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        head, _, rest = dotted.partition(".")
        if dotted == "seed":
            recipe.seed = _coerce(value, int, "--seed")
        elif dotted == "stages":
            recipe.stages = _coerce(value, list[str], "--stages")
        elif head in table and rest:
            update(getattr(recipe, head), rest, value, f"--{dotted}")
            touched.setdefault(head, []).append(f"--{dotted}")
        else:
            raise ConfigError(f"--{dotted}: unknown option")
    for head, flags in touched.items():
        recipe.sections[head] = validate(getattr(recipe, head), ", ".join(flags))
    bad = [s for s in recipe.stages if s not in STAGE_ORDER]
    if bad:
        raise ConfigError(f"{where}: stages: unknown stage(s) {bad}; choose from {list(STAGE_ORDER)}")
    return recipe


def add_override_flags(parser: argparse.ArgumentParser, sections: dict[str, str] | None = None,
                       names: typing.Iterable[str] | None = None) -> None:
    """Adds `--<section>.<field>` for every field of every section (or of `names`), with its help text."""
    sections = sections or TRAIN_SECTIONS
    for name in (names if names is not None else sections):
        cls = section_class(name, sections)
        group = parser.add_argument_group(f"{name} options (override the recipe)")
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            group.add_argument(
                f"--{name}.{f.name}", dest=f"override:{name}.{f.name}", default=None, metavar="V",
                help=f.metadata.get("help", "").replace("%", "%%"),  # argparse %-formats help texts
            )


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k.split(":", 1)[1]: v for k, v in vars(args).items() if k.startswith("override:") and v is not None}


# The stages that read the `prompts` section's prompt-only data when it names a source.
PROMPT_STAGES = ("ppo", "eval")


def stage_config(recipe: Recipe, stage: str) -> dict[str, Any]:
    """What a stage's output depends on, as recorded in its config.yaml (and compared by `rlhf run`).

    The `prompts` section is recorded for the stages that read it, and only when it names a source: a
    recipe without prompt-only data records exactly what it did before the section existed."""
    out = {"seed": recipe.seed, "data": to_plain(recipe.data), stage: to_plain(getattr(recipe, stage))}
    prompts = getattr(recipe, "prompts", None) if stage in PROMPT_STAGES else None
    if prompts is not None and prompts.enabled:
        out["prompts"] = to_plain(prompts)
    return out


def check(condition: bool, message: str) -> None:
    """For __post_init__ validation: raises ValueError(message) when condition is false."""
    if not condition:
        raise ValueError(message)
