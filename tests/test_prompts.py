"""Prompt-only data (train/data.py `PromptsConfig`, `load_prompts`): the files, the checks, the cuts, the splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt2_rlhf.train.data import (
    PROMPT_PROBLEM_KINDS,
    DataError,
    PromptsConfig,
    check_prompts,
    load_prompts,
    shipped_prompt_sets,
)

STORY = "Once upon a time, a little fox found a shiny stone by the river and wondered"


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_a_text_file_of_prompts_is_cut_into_train_then_test(tmp_path):
    path = write_lines(tmp_path / "prompts.txt", [f"Story {i} begins" for i in range(200)])
    cfg = PromptsConfig(source=str(path))
    train, report = load_prompts(cfg, "train")
    test, test_report = load_prompts(cfg, "test")
    assert train == [f"Story {i} begins" for i in range(180)] and test == [f"Story {i} begins" for i in range(180, 200)]
    assert (report.rows_read, report.rows_kept, report.n_problems) == (180, 180, 0)
    assert "[last 20 of 200 rows]" in test_report.source
    assert set(report.problems) == set(PROMPT_PROBLEM_KINDS)
    # plain: used as they are; dialogue: the HH frame
    dialogue, _ = load_prompts(PromptsConfig(source=str(path), template="dialogue"), "test")
    assert dialogue[0] == "\n\nHuman: Story 180 begins\n\nAssistant:"


def test_a_bad_line_is_named_or_counted(tmp_path):
    lines = ["Once upon a time", b"\xff\xfe not utf-8", "", "   ", "Long ago"]
    path = write_lines(tmp_path / "p.txt", lines)
    with pytest.raises(DataError, match=r"p\.txt line 2: undecodable_line: not valid UTF-8 \(byte 0xff at column 1\)"):
        load_prompts(PromptsConfig(source=str(path), on_bad_rows="error", test_fraction=0.0), "train")
    prompts, report = load_prompts(PromptsConfig(source=str(path), test_fraction=0.0), "train")
    assert prompts == ["Once upon a time", "Long ago"]
    assert report.problems["undecodable_line"] == 1 and report.blank_lines == 2
    assert "line 2" in report.format() and "empty_prompt" in report.format()


def test_jsonl_prompt_column_and_its_problems(tmp_path):
    rows = [{"prompt": "A"}, {"prompt": ""}, {"prompt": 3}, {"text": "no prompt"}, "{bad json", ["a list"],
            {"prompt": "B"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    prompts, report = load_prompts(PromptsConfig(source=str(path), test_fraction=0.0), "train")
    assert prompts == ["A", "B"]
    assert {k: v for k, v in report.problems.items() if v} == {"empty_prompt": 1, "not_a_string": 1,
                                                                "missing_field": 2, "undecodable_line": 1}
    for line, kind in ((2, "empty_prompt"), (3, "not_a_string"), (4, "missing_field"), (5, "undecodable_line")):
        bad = write_jsonl(tmp_path / f"bad{line}.jsonl", [{"prompt": "ok"}] * (line - 1) + [rows[line - 1]])
        with pytest.raises(DataError, match=rf"bad{line}\.jsonl line {line}: {kind}"):
            load_prompts(PromptsConfig(source=str(bad), on_bad_rows="error", test_fraction=0.0), "train")
    # another column name
    other = write_jsonl(tmp_path / "q.jsonl", [{"question": "Why?"}])
    assert load_prompts(PromptsConfig(source=str(other), column="question", test_fraction=0.0), "train")[0] == ["Why?"]


def test_parquet_and_a_folder_of_splits(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "data"
    folder.mkdir()
    pq.write_table(pa.table({"prompt": ["a", "b", None]}), folder / "train.parquet")
    write_lines(folder / "test.txt", ["c"])
    cfg = PromptsConfig(source=str(folder))
    train, report = load_prompts(cfg, "train")
    assert train == ["a", "b"] and report.problems["not_a_string"] == 1
    assert "train.parquet row 2" in report.examples["not_a_string"][0]
    assert load_prompts(cfg, "test")[0] == ["c"]
    with pytest.raises(DataError, match="prompt split 'validation' not found"):
        load_prompts(PromptsConfig(source=str(folder), test_split="validation"), "validation")


def test_a_text_dataset_is_cut_into_prompts(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "stories.jsonl", [{"text": STORY}, {"text": "  Short  "}, {"text": " "}])
    words = PromptsConfig(source=str(path), cut_words=4, test_fraction=0.0)
    assert words.prompt_column == "text"
    prompts, report = load_prompts(words, "train")
    assert prompts == ["Once upon a time,", "Short"] and report.problems["empty_prompt"] == 1
    tokens = PromptsConfig(source=str(path), cut_tokens=3, test_fraction=0.0)
    with pytest.raises(ValueError, match="needs the policy's tokenizer"):
        load_prompts(tokens, "train")
    cut, _ = load_prompts(tokens, "train", tiny_tokenizer)
    ids = tiny_tokenizer(STORY, add_special_tokens=False)["input_ids"][:3]
    assert cut[0] == tiny_tokenizer.decode(ids).strip() and STORY.startswith(cut[0])
    check_prompts(tokens, ["train"])  # the pipeline's up-front check: rows only, no tokenizer needed


def test_too_long_against_the_prompt_budget(tmp_path, tiny_tokenizer):
    path = write_lines(tmp_path / "p.txt", ["short", STORY])
    n = len(tiny_tokenizer(STORY, add_special_tokens=False)["input_ids"])
    cfg = PromptsConfig(source=str(path), test_fraction=0.0)
    prompts, report = load_prompts(cfg, "train", tiny_tokenizer, max_tokens=n - 1)
    assert prompts == ["short"] and report.problems["too_long"] == 1
    with pytest.raises(DataError, match=rf"p\.txt line 2: too_long: {n} tokens > the prompt budget of {n - 1}"):
        load_prompts(PromptsConfig(source=str(path), test_fraction=0.0, on_bad_rows="error"), "train", tiny_tokenizer,
                     max_tokens=n - 1)


def test_missing_empty_and_all_bad_sources(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_prompts(PromptsConfig(source=str(tmp_path / "nope.txt")), "train")
    empty = write_lines(tmp_path / "empty.txt", [""])
    with pytest.raises(DataError, match="is empty"):
        load_prompts(PromptsConfig(source=str(empty), test_fraction=0.0), "train")
    bad = write_lines(tmp_path / "bad.txt", [b"\xff"])
    with pytest.raises(DataError, match=r"no usable prompts .* first: .*bad\.txt line 1: undecodable_line"):
        load_prompts(PromptsConfig(source=str(bad), test_fraction=0.0), "train")
    with pytest.raises(ValueError, match="prompts.source is not set"):
        load_prompts(PromptsConfig(), "train")


def test_hub_text_dataset_with_split_expressions(monkeypatch):
    """A Hub id goes to datasets.load_dataset with the split names (a split expression cuts one split); a
    tiny in-memory dataset stands in for the Hub."""
    import datasets

    calls = []

    def fake_load(name, data_dir=None, split=None):
        calls.append((name, data_dir, split))
        return datasets.Dataset.from_dict({"text": [STORY, "It was a dark and stormy night"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = PromptsConfig(source="someone/stories", cut_words=3, train_split="train[:90%]", test_split="train[90%:]")
    prompts, report = load_prompts(cfg, "train[:90%]")
    assert prompts == ["Once upon a", "It was a"] and calls == [("someone/stories", None, "train[:90%]")]
    assert report.source == "someone/stories [train[:90%]]"


def test_offline_hub_id_is_one_line(hub_offline):
    with pytest.raises(DataError, match="could not fetch Hub dataset no-such-user/no-such-prompts") as e:
        load_prompts(PromptsConfig(source="no-such-user/no-such-prompts"), "train")
    assert "\n" not in str(e.value)


def test_the_shipped_story_openings():
    path = shipped_prompt_sets()["stories"]
    lines = path.read_text().splitlines()
    assert len(lines) == 720 and len(set(lines)) == 720 and all(line.strip() == line and line for line in lines)
    train, _ = load_prompts(PromptsConfig(source="stories"), "train")
    test, _ = load_prompts(PromptsConfig(source="stories"), "test")
    assert len(train) == 648 and len(test) == 72 and not set(train) & set(test)
    assert sum(p.startswith("Once upon a time") for p in lines) == 60


@pytest.mark.parametrize("kwargs,match", [
    ({"template": "chat"}, "template"), ({"cut_words": 3, "cut_tokens": 3}, "not both"), ({"cut_words": -1}, "cut_words"),
    ({"test_fraction": 1.0}, "test_fraction"), ({"source": " "}, "source"), ({"on_bad_rows": "drop"}, "on_bad_rows"),
    ({"max_train_prompts": 0}, "max_train_prompts")])
def test_prompts_config_validates_itself(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PromptsConfig(**kwargs)


def test_the_section_is_recorded_only_when_set():
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train.config import stage_config

    plain = load_recipe("micro")
    assert "prompts" not in stage_config(plain, "ppo")  # a recipe without prompt-only data records what it did
    own = load_recipe("micro", {"prompts.source": "stories"})
    assert stage_config(own, "ppo")["prompts"]["source"] == "stories"
    assert stage_config(own, "eval")["prompts"]["source"] == "stories"
    assert "prompts" not in stage_config(own, "sft")


def test_rlhf_data_prompts(tmp_path, capsys):
    from gpt2_rlhf.cli import main

    path = write_lines(tmp_path / "p.txt", ["Once upon a time", b"\xff bad", "Long ago"])
    assert main(["data", str(path), "--prompts"]) == 1
    out, err = capsys.readouterr()
    assert "rows kept            2" in out and "p.txt line 2: undecodable_line" in err
    assert main(["data", str(path), "--prompts", "--on-bad-rows", "skip"]) == 0
    good = write_jsonl(tmp_path / "q.jsonl", [{"question": "Why?"}])
    assert main(["data", str(good), "--prompts", "--column", "question"]) == 0
    assert main(["data", str(tmp_path / "missing.txt"), "--prompts"]) == 1
    assert "no such file" in capsys.readouterr().err
