"""`rlhf space RUN_DIR [--port N] [--host H] [--votes FILE]`: the Space on a local run directory.

Serves the run's finished models (base/, sft/, ppo/, and dpo/, rloo/ when present),
scored by reward/, exactly as the Hub Space does with model ids; the page shows the
card's headline result and held-out example prompts from eval/ (the same
`space_info` that `rlhf push --space` writes into the Space). Votes go to
RUN_DIR/votes/votes.jsonl unless --votes says otherwise (and to the
RLHF_VOTES_DATASET Hub dataset when that is set). Limits come from the same
variables as on the Hub: RLHF_CONCURRENCY, RLHF_MAX_QUEUE, RLHF_MAX_PROMPT_CHARS,
RLHF_MAX_NEW_TOKENS.

Everything that can be checked in a moment (the run directory, the port, the votes
path) is checked before the models load, so a mistake costs no waiting.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from pathlib import Path

from gpt2_rlhf.model_card.publish import space_info
from gpt2_rlhf.space.inference import Engine, Limits, ModelSources, env_int
from gpt2_rlhf.space.votes import VoteLog, hub_vote_log

logger = logging.getLogger(__name__)


def check_port(host: str, port: int) -> None:
    """OSError naming --port when (host, port) cannot be bound: busy, or not ours to take."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: a closing socket is no clash
        try:
            s.bind((host, port))
        except OSError as e:
            why = "is already in use" if e.errno == errno.EADDRINUSE else f"cannot be used ({e.strerror})"
            raise OSError(f"--port {port}: {host}:{port} {why}; pass a free port with --port") from None


def cli(args) -> int:
    run = Path(args.run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {run} does not exist (make one with `rlhf run --output-dir {run}`)")
    sources = ModelSources.from_run_dir(run)  # the finished stages: base/ppo/reward unless PPO used a reward function
    votes_path = Path(args.votes) if args.votes else run / "votes" / "votes.jsonl"
    if votes_path.is_dir():
        raise ValueError(f"--votes {votes_path}: is a folder; give a .jsonl file")
    check_port(args.host, args.port)
    info = space_info(run)
    from gpt2_rlhf.space.app import CSS, build_demo  # gradio: imported only once the inputs are known to be good

    limits = Limits.from_env()
    engine = Engine.load(sources, limits)
    repo = os.environ.get("RLHF_VOTES_DATASET", "").strip()
    votes = hub_vote_log(repo, votes_path.parent) if repo else VoteLog(votes_path)
    demo = build_demo(engine, votes, info=info, concurrency=env_int(os.environ, "RLHF_CONCURRENCY", 1),
                      max_queue=env_int(os.environ, "RLHF_MAX_QUEUE", 256))
    logger.info("serving on http://%s:%d (Ctrl-C to stop)", args.host, args.port)
    demo.launch(server_name=args.host, server_port=args.port, ssr_mode=False, show_error=False, css=CSS)
    return 0
