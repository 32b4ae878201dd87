"""The central claim across seeds and torch thread counts: the default recipe's PPO against SFT, by gold.

    PYTHONPATH=. python benchmarks/claim.py --out outputs/claim [--seeds 0,1,2] [--threads 1,2] [--jobs 1]
        [--config tiny] [--ceiling NAME=DIR,...]
    PYTHONPATH=. python benchmarks/claim.py --runs NAME=DIR,... [--ceiling NAME=DIR,...]

The first form runs `rlhf run --seed S` for every seed and thread count into
--out/seed<S>-threads<T> (a finished run is reused, as `rlhf run` always does),
each in its own process with OMP_NUM_THREADS=T, at most --jobs at a time (a job
with 2 threads beside another on 2 cores is slower, never different: each run is
deterministic for its thread count). The second form reads finished runs.

Per run it prints the claim's checks, read from the run's own eval/report.json
and reward/metrics.json (nothing is recomputed here):
  gold_ci     PPO's gold 95% CI lies above SFT's (no overlap);
  win_rate    PPO's gold win rate against SFT, ties counted half, is >= 0.55;
  kl          mean KL(PPO || SFT) per response is <= 6 nats;
  no_hacking  the report's reward-hacking finding says none was detected;
  on_policy   the final reward model's accuracy on held-out labelled policy samples is >= 0.75;
and, where --ceiling names a gold-reward run (benchmarks/feedback.py's `ceiling`
variant) under the same NAME, the share of the ceiling's gold gain (>= 0.8).
Prints a Markdown table and one JSON line (also written to --out/claim.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHECKS = ("gold_ci", "win_rate", "kl", "no_hacking", "on_policy")
WIN_RATE, MAX_KL, ON_POLICY, CEILING_SHARE = 0.55, 6.0, 0.75, 0.8


def checks(run: Path, ceiling: Path | None = None) -> dict:
    """The claim's numbers and checks for one finished run (and its ceiling run, if any)."""
    report = json.loads((run / "eval" / "report.json").read_text())
    gold = report["metrics"]["gold"]
    sft, ppo = gold["sft"], gold["ppo"]
    win = (report.get("gold_win_rates") or {}).get("ppo_vs_sft", {})
    kl = report["metrics"]["kl_to_reference"]["ppo"]["value"]
    findings = {f["id"]: f for f in report["findings"]}
    hacking = findings.get("ppo_reward_hacking")
    rm = json.loads((run / "reward" / "metrics.json").read_text())
    on_policy = (rm.get("on_policy") or {}).get("accuracy")
    row = {
        "run": str(run), "gold_sft": sft, "gold_ppo": ppo, "gold_chosen": gold.get("chosen"),
        "gold_win_rate_ties_half": win.get("win_rate_ties_half"), "kl_ppo": kl,
        "reward_hacking": None if hacking is None else hacking["text"], "rm_on_policy_accuracy": on_policy,
        "checks": {
            "gold_ci": ppo["ci_low"] > sft["ci_high"],
            "win_rate": win.get("win_rate_ties_half") is not None and win["win_rate_ties_half"] >= WIN_RATE,
            "kl": kl <= MAX_KL,
            # holds = hacking was detected; a finding that could not be assessed is not a pass
            "no_hacking": hacking is not None and hacking["holds"] is False and hacking.get("good") is True,
            "on_policy": on_policy is not None and on_policy >= ON_POLICY,
        },
    }
    if ceiling is not None:
        c = json.loads((ceiling / "eval" / "report.json").read_text())["metrics"]["gold"]
        ceil_gain = c["ppo"]["value"] - c["sft"]["value"]
        row["gold_ceiling"] = c["ppo"]
        row["share_of_ceiling_gain"] = (ppo["value"] - sft["value"]) / ceil_gain if ceil_gain > 0 else None
        row["checks"]["ceiling"] = row["share_of_ceiling_gain"] is not None and row["share_of_ceiling_gain"] >= CEILING_SHARE
    row["holds"] = all(row["checks"].values())
    return row


def table(rows: dict[str, dict]) -> str:
    """Markdown: one line per run, every number with its CI where it has one."""
    def ci(d):
        return f"{d['value']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"

    head = ["run", "SFT gold", "PPO gold", "chosen gold", "win½", "KL", "RM on-policy", "ceiling share", "checks"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        failed = [k for k, ok in r["checks"].items() if not ok]
        share = r.get("share_of_ceiling_gain")
        lines.append("| " + " | ".join([
            name, ci(r["gold_sft"]), ci(r["gold_ppo"]), f"{r['gold_chosen']['value']:.3f}" if r["gold_chosen"] else "-",
            "-" if r["gold_win_rate_ties_half"] is None else f"{r['gold_win_rate_ties_half']:.3f}", f"{r['kl_ppo']:.2f}",
            "-" if r["rm_on_policy_accuracy"] is None else f"{r['rm_on_policy_accuracy']:.3f}",
            "not run" if share is None and "ceiling" not in r["checks"] else f"{share:.2f}",
            "all hold" if not failed else "fails: " + ", ".join(failed)]) + " |")
    return "\n".join(lines)


def train(out: Path, config: str, seeds: list[int], threads: list[int], jobs: int) -> dict[str, dict]:
    """Runs the missing runs (jobs at a time); returns {name: {dir, seconds, rc}}."""
    todo = [(s, t) for s in seeds for t in threads]
    running: list[tuple[str, subprocess.Popen, float]] = []
    done: dict[str, dict] = {}
    while todo or running:
        while todo and len(running) < jobs:
            s, t = todo.pop(0)
            name = f"seed{s}-threads{t}"
            run = out / name
            run.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "OMP_NUM_THREADS": str(t), "MKL_NUM_THREADS": str(t)}
            log = (run.parent / f"{name}.log").open("w")
            cmd = [sys.executable, "-m", "gpt2_rlhf.cli", "run", "--config", config, "--seed", str(s),
                   "--output-dir", str(run)]
            running.append((name, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), time.time()))
        time.sleep(5)
        for item in list(running):
            name, proc, t0 = item
            if proc.poll() is not None:
                running.remove(item)
                done[name] = {"dir": str(out / name), "seconds": round(time.time() - t0, 1), "rc": proc.returncode}
    return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/claim")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time")
    ap.add_argument("--runs", default=None, metavar="NAME=DIR,...", help="summarise these finished runs instead")
    ap.add_argument("--ceiling", default=None, metavar="NAME=DIR,...",
                    help="gold-reward ceiling runs, matched to runs by NAME")
    args = ap.parse_args()
    out = Path(args.out)
    trained = {}
    if args.runs:
        runs = {k: Path(v) for k, v in (item.split("=", 1) for item in args.runs.split(","))}
    else:
        trained = train(out, args.config, [int(s) for s in args.seeds.split(",")],
                        [int(t) for t in args.threads.split(",")], args.jobs)
        runs = {k: Path(v["dir"]) for k, v in trained.items() if v["rc"] == 0}
        for k, v in trained.items():
            if v["rc"]:
                print(f"{k}: rlhf run failed (exit {v['rc']}); see {out / (k + '.log')}", file=sys.stderr)
    ceilings = {k: Path(v) for k, v in (item.split("=", 1) for item in args.ceiling.split(","))} if args.ceiling else {}
    rows = {name: checks(run, ceilings.get(name)) for name, run in runs.items()}
    print(table(rows))
    line = {"benchmark": "claim", "config": args.config, "trained": trained, "runs": rows,
            "all_hold": bool(rows) and all(r["holds"] for r in rows.values())}
    out.mkdir(parents=True, exist_ok=True)
    (out / "claim.json").write_text(json.dumps(line, indent=1))
    print(json.dumps(line))
    return 0 if line["all_hold"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
