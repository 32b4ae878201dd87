"""What the feedback rounds buy: the default recipe beside its ablations and the gold-reward ceiling.

    PYTHONPATH=. python benchmarks/feedback.py --out outputs/feedback-bench [--seed 0] [--threads 1]
        [--variants full,no_labels,one_round,noisy,ceiling] [--from-run outputs/tiny]

Every variant trains in its own run directory under --out from the same base and
SFT models (copied from --from-run when given, else trained once into --out/shared),
with the same PPO budget (label.rounds x ppo.total_episodes episodes):

  full       the default recipe: feedback rounds on SFT's, then PPO's samples;
  no_labels  the reward model on the dataset pairs only (the pipeline before feedback);
  one_round  one feedback round (SFT's samples), then PPO for the whole budget;
  noisy      the default recipe with a labeller that flips 20% of its labels;
  ceiling    PPO with the gold judge itself as its reward (`train.rewards:gold`): what
             a perfect reward model gives the same PPO budget.

Each variant is evaluated by its own eval stage (the same held-out prompts, decoding
and seeds). The line reports, per variant: PPO's and SFT's gold [95% CI], the gold
win rate of PPO vs SFT, mean KL to SFT, the reward model's on-policy accuracy on its
own held-out labelled samples and on the full recipe's final held-out labelled pairs
(PPO samples: one yardstick for every reward model), and the share of the ceiling's
gold gain that the variant reaches. Prints one JSON line (and writes it to --out).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = ("full", "no_labels", "one_round", "noisy", "ceiling")


def overrides(variant: str, rounds: int, episodes: int) -> dict[str, str]:
    budget = str(rounds * episodes)
    loop = "base,sft,label,reward,ppo,eval"
    if variant == "full":
        return {"stages": loop}
    if variant == "no_labels":
        return {"stages": "base,sft,reward,ppo,eval", "ppo.total_episodes": budget}
    if variant == "one_round":
        return {"stages": loop, "label.rounds": "1", "ppo.total_episodes": budget}
    if variant == "noisy":
        return {"stages": loop, "label.flip_rate": "0.2"}
    if variant == "ceiling":  # the evaluation still needs a reward model: the full recipe's final one
        return {"stages": "base,sft,ppo,eval", "ppo.reward_function": "train.rewards:gold",
                "ppo.total_episodes": budget}
    raise ValueError(f"unknown variant {variant!r}; choose from {list(VARIANTS)}")


def summary(run: Path, yardstick: Path | None) -> dict:
    report = json.loads((run / "eval" / "report.json").read_text())
    m = report["metrics"]
    out = {"gold_sft": m["gold"]["sft"], "gold_ppo": m["gold"]["ppo"],
           "kl_ppo": m["kl_to_reference"]["ppo"]["value"],
           "gold_win_rate_ppo_vs_sft": (report.get("gold_win_rates") or {}).get("ppo_vs_sft", {}).get("win"),
           "gold_win_rate_ties_half_ppo_vs_sft": (report.get("gold_win_rates") or {}).get("ppo_vs_sft", {}).get(
               "win_rate_ties_half"),
           "findings": {f["id"]: f["holds"] for f in report["findings"]}}
    rm = json.loads((run / "reward" / "metrics.json").read_text())
    out["rm_dataset_accuracy"] = rm.get("accuracy")
    out["rm_on_policy"] = rm.get("on_policy")
    if yardstick is not None and (yardstick / "test.jsonl").is_file():
        from gpt2_rlhf.train.modeling import RewardModel
        from gpt2_rlhf.train.reward import on_policy_metrics

        rm_model = RewardModel.load(run / "reward")
        out["rm_on_full_final_pairs"] = on_policy_metrics(rm_model, yardstick, 32)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/feedback-bench")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--from-run", default=None, help="a finished run whose base/ and sft/ every variant starts from")
    ap.add_argument("--runs", default=None, metavar="VARIANT=DIR,...",
                    help="summarise finished run directories made with the variants' overrides instead of training "
                         "(the yardstick pairs come from the full variant's label/)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from gpt2_rlhf.cli import setup_logging
    from gpt2_rlhf.pipeline import run_pipeline
    from gpt2_rlhf.stages import load_recipe

    setup_logging()
    out = Path(args.out)
    if args.runs:
        runs = dict(item.split("=", 1) for item in args.runs.split(","))
        yard = Path(runs["full"]) / "label" if "full" in runs else None
        results = {v: summary(Path(d), yard) for v, d in runs.items()}
        return report_line(results, args, {v: str(d) for v, d in runs.items()}, out)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    base_recipe = load_recipe(args.config, {"seed": str(args.seed)})
    rounds, episodes = base_recipe.label.rounds, base_recipe.ppo.total_episodes
    shared = Path(args.from_run) if args.from_run else out / "shared"
    if not args.from_run:
        run_pipeline(load_recipe(args.config, {"seed": str(args.seed), "stages": "base,sft"}), shared)
    results, seconds = {}, {}
    for v in [*[x for x in variants if x != "ceiling"], *[x for x in variants if x == "ceiling"]]:
        run = out / v
        for stage in ("base", "sft"):
            if not (run / stage).exists():
                shutil.copytree(shared / stage, run / stage)
        if v == "ceiling" and not (run / "reward").exists():
            shutil.copytree(out / "full" / "reward", run / "reward")
        t0 = time.time()
        run_pipeline(load_recipe(args.config, {"seed": str(args.seed), **overrides(v, rounds, episodes)}), run)
        seconds[v] = round(time.time() - t0, 1)
        full_label = out / "full" / "label"
        results[v] = summary(run, full_label if full_label.is_dir() else None)
    return report_line(results, args, seconds, out)


def report_line(results: dict, args, seconds: dict, out: Path) -> int:
    if "ceiling" in results:
        ceil = results["ceiling"]["gold_ppo"]["value"] - results["ceiling"]["gold_sft"]["value"]
        for v, r in results.items():
            gain = r["gold_ppo"]["value"] - r["gold_sft"]["value"]
            r["share_of_ceiling_gain"] = round(gain / ceil, 3) if ceil > 0 else None
    line = {"benchmark": "feedback", "seed": args.seed, "threads": args.threads, "config": args.config,
            "seconds_or_runs": seconds, "variants": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"feedback-seed{args.seed}-threads{args.threads}.json").write_text(json.dumps(line, indent=1))
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
