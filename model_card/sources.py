"""What a card is rendered from, read and checked: `CardSources`.

    eval/report.json, eval/samples.jsonl, eval/plots/*.png   (rlhf evaluate)
    <stage>/config.yaml                                       (each stage's resolved config)
    recipe.yaml                                               (the resolved recipe)

read from a run directory, or from a card folder / Hub snapshot (`eval/`,
`configs/<stage>.yaml`, `recipe.yaml`). A missing or malformed file is a
one-line `CardError` naming it; a missing optional file drops what it feeds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

from gpt2_rlhf.evaluation.policies import POLICY_KEYS

STAGES = ("base", "sft", "reward", *POLICY_KEYS, "eval")


class CardError(ValueError):
    """A run directory or card that cannot be rendered or read; the message names the file."""


def get_path(d: Any, *path: str) -> Any:
    """`d[path[0]][path[1]]...`, or None where a key is missing or a level is not a dict."""
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def is_number(x: Any) -> bool:
    """An int or float, not a bool."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CardError(f"{what}: {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CardError(f"{what}: {path} is not valid JSON ({e})") from e


def read_yaml(path: Path) -> dict | None:
    """A YAML mapping; None when the file is absent or not a mapping."""
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CardError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from e
    return data if isinstance(data, dict) else None


def read_samples(path: Path) -> list[dict]:
    """samples.jsonl rows; a bad line is an error naming the file and line."""
    if not path.is_file():
        raise CardError(f"samples: {path} does not exist")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CardError(f"{path}:{i}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(row.get("responses"), dict):
            raise CardError(f"{path}:{i}: expected an object with 'prompt' and 'responses'")
        rows.append(row)
    return rows


def check_report(report: Any, where: str) -> dict:
    """The fields a card cannot do without; everything else is optional and drops its section."""
    if not isinstance(report, dict):
        raise CardError(f"{where}: expected a JSON object")
    if report.get("schema_version") != 1:
        raise CardError(f"{where}: schema_version {report.get('schema_version')!r} is not supported (expected 1)")
    for key in ("models", "metrics"):
        if not isinstance(report.get(key), dict) or not report[key]:
            raise CardError(f"{where}: field '{key}' is missing or empty")
    return report


@dataclass
class CardSources:
    """Everything a card is rendered from, read from a run directory or from a card folder / Hub snapshot."""

    report: dict
    samples: list[dict]
    configs: dict[str, dict]  # stage -> its config.yaml ({"seed", "data", "<stage>": {...}})
    recipe: dict | None
    plot_files: dict[str, Path]  # report plot name -> existing file
    where: str  # what the card calls the report

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> "CardSources":
        from gpt2_rlhf.train.rundir import require_stage

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise CardError(f"run directory {run_dir} does not exist")
        eval_dir = require_stage(run_dir / "eval", "evaluation (run `rlhf evaluate RUN_DIR` first)")
        return cls._read(eval_dir, {s: run_dir / s / "config.yaml" for s in STAGES}, run_dir / "recipe.yaml")

    @classmethod
    def from_bundle(cls, folder: str | Path) -> "CardSources":
        """A rendered card folder or a downloaded Hub repo: eval/, configs/<stage>.yaml, recipe.yaml."""
        folder = Path(folder)
        return cls._read(folder / "eval", {s: folder / "configs" / f"{s}.yaml" for s in STAGES}, folder / "recipe.yaml")

    @classmethod
    def _read(cls, eval_dir: Path, config_paths: dict[str, Path], recipe_path: Path) -> "CardSources":
        report_path = eval_dir / "report.json"
        report = check_report(read_json(report_path, "evaluation report"), str(report_path))
        samples = read_samples(eval_dir / str(report.get("samples", "samples.jsonl")))
        configs = {s: c for s, p in config_paths.items() if (c := read_yaml(p)) is not None}
        plots = {}
        for name, rel in (report.get("plots") or {}).items():
            p = eval_dir / str(rel)
            if p.is_file():
                plots[name] = p
            else:
                logger.warning("plot %s listed in the report is missing (%s); the card leaves it out", name, p)
        return cls(report, samples, configs, read_yaml(recipe_path), plots, "eval/report.json")

    def stage_section(self, stage: str) -> dict | None:
        cfg = self.configs.get(stage) or {}
        sec = cfg.get(stage)
        return sec if isinstance(sec, dict) else None
