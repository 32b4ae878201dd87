"""How far can a policy close to the SFT model move the reward model? A best-of-n ceiling.

    PYTHONPATH=. python benchmarks/reward_ceiling.py --run-dir outputs/tiny [--samples 16]

Why: the PPO target "raise the mean reward-model score by one standard deviation of
the SFT scores" mixes two kinds of spread. A pairwise (Bradley-Terry) reward model is
identified only up to a constant per prompt, so part of the SFT scores' spread is the
reward model's per-prompt offset, which no policy can change. This script measures
what is reachable before any PPO is run:

1. sample `--samples` responses per held-out prompt from the SFT policy (the PPO
   rollout settings: temperature, max new tokens, prompt truncation);
2. score each with the reward model (normalised with reward_stats.json) and, on the
   embedded dataset, with the gold judge;
3. split the score variance into within-prompt (what a policy can change) and
   between-prompt (the offsets) parts;
4. best-of-n for n = 2, 4, ... (the response the reward model likes best among the
   first n samples): its mean score gain over the SFT mean in units of the SFT score
   std, its gold score, and its KL to the SFT policy, at most log n - (n - 1) / n nats
   (Beirami et al. 2024, "Theoretical guarantees on the best-of-n alignment policy").
   Best-of-n is the usual yardstick of what an RL policy at that KL can reach;
5. on the embedded dataset, the gold judge's best-of-n (the sample gold scores
   highest among the first n, the earliest on ties, so the pick never looks at the
   reward model): how much reward-model score a policy earns by being *better*,
   as gold defines it. A target above this line can only be met with score that
   gold does not value, i.e. by exploiting the reward model;
6. the dataset's own chosen (and rejected) responses to the same prompts, scored the
   same way: where the responses the reward model was trained to prefer sit, in
   the same SFT-std units. A policy that beats them by a wide margin on the reward
   model is usually exploiting it.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics as st
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def corr(xs: list[float], ys: list[float]) -> float | None:
    """Pearson correlation (the reward stage's), rounded; None when either side is constant."""
    from gpt2_rlhf.train.reward import pearson

    r = pearson(torch.tensor(xs), torch.tensor(ys))
    return None if math.isnan(r) else round(r, 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="outputs/tiny", help="run directory with sft/ (or base/) and reward/")
    ap.add_argument("--split", default="test", help="prompts of this split (held-out by default)")
    ap.add_argument("--n-prompts", type=int, default=128, help="the PPO stage's before/after comparison uses 128")
    ap.add_argument("--samples", type=int, default=16, help="responses per prompt (best-of-n up to this n)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine may be shared)")
    args = ap.parse_args(argv)
    if args.n_prompts < 1 or args.samples < 1:
        ap.error(f"--n-prompts ({args.n_prompts}) and --samples ({args.samples}) must be at least 1")
    torch.set_num_threads(args.threads)

    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train.data import load_preferences
    from gpt2_rlhf.train.modeling import RewardModel, context_length, load_causal_lm, load_tokenizer
    from gpt2_rlhf.train.sampling import generate
    from gpt2_rlhf.train.ppo import score_dataset_responses

    run = Path(args.run_dir)
    policy_dir = run / "sft" if (run / "sft" / "config.json").is_file() else run / "base"
    if not (policy_dir / "config.json").is_file() or not (run / "reward" / "config.json").is_file():
        print(f"reward_ceiling: {run} needs sft/ (or base/) and reward/: run `rlhf run` first", file=sys.stderr)
        return 2
    recipe = load_recipe(run / "recipe.yaml") if (run / "recipe.yaml").is_file() else load_recipe("tiny")
    ppo = recipe.ppo
    rows, _ = load_preferences(recipe.data, args.split)
    first_row = {}
    for r in rows:
        first_row.setdefault(r["prompt"], r)
    prompts = list(first_row)[: args.n_prompts]
    gold = None
    if recipe.data.dataset == "embedded":
        from gpt2_rlhf.train.synthetic.gold import gold_score as gold

    # 1-2. k samples per prompt, scored
    model, tok = load_causal_lm(policy_dir).eval(), load_tokenizer(policy_dir)
    rm = RewardModel.load(run / "reward")
    ctx = context_length(rm.model)
    settings = ppo.generation
    scores, golds = [], []  # [sample][prompt]
    for k in range(args.samples):
        texts = []
        for i in range(0, len(prompts), 64):
            texts += generate(model, tok, prompts[i:i + 64], settings, seed=args.seed * 1000 + k * 7 + i,
                              max_prompt_tokens=ppo.max_prompt_tokens).texts
        scores.append(rm.score(prompts, texts, normalised=True, max_length=ctx).tolist())
        if gold is not None:
            golds.append([gold(p, r) for p, r in zip(prompts, texts)])

    # 3. within- and between-prompt spread
    n, K = len(prompts), args.samples
    first = scores[0]  # one sample per prompt, as the PPO comparison draws
    sft_mean, sft_std = st.fmean(first), st.pstdev(first)
    per_prompt = [[scores[k][i] for k in range(K)] for i in range(n)]
    prompt_means = [st.fmean(s) for s in per_prompt]
    within = math.sqrt(st.fmean(st.pvariance(s) for s in per_prompt)) if K > 1 else 0.0
    out = {
        "bench": "reward_ceiling", "policy": str(policy_dir), "reward_model": str(run / "reward"),
        "split": args.split, "n_prompts": n, "samples": K, "temperature": ppo.temperature,
        "sft_score_mean": round(sft_mean, 4), "sft_score_std": round(sft_std, 4),
        "within_prompt_std": round(within, 4), "between_prompt_std": round(st.pstdev(prompt_means), 4),
    }
    sizes = [2 ** j for j in range(1, 12) if 2 ** j <= K]

    def gain(values) -> float:  # mean score over the SFT mean, in SFT std units
        return round((st.fmean(values) - sft_mean) / max(sft_std, 1e-8), 4)

    def picked(pick: list[int]) -> dict[str, float]:  # pick[i]: the sample kept for prompt i
        row = {"score_gain_in_sft_std": gain(scores[pick[i]][i] for i in range(n))}
        if golds:
            row["gold"] = round(st.fmean(golds[pick[i]][i] for i in range(n)), 4)
        return row

    # 4. best-of-n
    out["best_of_n"] = {str(m): {**picked([max(range(m), key=lambda k: scores[k][i]) for i in range(n)]),
                                 "kl_bound": round(math.log(m) - (m - 1) / m, 4)} for m in sizes}
    # 5. best-of-n by the gold judge (earliest on ties): what being better earns on the reward model
    if golds:
        out["gold_best_of_n"] = {str(m): picked([max(range(m), key=lambda k: (golds[k][i], -k)) for i in range(n)])
                                 for m in sizes}
    # 6. the dataset's responses, scored as the PPO stage scores them
    for kind in ("chosen", "rejected"):
        res = score_dataset_responses(prompts, [first_row[p][kind] for p in prompts], rm, gold)
        out[f"dataset_{kind}"] = {"score_gain_in_sft_std": gain([res["score_norm"]]),
                                  **({"gold": round(res["gold"], 4)} if gold is not None else {})}
    if golds:
        all_s = [x for s in scores for x in s]
        all_g = [x for g in golds for x in g]
        gold_means = [st.fmean(golds[k][i] for k in range(K)) for i in range(n)]
        out["sft_gold"] = round(st.fmean(all_g), 4)
        out["rm_gold_corr"] = corr(all_s, all_g)
        out["rm_gold_corr_between_prompts"] = corr(prompt_means, gold_means)
        dev_s = [scores[k][i] - prompt_means[i] for i in range(n) for k in range(K)]
        dev_g = [golds[k][i] - gold_means[i] for i in range(n) for k in range(K)]
        out["rm_gold_corr_within_prompts"] = corr(dev_s, dev_g)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
