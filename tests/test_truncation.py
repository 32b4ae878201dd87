"""Pairs longer than the context (train/data.py, data.truncation): `drop` drops and counts them, `keep_end`
cuts the prompt from the left (at a Human turn where one fits, else at a word inside the last turn) and
keeps both responses whole; a pair whose responses alone do not fit is dropped and counted either way.
Measured on the HH-length stress set (data.dataset embedded-long) with a BPE tokenizer trained on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt2_rlhf.train.data import (
    ASSISTANT_TAG,
    HUMAN_TAG,
    DataConfig,
    DataError,
    keep_end,
    load_preferences,
    token_counter,
    validate_command,
)

MAX = 255  # the tiny recipe's context (256) minus the EOS SFT and the reward model append


def words(texts: list[str]) -> list[int]:
    """One token per whitespace-separated word: counts by hand."""
    return [len(t.split()) for t in texts]


PROMPT = "\n\nHuman: a b c\n\nAssistant: d e\n\nHuman: f g\n\nAssistant:"  # 11 words


def test_keep_end_on_hand_counted_words():
    # the whole prompt (11 words) + " x y" is 13 > 8: the earlier exchange goes, the last turn stays whole
    assert keep_end(PROMPT, [" x y", " z"], words, 8) == ("\n\nHuman: f g\n\nAssistant:", "turn")
    # 5 tokens: the last turn alone (4 words) + the longer response (2) is 6: cut inside it, at a word
    assert keep_end(PROMPT, [" x y", " z"], words, 5) == ("f g\n\nAssistant:", "words")
    assert keep_end(PROMPT, [" x y"], words, 4) == ("g\n\nAssistant:", "words")
    assert keep_end(PROMPT, [" x y"], words, 3) == ("\n\nAssistant:", "words")
    # the responses alone (with the Assistant tag) do not fit: nothing to keep
    assert keep_end(PROMPT, [" x y", " z"], words, 2) is None
    # the shorter response never decides: the longer one (5 words) must fit beside the kept prompt
    assert keep_end(PROMPT, [" z", " x y w v u"], words, 8) == ("f g\n\nAssistant:", "words")

def test_keep_end_prefers_the_longest_turn_boundary():
    turns = "".join(f"{HUMAN_TAG} q{i} q{i}{ASSISTANT_TAG} a{i} a{i} a{i}" for i in range(5)) + f"{HUMAN_TAG} last?{ASSISTANT_TAG}"
    # every exchange is 7 words; the final turn 3; the response 2
    for budget, kept in ((5, 0), (12, 1), (19, 2), (26, 3), (33, 4)):
        cut, where = keep_end(turns, [" r r"], words, budget)
        assert where == "turn" and turns.endswith(cut) and cut.startswith(HUMAN_TAG)
        assert cut.count(HUMAN_TAG) == kept + 1, (budget, cut)
        assert words([cut + " r r"])[0] <= budget < words([cut + " r r"])[0] + 7


@pytest.fixture(scope="module")
def long_rows() -> dict[str, list[dict[str, str]]]:
    return {split: load_preferences(DataConfig(dataset="embedded-long"), split)[0] for split in ("train", "test")}


@pytest.fixture(scope="module")
def long_tokenizer(long_rows):
    """Byte-level BPE (GPT-2's scheme) trained on the stress set's dialogues, as the embedded base does."""
    from gpt2_rlhf.train.base import train_tokenizer

    texts = [r["prompt"] + r["chosen"] for r in long_rows["train"][:400]]
    return train_tokenizer(texts, vocab_size=1000)


@pytest.fixture(scope="module")
def measured(long_rows, long_tokenizer) -> dict:
    """The test split's 400 pairs: tokens of prompt + longer response, and of the Assistant tag + longer response."""
    count = token_counter(long_tokenizer)
    source = long_rows["test"]
    both = count([r["prompt"] + r[k] for r in source for k in ("chosen", "rejected")])
    alone = count([ASSISTANT_TAG + r[k] for r in source for k in ("chosen", "rejected")])
    return {"source": source, "full": [max(both[2 * i:2 * i + 2]) for i in range(len(source))],
            "alone": [max(alone[2 * i:2 * i + 2]) for i in range(len(source))]}


def test_drop_drops_and_counts_keep_end_keeps_every_pair_whose_responses_fit(measured, long_tokenizer):
    count = token_counter(long_tokenizer)
    source, full, alone = measured["source"], measured["full"], measured["alone"]  # 400 HH-length pairs
    too_long = sum(n > MAX for n in full)
    unfit = sum(n > MAX for n in alone)
    assert too_long > 0.4 * len(source) and unfit >= 1  # HH-length: most do not fit 255 tokens, a few never do

    dropped, drop = load_preferences(DataConfig(dataset="embedded-long"), "test", long_tokenizer, MAX)
    assert drop.rows_kept == len(dropped) == len(source) - too_long
    assert drop.problems["too_long"] == too_long and drop.length == {
        "max_length": MAX, "truncation": "drop", "fit": len(source) - too_long, "too_long": too_long}
    assert dropped == [r for r, n in zip(source, full) if n <= MAX]

    kept, report = load_preferences(DataConfig(dataset="embedded-long", truncation="keep_end"), "test",
                                    long_tokenizer, MAX)
    assert len(kept) == report.rows_kept == len(source) - unfit  # every pair whose responses fit
    assert report.problems["too_long"] == unfit
    assert "the responses alone do not fit" in report.examples["too_long"][0]
    length = report.length
    assert length["fit"] + length["cut_at_turn"] + length["cut_at_words"] + length["too_long"] == len(source)
    assert length["cut_at_turn"] > 0.4 * len(source)  # the embedded world's final turns are short: cut at turns
    assert report.kept_by("drop") == drop.rows_kept and report.kept_by("keep_end") == len(kept)

    fitting = iter(r for r, n in zip(source, alone) if n <= MAX)
    at_turn = 0
    for row in kept:
        original = next(fitting)
        # responses whole, prompt a suffix of the original ending at its Assistant tag, the pair inside MAX
        assert (row["chosen"], row["rejected"]) == (original["chosen"], original["rejected"])
        assert original["prompt"].endswith(row["prompt"]) and row["prompt"].endswith(ASSISTANT_TAG)
        assert max(count([row["prompt"] + row["chosen"], row["prompt"] + row["rejected"]])) <= MAX
        if row["prompt"] != original["prompt"] and row["prompt"].startswith(HUMAN_TAG):
            at_turn += 1
            # the longest end that fits: one more earlier turn would not
            start = len(original["prompt"]) - len(row["prompt"])
            earlier = original["prompt"].rfind(HUMAN_TAG, 0, start)
            if earlier > 0:
                longer = original["prompt"][earlier:]
                assert max(count([longer + row["chosen"], longer + row["rejected"]])) > MAX
    assert at_turn == length["cut_at_turn"]


def test_which_tokens_were_kept(long_rows, long_tokenizer):
    """One pair, token by token: keep_end keeps the last tokens of the dialogue, from a Human turn on."""
    count = token_counter(long_tokenizer)
    row = next(r for r in long_rows["test"] if r["prompt"].count(HUMAN_TAG) >= 4
               and 2 * MAX < count([r["prompt"] + r["chosen"]])[0] and len(r["chosen"]) >= len(r["rejected"]))
    kept, _ = load_preferences(DataConfig(dataset="embedded-long", truncation="keep_end"), "test", long_tokenizer, MAX)
    cut = next(k for k in kept if k["chosen"] == row["chosen"] and row["prompt"].endswith(k["prompt"]))
    ids = long_tokenizer(row["prompt"] + row["chosen"], add_special_tokens=False)["input_ids"]
    kept_ids = long_tokenizer(cut["prompt"] + cut["chosen"], add_special_tokens=False)["input_ids"]
    response_ids = long_tokenizer(row["chosen"], add_special_tokens=False)["input_ids"]
    # Byte-level BPE splits before "\n\nHuman:", so the kept pair is exactly the last tokens of the whole one
    assert kept_ids == ids[len(ids) - len(kept_ids):]
    assert len(ids) > 2 * MAX >= MAX >= len(kept_ids)
    assert kept_ids[len(kept_ids) - len(response_ids):] == response_ids  # the response, every token
    assert long_tokenizer.decode(kept_ids).startswith(HUMAN_TAG)  # the first kept token opens a Human turn
    dropped_text = long_tokenizer.decode(ids[:len(ids) - len(kept_ids)])
    assert row["prompt"] == dropped_text + cut["prompt"]  # what went: whole earlier exchanges
    assert dropped_text.startswith(HUMAN_TAG) and dropped_text.rstrip().endswith((".", "!", "?"))


def test_the_sft_and_reward_stages_read_through_the_recipe_setting(measured, long_tokenizer, micro_recipe):
    """train.hf_training.load_rows (what SFT and the reward model call) passes data.truncation on."""
    from gpt2_rlhf.train.hf_training import load_rows

    micro_recipe.data.dataset = "embedded-long"
    micro_recipe.data.max_test_pairs = 60  # the first 60 valid pairs
    dropped = load_rows(micro_recipe, "test", long_tokenizer, MAX + 1)  # + 1: load_rows keeps one for EOS
    micro_recipe.data.truncation = "keep_end"
    kept = load_rows(micro_recipe, "test", long_tokenizer, MAX + 1)
    source = measured["source"]
    assert dropped == [r for r, n in zip(source, measured["full"]) if n <= MAX][:60]
    assert [r["chosen"] for r in kept] == [r["chosen"] for r, n in zip(source, measured["alone"]) if n <= MAX][:60]
    assert sum(k["prompt"] != r["prompt"] for k, r in zip(kept, source)) > 30  # most prompts were cut


def test_labelled_pairs_follow_the_recipe_setting_too(tmp_path: Path, measured, long_tokenizer):
    """The reward model and DPO read `rlhf label`'s comparisons (train.reward.labelled_rows) as they read the
    dataset pairs: `keep_end` cuts their prompts instead of dropping the long ones."""
    from gpt2_rlhf.train.reward import labelled_rows
    from gpt2_rlhf.train.rundir import StageWriter

    source = measured["source"][:40]
    with StageWriter(tmp_path, "label") as w:
        (w.path / "train.jsonl").write_text("".join(json.dumps({"chosen": r["prompt"] + r["chosen"],
                                                                "rejected": r["prompt"] + r["rejected"]}) + "\n"
                                                    for r in source))
        w.finish(metrics={})
    label_dir = [str(tmp_path / "label")]
    dropped = labelled_rows(label_dir, long_tokenizer, MAX + 1)
    kept = labelled_rows(label_dir, long_tokenizer, MAX + 1, truncation="keep_end")
    fits = [n <= MAX for n in measured["full"][:40]]
    assert 0 < len(dropped) == sum(fits) < len(source)
    assert [r["chosen"] for r in kept] == [r["chosen"] for r, n in zip(source, measured["alone"][:40]) if n <= MAX]
    assert len(kept) > len(dropped)


def test_rlhf_data_says_how_many_rows_each_setting_keeps(tmp_path: Path, long_rows, long_tokenizer, capsys):
    long_tokenizer.save_pretrained(tmp_path / "tok")
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps({"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]})
                            + "\n" for r in long_rows["test"][:120]))
    _, keep = load_preferences(DataConfig(dataset=str(path), file_test_fraction=0.0, truncation="keep_end"), "train",
                               long_tokenizer, MAX)
    _, drop = load_preferences(DataConfig(dataset=str(path), file_test_fraction=0.0), "train", long_tokenizer, MAX)

    assert validate_command(str(path), on_bad_rows="skip", tokenizer=str(tmp_path / "tok"), max_length=MAX) == 0
    out = capsys.readouterr().out
    assert f"rows kept: drop {drop.rows_kept}, keep_end {keep.rows_kept}" in out
    assert f"rows kept            {drop.rows_kept}" in out  # counted under drop, the default
    assert f"keep_end cut at a turn   {keep.length['cut_at_turn']}" in out
    assert f"too long, even cut       {keep.problems['too_long']}" in out
    # under keep_end only the pairs whose responses do not fit are problems
    assert validate_command(str(path), on_bad_rows="skip", tokenizer=str(tmp_path / "tok"), max_length=MAX,
                            truncation="keep_end") == 0
    out = capsys.readouterr().out
    assert f"rows kept            {keep.rows_kept}" in out and f"too_long             {keep.problems['too_long']}" in out


def test_the_real_recipe_keeps_the_end_and_the_setting_is_checked():
    from gpt2_rlhf.stages import load_recipe

    assert load_recipe("gpt2-hh").data.truncation == "keep_end"
    assert load_recipe("tiny").data.truncation == "drop"  # the embedded recipe's published figures: unchanged
    with pytest.raises(ValueError, match="truncation: must be one of drop, keep_end"):
        DataConfig(truncation="left")


def test_sft_and_the_reward_model_train_on_hh_length_dialogues(micro_run, tmp_path: Path):
    """The micro recipe (a 128-token context) on the stress set: with drop almost nothing is left, with keep_end
    both stages train on cut prompts, the reward stage's normalisation samples included."""
    import torch
    from safetensors.torch import load_file

    from conftest import copy_run
    from gpt2_rlhf.pipeline import run_stage
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train.hf_training import load_rows
    from gpt2_rlhf.train.modeling import load_tokenizer

    run = copy_run(micro_run, tmp_path / "run", stages=("base",))
    flags = {"data.dataset": "embedded-long", "data.max_train_pairs": "48", "data.max_test_pairs": "16",
             "sft.max_steps": "2", "reward.max_steps": "2", "reward.stats_prompts": "4"}
    dropping = load_recipe("micro", {**flags, "data.max_train_pairs": "None"})
    tokenizer = load_tokenizer(run / "base")
    with pytest.raises(DataError, match=r"no usable rows in split 'test': all 400 rows had problems \(too_long=400"):
        load_rows(dropping, "test", tokenizer, 128)  # drop: a 128-token context keeps none of them

    recipe = load_recipe("micro", {**flags, "data.truncation": "keep_end"})
    run_stage("sft", recipe, run)
    run_stage("reward", recipe, run)
    sft = json.loads((run / "sft" / "metrics.json").read_text())
    assert sft["train_rows"] == 48 and sft["max_length"] == 128
    reward = json.loads((run / "reward" / "metrics.json").read_text())
    assert reward["dataset_pairs"] == 48
    assert (run / "sft" / "config.yaml").read_text().count("truncation: keep_end") == 1  # recorded with the stage
    before, after = load_file(run / "base" / "model.safetensors"), load_file(run / "sft" / "model.safetensors")
    changed = [k for k in after if k in before and not torch.equal(before[k], after[k])]
    assert changed  # a training step moved the weights
