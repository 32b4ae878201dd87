"""Benchmark: our PPO (train/ppo) on the shared tiny PPO task, side by side with TRL 1.12's PPOTrainer.

The task and the peer are described in ../shared/bench/README.md: `make_tiny.py` writes
ART/{tokenizer,policy,rm,data}; the peer is `trl_ppo_baseline.py`; both trained
policies are scored by the neutral `score_policy.py` (200 held-out prompts).

Comparison settings (the peer's): 512 episodes, batch 16 (one minibatch), response 32
tokens, 4 PPO epochs, KL coefficient 0.1 (k1), clip 0.2, temperature 0.7, seed 0,
policy and reference from ART/policy, reward model ART/rm (raw scores: the artifacts
have no reward_stats.json), critic initialised from ART/rm, no missing-EOS penalty
(the peer has none). The learning rates are ours to choose: --lr for the policy
(the peer's 3e-5) and --value_lr for the critic (3e-4 by default; the peer uses
one rate for both: pass --value_lr 3e-5 to match it).

    python benchmarks/bench_ppo.py --art /tmp/tiny --out /tmp/ppo-ours
    python ../shared/bench/score_policy.py --art /tmp/tiny --policy /tmp/ppo-ours

The last stdout line is one JSON object: episodes_per_s, train_s and the time split
(gen_s: sampling; score_s: reference, reward, old-log-prob and value passes + GAE;
optimise_s: the PPO epochs).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

T_START = time.time()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

import torch  # noqa: E402


def prompts_of(path: Path) -> list[str]:
    """HH rows -> the prompt: the text up to and including the last '\\n\\nAssistant:'."""
    out = []
    with open(path) as f:
        for line in f:
            chosen = json.loads(line)["chosen"]
            out.append(chosen[: chosen.rfind("\n\nAssistant:") + len("\n\nAssistant:")])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--art", required=True, help="make_tiny.py output dir")
    p.add_argument("--out", required=True, help="where the trained policy is saved (save_pretrained)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--total_episodes", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--num_mini_batches", type=int, default=1)
    p.add_argument("--response_length", type=int, default=32)
    p.add_argument("--ppo_epochs", type=int, default=4)
    p.add_argument("--kl_coef", type=float, default=0.1)
    p.add_argument("--cliprange", type=float, default=0.2)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--lr", type=float, default=3e-5, help="policy learning rate")
    p.add_argument("--value_lr", type=float, default=3e-4,
                   help="critic learning rate: 10x the policy's (OpenRLHF's PPO examples use 18x, 5e-7 / 9e-6); "
                        "pass the --lr value for the peer's single learning rate")
    p.add_argument("--max_prompt_tokens", type=int, default=256,
                   help="prompts are cut from the left to this many tokens (the peers feed whole prompts: set it "
                        "to at least the longest prompt of ART, e.g. make_scale_art.py's --max-prompt-tokens)")
    p.add_argument("--missing_eos_penalty", type=float, default=None)
    p.add_argument("--adam_eps", type=float, default=1e-5)
    p.add_argument("--max_grad_norm", type=float, default=1.0, help="0 = no clipping (the peer clips nothing)")
    p.add_argument("--shared_value_head", action="store_true", help="critic = scalar head on the policy (not the peer's setting)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("-v", "--verbose", action="store_true", help="progress bar and logs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    for name in ("transformers", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers
    from accelerate import Accelerator

    from gpt2_rlhf.train.modeling import (RewardModel, disable_dropout, ensure_pad_embedding, load_causal_lm,
                                load_sequence_classifier, load_tokenizer)
    from gpt2_rlhf.train.ppo.config import PPOConfig
    from gpt2_rlhf.train.ppo.trainer import PPOTrainer, RewardModelScorer

    art = Path(args.art)
    for sub in ("tokenizer", "policy", "rm", "data/train.jsonl"):
        if not (art / sub).exists():
            print(f"bench_ppo: error: {art / sub} is missing (run make_tiny.py --out {art})", file=sys.stderr)
            return 2
    cfg = PPOConfig(
        total_episodes=args.total_episodes, batch_size=args.batch_size, num_mini_batches=args.num_mini_batches,
        ppo_epochs=args.ppo_epochs, max_new_tokens=args.response_length, temperature=args.temperature, top_k=0,
        top_p=1.0, kl_coef=args.kl_coef, kl_estimator="k1", cliprange=args.cliprange, cliprange_value=0.2,
        vf_coef=0.1, gamma=1.0, lam=0.95, learning_rate=args.lr, value_learning_rate=args.value_lr, lr_schedule="linear",
        missing_eos_penalty=args.missing_eos_penalty, normalise_reward=False, max_prompt_tokens=args.max_prompt_tokens,
        adam_eps=args.adam_eps, max_grad_norm=args.max_grad_norm, shared_value_head=args.shared_value_head,
        save_every=0, eval_prompts=0, policy_path=str(art / "policy"), reward_model_path=str(art / "rm"),
        value_model_path=str(art / "rm"),
    )
    tokenizer = load_tokenizer(art / "tokenizer")
    policy, ref = load_causal_lm(art / "policy"), load_causal_lm(art / "policy")
    critic = None if args.shared_value_head else load_sequence_classifier(art / "rm")
    for m in (policy, ref, critic):
        if m is not None:
            ensure_pad_embedding(m, tokenizer)
            disable_dropout(m)
    rm = RewardModel.load(art / "rm")
    prompts = prompts_of(art / "data" / "train.jsonl")
    trainer = PPOTrainer(cfg, policy, ref, tokenizer, RewardModelScorer(rm, tokenizer, normalise=False), prompts,
                         critic=critic, seed=args.seed, accelerator=Accelerator(cpu=not torch.cuda.is_available()),
                         progress=args.verbose)
    t0, c0 = time.time(), time.process_time()
    rows = trainer.train()
    train_s, cpu_s = time.time() - t0, time.process_time() - c0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trainer.policy.save_pretrained(out)
    tokenizer.save_pretrained(out)

    k = min(4, len(rows))
    mean = lambda key, rs: round(sum(r[key] for r in rs) / len(rs), 4)  # noqa: E731
    result = {
        "impl": "gpt2-rlhf train.ppo.PPOTrainer",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        "threads": torch.get_num_threads(),
        "device": str(trainer.device),
        "config": {k_: v for k_, v in vars(args).items() if k_ not in ("art", "out", "verbose")},
        "num_updates": len(rows),
        "wall_s_total": round(time.time() - T_START, 2),
        "train_s": round(train_s, 2),
        "episodes_per_s": round(len(rows) * cfg.batch_size / train_s, 2),
        "s_per_update": round(train_s / len(rows), 3),
        "cpu_s": round(cpu_s, 2),
        "gen_s": round(sum(r["gen_s"] for r in rows), 2),
        "score_s": round(sum(r["score_s"] for r in rows), 2),
        "optimise_s": round(sum(r["train_s"] for r in rows), 2),
        "log_score_first4_mean": mean("score", rows[:k]),
        "log_score_last4_mean": mean("score", rows[-k:]),
        "log_kl_last4_mean": mean("kl", rows[-k:]),
        "log_eos_rate_last4_mean": mean("eos_rate", rows[-k:]),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
