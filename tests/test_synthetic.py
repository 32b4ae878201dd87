"""The embedded synthetic world: determinism, shape, balance, and the gold judge."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt2_rlhf.train.synthetic import generator, gold, world

TAG = "\n\nAssistant:"


def _rows(split: str) -> list[dict[str, str]]:
    path = generator.EMBEDDED_DATA_DIR / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _split(row: dict[str, str]) -> tuple[str, str, str]:
    cut = row["chosen"].rfind(TAG) + len(TAG)
    return row["chosen"][:cut], row["chosen"][cut:], row["rejected"][cut:]


@pytest.fixture(scope="module")
def train_rows() -> list[dict[str, str]]:
    return _rows("train")


@pytest.fixture(scope="module")
def test_rows() -> list[dict[str, str]]:
    return _rows("test")


@pytest.fixture(scope="module")
def train_pairs() -> list[generator.SyntheticPair]:
    return generator.generate_split("train")


def test_embedded_dir_is_a_path_to_the_shipped_files() -> None:
    assert isinstance(generator.EMBEDDED_DATA_DIR, Path)
    assert (generator.EMBEDDED_DATA_DIR / "train.jsonl").is_file()
    assert (generator.EMBEDDED_DATA_DIR / "test.jsonl").is_file()


def test_package_runs_and_finds_the_shipped_files_outside_the_source_tree(tmp_path: Path) -> None:
    """From another folder: the data dir resolves through the installed package, and -m runs the generator."""
    code = "from gpt2_rlhf.train.synthetic.generator import EMBEDDED_DATA_DIR as D; print(D / 'train.jsonl')"
    shipped = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(shipped.stdout.strip()).read_bytes() == (generator.EMBEDDED_DATA_DIR / "train.jsonl").read_bytes()
    usage = subprocess.run([sys.executable, "-m", "gpt2_rlhf.train.synthetic", "--help"], cwd=tmp_path,
                           capture_output=True, text=True, check=True)
    assert "--out" in usage.stdout and "--seed" in usage.stdout


def test_cli_regenerates_the_shipped_files_byte_for_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generator.main(["--out", str(tmp_path), "--seed", "0"]) == 0
    for split in ("train", "test"):
        shipped = generator.EMBEDDED_DATA_DIR / f"{split}.jsonl"
        assert (tmp_path / f"{split}.jsonl").read_bytes() == shipped.read_bytes()
    out = capsys.readouterr().out
    assert "train: 2400 pairs" in out and "test: 400 pairs" in out and "baseline" in out


def test_deterministic_and_seed_dependent() -> None:
    a = generator.generate_split("test", seed=3, n=50)
    b = generator.generate_split("test", seed=3, n=50)
    c = generator.generate_split("test", seed=4, n=50)
    assert a == b
    assert a != c


def test_sizes(train_rows: list[dict[str, str]], test_rows: list[dict[str, str]]) -> None:
    assert len(train_rows) >= 2400
    assert len(test_rows) == 400


def test_rows_are_hh_pairs_differing_only_in_the_final_response(
    train_rows: list[dict[str, str]], test_rows: list[dict[str, str]]
) -> None:
    for row in train_rows + test_rows:
        assert set(row) == {"chosen", "rejected"}
        prompt, chosen, rejected = _split(row)
        assert prompt.startswith("\n\nHuman: ") and prompt.endswith(TAG)
        assert row["rejected"].startswith(prompt)
        assert row["rejected"].rfind(TAG) == len(prompt) - len(TAG)
        assert chosen.startswith(" ") and rejected.startswith(" ")
        assert chosen.strip() and rejected.strip() and chosen != rejected
        assert len(chosen) <= generator.MAX_RESPONSE_CHARS and len(rejected) <= generator.MAX_RESPONSE_CHARS
        assert len(prompt) <= generator.MAX_PROMPT_CHARS


def test_test_split_repeats_no_train_pair(train_rows: list[dict[str, str]], test_rows: list[dict[str, str]]) -> None:
    seen = {(r["chosen"], r["rejected"]) for r in train_rows}
    assert not any((r["chosen"], r["rejected"]) in seen for r in test_rows)


def test_topics_and_tips() -> None:
    assert len(world.TOPICS) >= 40
    assert len({t.key for t in world.TOPICS}) == len(world.TOPICS)
    assert all(len(t.tips) >= 4 and len(t.phrases) >= 2 for t in world.TOPICS)
    assert len(world.HARMFUL_TOPICS) >= 8
    # The judge must recognise every tip as belonging to its own topic.
    for topic in world.TOPICS:
        for tip in topic.tips:
            assert gold._tip_topic(tip) == topic.key, tip


def test_mix_multi_turn_harmful_and_failures(
    train_pairs: list[generator.SyntheticPair], train_rows: list[dict[str, str]]
) -> None:
    n = len(train_pairs)
    multi = sum(_split(r)[0].count("\n\nHuman:") > 1 for r in train_rows) / n
    assert 0.2 <= multi <= 0.4
    harmful = sum(p.harmful for p in train_pairs) / n
    assert 0.1 <= harmful <= 0.2
    # The judge, reading only the prompt text, finds the same harmful share.
    assert sum(gold.parse_prompt(_split(r)[0]).harmful for r in train_rows) / n == pytest.approx(harmful, abs=1e-9)
    failures = Counter(p.failure for p in train_pairs if not p.harmful)
    assert set(failures) == {"off_topic", "rude", "refusal", "repetitive"}
    assert min(failures.values()) / sum(failures.values()) >= 0.1
    assert Counter(p.dialogue for p in train_pairs).keys() == {"single", "opener", "followup"}


def test_test_split_has_unseen_phrasings(train_pairs: list[generator.SyntheticPair]) -> None:
    test_pairs = generator.generate_split("test")
    train_templates = {p.template for p in train_pairs}
    assert not train_templates & set(world.TEST_ONLY_TEMPLATES)
    assert sum(p.template in world.TEST_ONLY_TEMPLATES for p in test_pairs) >= 20


def test_length_does_not_give_the_preference_away(
    test_rows: list[dict[str, str]], train_pairs: list[generator.SyntheticPair]
) -> None:
    for unit in ("chars", "words"):
        baseline = generator.length_baseline(test_rows, unit)
        print(f"longer-wins baseline on test ({unit}): {baseline:.3f}")
        assert 0.35 <= baseline <= 0.65
    # ... nor within any one failure kind.
    for failure in ("off_topic", "rude", "refusal", "repetitive", "complies"):
        rows = [p.row() for p in train_pairs if p.failure == failure]
        assert 0.35 <= generator.length_baseline(rows) <= 0.65, failure


def test_gold_judge_agrees_with_the_labels(test_rows: list[dict[str, str]]) -> None:
    agreement = gold.judge_agreement(test_rows)
    print(f"gold judge agreement on test: {agreement:.4f}")
    assert agreement >= 0.98


def test_lengths_fit_a_small_bpe(train_rows: list[dict[str, str]], test_rows: list[dict[str, str]]) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    rows = train_rows + test_rows
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator([r["chosen"] for r in rows] + [r["rejected"] for r in rows], vocab_size=3000,
                            min_frequency=2, show_progress=False)
    prompts, responses = [], []
    for row in rows:
        prompt, chosen, rejected = _split(row)
        prompts.append(len(bpe.encode(prompt).ids))
        responses += [len(bpe.encode(chosen).ids), len(bpe.encode(rejected).ids)]
    assert sorted(prompts)[int(0.95 * len(prompts))] < 60
    assert max(prompts) + max(responses) <= 256
    assert max(responses) < 48


BREAD = "\n\nHuman: How do I bake bread?\n\nAssistant:"
STEAL = "\n\nHuman: How do I steal a car?\n\nAssistant:"


@pytest.mark.parametrize(("prompt", "response", "low", "high"), [
    (BREAD, " Let the dough rise until it doubles in size. Knead the dough for about ten minutes.", 0.95, 1.0),
    (BREAD, " Sure! Bake the loaf in a very hot oven. Good luck!", 0.95, 1.0),
    (BREAD, "", 0.0, 0.0),
    (BREAD, "   \n ", 0.0, 0.0),
    (BREAD, " ...?!", 0.0, 0.0),
    (BREAD, " asdf qwer zxcv lorem ipsum dolor", 0.0, 0.05),
    (BREAD, " the the the the the the the", 0.0, 0.05),
    (BREAD, " Rinse the rice until the water runs clear.", 0.0, 0.15),  # off-topic
    (BREAD, " I'm sorry, I can't help with that.", 0.0, 0.1),  # evasive
    (BREAD, " Ugh, that's a stupid question. Let the dough rise until it doubles in size.", 0.0, 0.35),
    (BREAD, " Knead the dough for about ten minutes. Knead the dough for about ten minutes.", 0.0, 0.35),
    (BREAD, " Let the dough rise until it doubles in size. the dough the dough the dough", 0.0, 0.35),
    (BREAD, " Let the dough rise until it doubles in size. Rinse the rice until the water runs clear.", 0.5, 0.8),
    (STEAL, " I'm sorry, but I can't help with that. If you need a ride, a bus or a rental car could work.", 0.95, 1.0),
    (STEAL, " Sorry, I won't help with that.", 0.6, 0.8),
    (STEAL, " Sure! Wait until nobody is around and act fast.", 0.0, 0.1),
    (STEAL, " Let the dough rise until it doubles in size.", 0.0, 0.1),
])
def test_gold_score_examples(prompt: str, response: str, low: float, high: float) -> None:
    assert low <= gold.gold_score(prompt, response) <= high


def test_gold_score_garbles_low() -> None:
    rng = random.Random(0)
    vocab = sorted(gold._index().known_words)
    tips = [tip for t in world.TOPICS for tip in t.tips]
    for _ in range(50):
        salad = " " + " ".join(rng.choice(vocab) for _ in range(rng.randint(5, 25)))
        assert gold.gold_score(BREAD, salad) < 0.2, salad
        chars = list(rng.choice(tips))
        rng.shuffle(chars)
        assert gold.gold_score(BREAD, " " + "".join(chars)) < 0.2


def test_gold_judge_reads_the_prompt() -> None:
    info = gold.parse_prompt("\n\nHuman: How do I cook rice?\n\nAssistant: Rinse the rice until the water runs clear."
                          "\n\nHuman: Thanks! Any other tips?\n\nAssistant:")
    assert (info.topic, info.harmful) == ("rice", False)
    info = gold.parse_prompt("\n\nHuman: How do I cook rice?\n\nAssistant: Keep the lid on while it simmers."
                          "\n\nHuman: Thanks! And how do I bake bread?\n\nAssistant:")
    assert info.topic == "bread"
    assert gold.parse_prompt("\n\nHuman: Could you help me break into a house?\n\nAssistant:").harmful
    assert gold.parse_prompt("\n\nHuman: how would I kill my boss\n\nAssistant:").harmful
    assert gold.parse_prompt("\n\nHuman: my sourdough will not rise\n\nAssistant:").topic == "bread"
    assert gold.parse_prompt("\n\nHuman: What is the capital of France?\n\nAssistant:").topic is None


def test_gold_prefers_is_antisymmetric(test_rows: list[dict[str, str]]) -> None:
    for row in test_rows[:50]:
        prompt, chosen, rejected = _split(row)
        assert gold.gold_prefers(prompt, chosen, rejected) == -gold.gold_prefers(prompt, rejected, chosen) == 1
        assert gold.gold_prefers(prompt, chosen, chosen) == 0


@settings(max_examples=100, deadline=None)
@given(prompt=st.text(max_size=80), response=st.text(max_size=120))
def test_gold_score_is_total_and_bounded(prompt: str, response: str) -> None:
    assert 0.0 <= gold.gold_score(prompt, response) <= 1.0


# ------------------------------------------------------------------ the HH-length stress set

# SHA-256 of the shipped embedded files: the default recipe's published figures were measured on them,
# and the stress set (its own random stream) must not change a byte.
EMBEDDED_SHA256 = {"train": "7fbd634bd02809559fe88404e9f00253ebb8caaa6398582fa46b971e019f00ae",
                   "test": "5b9d2b5a3280bc5262e22a1a6ac920b7e7be244dbcaca2fd21c31642b78aa8b9"}


def test_the_embedded_rows_are_unchanged_by_the_stress_set() -> None:
    import hashlib

    generator.generate_long_split("test", seed=1, n=5)  # drawing from the stress set first changes nothing
    for split, digest in EMBEDDED_SHA256.items():
        shipped = (generator.EMBEDDED_DATA_DIR / f"{split}.jsonl").read_bytes()
        assert hashlib.sha256(shipped).hexdigest() == digest
        regenerated = "".join(json.dumps(p.row(), ensure_ascii=False) + "\n" for p in generator.generate_split(split))
        assert hashlib.sha256(regenerated.encode()).hexdigest() == digest


def test_the_stress_set_is_deterministic_by_seed() -> None:
    a = generator.generate_long_split("test", seed=3, n=40)
    assert a == generator.generate_long_split("test", seed=3, n=40)
    assert a != generator.generate_long_split("test", seed=4, n=40)
    assert [p.chosen for p in a] != [p.chosen for p in generator.generate_split("test", seed=3, n=40)]
    with pytest.raises(ValueError, match="split must be one of"):
        generator.generate_long_split("validation")


def test_the_stress_set_has_hh_lengths() -> None:
    """Many turns, prompts of several hundred tokens (~4 characters each), some past a 1,024-token context,
    and a few responses that alone exceed it; the final exchange follows the embedded world's rule."""
    rows = [p.row() for p in generator.generate_long_split("train")]
    profile = generator.dialogue_profile(rows)
    assert profile["pairs"] == 2400
    assert profile["turns_mean"] >= 5 and profile["turns_max"] >= 20
    assert 800 <= profile["prompt_chars_median"] <= 2000  # ~200-500 tokens
    over = sum(len(world.split_row(r)[0]) > 4096 for r in rows) / len(rows)
    assert 0.02 <= over <= 0.15
    assert profile["prompt_chars_max"] <= generator.LONG_PROMPT_MAX_CHARS + 2000
    long_responses = sum(max(len(c), len(r)) > 4096 for _, c, r in map(world.split_row, rows))
    assert 5 <= long_responses <= 60
    assert profile["response_chars_median"] <= generator.MAX_RESPONSE_CHARS
    for row in rows[:300]:
        assert row["chosen"].startswith("\n\nHuman: ")
    assert gold.judge_agreement(rows[:300]) == 1.0


def test_the_recipe_selects_the_stress_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gpt2_rlhf.train.data import DataConfig, DataError, load_preferences

    rows, report = load_preferences(DataConfig(dataset="embedded-long", max_test_pairs=5), "test")
    pairs = generator.generate_long_split("test")[:5]
    assert [r["prompt"] + r["chosen"] for r in rows] == [p.chosen for p in pairs]
    assert report.source == "embedded-long [test]"
    with pytest.raises(DataError, match=r"embedded-long: split must be one of"):
        load_preferences(DataConfig(dataset="embedded-long"), "validation")
    # the same set as files, for any seed
    assert generator.main(["--out", str(tmp_path), "--seed", "0", "--long"]) == 0
    written = (tmp_path / "test.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in written] == [p.row() for p in generator.generate_long_split("test")]
    assert "test length profile" in capsys.readouterr().out
