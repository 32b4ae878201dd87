"""Our PPO beside TRL 1.12's PPOTrainer and TRL 1.16's RLOOTrainer on one artifact set, back to back.

    python benchmarks/ppo_peers.py --art /tmp/art124 --out /tmp/peers \
        --peer-python /tmp/venv-peer/bin/python --rloo-python /tmp/venv-rloo/bin/python \
        [--episodes 32] [--batch 16] [--response-length 32] [--epochs 4] [--threads 1] [--n-eval 8]

ART is the shared task's layout (../shared/bench/README.md): `make_tiny.py` for the tiny
task, `benchmarks/make_scale_art.py` for GPT-2-124M shapes. The three trainers run one
after the other, each in its own process with OMP_NUM_THREADS=--threads, with the same
episodes, batch, response length, PPO epochs (RLOO: num_iterations), KL coefficient 0.1,
clip 0.2, temperature 0.7, lr 3e-5 and seed 0; ours with the peer's single learning rate
(`--value_lr` = `--lr`) and whole prompts (`--max_prompt_tokens` = --max-prompt-tokens, at
least the longest prompt of ART; the peers never cut a prompt). RLOO samples
`num_generations=2` completions per prompt, so its batch holds half as many prompts.

Per trainer: wall seconds and CPU seconds (user + system) of the whole process, its peak RSS (`os.wait4`'s ru_maxrss: the
process's own, not the machine's), its train seconds and episodes/s as it reports them, and
(ours) the update's split into generation, scoring passes (reference, reward, values, old
log-probs) and optimisation. The peers score the policy before and after on `--n-eval` test
prompts inside their process (their own protocol); their train time excludes it. The load
average before each run is recorded: on a shared machine compare runs made together.
Prints one JSON line (also written to --out/ppo_peers.json) and a Markdown table on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT.parent / "shared" / "bench"


def run(cmd: list[str], log: Path, threads: int) -> dict:
    """Runs cmd to completion (stderr to `log`); its wall seconds, exit code and last JSON line on stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=f, text=True)
        out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    log.with_suffix(".stdout").write_text(out)
    line = next((json.loads(s) for s in reversed(out.splitlines()) if s.startswith("{")), None)
    return {"cmd": " ".join(cmd), "rc": proc.returncode, "wall_s": round(wall, 1), "load_avg_1m_before": round(load, 2),
            "result": line}


def peak_rss_runner(cmd: list[str]) -> list[str]:
    """cmd wrapped so that its own peak RSS and CPU seconds (user + system: on a shared machine the fair
    yardstick, as wall time depends on the load) are printed on stderr as one JSON line."""
    code = ("import json, os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); _, st, ru = os.wait4(p.pid, 0);"
            "print(json.dumps({'process_peak_rss_mb': round(ru.ru_maxrss / 1024),"
            " 'process_cpu_s': round(ru.ru_utime + ru.ru_stime, 2), 'rc': os.waitstatus_to_exitcode(st)}),"
            " file=sys.stderr); sys.exit(os.waitstatus_to_exitcode(st))")
    return [sys.executable, "-c", code, *cmd]


def commands(args, out: Path, lr: float | None = None) -> dict[str, list[str]]:
    """Each trainer's command line on args.art with the shared settings; its policy saved under out/<name>."""
    lr = args.lr if lr is None else lr
    common = ["--art", args.art, "--seed", "0", "--total_episodes", str(args.episodes), "--batch_size", str(args.batch),
              "--response_length", str(args.response_length), "--lr", str(lr)]
    return {
        "ours": [sys.executable, str(ROOT / "benchmarks" / "bench_ppo.py"), *common, "--out", str(out / "ours"),
                 "--ppo_epochs", str(args.epochs), "--value_lr", str(lr),
                 "--max_prompt_tokens", str(args.max_prompt_tokens), "--threads", str(args.threads),
                 *(["--shared_value_head"] if getattr(args, "shared_value_head", False) else [])],
        "trl_ppo": [args.peer_python, str(BENCH / "trl_ppo_baseline.py"), *common, "--out", str(out / "trl_ppo"),
                    "--num_ppo_epochs", str(args.epochs), "--n_eval", str(args.n_eval), "--save"],
        "trl_rloo": [args.rloo_python, str(BENCH / "trl_rloo_baseline.py"), *common, "--out", str(out / "trl_rloo"),
                     "--num_ppo_epochs", str(args.epochs), "--n_eval", str(args.n_eval), "--save"],
    }


def measured(name: str, cmd: list[str], log: Path, threads: int) -> dict:
    """One trainer run: run()'s record plus the process's own peak RSS (MB)."""
    r = run(peak_rss_runner(cmd), log, threads)
    tail = [json.loads(s) for s in log.read_text().splitlines() if s.startswith("{\"process_peak_rss_mb\"")]
    r["peak_rss_mb"] = tail[-1]["process_peak_rss_mb"] if tail else None
    r["cpu_s"] = tail[-1].get("process_cpu_s") if tail else None
    print(f"ppo_peers: {name}: rc {r['rc']}, {r['wall_s']} s wall, {r['cpu_s']} s CPU, peak RSS {r['peak_rss_mb']} MB",
          file=sys.stderr, flush=True)
    return r


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--art", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--peer-python", default="/tmp/venv-peer/bin/python", help="TRL 1.12 venv (setup_peer_venv.sh)")
    ap.add_argument("--rloo-python", default="/tmp/venv-rloo/bin/python", help="TRL 1.16 venv (setup_rloo_venv.sh)")
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--response-length", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-eval", type=int, default=8, help="the peers' before/after scoring prompts")
    ap.add_argument("--max-prompt-tokens", type=int, default=384, help="ours: at least ART's longest prompt")
    ap.add_argument("--shared-value-head", action="store_true",
                    help="ours: the critic is a scalar head on the policy's last hidden state (one backbone, not "
                         "the peers' separate value model initialised from the reward model)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--only", default="ours,trl_ppo,trl_rloo")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmds = commands(args, out)
    results = {}
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        print(f"ppo_peers: {name} ...", file=sys.stderr, flush=True)
        results[name] = measured(name, cmds[name], out / f"{name}.log", args.threads)

    def get(name, *keys):
        res = (results.get(name) or {}).get("result") or {}
        return next((res[k] for k in keys if k in res), None)

    line = {"benchmark": "ppo_peers", "art": args.art, "settings": {k: v for k, v in vars(args).items()
                                                                      if k not in ("art", "out", "only")},
            "runs": results}
    (out / "ppo_peers.json").write_text(json.dumps(line, indent=1))
    rows = ["| trainer | rc | wall s | CPU s (process) | train s | episodes/s | peak RSS MB | load before |",
            "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        rows.append(f"| {name} | {r['rc']} | {r['wall_s']} | {r['cpu_s']} | {get(name, 'train_s')} | "
                    f"{get(name, 'episodes_per_s')} | {r['peak_rss_mb']} | {r['load_avg_1m_before']} |")
    print("\n".join(rows), file=sys.stderr)
    print(json.dumps(line))
    return 0 if all(r["rc"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
