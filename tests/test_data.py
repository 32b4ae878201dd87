"""Loading and validating preference data (train/data.py)."""

from __future__ import annotations

import functools

import dataclasses
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt2_rlhf.train.data import (
    ASSISTANT_TAG,
    PROBLEM_KINDS,
    DataConfig,
    DataError,
    DataReport,
    NoAssistantTurnError,
    load_preferences,
    split_prompt_response,
    validate_command,
)

# Validation tests read a whole single file as one split (file_test_fraction 0);
# the train/test cut of single files has its own tests below.
WholeFile = functools.partial(DataConfig, file_test_fraction=0.0)

PROMPT = "\n\nHuman: How do I cook rice?\n\nAssistant:"


def pair(i: int = 0, prompt: str = PROMPT) -> dict[str, str]:
    return {"chosen": f"{prompt} Rinse the rice first ({i}).", "rejected": f"{prompt} No idea ({i})."}


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    """Objects become JSON lines; bytes and str are written as they are (for broken lines)."""
    out = b""
    for line in lines:
        if isinstance(line, bytes):
            out += line + b"\n"
        elif isinstance(line, str):
            out += line.encode() + b"\n"
        else:
            out += json.dumps(line).encode() + b"\n"
    path.write_bytes(out)
    return path


class WordTokenizer:
    """A stand-in for a Hugging Face tokenizer: one token per whitespace-separated word."""

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[str]]]:
        return {"input_ids": [t.split() for t in texts]}


# Each bad line, the problem kind it must produce and a fragment of the reason.
BAD_LINES: list[tuple[str, Any, str]] = [
    ("undecodable_line", b'{"chosen": "\xff\xfe", "rejected": "x"}', "not valid UTF-8"),
    ("undecodable_line", '{"chosen": "unterminated', "bad JSON"),
    ("missing_field", {"chosen": PROMPT + " a"}, "no 'rejected' field"),
    ("missing_field", ["not", "an", "object"], "expected an object"),
    ("not_a_string", {"chosen": PROMPT + " a", "rejected": 5}, "'rejected' is int"),
    ("not_a_string", {"chosen": None, "rejected": PROMPT + " b"}, "'chosen' is null"),
    ("empty_response", {"chosen": PROMPT + "   ", "rejected": PROMPT + " b"}, "chosen response is empty"),
    ("empty_response", {"chosen": PROMPT + " a", "rejected": PROMPT}, "rejected response is empty"),
    ("no_assistant_turn", {"chosen": "\n\nHuman: hi there", "rejected": PROMPT + " b"}, "no '\\n\\nAssistant:' turn"),
    ("prompt_mismatch", {"chosen": PROMPT + " a", "rejected": "\n\nHuman: Other?\n\nAssistant: b"},
     "chosen and rejected have different prompts"),
    ("identical_responses", {"chosen": PROMPT + " same", "rejected": PROMPT + " same "}, "identical"),
    ("too_long", {"chosen": PROMPT + " " + "word " * 40, "rejected": PROMPT + " b"}, "> max_length 20"),
]


def _file_with_bad_line(tmp_path: Path, bad: Any) -> Path:
    # Line 3 is blank (skipped but counted), so the bad line is line 4.
    return write_jsonl(tmp_path / "train.jsonl", [pair(0), pair(1), "", bad, pair(2)])


@pytest.mark.parametrize(("kind", "bad", "reason"), BAD_LINES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BAD_LINES)])
def test_problem_error_policy_names_file_line_and_reason(tmp_path: Path, kind: str, bad: Any, reason: str) -> None:
    path = _file_with_bad_line(tmp_path, bad)
    cfg = WholeFile(dataset=str(path), on_bad_rows="error")
    with pytest.raises(DataError) as info:
        load_preferences(cfg, "train", tokenizer=WordTokenizer(), max_length=20)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path} line 4: {kind}: ")
    assert reason in message
    assert info.value.kind == kind


@pytest.mark.parametrize(("kind", "bad", "reason"), BAD_LINES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BAD_LINES)])
def test_problem_skip_policy_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str, bad: Any,
                                    reason: str) -> None:
    path = _file_with_bad_line(tmp_path, bad)
    rows, report = load_preferences(WholeFile(dataset=str(path)), "train", tokenizer=WordTokenizer(), max_length=20)
    assert len(rows) == report.rows_kept == 3
    assert report.rows_read == 4 and report.blank_lines == 1
    assert report.problems == {k: int(k == kind) for k in PROBLEM_KINDS}
    assert report.examples[kind][0].startswith(f"{path} line 4: ") and reason in report.examples[kind][0]
    assert report.first_problem() == f"{path} line 4: {kind}: " + report.examples[kind][0].split(": ", 1)[1]
    assert f"{kind}=1" in caplog.text  # the warning summary: nothing is dropped silently


def test_too_long_needs_tokenizer_and_max_length(tmp_path: Path) -> None:
    path = _file_with_bad_line(tmp_path, dict(BAD_LINES[-1][1]))
    rows, report = load_preferences(WholeFile(dataset=str(path)), "train")
    assert len(rows) == 4 and report.n_problems == 0


def test_rows_follow_the_design_contract(tmp_path: Path) -> None:
    multi = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Rice?\n\nAssistant:"
    path = write_jsonl(tmp_path / "d.jsonl", [pair(0), pair(1, multi)])
    rows, report = load_preferences(WholeFile(dataset=str(path)), "train")
    assert report.source == str(path) and report.rows_kept == 2
    assert rows[1] == {"prompt": multi, "chosen": " Rinse the rice first (1).", "rejected": " No idea (1)."}
    for row, raw in zip(rows, [pair(0), pair(1, multi)]):
        assert row["prompt"].endswith(ASSISTANT_TAG)
        assert row["prompt"] + row["chosen"] == raw["chosen"]
        assert row["prompt"] + row["rejected"] == raw["rejected"]


def test_jsonl_json_and_parquet_load_identically(tmp_path: Path) -> None:
    raw = [pair(i) for i in range(7)] + [{"chosen": PROMPT + " é ☃ \u2028 x", "rejected": PROMPT + " y"}]
    jsonl = write_jsonl(tmp_path / "d.jsonl", raw)
    (tmp_path / "d.json").write_text(json.dumps(raw), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(raw), tmp_path / "d.parquet")
    loaded = [load_preferences(WholeFile(dataset=str(p)), "train")[0]
              for p in (jsonl, tmp_path / "d.json", tmp_path / "d.parquet")]
    assert loaded[0] == loaded[1] == loaded[2]
    assert len(loaded[0]) == 8


def test_parquet_and_json_problems_name_the_row_index(tmp_path: Path) -> None:
    raw = [pair(0), {"chosen": PROMPT + " a", "rejected": "\n\nHuman: x\n\nAssistant: b"}]
    pq.write_table(pa.Table.from_pylist(raw), tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(json.dumps(raw))
    for name in ("d.parquet", "d.json"):
        path = tmp_path / name
        with pytest.raises(DataError, match=rf"^{path} row 1: prompt_mismatch: "):
            load_preferences(WholeFile(dataset=str(path), on_bad_rows="error"), "train")


def test_jsonl_saved_as_json_is_read_line_by_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "lines.json", [pair(0), pair(1)])
    rows, _ = load_preferences(WholeFile(dataset=str(path)), "train")
    assert len(rows) == 2


def test_folder_with_splits_and_the_embedded_set(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [pair(i) for i in range(3)])
    pq.write_table(pa.Table.from_pylist([pair(9)]), tmp_path / "test.parquet")
    cfg = WholeFile(dataset=str(tmp_path))
    assert len(load_preferences(cfg, "train")[0]) == 3
    rows, report = load_preferences(cfg, "test")
    assert report.source == str(tmp_path / "test.parquet") and len(rows) == 1
    with pytest.raises(DataError, match="split 'validation' not found"):
        load_preferences(cfg, "validation")

    train, report = load_preferences(DataConfig(), "train")
    assert len(train) >= 2400 and report.n_problems == 0
    test, _ = load_preferences(DataConfig(max_test_pairs=32), "test")
    assert len(test) == 32
    assert all(r["prompt"].endswith(ASSISTANT_TAG) and r["chosen"].startswith(" ") for r in test)


def test_max_pairs_keeps_the_first_valid_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [pair(0), {"chosen": 1}, pair(1), pair(2), pair(3)])
    rows, report = load_preferences(WholeFile(dataset=str(path), max_train_pairs=2), "train")
    assert [r["chosen"] for r in rows] == [" Rinse the rice first (0).", " Rinse the rice first (1)."]
    assert report.stopped_early and report.rows_read == 3 and report.problems["missing_field"] == 1


def test_column_mapping_for_presplit_data(tmp_path: Path) -> None:
    raw = [
        {"question": PROMPT, "good": " Rinse it.", "bad": " No."},
        {"question": "How do I cook rice?", "good": "Rinse it.", "bad": "No."},  # bare prompt: gets the HH frame
        {"question": "\n\nHuman: Rice?", "good": " a", "bad": " b"},  # has markers but no final Assistant turn
    ]
    pq.write_table(pa.Table.from_pylist(raw), tmp_path / "d.parquet")
    cfg = WholeFile(dataset=str(tmp_path / "d.parquet"), prompt_column="question", chosen_column="good",
                     rejected_column="bad")
    rows, report = load_preferences(cfg, "train")
    assert rows[0] == {"prompt": PROMPT, "chosen": " Rinse it.", "rejected": " No."}
    assert rows[1] == rows[0]
    assert report.problems["no_assistant_turn"] == 1
    assert "'question' does not end with" in report.examples["no_assistant_turn"][0]

    # Renamed HH columns (no prompt column): whole dialogues, split as usual.
    path = write_jsonl(tmp_path / "renamed.jsonl", [{"win": p["chosen"], "lose": p["rejected"]} for p in (pair(0),)])
    rows, _ = load_preferences(WholeFile(dataset=str(path), chosen_column="win", rejected_column="lose"), "train")
    assert rows[0]["prompt"] == PROMPT

    with pytest.raises(DataError, match=r"line 1: missing_field: no 'question' field \(fields: win, lose\)"):
        load_preferences(WholeFile(dataset=str(path), prompt_column="question", chosen_column="good",
                                    on_bad_rows="error"), "train")


def test_empty_split_and_all_bad_rows_are_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n\n")
    with pytest.raises(DataError, match=rf"^{empty}: split 'train' is empty$"):
        load_preferences(WholeFile(dataset=str(empty)), "train")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"x": 1}, {"y": 2}])
    with pytest.raises(DataError, match=r"no usable rows in split 'test': all 2 rows had problems \(missing_field=2"):
        load_preferences(WholeFile(dataset=str(bad)), "test")
    pq.write_table(pa.Table.from_pylist([], schema=pa.schema([("chosen", pa.string()), ("rejected", pa.string())])),
                   tmp_path / "e.parquet")
    with pytest.raises(DataError, match="is empty"):
        load_preferences(WholeFile(dataset=str(tmp_path / "e.parquet")), "train")


def test_missing_or_unreadable_files(tmp_path: Path) -> None:
    for missing in (str(tmp_path / "nope.jsonl"), "data/nope.parquet", "./somewhere"):
        with pytest.raises(DataError, match=rf"^{missing}: no such file or folder$"):
            load_preferences(DataConfig(dataset=missing), "train")
    (tmp_path / "d.csv").write_text("chosen,rejected\n")
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        load_preferences(WholeFile(dataset=str(tmp_path / "d.csv")), "train")
    (tmp_path / "broken.json").write_text('[{"chosen": ')
    with pytest.raises(DataError, match=r"broken.json line 1: bad JSON"):
        load_preferences(WholeFile(dataset=str(tmp_path / "broken.json")), "train")
    (tmp_path / "obj.json").write_text('{"rows": []}')
    with pytest.raises(DataError, match="expected a JSON array"):
        load_preferences(WholeFile(dataset=str(tmp_path / "obj.json")), "train")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read Parquet"):
        load_preferences(WholeFile(dataset=str(tmp_path / "junk.parquet")), "train")


def test_offline_hub_id_is_a_one_line_error(hub_offline, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    cfg = DataConfig(dataset="Anthropic/hh-rlhf", data_dir="harmless-base")
    with pytest.raises(DataError) as info:
        load_preferences(cfg, "test")
    message = str(info.value)
    assert "\n" not in message
    assert "Anthropic/hh-rlhf" in message and "'test'" in message and "HF_HUB_OFFLINE" in message


def test_data_config_validates_itself() -> None:
    with pytest.raises(ValueError, match="on_bad_rows"):
        DataConfig(on_bad_rows="ignore")
    with pytest.raises(ValueError, match="max_train_pairs"):
        DataConfig(max_train_pairs=0)
    with pytest.raises(ValueError, match="dataset"):
        DataConfig(dataset="")
    with pytest.raises(ValueError, match="column"):
        DataConfig(prompt_column="x", chosen_column="x")
    for f in dataclasses.fields(DataConfig):
        assert f.metadata.get("help"), f.name
    assert DataConfig().max_pairs("train") is None


def test_report_format_lists_every_kind() -> None:
    report = DataReport(source="s", split="train", rows_read=3, rows_kept=2)
    report._record("s line 2", "prompt_mismatch", "chosen and rejected have different prompts")
    text = report.format()
    assert all(kind in text for kind in PROBLEM_KINDS)
    assert "rows read            3" in text and report.as_dict()["problems"]["prompt_mismatch"] == 1


TEXT_PIECES = st.one_of(st.text(max_size=12), st.sampled_from(["\n\nAssistant:", "\n\nHuman:", "Assistant:", "\n"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXT_PIECES, max_size=8).map("".join))
def test_split_prompt_response_keeps_the_text(text: str) -> None:
    if ASSISTANT_TAG not in text:
        with pytest.raises(NoAssistantTurnError):
            split_prompt_response(text)
        return
    prompt, response = split_prompt_response(text)
    assert prompt + response == text
    assert prompt.endswith(ASSISTANT_TAG)
    assert ASSISTANT_TAG not in response


def test_validate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [pair(0), pair(1), {"chosen": PROMPT + " a", "rejected": PROMPT + " a"}])
    write_jsonl(folder / "test.jsonl", [pair(2)])

    assert validate_command(str(folder), on_bad_rows="skip") == 0
    out = capsys.readouterr().out
    assert "rows read            3" in out and "rows kept            2" in out
    assert "identical_responses  1" in out and out.count("too_long") == 2  # both splits, every kind

    assert validate_command(str(folder)) == 1  # policy error: the bad row fails the command
    captured = capsys.readouterr()
    assert captured.err.strip() == f"{folder / 'train.jsonl'} line 3: identical_responses: " \
                                   "chosen and rejected responses are identical"
    assert "rows kept            2" in captured.out  # full counts are still printed

    assert validate_command(str(folder), split="test") == 0
    assert "test:" in capsys.readouterr().out

    assert validate_command(str(folder / "missing.jsonl")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.jsonl: no such file or folder" in err

    presplit = write_jsonl(tmp_path / "p.jsonl", [{"q": "Rice?", "c": "Rinse.", "r": "No."}])
    assert validate_command(str(presplit), columns=("q", "c", "r")) == 0
    assert validate_command(str(presplit), columns=("q", "c")) == 1
    capsys.readouterr()

    all_bad = write_jsonl(tmp_path / "bad.jsonl", [{"chosen": PROMPT + " a"}])
    assert validate_command(str(all_bad), on_bad_rows="skip") == 1
    captured = capsys.readouterr()
    assert "missing_field        1" in captured.out and "no usable rows" in captured.err

    long_file = write_jsonl(tmp_path / "long.jsonl", [pair(0)])
    assert validate_command(str(long_file), max_length=3) == 1  # too_long needs a tokenizer
    assert "tokenizer" in capsys.readouterr().err


@pytest.mark.parametrize("n,fraction,n_test", [(10, 0.1, 1), (10, 0.25, 3), (3, 0.1, 1), (1, 0.1, 0)])
def test_a_single_file_is_cut_into_train_then_test(tmp_path: Path, n: int, fraction: float, n_test: int) -> None:
    path = tmp_path / "pairs.jsonl"
    rows = [{"chosen": f"\n\nHuman: q{i}\n\nAssistant: yes {i}", "rejected": f"\n\nHuman: q{i}\n\nAssistant: no"}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(dataset=str(path), file_test_fraction=fraction)
    train, _ = load_preferences(cfg, "train")
    assert [r["chosen"] for r in train] == [f" yes {i}" for i in range(n - n_test)]
    if n_test:
        test, report = load_preferences(cfg, "test")
        assert [r["chosen"] for r in test] == [f" yes {i}" for i in range(n - n_test, n)]
        assert f"last {n_test} of {n} rows" in report.source
    else:
        with pytest.raises(DataError, match="empty"):
            load_preferences(cfg, "test")


def test_file_test_fraction_zero_uses_the_whole_file_and_says_so(tmp_path: Path, caplog) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}) + "\n")
    cfg = DataConfig(dataset=str(path), file_test_fraction=0.0)
    assert load_preferences(cfg, "train")[0] == load_preferences(cfg, "test")[0]
    assert "measured on training rows" in caplog.text
    with pytest.raises(ValueError, match="file_test_fraction"):
        DataConfig(file_test_fraction=1.0)
