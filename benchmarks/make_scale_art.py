"""The shared PPO task's artifact layout (../shared/bench/README.md) at GPT-2-124M shapes.

    python benchmarks/make_scale_art.py --run /tmp/scale/run --out /tmp/art124 [--max-prompt-tokens 384]

Takes a finished `benchmarks/bench_scale.py` run (the 124M stand-in after a few SFT and
reward steps) and writes what `trl_ppo_baseline.py`, `trl_rloo_baseline.py`, our
`benchmarks/bench_ppo.py` and `score_policy.py` read: `data/{train,test}.jsonl` (HH rows,
full texts), `tokenizer/`, `policy/` (the run's SFT model) and `rm/` (its reward model,
without `reward_stats.json`: the peers score with the raw head, so ours does too).

`--from-base` takes the run's base/ instead (a run that only built the base stage): the policy
is the base model and the reward model the same backbone with a fresh scalar head (seeded,
`train.modeling.load_sequence_classifier`). The weights are untrained, so this measures speed and
memory only: score and KL after a few updates mean nothing there.

The rows come from the run's data (`data.dataset` in its recipe). The peers feed whole
prompts to the model, so rows whose prompt exceeds `--max-prompt-tokens` are left out
(the count is printed): the rest keep the dataset's lengths, hundreds of tokens for
`embedded-long`. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished bench_scale.py run directory")
    ap.add_argument("--out", required=True, help="new artifacts directory")
    ap.add_argument("--max-prompt-tokens", type=int, default=384)
    ap.add_argument("--max-train", type=int, default=2000)
    ap.add_argument("--max-test", type=int, default=400)
    ap.add_argument("--from-base", action="store_true",
                    help="policy = base/, reward model = base/ with a fresh seeded head (speed and memory only)")
    ap.add_argument("--seed", type=int, default=0, help="with --from-base: the scalar head's seed")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from gpt2_rlhf.train.data import DataConfig, load_preferences

    run, out = Path(args.run), Path(args.out)
    if out.exists():
        print(f"make_scale_art: {out} exists; choose a new --out", file=sys.stderr)
        return 2
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    dataset = recipe["data"]["dataset"]
    policy_dir = run / ("base" if args.from_base else "sft")
    tok = AutoTokenizer.from_pretrained(policy_dir, trust_remote_code=False)
    counts = {}
    (out / "data").mkdir(parents=True)
    for split, limit in (("train", args.max_train), ("test", args.max_test)):
        rows, _ = load_preferences(DataConfig(dataset=dataset, on_bad_rows="skip"), split)
        kept = [r for r in rows if len(tok(r["prompt"])["input_ids"]) <= args.max_prompt_tokens][:limit]
        counts[split] = {"rows": len(rows), "kept": len(kept)}
        with open(out / "data" / f"{split}.jsonl", "w") as f:
            for r in kept:
                f.write(json.dumps({"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]}) + "\n")
    tok.save_pretrained(out / "tokenizer")
    shutil.copytree(policy_dir, out / "policy")
    if args.from_base:
        import torch

        from gpt2_rlhf.train.modeling import load_sequence_classifier

        torch.manual_seed(args.seed)  # the fresh scalar head is random: seed it
        rm = load_sequence_classifier(policy_dir)  # safetensors only, num_labels=1
        rm.config.pad_token_id = tok.pad_token_id
        rm.save_pretrained(out / "rm")
        tok.save_pretrained(out / "rm")
    else:
        shutil.copytree(run / "reward", out / "rm", ignore=shutil.ignore_patterns("reward_stats.json", "health.json"))
    print(json.dumps({"art": str(out), "dataset": dataset, "max_prompt_tokens": args.max_prompt_tokens,
                      "policy": "base (untrained)" if args.from_base else "sft", **counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
