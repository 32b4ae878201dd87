"""Batched evaluation generation vs one prompt at a time (what the seed scripts do).

    PYTHONPATH=. python benchmarks/bench_generate.py [--run-dir outputs/tiny] [--model sft]

Prints one JSON line. The seed scripts call `model.generate` once per prompt
(`one_at_a_time_s`, with the KV cache, as HF does by default). The evaluation
decodes the prompts in batches with `gpt2_rlhf.evaluation.generate.decode` (left padding, KV
cache, finished rows dropped from the batch; `batched_s`). For context the line
also has `hf_batched_s`: the same batches through `gpt2_rlhf.train.modeling.generate`
(`model.generate`, which keeps finished rows in the batch until the longest ends).

All paths decode the same held-out prompts of the embedded test split greedily,
with the same prompt truncation, so their texts must be identical: `identical`
compares the evaluation's batched texts with the one-at-a-time texts, and
`speedup` = one_at_a_time_s / batched_s (wall clock; target >= 5) and
`speedup_cpu` the same ratio of this process's CPU time, which is what an idle
machine's wall time would be with one thread. Each timing is the best of
`--repeats` after a warm-up. On a shared machine wall times are noisy (the
one-prompt-at-a-time path, overhead-bound, suffers most from contention): the
line records the 1-minute load average; compare runs made at the same time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="outputs/tiny", help="run directory with the embedded models")
    ap.add_argument("--model", default="sft", help="model key in the run dir (falls back to base), or a model dir")
    ap.add_argument("--n-prompts", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--max-prompt-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import GenerationConfig

    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train.data import load_preferences
    from gpt2_rlhf.train.modeling import context_length, load_causal_lm, load_tokenizer, pad_sequences
    from gpt2_rlhf.train.sampling import GenerationSettings, encode_prompts, generate, prompt_budget

    run = Path(args.run_dir)
    path = Path(args.model) if Path(args.model).is_dir() else run / args.model
    if not (path / "config.json").is_file():
        path = run / "base"
    if not (path / "config.json").is_file():
        print(f"bench_generate: no model at {path}: run `rlhf run` (the tiny recipe) first, or pass --model DIR",
              file=sys.stderr)
        return 2
    model, tok = load_causal_lm(path).eval(), load_tokenizer(path)
    rows, _ = load_preferences(load_recipe("tiny").data, "test")
    prompts = [r["prompt"] for r in rows[:args.n_prompts]]
    greedy = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=0.0)
    bs = args.batch_size

    budget = prompt_budget(context_length(model), args.max_prompt_tokens, args.max_new_tokens)

    def hf_generate(chunk):  # transformers' model.generate on the same left-padded prompts
        ids, mask = pad_sequences(encode_prompts(tok, chunk, budget), tok.pad_token_id, "left")
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=GenerationConfig(
            do_sample=False, max_new_tokens=args.max_new_tokens, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id))
        resp = out[:, ids.shape[1]:]
        cut = [(r == tok.eos_token_id).nonzero() for r in resp]
        return tok.batch_decode([r[:int(c[0]) + 1] if len(c) else r for r, c in zip(resp, cut)],
                                skip_special_tokens=True)

    def batched():  # the project's sampler (PPO rollouts, reward statistics, evaluation)
        return [t for i in range(0, len(prompts), bs)
                for t in generate(model, tok, prompts[i:i + bs], greedy, 0, args.max_prompt_tokens).texts]

    def hf_batched():  # model.generate on the same batches
        return [t for i in range(0, len(prompts), bs) for t in hf_generate(prompts[i:i + bs])]

    @torch.no_grad()
    def one_at_a_time():  # the seed scripts: encode one prompt, model.generate, decode
        out = []
        tok.truncation_side = "left"
        for p in prompts:
            ids = tok(p, return_tensors="pt", add_special_tokens=False, truncation=True,
                      max_length=args.max_prompt_tokens)["input_ids"]
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.max_new_tokens,
                                 do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
        return out

    def timed(fn):
        """(best wall seconds, best CPU seconds of this process, output): CPU time is what an idle machine's
        wall time would be for a single thread; on a shared machine wall time also counts waiting."""
        best, best_cpu, out = float("inf"), float("inf"), None
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
        return best, best_cpu, out

    generate(model, tok, prompts[:4], greedy, 0, args.max_prompt_tokens)  # warm-up (allocator, kernels)
    t_single, c_single, out_single = timed(one_at_a_time)
    t_batched, c_batched, out_batched = timed(batched)
    t_hf, c_hf, out_hf = timed(hf_batched)
    mismatches = [i for i, (a, b) in enumerate(zip(out_batched, out_single)) if a != b]
    print(json.dumps({
        "bench": "generate", "model": str(path), "n_prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "batch_size": bs, "threads": args.threads, "decoding": "greedy", "repeats": args.repeats,
        "one_at_a_time_s": round(t_single, 3), "batched_s": round(t_batched, 3), "hf_batched_s": round(t_hf, 3),
        "speedup": round(t_single / t_batched, 2), "hf_batched_speedup": round(t_single / t_hf, 2),
        "one_at_a_time_cpu_s": round(c_single, 3), "batched_cpu_s": round(c_batched, 3),
        "hf_batched_cpu_s": round(c_hf, 3), "speedup_cpu": round(c_single / c_batched, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "identical": not mismatches and len(out_batched) == len(out_single), "mismatched_prompts": mismatches,
        "hf_batched_identical": out_hf == out_single,
        "mean_response_chars": round(sum(map(len, out_batched)) / max(len(out_batched), 1), 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
