"""The run directory: stages hand over through files, written atomically.

A stage works in ``OUTPUT/<stage>.partial/``; checkpoints live there so that
``--resume`` finds them after a crash. Only when every file is written does the
stage write ``COMPLETE`` and swap the partial directory into ``OUTPUT/<stage>/``
(rename the old one aside, rename the new one in, delete the old). A killed run
therefore never leaves a half-written ``OUTPUT/<stage>/`` and never destroys the
previous good one. See docs/DESIGN.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

COMPLETE = "COMPLETE"


class StageError(RuntimeError):
    """A stage cannot start: a missing or unfinished input, or a conflicting output."""


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("gpt2-rlhf")
    except Exception:  # running from a source tree without installing
        return "0+unknown"


def write_json(path: str | Path, data: Any) -> None:
    """Writes JSON atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finish_interrupted_swap(stage_dir: str | Path) -> None:
    """Completes a swap that a kill interrupted, so a finished stage is never lost.

    `StageWriter.finish` writes COMPLETE into `<stage>.partial/` last, then renames
    `<stage>/` aside and `<stage>.partial/` into place. Killed between the two renames,
    it leaves no `<stage>/` but a `<stage>.partial/` with COMPLETE: that is the
    finished stage, so roll forward (rename it into place, drop the old copy).
    """
    final = Path(stage_dir)
    partial, old = final.with_name(f"{final.name}.partial"), final.with_name(f".{final.name}.old")
    if not final.exists() and (partial / COMPLETE).is_file():
        os.replace(partial, final)
        logger.warning("%s: finishing a swap a killed run left half done (%s was complete)", final, partial.name)
    if final.exists() and old.exists():
        shutil.rmtree(old, ignore_errors=True)


def is_complete(stage_dir: str | Path) -> bool:
    finish_interrupted_swap(stage_dir)
    return (Path(stage_dir) / COMPLETE).is_file()


def require_stage(path: str | Path, what: str) -> Path:
    """The finished stage directory at `path`, or a one-line StageError naming it."""
    p = Path(path)
    finish_interrupted_swap(p)
    if not p.exists():
        raise StageError(f"{what}: {p} does not exist (run that stage first)")
    if not p.is_dir():
        raise StageError(f"{what}: {p} is not a directory")
    if not is_complete(p):
        raise StageError(f"{what}: {p} has no {COMPLETE} marker: it is unfinished or not a stage output")
    return p


def starting_policy(output_dir: str | Path, what: str) -> Path:
    """The model a policy stage starts from: OUTPUT/sft when finished, else a finished OUTPUT/base, else the
    StageError for the missing sft (the normal case)."""
    sft, base = Path(output_dir) / "sft", Path(output_dir) / "base"
    return require_stage(sft if is_complete(sft) or not is_complete(base) else base, f"{what} (sft, else base)")


class StageWriter:
    """Atomic output of one stage.

    with StageWriter(run_dir, "sft", resume=False) as w:
        ... write into w.path (checkpoints into w.checkpoints) ...
        w.finish(metrics={...}, config=stage_config)
    """

    def __init__(self, run_dir: str | Path, stage: str, resume: bool = False, main_process: bool = True):
        self.run_dir = Path(run_dir)
        self.stage = stage
        self.final = self.run_dir / stage
        self.path = self.run_dir / f"{stage}.partial"
        self.resume = resume
        # Multi-process runs (torchrun / accelerate launch): only the main process
        # touches the run directory; on the others enter and finish write nothing,
        # and the caller puts a barrier after each so they see the main one's files.
        self.main_process = main_process
        self._finished = False

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def __enter__(self) -> "StageWriter":
        if not self.main_process:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        finish_interrupted_swap(self.final)  # a finished stage left half swapped is kept, not retrained over
        if self.path.exists() and not self.resume:
            # A leftover from a failed or killed run; not resuming means start clean.
            logger.info("removing unfinished %s from an earlier run", self.path)
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / COMPLETE).unlink(missing_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self._finished:
            logger.error("%s failed; its partial output stays in %s (rerun with --resume to continue)", self.stage, self.path)

    def finish(self, metrics: dict[str, Any] | None = None, config: Any = None, keep_checkpoints: bool = False) -> Path:
        """Writes metrics.json, config.yaml and COMPLETE, then swaps the directory in place."""
        from .config import write_yaml

        if not self.main_process:
            self._finished = True
            return self.final
        if metrics is not None:
            write_json(self.path / "metrics.json", metrics)
        if config is not None:
            write_yaml(config, self.path / "config.yaml")
        if not keep_checkpoints and self.checkpoints.exists():
            shutil.rmtree(self.checkpoints)
        # run_dir: the run directory as the stage was given it (the prefix of the input stage paths in its
        # config.yaml), so that a run moved or copied elsewhere is still recognised as finished
        write_json(self.path / COMPLETE, {"stage": self.stage, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                          "gpt2_rlhf": package_version(), "run_dir": str(self.run_dir)})
        old = self.run_dir / f".{self.stage}.old"
        if old.exists():
            shutil.rmtree(old)
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.path, self.final)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
        self._finished = True
        logger.info("%s complete: %s", self.stage, self.final)
        return self.final


def finite(obj):
    """JSON has no NaN: an unmeasurable value (an empty eval set, a correlation of constants) becomes null."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
