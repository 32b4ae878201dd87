"""The real recipe at GPT-2-124M shapes, offline: every stage, its seconds per step and peak RSS.

    python benchmarks/bench_scale.py --work /tmp/scale [--size gpt2] [--dataset embedded] [--threads 1]

1. Builds a GPT-2-shaped stand-in (`gpt2_rlhf.train.stand_in`: 12 layers, width 768,
   vocab 50,257, context 1,024, random weights) unless `--model` names one.
2. Runs `configs/gpt2-hh.yaml` with `base.model` = the stand-in and the step counts cut
   by flags (a few SFT and reward steps, two PPO updates, a few evaluation prompts), one
   stage per process (`python -m gpt2_rlhf.cli <stage>`), so that each stage's peak RSS is
   its own (`os.wait4`'s `ru_maxrss` of that child).
3. Renders the card (`rlhf card`) to show the run is complete.

Prints one JSON line: per stage wall seconds, peak RSS (MB), steps and seconds per step
(from the stage's own metrics.json), and for PPO where one update's time goes (generation;
the reference, reward and value passes; optimisation), from the trainer's per-update timings.
The first PPO update pays one-off costs (allocator warm-up), so the split is reported for the
last update as well as the mean. The settings are recorded in the line; a shared machine's
load average is too (compare runs made at the same time).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

STAGES = ("base", "sft", "reward", "ppo", "eval")
# Runs `python -m MODULE ARGS...` and, at exit, writes the process's peak CUDA memory (null on CPU)
# to $BENCH_PEAK_FILE: what a stage allocated on the GPU, measured by torch's allocator.
PEAK_WRAPPER = """
import atexit, json, os, runpy, sys
def _peak():
    import torch
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    with open(os.environ["BENCH_PEAK_FILE"], "w") as f:
        json.dump({"peak_gpu_mb": peak}, f)
atexit.register(_peak)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def overrides(args: argparse.Namespace, model: Path) -> list[str]:
    """The flags that cut the real recipe's step counts (and point it at the stand-in and offline data)."""
    b = args.batch_size
    return [
        "--base.model", str(model), "--data.dataset", args.dataset,
        "--sft.max_steps", str(args.steps), "--sft.per_device_train_batch_size", str(b),
        "--sft.max_eval_samples", str(4 * b), "--sft.logging_steps", "1",
        "--reward.max_steps", str(args.steps), "--reward.per_device_train_batch_size", str(b),
        "--reward.max_eval_samples", str(4 * b), "--reward.stats_prompts", str(4 * b), "--reward.logging_steps", "1",
        "--ppo.total_episodes", str(args.ppo_updates * args.ppo_batch), "--ppo.batch_size", str(args.ppo_batch),
        "--ppo.num_mini_batches", "1", "--ppo.gradient_accumulation_steps", "1", "--ppo.ppo_epochs", "1",
        "--ppo.eval_prompts", "0", "--ppo.save_every", "1", *eval_overrides(args),
    ]


def eval_overrides(args: argparse.Namespace) -> list[str]:
    return ["--eval.n_prompts", str(args.eval_prompts), "--eval.batch_size", str(args.eval_prompts),
            "--eval.bootstrap_samples", "100"]


def run_child(cmd: list[str], env: dict, log: Path) -> tuple[int, float, float]:
    """(return code, wall seconds, peak RSS in MB) of one child process."""
    env = dict(env, BENCH_PEAK_FILE=str(log.with_suffix(".peak.json")))
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t0, usage.ru_maxrss / 1024  # Linux: kB


def precision(stage: str, run: Path) -> dict:
    """What the stage trained in: the bf16 decision the trainer's own rule (hf_training.device_settings) makes for
    the stage's resolved `precision` on this machine, and the saved model's dtype. Read from the stage's
    config.yaml, not by unpickling its training_args.bin (no pickle is ever loaded; see test_safe_loading)."""
    out = {}
    resolved = run / stage / "config.yaml"
    if resolved.is_file():
        asked = ((yaml.safe_load(resolved.read_text()) or {}).get(stage) or {}).get("precision")
        if asked is not None:
            from gpt2_rlhf.train.hf_training import device_settings

            out["precision"] = asked
            out["bf16"] = bool(device_settings(asked)["bf16"])
    config = run / stage / "config.json"
    if config.is_file():
        out["saved_dtype"] = json.loads(config.read_text()).get("dtype")
    return out


def stage_steps(stage: str, run: Path) -> tuple[int | None, float | None]:
    """(optimizer steps, seconds spent in them) from the stage's metrics.json."""
    m = json.loads((run / stage / "metrics.json").read_text())
    if stage in ("sft", "reward"):
        return m.get("global_step"), m.get("train_seconds")
    if stage == "ppo":
        return m.get("updates"), m.get("train_s")
    return None, None


def ppo_split(run: Path) -> dict:
    """One PPO update's time by phase: the mean over updates and the last update."""
    rows = [json.loads(line) for line in (run / "ppo" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "gen_s" in r]
    keys = {"generation_s": "gen_s", "ref_reward_value_passes_s": "score_s", "optimisation_s": "train_s"}
    mean = {k: sum(r[v] for r in rows) / len(rows) for k, v in keys.items()}
    last = {k: rows[-1][v] for k, v in keys.items()}
    batch = rows[-1]["episodes"] - (rows[-2]["episodes"] if len(rows) > 1 else 0)
    return {"updates": len(rows), "mean": {k: round(v, 2) for k, v in mean.items()},
            "last": {k: round(v, 2) for k, v in last.items()},
            "episodes_per_s_last": round(batch / sum(last.values()), 4),
            # sampled tokens per second of generation (the rollout's mean response length x episodes)
            "generation_tokens_per_s_last": round(batch * rows[-1]["response_length"] / rows[-1]["gen_s"], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="new or finished work directory (stand-in, run, logs)")
    ap.add_argument("--model", help="an existing GPT-2-shaped model directory (default: build the stand-in)")
    ap.add_argument("--size", default="gpt2", help="stand-in shapes: gpt2, gpt2-medium, gpt2-large, gpt2-xl")
    ap.add_argument("--dataset", default="embedded", help="data.dataset for every stage (offline)")
    ap.add_argument("--steps", type=int, default=3, help="SFT and reward-model optimizer steps")
    ap.add_argument("--batch-size", type=int, default=2, help="SFT and reward-model per-device batch")
    ap.add_argument("--ppo-updates", type=int, default=2)
    ap.add_argument("--ppo-batch", type=int, default=4, help="PPO episodes per update")
    ap.add_argument("--eval-prompts", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every stage")
    args = ap.parse_args()

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    out: dict = {"bench": "scale", "size": args.size, "dataset": args.dataset, "threads": args.threads,
                 "settings": {k: getattr(args, k) for k in ("steps", "batch_size", "ppo_updates", "ppo_batch",
                                                             "eval_prompts")},
                 "loadavg_start": os.getloadavg()[0], "stages": {}}

    model = Path(args.model) if args.model else work / f"{args.size}-stand-in"
    if not args.model and not (model / "config.json").is_file():
        rc, wall, rss = run_child([sys.executable, "-m", "gpt2_rlhf.train.stand_in", "--out", str(model),
                                   "--size", args.size, "--dataset", args.dataset], env, work / "stand_in.log")
        if rc:
            print(f"bench_scale: building the stand-in failed, see {work / 'stand_in.log'}", file=sys.stderr)
            return rc
        out["stand_in"] = {"wall_s": wall, "peak_rss_mb": rss}
    meta = model / "stand_in.json"
    if meta.is_file():
        out["model"] = json.loads(meta.read_text())

    run = work / "run"
    flags = overrides(args, model)
    for stage in STAGES:
        cmd = [sys.executable, "-c", PEAK_WRAPPER, "gpt2_rlhf.cli", stage, "--config", "gpt2-hh",
               "--output-dir", str(run), *flags]
        if stage == "eval":  # `rlhf evaluate RUN` reads the run's recipe.yaml (the flags above) plus eval flags
            cmd = [*cmd[:4], "evaluate", str(run), *eval_overrides(args)]
        log = work / f"{stage}.log"
        rc, wall, rss = run_child(cmd, env, log)
        row = {"wall_s": round(wall, 2), "peak_rss_mb": round(rss, 1), "rc": rc}
        peak_file = log.with_suffix(".peak.json")
        if peak_file.is_file():
            row.update(json.loads(peak_file.read_text()))
        if rc:
            out["stages"][stage] = row
            out["failed"] = f"{stage}: see {work / (stage + '.log')}; command: {shlex.join(cmd)}"
            print(json.dumps(out))
            return rc
        steps, seconds = stage_steps(stage, run)
        if steps:
            row.update(steps=steps, train_s=round(seconds, 2), s_per_step=round(seconds / steps, 2))
        row.update(precision(stage, run))
        out["stages"][stage] = row
    out["ppo_update_split"] = ppo_split(run)
    rc, wall, _ = run_child([sys.executable, "-m", "gpt2_rlhf.cli", "card", str(run)], env, work / "card.log")
    card = run / "card" / "README.md"
    out["card"] = {"rc": rc, "rendered": card.is_file(), "wall_s": round(wall, 2)}
    out["loadavg_end"] = os.getloadavg()[0]
    print(json.dumps(out))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
