"""Crash safety: SIGKILL a stage mid-run, rerun it with --resume, get the uninterrupted result.

For every stage (base, sft, reward, ppo, eval) on the micro recipe:

1. copy the finished stages it reads from the session's `micro_run` into a fresh
   run directory;
2. start `python -m gpt2_rlhf.cli <stage> --resume ...` as a subprocess; poll the run
   directory every 20 ms and check, at every poll, that `<stage>/` never exists
   without `COMPLETE` (a half-written directory is never a finished stage);
3. once a checkpoint exists in `<stage>.partial/checkpoints` (base and eval have
   none: once `<stage>.partial` exists; and, for the reward model, once more after
   training, while it measures the trained model), wait a seeded random delay and
   SIGKILL the process;
4. check that the stage is not taken as finished (`require_stage` refuses it);
5. plant a newer, half-written checkpoint (what a kill during a checkpoint save
   leaves) and rerun with `--resume`: it must complete;
6. compare metrics.json (and PPO's metrics.jsonl) with the uninterrupted run,
   timing fields and the resume bookkeeping left out: equal, bit for bit.

The uninterrupted reference of base/sft/reward is the session's `micro_run`
(same recipe, seed and thread count); PPO's and eval's are run here once.

A kill can also land inside `StageWriter.finish` (between the writes of
metrics/COMPLETE and the two renames that swap the directory in): that window is
too short to hit with a signal, so it is tested in-process by stopping `finish`
at each of its filesystem calls in turn.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import copy_run

ROOT = Path(__file__).resolve().parent.parent
NEEDS = {"base": (), "sft": ("base",), "reward": ("base", "sft"), "ppo": ("base", "sft", "reward"),
         "eval": ("base", "sft", "reward", "ppo")}
# The kill comes 0 to MAX_DELAY_S after the kill point: at micro scale a stage may finish well under a second
# after its first checkpoint, and a kill after it finished tests nothing.
MAX_DELAY_S = 0.1
# Wall-clock and throughput fields, and the resume bookkeeping: the only fields allowed to differ.
TIMING = re.compile(r"(^|_)(s|seconds|runtime|per_second)$|^resumed_from_step$|_at$|^created$")
POLL_S = 0.02


def comparable(obj, roots: tuple[Path, ...]):
    """metrics without timing fields, with the run directories' paths replaced by <RUN>."""
    if isinstance(obj, dict):
        return {k: comparable(v, roots) for k, v in obj.items() if not TIMING.search(k)}
    if isinstance(obj, list):
        return [comparable(v, roots) for v in obj]
    if isinstance(obj, str):
        for root in roots:
            obj = obj.replace(str(root), "<RUN>")
    return obj


def stage_outputs(run_dir: Path, stage: str, *roots: Path) -> dict:
    """metrics.json / report.json and the JSONL logs of a finished stage, comparable across run directories
    (`roots`: other run directories whose paths a copied input stage may mention)."""
    roots = (run_dir, *roots)
    out = {}
    for name in ("metrics.json", "report.json"):
        if (run_dir / stage / name).exists():
            out[name] = comparable(json.loads((run_dir / stage / name).read_text()), roots)
    for name in ("metrics.jsonl", "samples.jsonl"):
        if (run_dir / stage / name).exists():
            out[name] = [comparable(json.loads(line), roots) for line in (run_dir / stage / name).read_text().splitlines()]
    return out


def differences(a, b, path: str = "") -> list[str]:
    """Flat list of `path: a != b` for every leaf that differs (readable assertion messages)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in differences(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def rlhf(stage: str, run_dir: Path, *extra: str) -> list[str]:
    if stage == "eval":  # `rlhf evaluate RUN_DIR` (the run's recipe.yaml); it has no checkpoints to resume
        return [sys.executable, "-m", "gpt2_rlhf.cli", "evaluate", str(run_dir)]
    return [sys.executable, "-m", "gpt2_rlhf.cli", stage, "--config", "micro", "--output-dir", str(run_dir), *extra]


def env() -> dict[str, str]:
    # One thread, as the session fixture that made the reference (tests/conftest.py), so floats match.
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "RLHF_TEST_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def kill_point_reached(partial: Path, stage: str, when: str) -> bool:
    """"checkpoint": the first checkpoint exists (base and eval have none: the stage started writing);
    "trained": the trained model is saved and the stage measures it (transformers' stages only)."""
    if when == "trained":
        return (partial / "model.safetensors").is_file()
    if stage in ("base", "eval"):
        return partial.is_dir()
    ckpts = partial / "checkpoints"
    return ckpts.is_dir() and any(p.name.startswith(("checkpoint-", "update-")) for p in ckpts.iterdir())


def kill_at_a_seeded_point(stage: str, run_dir: Path, seed: int, when: str = "checkpoint",
                           timeout_s: float = 240.0) -> float:
    """Runs the stage, SIGKILLs it a seeded random delay after the kill point; returns the delay.

    Every poll checks the invariant: OUTPUT/<stage> exists only with COMPLETE.
    """
    delay = random.Random(f"{stage}-{when}-{seed}").uniform(0.0, MAX_DELAY_S)
    final, partial = run_dir / stage, run_dir / f"{stage}.partial"
    log = run_dir.parent / f"{stage}-killed.log"  # a file, not a pipe: a full pipe would stall the child
    with log.open("w") as err:
        proc = subprocess.Popen(rlhf(stage, run_dir, "--resume"), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                                stderr=err)
    deadline, kill_at = time.time() + timeout_s, None
    try:
        while proc.poll() is None and time.time() < deadline:
            assert not final.exists() or (final / "COMPLETE").is_file(), f"{final} exists without COMPLETE"
            if kill_at is None and kill_point_reached(partial, stage, when):
                kill_at = time.time() + delay
            if kill_at is not None and time.time() >= kill_at:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                break
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, (
        f"{stage}: wanted to kill it {delay:.2f} s after the {when} point, but it ended with "
        f"{proc.returncode} first (make the micro stage longer?)\n{log.read_text()[-2000:]}")
    return delay


def plant_half_written_checkpoint(run_dir: Path, stage: str) -> Path | None:
    """What SIGKILL during a checkpoint save leaves: a newer checkpoint folder with part of its files."""
    ckpts = run_dir / f"{stage}.partial" / "checkpoints"
    if stage in ("sft", "reward"):  # transformers writes checkpoint-N/ in place, trainer_state.json last
        bad = ckpts / "checkpoint-999"
        bad.mkdir(parents=True, exist_ok=True)
        (bad / "model.safetensors").write_bytes(b"\x00" * 64)  # a torn write
        return bad
    if stage == "ppo":  # ours writes .tmp-update-N/ and renames it: a torn one never has the final name
        bad = ckpts / ".tmp-update-000999"
        bad.mkdir(parents=True, exist_ok=True)
        (bad / "state.pt").write_bytes(b"\x00" * 64)
        return bad
    return None


@pytest.fixture(scope="module")
def full_reference(micro_run, tmp_path_factory) -> Path:
    """Uninterrupted micro PPO and eval runs on a copy of micro_run (in-process, like micro_run itself)."""
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.pipeline import run_stage

    run = copy_run(micro_run, tmp_path_factory.mktemp("full_reference") / "run")
    for stage in ("ppo", "eval"):
        run_stage(stage, load_recipe("micro"), run)
    return run


@pytest.mark.slow
@pytest.mark.parametrize("stage,when", [("base", "checkpoint"), ("sft", "checkpoint"), ("reward", "checkpoint"),
                                        ("reward", "trained"), ("ppo", "checkpoint"), ("eval", "checkpoint")])
def test_sigkill_then_resume_gives_the_uninterrupted_result(stage, when, micro_run, tmp_path, request):
    from gpt2_rlhf.train.rundir import StageError, require_stage

    reference = request.getfixturevalue("full_reference") if stage in ("ppo", "eval") else micro_run
    run = copy_run(reference, tmp_path / "run", stages=NEEDS[stage])
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}

    delay = kill_at_a_seeded_point(stage, run, seed=0, when=when)

    # 4. killed: nothing looks finished, the inputs are untouched
    assert not (run / stage).exists(), f"{stage}: killed {delay:.2f} s after the {when} point, it had already finished"
    assert {p: p.stat().st_mtime_ns for p in before} == before, "the stages it read were modified"
    if (run / f"{stage}.partial" / "COMPLETE").is_file():
        # killed between COMPLETE and the swap (seen once in CI): the stage had finished, and the next reader
        # rolls it forward (rundir.finish_interrupted_swap); it must be the uninterrupted result
        require_stage(run / stage, stage)
        diff = differences(stage_outputs(run, stage, reference), stage_outputs(reference, stage))
        assert not diff, f"{stage}: rolled forward (killed {delay:.2f} s after the {when} point):\n" + "\n".join(diff)
        return
    with pytest.raises(StageError, match="does not exist"):
        require_stage(run / stage, stage)

    # A kill that lands while the first checkpoint is being written leaves none complete
    # (trainer_state.json is written last); the resume then rightly starts over.
    had_checkpoint = any((run / f"{stage}.partial").rglob("trainer_state.json"))

    # 5. resume past a torn checkpoint
    plant_half_written_checkpoint(run, stage)
    proc = subprocess.run(rlhf(stage, run, "--resume"), cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{stage} --resume failed (killed {delay:.2f} s after the {when} point):\n{proc.stderr[-3000:]}"
    require_stage(run / stage, stage)
    assert not (run / f"{stage}.partial").exists()

    # 6. the same result as without the crash
    diff = differences(stage_outputs(run, stage, reference), stage_outputs(reference, stage))
    assert not diff, f"{stage}: resumed (killed {delay:.2f} s after the {when} point) != uninterrupted:\n" + "\n".join(diff)
    if stage in ("sft", "reward") and had_checkpoint:
        resumed = json.loads((run / stage / "metrics.json").read_text())["resumed_from_step"]
        assert resumed is not None, f"{stage} did not resume from its checkpoint"
    if stage == "ppo":
        assert "resumed from" in proc.stderr, "ppo did not resume from its checkpoint"
        import torch
        from safetensors.torch import load_file

        resumed, uninterrupted = (load_file(d / "ppo" / "model.safetensors") for d in (run, reference))
        assert resumed.keys() == uninterrupted.keys()
        assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed), "ppo weights differ after the resume"


# ----------------------------------------------------------------------------- a kill inside finish()


class _Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no `except Exception` handler sees it."""


def _finish_stage(run: Path, value: str, resume: bool = False) -> None:
    from gpt2_rlhf.train.rundir import StageWriter

    with StageWriter(run, "sft", resume=resume) as w:
        (w.path / "weights.txt").write_text(value)
        (w.checkpoints / "checkpoint-1").mkdir(parents=True, exist_ok=True)
        w.finish(metrics={"value": value}, config={"value": value})


def _count_fs_calls(monkeypatch, kill_at: int | None) -> list[str]:
    """Counts os.replace / shutil.rmtree calls in train.rundir; raises _Killed at call number kill_at."""
    import gpt2_rlhf.train.rundir as rundir
    calls: list[str] = []
    real_replace, real_rmtree = rundir.os.replace, rundir.shutil.rmtree

    def wrap(name, real):
        def call(*args, **kwargs):
            calls.append(f"{name}{tuple(str(a) for a in args)}")
            if kill_at is not None and len(calls) == kill_at:
                raise _Killed(calls[-1])
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(rundir.os, "replace", wrap("os.replace", real_replace))
    monkeypatch.setattr(rundir.shutil, "rmtree", wrap("shutil.rmtree", real_rmtree))
    return calls


def test_a_kill_at_any_point_of_finish_never_loses_a_finished_stage(tmp_path, monkeypatch):
    from gpt2_rlhf.train.rundir import is_complete, require_stage

    probe = tmp_path / "probe"
    _finish_stage(probe, "old")
    calls = _count_fs_calls(monkeypatch, kill_at=None)
    _finish_stage(probe, "new")
    n = len(calls)
    monkeypatch.undo()
    assert n >= 5, calls  # metrics, config, checkpoints, COMPLETE, two renames, cleanup

    for kill_at in range(1, n + 1):
        run = tmp_path / f"kill_{kill_at}"
        _finish_stage(run, "old")
        _count_fs_calls(monkeypatch, kill_at)
        with pytest.raises(_Killed):
            _finish_stage(run, "new")
        monkeypatch.undo()
        final = run / "sft"
        # what is there is either the old finished stage or the new one, never a half-written or missing one
        assert not final.exists() or is_complete(final), f"kill at call {kill_at}: sft/ without COMPLETE"
        got = (require_stage(final, "sft") / "weights.txt").read_text()
        assert got in ("old", "new"), f"kill at call {kill_at}: {got!r}"
        assert json.loads((final / "metrics.json").read_text()) == {"value": got}
        # and a rerun with --resume finishes the new one
        _finish_stage(run, "new", resume=True)
        assert (require_stage(final, "sft") / "weights.txt").read_text() == "new"
        assert sorted(p.name for p in run.iterdir()) == ["sft"], f"kill at call {kill_at}: leftovers"


# ----------------------------------------------------------------------------- the resume helpers, by hand


def test_last_complete_checkpoint_skips_torn_and_last_step_checkpoints(tmp_path):
    from gpt2_rlhf.train.hf_training import last_complete_checkpoint

    def ckpt(step, state):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if state is not None:
            (d / "trainer_state.json").write_text(state)

    assert last_complete_checkpoint(tmp_path / "missing") is None
    ckpt(3, json.dumps({"global_step": 3, "max_steps": 6}))
    ckpt(20, json.dumps({"global_step": 20, "max_steps": 20}))  # taken at the last step
    ckpt(100, None)  # torn: no trainer_state.json
    ckpt(200, '{"global_step": 2')  # torn: half-written trainer_state.json
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-3")
    ckpt(10, json.dumps({"global_step": 10, "max_steps": 20}))  # numeric order, not string order
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")


def test_run_train_loss_weighs_each_logged_window_by_its_steps():
    from gpt2_rlhf.train.hf_training import run_train_loss

    # windows: step 1 (1 step, loss 4), steps 2-3 (2 steps, mean 1), steps 4-6 (3 steps, mean 2)
    history = [{"step": 1, "loss": 4.0}, {"step": 3, "loss": 1.0}, {"step": 3, "eval": 0.5},
               {"step": 6, "loss": 2.0}, {"step": 6, "train_runtime": 1.0}]
    assert run_train_loss(history) == pytest.approx((4 * 1 + 1 * 2 + 2 * 3) / 6)
    assert run_train_loss([]) is None
