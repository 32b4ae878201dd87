"""Space latency on a run directory: what one comparison costs, and what the streaming loop costs.

    PYTHONPATH=. python benchmarks/bench_space.py RUN_DIR [--max-new-tokens 48] [--repeats 5] [--threads 1]

Uses the Space's own engine (space/inference.py) on RUN_DIR's base/ppo/reward, on
up to five held-out prompts of the run's evaluation (the page's examples; the app's
fallback examples without one), sampled (temperature 0.7, seeds 0..). Reports, as
medians over prompts x repeats after one warm-up comparison: per side, the time to
the first streamed text and (RLHF side) the response tokens per second after the
first; the reward scoring of a pair; `both_first_text_s`, until both panes show text;
`both_responses_s`, until both responses are finished (the two sides stream at the
same time, each in its own thread: `Engine.compare` without the reward model);
`one_after_other_s`, the same two streams run one after the other (what the Space did
before); `compare_s`, the whole comparison the page waits for (both streamed, then
scored); and `bare_tokens_per_s`, the RLHF model's plain KV-cached forward with no
sampling, decoding or streaming. `--threads` is torch's intra-op threads per stream.
Prints one JSON object.

Target (GPT-2 124M shape): `loop_efficiency` (tokens_per_s / bare_tokens_per_s) >= 0.9: sampling,
incremental decoding and streaming add under 10% to the model's own cost. The
absolute numbers are the hardware's. Measured on the shared 2-core development
machine (1 thread, busy): a random GPT-2 124M-shaped run (12 x 768, vocab 50257;
16 new tokens) 0.954, 11.7 tokens/s, a whole comparison 3.4 s; a tiny pipeline run
(4 x 128) 0.815: there the fixed cost per token (softmax and sampling over the
vocabulary, re-decoding the text) is a larger share of a ~7 ms forward.

Time to both responses, the tiny pipeline run (4 x 128, 48 new tokens, 14.6 response
tokens on average, 10 comparisons, 1 thread per stream) on the same machine under a
load average of 8.9 on its 2 cores: both panes show text after 0.063 s, both
responses are done after 0.49 s (one after the other: 0.48 s), the page's whole
comparison with scores 0.54 s. With no free core the two streams share one, so
running them together costs nothing but gains nothing either; with a free core
each (a quiet 2-core machine, or a GPU) the pair takes about one side's time, as
tests/test_space_inference.py shows with two sleep-bound scripted models (< 1.5x one
side). Not yet measured on a quiet machine or on ZeroGPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@torch.no_grad()
def bare_rate(policy, prompt: str, n: int) -> float:
    """Tokens per second of the model's plain KV-cached forward, one token at a time, nothing else."""
    ids = torch.tensor([policy.encode(prompt)])
    past, tok = policy.model(input_ids=ids, use_cache=True).past_key_values, ids[:, -1:]
    s = time.perf_counter()
    for _ in range(n):
        past = policy.model(input_ids=tok, past_key_values=past, use_cache=True).past_key_values
    return n / (time.perf_counter() - s)


def both_sides(engine, prompt: str, decoding) -> tuple[float, float]:
    """(seconds until both panes show text, seconds until both responses are done), no scoring."""
    from gpt2_rlhf.space.inference import Engine

    unscored = Engine(engine.policies, None, engine.limits, engine.prompt_format)
    s = time.perf_counter()
    first = None
    for upd in unscored.compare(prompt, decoding, "base", "rlhf"):
        if first is None and upd.left.response and upd.right.response:
            first = time.perf_counter() - s
    done = time.perf_counter() - s
    return (first if first is not None else done), done


def main() -> None:
    from gpt2_rlhf.model_card.publish import space_info
    from gpt2_rlhf.space.app import EXAMPLES
    from gpt2_rlhf.space.inference import Decoding, Engine, ModelSources

    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    engine = Engine.load(ModelSources.from_run_dir(args.run_dir), device="cpu")
    prompts = space_info(Path(args.run_dir))["examples"] or EXAMPLES
    first, rate, score, whole, tokens, bare = [], [], [], [], [], []
    both_first, both_done, sequential = [], [], []
    warm = engine.prepare(prompts[0], Decoding(args.max_new_tokens, 0.7, 1.0, 0))
    list(engine.compare(*warm, "base", "rlhf"))
    for rep in range(args.repeats):
        for i, text in enumerate(prompts):
            prompt, decoding = engine.prepare(text, Decoding(args.max_new_tokens, 0.7, 1.0, rep * 100 + i))
            pair_start = time.perf_counter()
            for role in ("base", "rlhf"):
                policy = engine.policies[role]
                s = time.perf_counter()
                stream = policy.stream(prompt, decoding, engine.stop)
                next(stream)
                t_first = time.perf_counter()
                first.append(t_first - s)
                # after the first: one yield per further token, then the full text once more,
                # so the count of the rest is also the number of response tokens (EOS excluded)
                n = sum(1 for _ in stream)
                if n > 1 and role == "rlhf":  # steady state; the prompt's forward is in first_text_s
                    rate.append((n - 1) / (time.perf_counter() - t_first))
                tokens.append(n)
            sequential.append(time.perf_counter() - pair_start)
            f, d = both_sides(engine, prompt, decoding)
            both_first.append(f)
            both_done.append(d)
            bare.append(bare_rate(engine.policies["rlhf"], prompt, args.max_new_tokens))  # interleaved: same load
            s = time.perf_counter()
            engine.reward.score(prompt, [" a response", " another response"])
            score.append(time.perf_counter() - s)
            s = time.perf_counter()
            list(engine.compare(prompt, decoding, "base", "rlhf"))
            whole.append(time.perf_counter() - s)
    med = lambda xs: round(statistics.median(xs), 4)  # noqa: E731
    cfg = engine.policies["rlhf"].model.config
    print(json.dumps({
        "run_dir": str(args.run_dir), "model": f"{cfg.n_layer} layers x {cfg.n_embd}", "threads": args.threads,
        "max_new_tokens": args.max_new_tokens, "samples": len(whole),
        "first_text_s": med(first), "tokens_per_s": med(rate), "mean_response_tokens": round(statistics.mean(tokens), 1),
        "score_pair_s": med(score), "both_first_text_s": med(both_first), "both_responses_s": med(both_done),
        "one_after_other_s": med(sequential), "compare_s": med(whole), "bare_tokens_per_s": med(bare),
        "loop_efficiency": round(statistics.median(rate) / statistics.median(bare), 3),
    }))


if __name__ == "__main__":
    main()
