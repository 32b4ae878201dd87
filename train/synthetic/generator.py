"""The dataset generator of the embedded synthetic world: pairs, files and statistics.

``generate_split(split, seed)`` draws the pairs of one split ("train": 2400, "test":
400) from the tables in ``world``, deterministically in (split, seed), following the
preference rule in the package docstring. For every pair a fair coin decides whether
the chosen or the rejected response is longer, so length gives no preference away
(``length_baseline`` measures it). The test split adds ``TEST_ONLY_TEMPLATES`` and
topic/phrasing combinations held out of train, and never repeats a train pair.

``write_dataset`` writes ``train.jsonl`` and ``test.jsonl``; the shipped copy lives
in ``EMBEDDED_DATA_DIR`` and ``python -m gpt2_rlhf.train.synthetic --out DIR --seed 0``
(``main``) regenerates it byte for byte and prints its statistics.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from .gold import judge_agreement
from .world import (
    COMPLY_BODIES,
    COMPLY_OPENERS,
    DECLINE_OUTROS,
    DECLINES,
    FOLLOWUP_HARMFUL,
    FOLLOWUP_IMPLICIT,
    FOLLOWUP_SAME,
    FOLLOWUP_SWITCH,
    HARMFUL_TOPICS,
    INSULT_PREFIXES,
    INSULT_SUFFIXES,
    INTROS,
    LOOP_PHRASES,
    OPENERS,
    OUTROS,
    QUESTION_TEMPLATES,
    REFUSALS,
    TEST_ONLY_TEMPLATES,
    TOPICS,
    HarmfulTopic,
    Topic,
    split_row,
)

logger = logging.getLogger(__name__)

__all__ = [
    "EMBEDDED_DATA_DIR",
    "LONG_SPLIT_SIZES",
    "SyntheticPair",
    "dialogue_profile",
    "generate_long_split",
    "generate_split",
    "length_baseline",
    "write_dataset",
]

# The shipped copy (package data of gpt2_rlhf.train), found through importlib.resources
# so that it resolves inside a non-editable install as well as in the source tree.
EMBEDDED_DATA_DIR: Path = Path(str(resources.files("gpt2_rlhf.train") / "embedded" / "tiny_hh"))

# The first line of the package docstring: the command's --help description.
DESCRIPTION = "The embedded synthetic preference world: a tiny, fully known Anthropic-HH look-alike."

SPLIT_SIZES: dict[str, int] = {"train": 2400, "test": 400}
HARMFUL_SHARE = 0.15
OPENER_SHARE = 0.12
FOLLOWUP_SHARE = 0.18
# Failure kinds of rejected answers to harmless requests and their weights.
FAILURE_WEIGHTS: dict[str, float] = {"off_topic": 0.30, "rude": 0.25, "refusal": 0.20, "repetitive": 0.25}
# Character budgets keep prompt + response inside a 256-position model with any
# reasonable BPE (GPT-2's own tokenizer averages ~4 characters per token here).
MAX_RESPONSE_CHARS = 175
MAX_PROMPT_CHARS = 230


@dataclass(frozen=True)
class SyntheticPair:
    """One generated pair plus the metadata the generator knows about it."""

    chosen: str
    rejected: str
    topic: str  # key of the final request's topic (harmless or harmful)
    harmful: bool
    failure: str  # off_topic | rude | refusal | repetitive | complies
    dialogue: str  # single | opener | followup
    template: str  # the question template of the final turn ("" for implicit follow-ups)

    def row(self) -> dict[str, str]:
        """The HH-format row written to disk."""
        return {"chosen": self.chosen, "rejected": self.rejected}


def _held_out(phrase: str, template: str) -> bool:
    """Topic/phrasing combinations only the test split uses (stable across runs, unlike hash())."""
    return zlib.crc32(f"{phrase}|{template}".encode()) % 9 == 0


def _question(rng: random.Random, phrase: str, split: str, templates: Sequence[str] = QUESTION_TEMPLATES) -> tuple[str, str]:
    pool = list(templates) + (list(TEST_ONLY_TEMPLATES) if split == "test" and templates is QUESTION_TEMPLATES else [])
    if split == "train":
        pool = [t for t in pool if not _held_out(phrase, t)] or list(templates)
    template = rng.choice(pool)
    return template.replace("{p}", phrase), template


def _join(parts: Iterable[str]) -> str:
    return " " + " ".join(parts)


def _helpful(rng: random.Random, topic: Topic, exclude: Sequence[str] = ()) -> str:
    tips = [t for t in topic.tips if t not in exclude]
    chosen_tips = rng.sample(tips, rng.choice((1, 2, 2, 3)))
    parts = ([rng.choice(INTROS)] if rng.random() < 0.4 else []) + chosen_tips
    if rng.random() < 0.3:
        parts.append(rng.choice(OUTROS))
    # Drop the optional extras, then tips, until the response fits its budget.
    while len(_join(parts)) > MAX_RESPONSE_CHARS and len(parts) > 1:
        parts.pop(0 if parts[0] in INTROS else -1)
    return _join(parts)


def _rude(rng: random.Random, topic: Topic, exclude: Sequence[str]) -> str:
    tips = rng.sample([t for t in topic.tips if t not in exclude], rng.choice((1, 1, 2)))
    style = rng.random()
    if style < 0.4:
        parts = [rng.choice(INSULT_PREFIXES), *tips]
    elif style < 0.8:
        parts = [*tips, rng.choice(INSULT_SUFFIXES)]
    else:
        parts = [rng.choice(INSULT_PREFIXES), *tips[:1], rng.choice(INSULT_SUFFIXES)]
    return _join(parts)


def _refusal(rng: random.Random, phrase: str) -> str:
    return " " + rng.choice(REFUSALS).replace("{p}", phrase)


def _repetitive(rng: random.Random, topic: Topic) -> str:
    mode = rng.random()
    if mode < 0.4:  # one tip looping
        tip = rng.choice(topic.tips)
        parts = ([rng.choice(INTROS)] if rng.random() < 0.3 else []) + [tip] * rng.randint(2, 4)
    elif mode < 0.7:  # a tip, then a fragment of it looping, like a degenerate sampler
        tip = rng.choice(topic.tips)
        words = tip.rstrip(".!?").split()
        start = rng.randrange(0, max(1, len(words) - 2))
        fragment = " ".join(words[start:start + rng.choice((2, 3))]).lower()
        parts = [tip] + [fragment] * rng.randint(3, 7)
    else:  # a polite filler looping
        parts = [rng.choice(LOOP_PHRASES)] * rng.randint(3, 8)
    text = _join(parts)
    if len(text) > MAX_RESPONSE_CHARS:  # cut at a word boundary
        text = text[:MAX_RESPONSE_CHARS].rsplit(" ", 1)[0]
    return text


def _decline(rng: random.Random, harm: HarmfulTopic) -> str:
    parts = [rng.choice(DECLINES), *rng.sample(harm.alternatives, rng.choice((1, 1, 2)))]
    if rng.random() < 0.25:
        parts.append(rng.choice(DECLINE_OUTROS))
    while len(_join(parts)) > MAX_RESPONSE_CHARS and len(parts) > 2:
        parts.pop()
    return _join(parts)


def _comply(rng: random.Random) -> str:
    parts = [rng.choice(COMPLY_OPENERS), *rng.sample(COMPLY_BODIES, rng.choice((1, 2, 2, 3)))]
    if rng.random() < 0.3:
        parts.append("Good luck!")
    while len(_join(parts)) > MAX_RESPONSE_CHARS:
        parts.pop(-1)
    return _join(parts)


def _make_pair(rng: random.Random, split: str) -> SyntheticPair:
    harmful = rng.random() < HARMFUL_SHARE
    shape = rng.random()
    dialogue = "single" if shape >= OPENER_SHARE + FOLLOWUP_SHARE else ("opener" if shape < OPENER_SHARE else "followup")

    turns: list[tuple[str, str]] = []  # earlier (human, assistant) exchanges
    earlier_topic: Topic | None = None
    given: list[str] = []  # tips already given in the dialogue: the chosen answer adds new ones
    if dialogue == "opener":
        turns.append(rng.choice(OPENERS))
    elif dialogue == "followup":
        earlier_topic = rng.choice(TOPICS)
        first_q, _ = _question(rng, rng.choice(earlier_topic.phrases), split)
        tip = rng.choice(earlier_topic.tips)
        given.append(tip)
        answer = (rng.choice(INTROS) + " " if rng.random() < 0.3 else "") + tip
        turns.append((first_q, answer))

    harm: HarmfulTopic | None = None
    if harmful:
        harm = rng.choice(HARMFUL_TOPICS)
        phrase = rng.choice(harm.phrases)
        templates = FOLLOWUP_HARMFUL if dialogue == "followup" else QUESTION_TEMPLATES
        final_q, template = _question(rng, phrase, split, templates)
        topic_key = harm.key
        topic = None
    else:
        how = rng.random()
        if dialogue == "followup" and earlier_topic is not None and how < 0.5:
            topic = earlier_topic
            phrase = rng.choice(topic.phrases)
            if how < 0.25:
                final_q, template = rng.choice(FOLLOWUP_IMPLICIT), ""
            else:
                final_q, template = _question(rng, phrase, split, FOLLOWUP_SAME)
        else:
            topic = rng.choice([t for t in TOPICS if t is not earlier_topic])
            phrase = rng.choice(topic.phrases)
            templates = FOLLOWUP_SWITCH if dialogue == "followup" else QUESTION_TEMPLATES
            final_q, template = _question(rng, phrase, split, templates)
        topic_key = topic.key

    prompt = "".join(f"\n\nHuman: {h}\n\nAssistant: {a}" for h, a in turns) + f"\n\nHuman: {final_q}\n\nAssistant:"
    exclude = given if topic is earlier_topic else []

    if harm is not None:
        failure = "complies"
    else:
        failure = rng.choices(list(FAILURE_WEIGHTS), weights=list(FAILURE_WEIGHTS.values()))[0]
    # The fair coin that keeps length from giving the preference away.
    chosen_longer = rng.random() < 0.5
    chosen = rejected = ""
    for _attempt in range(200):
        if harm is not None:
            chosen, rejected = _decline(rng, harm), _comply(rng)
        else:
            assert topic is not None
            chosen = _helpful(rng, topic, exclude)
            if failure == "off_topic":
                # An earlier turn's topic is the hardest distractor: use it half the time.
                other = earlier_topic if earlier_topic is not None and earlier_topic is not topic and rng.random() < 0.5 \
                    else rng.choice([t for t in TOPICS if t is not topic])
                rejected = _helpful(rng, other)
            elif failure == "rude":
                rejected = _rude(rng, topic, exclude)
            elif failure == "refusal":
                rejected = _refusal(rng, phrase)
            else:
                rejected = _repetitive(rng, topic)
        if chosen != rejected and len(chosen) != len(rejected) and (len(chosen) > len(rejected)) == chosen_longer:
            break
    else:
        logger.debug("no length-balanced draw for %s/%s; keeping the last one", topic_key, failure)
    return SyntheticPair(
        chosen=prompt + chosen,
        rejected=prompt + rejected,
        topic=topic_key,
        harmful=harm is not None,
        failure=failure,
        dialogue=dialogue,
        template=template,
    )


# --------------------------------------------------------------- HH-length stress set
#
# Real HH dialogues are long: the issue that asked for this set measured 29% of HH pairs over a
# 255-token context, and many over 512. The embedded set keeps prompts under MAX_PROMPT_CHARS for
# a 256-position model, so it never exercises length handling. This set prepends an earlier
# conversation (several exchanges of the same world: questions and multi-tip answers on other
# topics, greetings) to a pair drawn exactly as the embedded set's, so the final request, its
# responses and the gold judge's rule are the embedded world's. Prompt length in characters is
# log-normal: median LONG_PROMPT_MEDIAN_CHARS (~300 GPT-2-like tokens at ~4 characters per
# token), and about 1 prompt in 15 beyond 4,096 characters (past a 1,024-token context). A few
# rejected responses (LONG_RESPONSE_SHARE of the pairs: a polite filler looping, the embedded
# "repetitive" failure) are long enough that the responses alone exceed 1,024 tokens.

LONG_SPLIT_SIZES: dict[str, int] = {"train": 2400, "test": 400}
LONG_PROMPT_MEDIAN_CHARS = 1200
LONG_PROMPT_SIGMA = 0.8
LONG_PROMPT_MAX_CHARS = 10_000  # the log-normal's far tail, cut (real HH's longest prompts are a few thousand tokens)
LONG_RESPONSE_SHARE = 0.01
LONG_RESPONSE_CHARS = (4500, 7000)


def _earlier_exchange(rng: random.Random, split: str) -> tuple[str, str]:
    """One earlier (human, assistant) exchange: a greeting, or a question answered with several tips."""
    if rng.random() < 0.1:
        return rng.choice(OPENERS)
    topic = rng.choice(TOPICS)
    question, _ = _question(rng, rng.choice(topic.phrases), split)
    if rng.random() < 0.3:  # a longer human turn: the question, then asking for more on it
        question += " " + rng.choice(FOLLOWUP_SAME).replace("{p}", rng.choice(topic.phrases))
    tips = rng.sample(topic.tips, min(len(topic.tips), rng.randint(2, 5)))
    parts = ([rng.choice(INTROS)] if rng.random() < 0.5 else []) + tips
    if rng.random() < 0.4:
        parts.append(rng.choice(OUTROS))
    return question, " ".join(parts)


def _make_long_pair(rng: random.Random, split: str) -> SyntheticPair:
    final = _make_pair(rng, split)
    target = min(rng.lognormvariate(math.log(LONG_PROMPT_MEDIAN_CHARS), LONG_PROMPT_SIGMA), LONG_PROMPT_MAX_CHARS)
    history = ""
    final_prompt = split_row(final.row())[0]
    while len(history) + len(final_prompt) < target:
        human, assistant = _earlier_exchange(rng, split)
        history += f"\n\nHuman: {human}\n\nAssistant: {assistant}"
    rejected = final.rejected
    failure = final.failure
    if not final.harmful and rng.random() < LONG_RESPONSE_SHARE:
        phrase, size = rng.choice(LOOP_PHRASES), rng.randint(*LONG_RESPONSE_CHARS)
        rejected = final_prompt + " " + " ".join([phrase] * (size // (len(phrase) + 1) + 1))
        failure = "repetitive"
    return SyntheticPair(chosen=history + final.chosen, rejected=history + rejected, topic=final.topic,
                         harmful=final.harmful, failure=failure, dialogue=final.dialogue, template=final.template)


@cache
def _long_split(split: str, seed: int, n: int) -> tuple[SyntheticPair, ...]:
    # Its own random stream (not the embedded set's): the shipped embedded files stay as they are.
    rng = random.Random(f"tiny_hh_long/{split}/{seed}")
    return tuple(_make_long_pair(rng, split) for _ in range(n))


def generate_long_split(split: str, seed: int = 0, n: int | None = None) -> list[SyntheticPair]:
    """The HH-length stress pairs of one split ("train": 2400, "test": 400), deterministic in (split, seed)."""
    if split not in LONG_SPLIT_SIZES:
        raise ValueError(f"split must be one of {sorted(LONG_SPLIT_SIZES)}, got {split!r}")
    return list(_long_split(split, seed, LONG_SPLIT_SIZES[split] if n is None else n))


def dialogue_profile(rows: Iterable[dict[str, str]]) -> dict[str, float]:
    """Length profile of HH rows: pairs, Human turns per prompt (mean, max), prompt and longer-response
    characters (median, 90th percentile, max)."""
    turns, prompts, responses = [], [], []
    for row in rows:
        prompt, chosen, rejected = split_row(row)
        turns.append(prompt.count("\n\nHuman:"))
        prompts.append(len(prompt))
        responses.append(max(len(chosen), len(rejected)))
    if not turns:
        return {"pairs": 0}

    def q(values: list[int], f: float) -> float:
        ordered = sorted(values)
        return float(ordered[min(len(ordered) - 1, int(f * len(ordered)))])

    return {"pairs": len(turns), "turns_mean": sum(turns) / len(turns), "turns_max": max(turns),
            "prompt_chars_median": q(prompts, 0.5), "prompt_chars_p90": q(prompts, 0.9),
            "prompt_chars_max": max(prompts), "response_chars_median": q(responses, 0.5),
            "response_chars_max": max(responses)}


@cache
def _train_keys(seed: int) -> frozenset[tuple[str, str]]:
    return frozenset((p.chosen, p.rejected) for p in generate_split("train", seed))


def generate_split(split: str, seed: int = 0, n: int | None = None) -> list[SyntheticPair]:
    """The pairs of one split ("train" or "test"), deterministic in (split, seed)."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be one of {sorted(SPLIT_SIZES)}, got {split!r}")
    n = SPLIT_SIZES[split] if n is None else n
    # A string seed is hashed with SHA-512 by random.seed: stable across processes.
    rng = random.Random(f"tiny_hh/{split}/{seed}")
    pairs: list[SyntheticPair] = []
    seen: set[tuple[str, str]] = set()
    if split == "test":
        # The test split must not repeat a train pair verbatim.
        seen = set(_train_keys(seed))
    while len(pairs) < n:
        pair = _make_pair(rng, split)
        if (pair.chosen, pair.rejected) in seen or len(split_row(pair.row())[0]) > MAX_PROMPT_CHARS:
            continue
        seen.add((pair.chosen, pair.rejected))
        pairs.append(pair)
    return pairs


def write_dataset(out_dir: str | Path, seed: int = 0, long: bool = False) -> dict[str, Path]:
    """Writes ``train.jsonl`` and ``test.jsonl`` under `out_dir` (`long`: the HH-length stress set); returns
    their paths by split."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    generate = generate_long_split if long else generate_split
    for split in SPLIT_SIZES:
        path = out / f"{split}.jsonl"
        lines = [json.dumps(p.row(), ensure_ascii=False) + "\n" for p in generate(split, seed)]
        # Bytes, not text mode: the shipped copy must be byte-identical on every OS.
        path.write_bytes("".join(lines).encode("utf-8"))
        paths[split] = path
        logger.info("wrote %d pairs to %s", len(lines), path)
    return paths


def length_baseline(rows: Iterable[dict[str, str]], unit: str = "chars") -> float:
    """Accuracy of "the longer response is chosen" (ties count half); `unit` is chars or words."""
    total = wins = 0.0
    for row in rows:
        _, chosen, rejected = split_row(row)
        lc, lr = (len(chosen), len(rejected)) if unit == "chars" else (len(chosen.split()), len(rejected.split()))
        wins += 1.0 if lc > lr else (0.5 if lc == lr else 0.0)
        total += 1
    return wins / total if total else float("nan")


def main(argv: list[str] | None = None) -> int:
    """``python -m gpt2_rlhf.train.synthetic --out DIR --seed 0``: writes the dataset and prints its statistics."""
    parser = argparse.ArgumentParser(prog="python -m gpt2_rlhf.train.synthetic", description=DESCRIPTION)
    parser.add_argument("--out", required=True, help="output folder for train.jsonl and test.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--long", action="store_true",
                        help="the HH-length stress set (recipes: data.dataset embedded-long) instead of the embedded one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    paths = write_dataset(args.out, args.seed, long=args.long)
    for split, path in paths.items():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        print(f"{split}: {len(rows)} pairs -> {path}; longer-wins baseline {length_baseline(rows):.3f} (chars), "
              f"{length_baseline(rows, 'words'):.3f} (words); gold judge agreement {judge_agreement(rows):.4f}")
        if args.long:
            print(f"{split} length profile: {json.dumps(dialogue_profile(rows))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
