"""The Gradio Space: base (or SFT) vs RLHF, side by side, scored by the reward model, with votes.

This file only builds the Blocks; loading and inference live in inference.py (no
gradio), votes in votes.py. Both sides share the prompt and the decoding settings,
and each side samples from its own generator seeded with the same seed, so a
comparison differs only by the model and the same seed gives the same pair.

Runs two ways:

* locally, on a run directory: `rlhf space OUTPUT` (space/cli.py calls `build_demo`);
* on the Hub, as a Space (this folder uploaded alone): `python app.py` builds the
  demo from the Space variables RLHF_BASE_ID, RLHF_SFT_ID (optional),
  RLHF_POLICY_ID, RLHF_REWARD_ID, RLHF_REVISION (optional) and, to push votes to a
  dataset, RLHF_VOTES_DATASET (needs an HF_TOKEN secret with write access). Nothing
  is built at import otherwise.

Safety: prompts and responses are shown in text boxes (rendered as text, never as
HTML), prompt length and max new tokens are capped, the queue is bounded, and
generation runs at most `concurrency` at a time (RLHF_CONCURRENCY, RLHF_MAX_QUEUE).
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any, Sequence

import gradio as gr

if __package__:  # imported as the package module space.app (`rlhf space`, tests)
    from .inference import Decoding, Engine, InputError, Limits, ModelSources, env_int
    from .votes import PendingComparisons, VoteLog, hub_vote_log, make_record
else:  # run as the Space's app.py, next to inference.py and votes.py
    from inference import Decoding, Engine, InputError, Limits, ModelSources, env_int  # type: ignore[no-redef]
    from votes import PendingComparisons, VoteLog, hub_vote_log, make_record  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

ROLE_NAMES = {"base": "Base", "sft": "SFT", "rlhf": "RLHF"}
EXAMPLES = [
    "How do I make a good cup of tea?",
    "What are some ways to stay focused while studying?",
    "My friend is feeling sad. What could I say to cheer them up?",
    "Can you explain what a reward model is in simple words?",
    "What should I pack for a weekend hiking trip?",
]
# A run trained to continue plain text (RLHF_PROMPT_FORMAT=plain): story openings, as in seed 000's example.
PLAIN_EXAMPLES = [
    "Once upon a time, a little fox",
    "Long ago, in a small village by the sea,",
    "One rainy day, a curious girl found",
]
VOTE_TEXT = {"left": "Left is better", "right": "Right is better", "tie": "Tie", "both_bad": "Both are bad"}
# Plain arrows, no emoji: emoji fonts are missing in many browsers (and in Debian's chromium).
VOTE_BUTTONS = (("left", "← Left is better"), ("right", "Right is better →"), ("tie", "Tie"),
                ("both_bad", "Both are bad"))
_shuffle = random.SystemRandom()  # anonymised order must not be guessable from the seed


def _name(role: str, model_id: str, anonymised: bool, letter: str) -> str:
    return f"Model {letter}" if anonymised else f"{ROLE_NAMES.get(role, role)} · {model_id}"


def build_demo(engine: Engine, votes: VoteLog | None, *, examples: Sequence[str] | None = None,
               concurrency: int = 1, max_queue: int = 256, title: str = "GPT-2 RLHF: base vs RLHF",
               pending: PendingComparisons | None = None) -> gr.Blocks:
    """The Blocks of the Space, queued (bounded, `concurrency` generations at a time); call `.launch()` on it.

    API (gradio_client): `/compare(prompt, max_new_tokens, temperature, top_p, seed, opponent, anonymise)`
    returns (left name, left response, left score, right name, right response, right
    score, status, comparison id); `/vote_left|right|tie|both_bad(comparison id)` returns
    (status, left name, right name, left score, right score) and reveals hidden names/scores.
    `pending` holds finished comparisons until they are voted on (one vote each).
    """
    limits = engine.limits
    opponents = engine.opponents
    pending = pending if pending is not None else PendingComparisons()
    reward = engine.reward  # None: the run was trained with a reward function; nothing scores here
    plain = engine.prompt_format == "plain"
    logger.info("Space: models %s, reward %s (%s), prompts %s, %s, generation concurrency %d, max queue %d, "
                "votes -> %s", {r: p.model_id for r, p in engine.policies.items()},
                reward.model_id if reward else "none", ("normalised" if reward.normalised else "raw") if reward else
                "not scored", engine.prompt_format, limits, concurrency, max_queue,
                votes.path if votes is not None else "not stored")
    if reward is None:
        score_label = "Reward (not scored: trained with a reward function, no reward model)"
    else:
        score_label = "Reward (normalised)" if reward.normalised else "Reward (raw: no reward_stats.json)"

    def compare(prompt, max_new_tokens, temperature, top_p, seed, opponent, anonymise):
        """Streams both responses, then both reward scores."""
        try:
            text, decoding = engine.prepare(prompt, Decoding(max_new_tokens, temperature, top_p, seed))
            if opponent not in opponents:
                raise InputError(f"Choose one of {opponents} to compare the RLHF model with.")
        except InputError as e:
            yield "", "", None, "", "", None, str(e), ""
            return
        roles = [opponent, "rlhf"]
        if anonymise:
            _shuffle.shuffle(roles)
        names = [_name(r, engine.policies[r].model_id, anonymise, x) for r, x in zip(roles, "AB")]
        try:
            for upd in engine.compare(text, decoding, roles[0], roles[1]):
                if not upd.done:
                    # No comparison id while streaming: a vote now cannot be counted
                    # for the previous comparison or a half-written one.
                    yield names[0], upd.left.response, None, names[1], upd.right.response, None, "Generating…", ""
                    continue
                cid = pending.add({
                    "prompt": text, "anonymised": bool(anonymise), "reward_model": reward.model_id if reward else None,
                    "decoding": {"max_new_tokens": decoding.max_new_tokens, "temperature": decoding.temperature,
                                 "top_p": decoding.top_p, "seed": decoding.seed},
                    "left": {"role": upd.left.role, "model": upd.left.model_id, "response": upd.left.response,
                             "reward": upd.left.reward, "reward_normalised": upd.left.reward_normalised},
                    "right": {"role": upd.right.role, "model": upd.right.model_id, "response": upd.right.response,
                              "reward": upd.right.reward, "reward_normalised": upd.right.reward_normalised},
                })
                if anonymise:  # scores would give the models away (and anchor the voter)
                    scores, note = (None, None), "Names and scores are hidden until you vote."
                elif reward is None:
                    scores, note = (None, None), "No reward model scores them here."
                else:
                    scores = (_round(upd.left.reward_normalised), _round(upd.right.reward_normalised))
                    note = f"Raw rewards: left {upd.left.reward:+.3f}, right {upd.right.reward:+.3f}."
                yield (names[0], upd.left.response, scores[0], names[1], upd.right.response, scores[1],
                       f"Done. {note} Which response is better?", cid)
        except InputError as e:
            yield names[0], "", None, names[1], "", None, str(e), ""
        except Exception as e:  # a model failure: tell the user, keep the server up, log the traceback
            logger.exception("generation failed")
            raise gr.Error(f"Generation failed ({type(e).__name__}). Please try again.") from e

    def make_vote(choice: str):
        def vote(comparison_id):
            """Records the vote on a finished comparison (once), and reveals names and scores."""
            keep = (gr.update(),) * 4
            comparison, why = pending.take(str(comparison_id or ""), choice)
            if comparison is None:
                msg = {"voted": "You already voted on this pair. Compare again to vote on a new one.",
                       "unknown": "Compare two responses first (and let them finish), then vote."}[why]
                return (msg, *keep)
            if votes is not None:
                votes.append(make_record(choice, comparison))
            left, right = comparison["left"], comparison["right"]
            saved = "recorded" if votes is not None else "noted (this Space does not store votes)"
            reveal = (f" Left was {_name(left['role'], left['model'], False, 'A')}, right was "
                      f"{_name(right['role'], right['model'], False, 'B')}.") if comparison["anonymised"] else ""
            return (f"Thanks! Your vote \"{VOTE_TEXT[choice]}\" was {saved}.{reveal}",
                    _name(left["role"], left["model"], False, "A"), _name(right["role"], right["model"], False, "B"),
                    _round(left["reward_normalised"]), _round(right["reward_normalised"]))
        vote.__name__ = f"vote_{choice}"
        return vote

    with gr.Blocks(title=title) as demo:
        what = ("Type the beginning of a text: the RLHF model and a reference model continue it"
                if plain else "Type a prompt: the RLHF model and a reference model answer it")
        scored = ", then the reward model scores both" if reward is not None else ""
        gr.Markdown(f"# {title}\n"
                    f"{what} with the **same decoding settings and seed**{scored}. Vote for the better response; "
                    "votes become preference data for the next reward model.")
        prompt = gr.Textbox(label="Prompt", placeholder="Once upon a time…" if plain else "Ask the assistant something…",
                            lines=3, max_length=limits.max_prompt_chars, elem_id="prompt")
        gr.Examples(examples=[[e] for e in (examples or (PLAIN_EXAMPLES if plain else EXAMPLES))], inputs=[prompt],
                    label="Example prompts")
        with gr.Accordion("Decoding (shared by both sides)", open=False):
            with gr.Row():
                max_new_tokens = gr.Slider(1, limits.max_new_tokens, value=min(64, limits.max_new_tokens), step=1,
                                           label="Max new tokens")
                temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="Temperature (0 = greedy)")
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p")
            with gr.Row():
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed (same seed, same pair)")
                new_seed = gr.Button("New seed", size="sm")
                opponent = gr.Radio(opponents, value=opponents[0], label="Compare RLHF with",
                                    visible=len(opponents) > 1)
                anonymise = gr.Checkbox(False, label="Anonymise: hide names and scores, random order (arena mode)")
        compare_btn = gr.Button("Compare", variant="primary", elem_id="compare")
        status = gr.Textbox(label="Status", interactive=False, elem_id="status")
        with gr.Row():
            with gr.Column():
                left_name = gr.Textbox(label="Left model", interactive=False, elem_id="left_name")
                left_text = gr.Textbox(label="Left response", lines=8, interactive=False, elem_id="left_response")
                left_score = gr.Number(label=score_label, interactive=False, elem_id="left_score")
            with gr.Column():
                right_name = gr.Textbox(label="Right model", interactive=False, elem_id="right_name")
                right_text = gr.Textbox(label="Right response", lines=8, interactive=False, elem_id="right_response")
                right_score = gr.Number(label=score_label, interactive=False, elem_id="right_score")
        with gr.Row():
            buttons = {c: gr.Button(text, elem_id=f"vote_{c}") for c, text in VOTE_BUTTONS}
        comparison_id = gr.Textbox(visible=False, elem_id="comparison_id")

        inputs = [prompt, max_new_tokens, temperature, top_p, seed, opponent, anonymise]
        outputs = [left_name, left_text, left_score, right_name, right_text, right_score, status, comparison_id]
        compare_btn.click(compare, inputs, outputs, api_name="compare", concurrency_limit=concurrency,
                          concurrency_id="generate")
        prompt.submit(compare, inputs, outputs, api_visibility="private", concurrency_id="generate")
        new_seed.click(lambda: random.randrange(2**31), None, seed, api_visibility="private", queue=False)
        for choice, btn in buttons.items():
            # A vote only appends a line: no concurrency limit; the file lock orders the writes.
            btn.click(make_vote(choice), [comparison_id], [status, left_name, right_name, left_score, right_score],
                      api_name=f"vote_{choice}", concurrency_limit=None)
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    return demo


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def demo_from_env(environ: dict[str, str] | None = None) -> gr.Blocks:
    """The Space on the Hub: models from the Space variables, votes to RLHF_VOTES_DATASET when set."""
    env = dict(os.environ if environ is None else environ)
    engine = Engine.load(ModelSources.from_env(env), Limits.from_env(env))
    repo = (env.get("RLHF_VOTES_DATASET") or "").strip()
    if repo:
        votes = hub_vote_log(repo, Path("votes"), token=env.get("HF_TOKEN") or None)
    else:
        logger.warning("RLHF_VOTES_DATASET is not set: votes go to votes/votes.jsonl, lost when the Space restarts")
        votes = VoteLog(Path("votes") / "votes.jsonl")
    return build_demo(engine, votes, concurrency=env_int(env, "RLHF_CONCURRENCY", 1),
                      max_queue=env_int(env, "RLHF_MAX_QUEUE", 256))


if __name__ == "__main__" or os.environ.get("SYSTEM") == "spaces":  # the Hub sets SYSTEM=spaces
    logging.basicConfig(level=logging.INFO)
    demo = demo_from_env()
    if __name__ == "__main__":
        demo.launch()
