"""The Gradio Space: a blind arena of the run's models, scored by the reward model, with votes.

This file only builds the Blocks; loading and inference live in inference.py (no
gradio), votes in votes.py. Both sides share the prompt and the decoding settings,
and each side samples from its own generator seeded with the same seed, so a
comparison differs only by the model and the same seed gives the same pair.

Blind by default, as lmarena/FastChat battles are: the two models are shown as
"Model A" and "Model B" in random order, their names and scores revealed only after
the vote (a voter who sees "PPO" or a score may vote for it; `rlhf votes` keeps only
blind votes). Anchored mode shows names and scores while voting. A follow-up prompt
before the vote continues both dialogues (each side answers its own), and the vote
covers the last turn; a vote ends the round. Each Compare draws a fresh seed unless
one is fixed.

Runs two ways:

* locally, on a run directory: `rlhf space OUTPUT` (rlhf/serve.py calls `build_demo`);
* on the Hub, as a Space (this folder uploaded alone): `python app.py` builds the
  demo from the Space variables RLHF_POLICY_ID, RLHF_BASE_ID, RLHF_SFT_ID,
  RLHF_DPO_ID, RLHF_RLOO_ID (any two), RLHF_REWARD_ID, RLHF_REVISION (optional) and,
  to push votes to a dataset, RLHF_VOTES_DATASET (needs an HF_TOKEN secret with
  write access); `run_info.json` beside it (written by `rlhf push --space`) holds the
  card's headline result and held-out example prompts. On ZeroGPU hardware the
  generation runs under `spaces.GPU`; elsewhere that decorator is left out. Nothing
  is built at import otherwise.

Safety: prompts and responses are shown as text (escaped: never HTML or Markdown), prompt
length and max new tokens are capped, the queue is bounded, and generation runs at
most `concurrency` at a time (RLHF_CONCURRENCY, RLHF_MAX_QUEUE).
"""

from __future__ import annotations

import html
import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

try:  # the Hub's ZeroGPU helper: imported before torch touches CUDA, as its docs ask; absent elsewhere
    import spaces  # type: ignore[import-not-found]
except ImportError:
    spaces = None

import gradio as gr

if __package__:  # imported as the package module space.app (`rlhf space`, tests)
    from .inference import (Decoding, Engine, InputError, Limits, ModelSources, clean_prompt, continue_dialogue,
                            env_int, format_prompt)
    from .votes import PendingComparisons, VoteLog, hub_vote_log, make_record
else:  # run as the Space's app.py, next to inference.py and votes.py
    from inference import (Decoding, Engine, InputError, Limits, ModelSources, clean_prompt,  # type: ignore[no-redef]
                           continue_dialogue, env_int, format_prompt)
    from votes import PendingComparisons, VoteLog, hub_vote_log, make_record  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

ROLE_NAMES = {"base": "Base", "sft": "SFT", "rlhf": "PPO", "dpo": "DPO", "rloo": "RLOO"}
MODES = ("Blind", "Anchored")
EXAMPLES = [  # only when the run has no evaluation samples to draw held-out prompts from
    "How do I make a good cup of tea?",
    "What are some ways to stay focused while studying?",
    "My friend is feeling sad. What could I say to cheer them up?",
]
# A run trained to continue plain text (RLHF_PROMPT_FORMAT=plain): story openings, as in seed 000's example.
PLAIN_EXAMPLES = [
    "Once upon a time, a little fox",
    "Long ago, in a small village by the sea,",
    "One rainy day, a curious girl found",
]
VOTE_TEXT = {"left": "A is better", "right": "B is better", "tie": "Tie", "both_bad": "Both are bad"}
# Plain arrows, no emoji: emoji fonts are missing in many browsers (and in Debian's chromium).
VOTE_BUTTONS = (("left", "← A is better"), ("right", "B is better →"), ("tie", "Tie"), ("both_bad", "Both are bad"))
RUN_INFO = "run_info.json"  # beside app.py on the Hub: written by `rlhf push --space`
HUB = "https://huggingface.co"
ZERO_GPU_SECONDS = 60  # what one comparison may hold a ZeroGPU device for (two sides of <= 256 tokens)
# Compact enough that the responses, their scores and the vote buttons fit a 1366x768 laptop screen.
CSS = """
.gradio-container {padding-top: 4px !important;}
#header p {margin: 0 0 2px 0; font-size: 0.9em;}
#header h2 {margin: 0 0 2px 0;}
.side-name p, .side-score p {margin: 0; font-size: 0.85em;}
@media (max-width: 640px) { #chat_a, #chat_b {height: 230px !important; max-height: 230px !important;} }
#status p {margin: 0;}
"""
_rng = random.SystemRandom()  # blind order and fresh seeds must not be guessable from anything the page shows


def zero_gpu(fn: Callable) -> Callable:
    """`spaces.GPU(fn)` on a ZeroGPU Space (the device is lent for each call), `fn` itself everywhere else."""
    if spaces is None:
        return fn
    return spaces.GPU(duration=ZERO_GPU_SECONDS)(fn)


def is_local(model_id: str) -> bool:
    return Path(model_id).exists()


def display_id(model_id: str) -> str:
    """A model's id for the page: a Hub repo id as it is, a local folder as `<run>/<stage>` (never a full path)."""
    if not is_local(model_id):
        return model_id
    p = Path(model_id).resolve()
    return f"{p.parent.name}/{p.name}"


def _md_id(model_id: str) -> str:
    shown = display_id(model_id)
    return shown if is_local(model_id) else f"[{shown}]({HUB}/{shown})"


def side_name(role: str, model_id: str, letter: str, revealed: bool) -> str:
    return f"**Model {letter}: {ROLE_NAMES.get(role, role)}** · {_md_id(model_id)}" if revealed else f"**Model {letter}**"


def header_markdown(title: str, engine: Engine, info: Mapping[str, Any]) -> str:
    """Title, the models (repo ids, linked), the model card and its headline result, all from the run."""
    models = " · ".join(f"{ROLE_NAMES.get(r, r)} {_md_id(engine.policies[r].model_id)}" for r in engine.roles)
    lines = [f"## {title}", f"Models: {models}" + (f" · reward model {_md_id(engine.reward.model_id)}"
                                                  if engine.reward is not None else "")]
    card = info.get("card_url")
    headline = [str(h) for h in info.get("headline") or []]
    if card or headline:
        if card and str(card).startswith("http"):
            link = f"[Model card]({card})"
        elif card:  # a local run's rendered card: shown as <run>/card/README.md, not its full path
            link = f"Model card: `{display_id(str(Path(card).parent))}/{Path(card).name}`"
        else:
            link = "Model card"
        lines.append(f"{link}: {' '.join(headline)}" if headline else link)
    return "\n\n".join(lines)


def score_explanation(engine: Engine) -> str:
    reward = engine.reward
    if reward is None:
        return "not scored: this run was trained with a reward function, not a reward model"
    if reward.normalised:
        return "reward model, in std devs from its mean; higher = preferred"
    return "reward model's raw score: only the difference between the sides means anything"


def side_score(side: Mapping[str, Any] | None, engine: Engine, revealed: bool) -> str:
    """The line under a response: its score with what the scale means (once revealed), and its length."""
    if not side:
        return ""
    n_words = len(str(side.get("response", "")).split())
    length = f"{n_words} word{'s' * (n_words != 1)}"
    if side.get("tokens") is not None:
        length += f", {side['tokens']} token{'s' * (side['tokens'] != 1)}"
    if engine.reward is None or not revealed:
        what = "Score hidden until you vote" if engine.reward is not None else f"Reward: {score_explanation(engine)}"
        return f"{what} · {length}"
    value = side.get("reward_normalised") if engine.reward.normalised else side.get("reward")
    shown = f"{value:+.3f}" if isinstance(value, (int, float)) else "n/a"
    return f"Reward **{shown}** ({score_explanation(engine)}) · {length}"


def _chat(turns: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """Chat pane messages. Escaped: gradio's Chatbot inserts message text as HTML even with Markdown off (an
    `<img>` in a response became an image element in Debian's chromium), and escaped text shows as written."""
    out = []
    for user, response in turns:
        out += [{"role": "user", "content": html.escape(user)}, {"role": "assistant", "content": html.escape(response)}]
    return out


def writing(response: str) -> str:
    """The line under a response while it streams (so the page does not jump when the score arrives)."""
    n = len(response.split())
    return f"Writing… · {n} word{'s' * (n != 1)}"


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def build_demo(engine: Engine, votes: VoteLog | None, *, examples: Sequence[str] | None = None,
               concurrency: int = 1, max_queue: int = 256, title: str = "GPT-2 RLHF arena",
               pending: PendingComparisons | None = None, info: Mapping[str, Any] | None = None) -> gr.Blocks:
    """The Blocks of the Space, queued (bounded, `concurrency` generations at a time); call `.launch(css=CSS)` on it.

    `info`: what the page says about the run: `card_url` (or a local card path), `headline` (sentences of the
    card's result, as the evaluation wrote them), `examples` (held-out prompts; `examples` overrides them).

    API (gradio_client; the dialogue lives in the session's state): `/compare(prompt, max_new_tokens,
    temperature, top_p, seed, model_1, model_2, mode)` streams (name A, chat A, score A, name B, chat B,
    score B, status, comparison id, seed used); seed None draws a fresh one; mode "Blind" (default) or
    "Anchored". `/vote_left|right|tie|both_bad(comparison id)` returns (status, name A, score A, name B,
    score B) and reveals the names and scores. `/new_round()` forgets the dialogue. `pending` holds
    finished comparisons until they are voted on (one vote each).
    """
    info = dict(info or {})
    limits = engine.limits
    pending = pending if pending is not None else PendingComparisons()
    reward = engine.reward  # None: the run was trained with a reward function; nothing scores here
    plain = engine.prompt_format == "plain"
    roles = engine.roles
    first, second = engine.default_pair
    choices = [(f"{ROLE_NAMES.get(r, r)} · {display_id(engine.policies[r].model_id)}", r) for r in roles]
    logger.info("Space: models %s, reward %s (%s), prompts %s, %s, generation concurrency %d, max queue %d, "
                "votes -> %s", {r: p.model_id for r, p in engine.policies.items()},
                reward.model_id if reward else "none", ("normalised" if reward.normalised else "raw") if reward else
                "not scored", engine.prompt_format, limits, concurrency, max_queue,
                votes.path if votes is not None else "not stored")

    @zero_gpu
    def generate(prompts, decoding, left, right):
        """Both sides, streamed together (ZeroGPU lends the device for the whole pair)."""
        yield from engine.compare(prompts, decoding, left, right)

    def buttons(on: bool) -> tuple:
        return tuple(gr.update(interactive=on) for _ in VOTE_BUTTONS)

    def compare(prompt, max_new_tokens, temperature, top_p, seed, model_1, model_2, mode, state):
        """Streams both responses at once, then (anchored) both reward scores."""
        state = dict(state or {})
        blind = mode != "Anchored"
        keep = (gr.update(),) * 6

        def fail(msg):
            return (*keep, msg, "", gr.update(), state, *buttons(False))  # the panes keep what they showed

        try:
            fresh = seed is None or (isinstance(seed, str) and not seed.strip())
            seed_used = _rng.randrange(2**31) if fresh else seed
            text = clean_prompt(prompt, limits)
            decoding = Decoding(max_new_tokens, temperature, top_p, seed_used).checked(limits)
            if model_1 not in engine.policies or model_2 not in engine.policies:
                raise InputError(f"Choose two of {', '.join(roles)} to compare.")
            if model_1 == model_2:
                raise InputError("Pick two different models to compare.")
        except InputError as e:
            yield fail(str(e))
            return
        pair = sorted([model_1, model_2])
        follow_up = (not plain and state.get("open") and state.get("pair") == pair and state.get("blind") == blind)
        if follow_up:
            sides = list(state["roles"])
            contexts = [continue_dialogue(c, t[-1][1], text) for c, t in zip(state["contexts"], state["turns"])]
            turns = [list(t) for t in state["turns"]]
        else:
            sides = [model_1, model_2]
            if blind:
                _rng.shuffle(sides)
            contexts = [format_prompt(text, engine.prompt_format)] * 2
            turns = [[], []]
        names = [side_name(r, engine.policies[r].model_id, x, not blind) for r, x in zip(sides, "AB")]
        state = {"open": False, "pair": pair, "blind": blind, "roles": sides, "contexts": contexts,
                 "turns": turns, "cid": ""}
        try:
            for upd in generate(contexts, decoding, sides[0], sides[1]):
                shown = [_chat(t + [(text, s.response)]) for t, s in zip(turns, (upd.left, upd.right))]
                if not upd.done:
                    # No comparison id while streaming: a vote now cannot be counted
                    # for the previous comparison or a half-written one.
                    yield (names[0], shown[0], writing(upd.left.response), names[1], shown[1],
                           writing(upd.right.response), "Generating both responses…", "", seed_used, state,
                           *buttons(False))
                    continue
                comparison = {
                    "prompt": contexts[0], "anonymised": blind, "reward_model": reward.model_id if reward else None,
                    "turn": len(turns[0]) + 1,
                    "decoding": {"max_new_tokens": decoding.max_new_tokens, "temperature": decoding.temperature,
                                 "top_p": decoding.top_p, "seed": decoding.seed},
                }
                for key, s in (("left", upd.left), ("right", upd.right)):
                    comparison[key] = {"role": s.role, "model": s.model_id, "response": s.response,
                                       "reward": s.reward, "reward_normalised": s.reward_normalised,
                                       "prompt": s.prompt, "tokens": s.tokens}
                cid = pending.add(comparison)
                state = {**state, "open": True, "cid": cid,
                         "turns": [t + [(text, s.response)] for t, s in zip(turns, (upd.left, upd.right))],
                         "sides": [comparison["left"], comparison["right"]]}
                note = ("Names and scores are hidden until you vote." if blind else "")
                more = " Or type a follow-up: both models continue their dialogue." if not plain else ""
                yield (names[0], shown[0], side_score(comparison["left"], engine, not blind),
                       names[1], shown[1], side_score(comparison["right"], engine, not blind),
                       f"Done. Which response is better? {note}{more}".strip(), cid, seed_used, state,
                       *buttons(True))
        except InputError as e:
            yield fail(str(e))
        except Exception as e:  # a model failure: tell the user, keep the server up, log the traceback
            logger.exception("generation failed")
            raise gr.Error(f"Generation failed ({type(e).__name__}). Please try again.") from e

    def make_vote(choice: str):
        def vote(comparison_id, state):
            """Records the vote on a finished comparison (once), reveals names and scores, ends the round."""
            keep = (gr.update(),) * 4
            state = dict(state or {})
            comparison, why = pending.take(str(comparison_id or ""), choice)
            if comparison is None:
                msg = {"voted": "You already voted on this pair. Type a new prompt for a new round.",
                       "unknown": "Compare two responses first (and let them finish), then vote."}[why]
                return (msg, *keep, state, *buttons(False))
            if votes is not None:
                votes.append(make_record(choice, comparison))
            left, right = comparison["left"], comparison["right"]
            saved = "recorded" if votes is not None else "noted (this Space does not store votes)"
            names = [side_name(s["role"], s["model"], x, True) for s, x in ((left, "A"), (right, "B"))]
            reveal = (f" Model A was {ROLE_NAMES.get(left['role'], left['role'])}, Model B was "
                      f"{ROLE_NAMES.get(right['role'], right['role'])}.") if comparison["anonymised"] else ""
            state["open"] = False  # the next prompt starts a new round
            return (f"Thanks! Your vote \"{VOTE_TEXT[choice]}\" was {saved}.{reveal} "
                    "Type a new prompt for a new round.", names[0], side_score(left, engine, True), names[1],
                    side_score(right, engine, True), state, *buttons(False))
        vote.__name__ = f"vote_{choice}"
        return vote

    def new_round(state):
        return "**Model A**", [], "", "**Model B**", [], "", blind_note, "", {}, *buttons(False)

    what = ("Type the beginning of a text: two of the run's models continue it" if plain
            else "Ask something: two of the run's models answer")
    blind_note = "Blind by default: the models are Model A and Model B, in random order, named after your vote."
    with gr.Blocks(title=title) as demo:
        gr.Markdown(header_markdown(title, engine, info), elem_id="header")
        with gr.Row(equal_height=True):
            chats, name_md, score_md = [], [], []
            for letter in "AB":
                with gr.Column(min_width=300):
                    name_md.append(gr.Markdown(f"**Model {letter}**", elem_id=f"name_{letter.lower()}",
                                               elem_classes="side-name"))
                    # Text, never HTML or Markdown: a response (or a prompt) with markup is shown as written.
                    chats.append(gr.Chatbot(show_label=False, height=300, render_markdown=False, sanitize_html=True,
                                            allow_tags=False, elem_id=f"chat_{letter.lower()}", buttons=["copy"],
                                            feedback_options=None, placeholder=f"Model {letter}'s answer appears here"))
                    score_md.append(gr.Markdown("", elem_id=f"score_{letter.lower()}", elem_classes="side-score"))
        with gr.Row(equal_height=True):
            vote_btns = {c: gr.Button(text, elem_id=f"vote_{c}", interactive=False, size="md", min_width=110)
                         for c, text in VOTE_BUTTONS}
        status = gr.Markdown(blind_note, elem_id="status")
        with gr.Row(equal_height=True):
            prompt = gr.Textbox(show_label=False, lines=2, max_lines=6, scale=5, elem_id="prompt",
                                placeholder=(f"{what} (up to {limits.max_prompt_chars:,} characters; "
                                             "Shift+Enter for a new line)"))
            with gr.Column(scale=1, min_width=120):
                compare_btn = gr.Button("Compare", variant="primary", elem_id="compare", size="md")
                new_btn = gr.Button("New round", elem_id="new_round", size="sm")
        example_list = list(examples or info.get("examples") or (PLAIN_EXAMPLES if plain else EXAMPLES))
        gr.Examples(examples=[[e] for e in example_list], inputs=[prompt],
                    label="Example prompts (held out from the run's training data)" if (examples or info.get("examples"))
                    else "Example prompts")
        with gr.Accordion("Settings: mode, models, decoding (shared by both sides)", open=False):
            with gr.Row():
                mode = gr.Radio(list(MODES), value="Blind", label="Mode",
                                info="Blind: names and scores hidden until you vote. Anchored: shown while you vote "
                                     "(those votes are not used as training data by default).")
                model_1 = gr.Dropdown(choices, value=first, label="First model", elem_id="model_1")
                model_2 = gr.Dropdown(choices, value=second, label="Second model", elem_id="model_2")
            with gr.Row():
                max_new_tokens = gr.Slider(1, limits.max_new_tokens, value=min(64, limits.max_new_tokens), step=1,
                                           label="Max new tokens")
                temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="Temperature (0 = greedy)")
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p")
                seed = gr.Number(value=None, precision=0, minimum=0, label="Seed (empty: a fresh one per Compare)",
                                 elem_id="seed")
                seed_used = gr.Number(label="Seed of the last comparison", interactive=False, elem_id="seed_used")
        comparison_id = gr.Textbox(visible=False, elem_id="comparison_id")
        state = gr.State({})

        inputs = [prompt, max_new_tokens, temperature, top_p, seed, model_1, model_2, mode, state]
        sides = [name_md[0], chats[0], score_md[0], name_md[1], chats[1], score_md[1]]
        outputs = [*sides, status, comparison_id, seed_used, state, *vote_btns.values()]
        compare_btn.click(compare, inputs, outputs, api_name="compare", concurrency_limit=concurrency,
                          concurrency_id="generate")
        prompt.submit(compare, inputs, outputs, api_visibility="private", concurrency_id="generate")
        new_btn.click(new_round, [state], [*sides, status, comparison_id, state, *vote_btns.values()],
                      api_name="new_round", queue=False)
        for choice, btn in vote_btns.items():
            # A vote only appends a line: no concurrency limit; the file lock orders the writes.
            btn.click(make_vote(choice), [comparison_id, state],
                      [status, name_md[0], score_md[0], name_md[1], score_md[1], state, *vote_btns.values()],
                      api_name=f"vote_{choice}", concurrency_limit=None)
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    return demo


def read_run_info(folder: Path) -> dict[str, Any]:
    """run_info.json beside app.py (`rlhf push --space` writes it), {} when absent or unreadable."""
    path = Path(folder) / RUN_INFO
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def demo_from_env(environ: dict[str, str] | None = None, folder: Path | None = None) -> gr.Blocks:
    """The Space on the Hub: models from the Space variables, votes to RLHF_VOTES_DATASET when set."""
    env = dict(os.environ if environ is None else environ)
    engine = Engine.load(ModelSources.from_env(env), Limits.from_env(env))
    info = read_run_info(folder if folder is not None else Path(__file__).resolve().parent)
    policy = engine.policies[engine.default_pair[0]].model_id
    info.setdefault("card_url", None if is_local(policy) else f"{HUB}/{policy}")
    repo = (env.get("RLHF_VOTES_DATASET") or "").strip()
    if repo:
        votes = hub_vote_log(repo, Path("votes"), token=env.get("HF_TOKEN") or None)
    else:
        logger.warning("RLHF_VOTES_DATASET is not set: votes go to votes/votes.jsonl, lost when the Space restarts")
        votes = VoteLog(Path("votes") / "votes.jsonl")
    return build_demo(engine, votes, concurrency=env_int(env, "RLHF_CONCURRENCY", 1),
                      max_queue=env_int(env, "RLHF_MAX_QUEUE", 256), info=info)


if __name__ == "__main__" or os.environ.get("SYSTEM") == "spaces":  # the Hub sets SYSTEM=spaces
    logging.basicConfig(level=logging.INFO)
    demo = demo_from_env()
    if __name__ == "__main__":
        demo.launch(css=CSS)
