"""`rlhf space RUN_DIR [--port N] [--host H] [--votes FILE]`: the Space on a local run directory.

Serves base/ (and sft/ when finished) against ppo/, scored by reward/, exactly as
the Hub Space does with model ids. Votes go to RUN_DIR/votes/votes.jsonl unless
--votes says otherwise (and to the RLHF_VOTES_DATASET Hub dataset when that is
set). Limits come from the same variables as on the Hub: RLHF_CONCURRENCY,
RLHF_MAX_QUEUE, RLHF_MAX_PROMPT_CHARS, RLHF_MAX_NEW_TOKENS.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from gpt2_rlhf.space.inference import HH_ASSISTANT, HH_HUMAN, Engine, Limits, ModelSources, env_int
from gpt2_rlhf.space.votes import VoteLog, hub_vote_log

logger = logging.getLogger(__name__)


def example_prompts(run_dir: Path, n: int = 5, max_chars: int = 300, plain: bool = False) -> list[str] | None:
    """Up to n single-turn prompts from RUN_DIR/eval/samples.jsonl (the evaluation's held-out prompts), if any;
    `plain`: the prompts as they are (a run trained to continue plain text)."""
    path = run_dir / "eval" / "samples.jsonl"
    if not path.is_file():
        return None
    found: list[str] = []
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                prompt = json.loads(line).get("prompt") if line.strip() else None
                if not isinstance(prompt, str) or (not plain and prompt.count(HH_HUMAN) != 1):
                    continue
                text = prompt.strip() if plain else prompt.replace(HH_HUMAN, "").replace(HH_ASSISTANT, "").strip()
                if text and len(text) <= max_chars and text not in found:
                    found.append(text)
                if len(found) >= n:
                    break
    except (OSError, ValueError, AttributeError) as e:  # examples are a nicety: never fail the launch for them
        logger.warning("could not read example prompts from %s: %s", path, e)
    return found or None


def cli(args) -> int:
    from gpt2_rlhf.train.rundir import require_stage

    run = Path(args.run_dir)
    for stage in ("base", "ppo"):  # reward/ too, unless PPO was trained with a reward function (ModelSources)
        require_stage(run / stage, f"the {stage} stage")
    sources = ModelSources.from_run_dir(run)
    votes_path = Path(args.votes) if args.votes else run / "votes" / "votes.jsonl"
    if votes_path.is_dir():
        raise ValueError(f"--votes {votes_path}: is a folder; give a .jsonl file")
    from gpt2_rlhf.space.app import build_demo  # gradio: imported only once the inputs are known to be good

    limits = Limits.from_env()
    engine = Engine.load(sources, limits)
    repo = os.environ.get("RLHF_VOTES_DATASET", "").strip()
    votes = hub_vote_log(repo, votes_path.parent) if repo else VoteLog(votes_path)
    demo = build_demo(engine, votes, examples=example_prompts(run, plain=sources.prompt_format == "plain"),
                      concurrency=env_int(os.environ, "RLHF_CONCURRENCY", 1),
                      max_queue=env_int(os.environ, "RLHF_MAX_QUEUE", 256))
    logger.info("serving on http://%s:%d (Ctrl-C to stop)", args.host, args.port)
    demo.launch(server_name=args.host, server_port=args.port, ssr_mode=False, show_error=False)
    return 0
