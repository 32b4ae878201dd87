"""Our PPO against TRL's RLOO (or TRL 1.12's PPO) at matched KL: a learning-rate sweep of each, scored alike.

    python benchmarks/matched_kl.py --art /tmp/tiny --out /tmp/matched \
        --ours-lrs 1e-5,2e-5,3e-5 --peer trl_rloo --peer-lrs 3e-5,6e-5,1e-4 [--episodes 512 --batch 16]

Each point is one training run (benchmarks/ppo_peers.py's command lines: same episodes, batch,
response length, epochs, KL coefficient and seed; only the learning rate moves), its policy then
scored by the neutral `../shared/bench/score_policy.py` (--n-score held-out prompts: mean reward
model score and mean summed KL to the reference). Two trainers land at different KLs for the same
learning rate, so their scores compare only at matched KL: the line reports every point, the
closest pair whose KLs agree within --match (10%), and the score of each at that KL. A plot of
score against KL, one line per trainer (with any other trainer measured under --out), goes to
--out/score_vs_kl.png. Prints one JSON line.
A point already measured under --out (its point.json) is reused, so a sweep can be extended.
With --shared-value-head ours trains its critic as a scalar head on the policy's backbone (one
transformer instead of two: less compute per episode) and is reported as `ours_shared_head`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ppo_peers import BENCH, add_arguments, commands, measured  # noqa: E402


def score(python: str, art: str, policy: Path, n: int, response_length: int) -> dict:
    out = subprocess.run([python, str(BENCH / "score_policy.py"), "--art", art, "--policy", str(policy),
                          "--n_eval", str(n), "--response_length", str(response_length)],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def closest_pair(points: dict[str, list[dict]], a: str, b: str, match: float) -> dict | None:
    """The (a, b) pair of points with the smallest relative KL gap, if within `match`."""
    best = None
    for p in points[a]:
        for q in points[b]:
            gap = abs(p["kl"] - q["kl"]) / max(p["kl"], q["kl"], 1e-9)
            if best is None or gap < best["kl_gap"]:
                best = {"kl_gap": round(gap, 4), a: p, b: q}
    return best if best is not None and best["kl_gap"] <= match else ({"unmatched": best} if best else None)


def plot(points: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, pts in points.items():
        pts = sorted(pts, key=lambda p: p["kl"])
        ax.plot([p["kl"] for p in pts], [p["score"] for p in pts], marker="o", label=name)
        for p in pts:
            ax.annotate(f"lr {p['lr']:g}", (p["kl"], p["score"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("mean summed KL to the reference (nats)")
    ax.set_ylabel("mean reward-model score")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def earlier_curves(out: Path, skip: set[str]) -> dict[str, list[dict]]:
    """Points of other trainers measured under the same --out (e.g. ours with its separate critic beside
    ours_shared_head): they join the plot, one line each, so one folder holds the whole comparison."""
    curves: dict[str, list[dict]] = {}
    for f in sorted(out.glob("*-lr*/point.json")):
        name = f.parent.name.rsplit("-lr", 1)[0]
        if name not in skip:
            curves.setdefault(name, []).append(json.loads(f.read_text()))
    return curves


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--ours-lrs", default="1e-5,2e-5,3e-5")
    ap.add_argument("--peer", default="trl_rloo", choices=["trl_rloo", "trl_ppo"])
    ap.add_argument("--peer-lrs", default="3e-5,6e-5,1e-4")
    ap.add_argument("--n-score", type=int, default=200, help="score_policy.py's held-out prompts")
    ap.add_argument("--match", type=float, default=0.10, help="relative KL gap that counts as matched")
    ap.set_defaults(episodes=512, max_prompt_tokens=256)
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ours = "ours_shared_head" if args.shared_value_head else "ours"  # a different critic is a different curve
    points: dict[str, list[dict]] = {ours: [], args.peer: []}
    for name, lrs in ((ours, args.ours_lrs), (args.peer, args.peer_lrs)):
        for lr in [float(x) for x in lrs.split(",") if x.strip()]:
            where = out / f"{name}-lr{lr:g}"
            where.mkdir(parents=True, exist_ok=True)
            if (where / "point.json").is_file():  # measured by an earlier call with the same --out: reused
                points[name].append(json.loads((where / "point.json").read_text()))
                continue
            kind = "ours" if name == ours else name  # the command's key and its output folder
            r = measured(f"{name} lr {lr:g}", commands(args, where, lr)[kind], where / "train.log", args.threads)
            if r["rc"] != 0:
                print(f"matched_kl: {name} lr {lr:g} failed; see {where / 'train.log'}", file=sys.stderr)
                return 1
            s = score(sys.executable, args.art, where / kind, args.n_score, args.response_length)
            res = r["result"] or {}
            points[name].append({"lr": lr, "score": s["score"], "kl": s["kl"], "resp_len": s.get("resp_len"),
                                 "episodes_per_s": res.get("episodes_per_s"), "train_s": res.get("train_s"),
                                 "cpu_s": r["cpu_s"], "peak_rss_mb": r["peak_rss_mb"],
                                 "load_avg_1m_before": r["load_avg_1m_before"]})
            (where / "point.json").write_text(json.dumps(points[name][-1]))
            print(f"matched_kl: {name} lr {lr:g}: score {s['score']:.3f} KL {s['kl']:.3f} "
                  f"{res.get('episodes_per_s')} episodes/s", file=sys.stderr, flush=True)
    plot(points | earlier_curves(out, set(points)), out / "score_vs_kl.png")
    line = {"benchmark": "matched_kl", "art": args.art, "peer": args.peer,
            "settings": {k: v for k, v in vars(args).items() if k not in ("art", "out")},
            "points": points, "matched": closest_pair(points, ours, args.peer, args.match),
            "plot": str(out / "score_vs_kl.png")}
    (out / "matched_kl.json").write_text(json.dumps(line, indent=1))
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
