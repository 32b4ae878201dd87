"""The preference formats Hugging Face users have (train/data.py): TRL's explicit-prompt strings, TRL's
conversational messages (with and without a prompt list, as in trl-lib/hh-rlhf-helpful-base), a folder
written by datasets' save_to_disk, and a Hub id with a configuration name. The same pairs loaded from
every format compare equal to the HH text they came from."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpt2_rlhf.train.data import (
    DataConfig,
    DataError,
    PromptsConfig,
    load_preferences,
    load_prompts,
    messages_to_text,
    validate_command,
)

# Rows in the style of Anthropic HH's helpful-base (multi-turn, a bare single turn, a third), as HH text.
HH = [
    {"chosen": "\n\nHuman: Hi, I want to learn to play horseshoes. Can you teach me?\n\nAssistant: I can, but "
               "maybe I should begin by telling you that a typical game consists of 2 players and 6 or 8 "
               "horseshoes.\n\nHuman: Okay. What else is needed to play, and what are the rules?\n\nAssistant: "
               "You need two stakes about 40 feet apart. Players take turns pitching two horseshoes each, and a "
               "horseshoe that circles the stake, a ringer, scores three points.",
     "rejected": "\n\nHuman: Hi, I want to learn to play horseshoes. Can you teach me?\n\nAssistant: I can, but "
                 "maybe I should begin by telling you that a typical game consists of 2 players and 6 or 8 "
                 "horseshoes.\n\nHuman: Okay. What else is needed to play, and what are the rules?\n\nAssistant: "
                 "Horseshoes are either metal or plastic discs."},
    {"chosen": "\n\nHuman: How do I teach kids to meditate?\n\nAssistant: Start with one or two minutes. Ask "
               "them to sit comfortably, close their eyes and count their breaths up to ten.",
     "rejected": "\n\nHuman: How do I teach kids to meditate?\n\nAssistant: Kids can't meditate."},
    {"chosen": "\n\nHuman: What is a good way to store fresh basil?\n\nAssistant: Trim the stems and keep it in "
               "a glass of water on the counter, loosely covered with a bag.\n\nHuman: Not in the fridge?"
               "\n\nAssistant: No: the cold turns the leaves black within a day or two.",
     "rejected": "\n\nHuman: What is a good way to store fresh basil?\n\nAssistant: Trim the stems and keep it "
                 "in a glass of water on the counter, loosely covered with a bag.\n\nHuman: Not in the fridge?"
                 "\n\nAssistant: Yes, the fridge is best for basil."},
]


def _messages(text: str) -> list[dict[str, str]]:
    """HH text -> TRL messages, the way TRL's HH mirrors were made (split at the markers, content stripped)."""
    out = []
    for turn in text.split("\n\n")[1:]:
        role, _, content = turn.partition(":")
        out.append({"role": {"Human": "user", "Assistant": "assistant"}[role], "content": content.strip()})
    return out


def _split(text: str) -> tuple[str, str]:
    cut = text.rfind("\n\nAssistant:") + len("\n\nAssistant:")
    return text[:cut], text[cut:]


def explicit_rows() -> list[dict[str, str]]:
    """TRL's standard format with an explicit prompt: prompt / chosen / rejected strings."""
    return [{"prompt": _split(r["chosen"])[0], "chosen": _split(r["chosen"])[1],
             "rejected": _split(r["rejected"])[1]} for r in HH]


def conversational_rows() -> list[dict]:
    """TRL's conversational format without a prompt: whole conversations (trl-lib/hh-rlhf-helpful-base)."""
    return [{"chosen": _messages(r["chosen"]), "rejected": _messages(r["rejected"])} for r in HH]


def conversational_prompt_rows() -> list[dict]:
    """TRL's conversational format with a prompt: the prompt's messages, then one assistant message each."""
    out = []
    for r in HH:
        chosen, rejected = _messages(r["chosen"]), _messages(r["rejected"])
        out.append({"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]})
    return out


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _load(dataset: str, split: str = "train", **kw) -> list[dict[str, str]]:
    return load_preferences(DataConfig(dataset=dataset, file_test_fraction=0.0, on_bad_rows="error", **kw), split)[0]


@pytest.fixture
def expected(tmp_path: Path) -> list[dict[str, str]]:
    return _load(str(_jsonl(tmp_path / "hh.jsonl", HH)))


def test_the_hh_rows_are_what_the_design_says(expected):
    assert len(expected) == 3
    assert expected[0]["prompt"].count("\n\nHuman:") == 2 and expected[0]["chosen"].startswith(" You need two")
    assert [r["prompt"] + r["chosen"] for r in expected] == [r["chosen"] for r in HH]


def test_explicit_prompt_strings_are_found_without_columns(tmp_path: Path, expected):
    """Before: no_assistant_turn on every row unless --columns prompt,chosen,rejected was given."""
    assert _load(str(_jsonl(tmp_path / "explicit.jsonl", explicit_rows()))) == expected
    # TRL's own examples have a bare prompt and responses without the leading space: the HH frame is added.
    bare = [{"prompt": "How do I teach kids to meditate?", "chosen": expected[1]["chosen"].strip(),
             "rejected": expected[1]["rejected"].strip()}]
    assert _load(str(_jsonl(tmp_path / "bare.jsonl", bare))) == [expected[1]]
    # A prompt column beside whole HH dialogues (as some HH copies carry) does not change them.
    with_prompt = [{**r, "prompt": _split(r["chosen"])[0]} for r in HH]
    assert _load(str(_jsonl(tmp_path / "hh_plus_prompt.jsonl", with_prompt))) == expected


def test_conversational_rows_become_hh_text(tmp_path: Path, expected):
    assert _load(str(_jsonl(tmp_path / "conv.jsonl", conversational_rows()))) == expected
    assert _load(str(_jsonl(tmp_path / "conv_prompt.jsonl", conversational_prompt_rows()))) == expected
    # multi-turn structure kept: the horseshoe prompt's two Human turns and its earlier Assistant turn
    assert expected[0]["prompt"].startswith("\n\nHuman: Hi, I want to learn") and \
        expected[0]["prompt"].count("\n\nAssistant:") == 2
    assert messages_to_text(conversational_rows()[1]["chosen"], "chosen") == HH[1]["chosen"]


def test_every_format_loads_the_same_pairs(tmp_path: Path, expected, monkeypatch):
    sources: dict[str, str] = {}
    sources["hh jsonl"] = str(_jsonl(tmp_path / "hh.jsonl", HH))
    sources["explicit jsonl"] = str(_jsonl(tmp_path / "explicit.jsonl", explicit_rows()))
    sources["conversational jsonl"] = str(_jsonl(tmp_path / "conv.jsonl", conversational_rows()))
    sources["conversational + prompt jsonl"] = str(_jsonl(tmp_path / "conv_p.jsonl", conversational_prompt_rows()))
    (tmp_path / "conv.json").write_text(json.dumps(conversational_prompt_rows()))
    sources["conversational json"] = str(tmp_path / "conv.json")
    pq.write_table(pa.Table.from_pylist(conversational_rows()), tmp_path / "conv.parquet")
    sources["conversational parquet"] = str(tmp_path / "conv.parquet")
    pq.write_table(pa.Table.from_pylist(explicit_rows()), tmp_path / "explicit.parquet")
    sources["explicit parquet"] = str(tmp_path / "explicit.parquet")
    datasets.Dataset.from_list(conversational_prompt_rows()).save_to_disk(str(tmp_path / "saved_one"))
    sources["save_to_disk Dataset"] = str(tmp_path / "saved_one")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(conversational_rows()),
                          "test": datasets.Dataset.from_list(HH[:1])}).save_to_disk(str(tmp_path / "saved"))
    sources["save_to_disk DatasetDict"] = str(tmp_path / "saved")

    calls = []

    def fake_load(name, *config, data_dir=None, split=None):  # the Hub, offline: datasets.load_dataset's signature
        calls.append((name, config, split))
        return datasets.Dataset.from_list(conversational_prompt_rows())

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    sources["hub NAME:CONFIG"] = "someone/hh-mirror:helpful-base"
    loaded = {name: _load(source) for name, source in sources.items()}
    loaded["hub data.config"] = _load("someone/hh-mirror", config="helpful-base")
    for name, rows in loaded.items():
        assert rows == expected, name
    assert calls == [("someone/hh-mirror", ("helpful-base",), "train")] * 2
    assert _load(sources["save_to_disk DatasetDict"], "test") == expected[:1]


def test_save_to_disk_folders(tmp_path: Path, capsys):
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(HH),
                          "validation": datasets.Dataset.from_list(HH[:1])}).save_to_disk(str(folder))
    rows, report = load_preferences(DataConfig(dataset=str(folder)), "train")
    assert len(rows) == 3 and report.source == str(folder / "train")
    with pytest.raises(DataError, match=r"saved: split 'test' not found \(saved splits: train, validation\)"):
        load_preferences(DataConfig(dataset=str(folder)), "test")
    assert len(load_preferences(DataConfig(dataset=str(folder), test_split="validation"), "validation")[0]) == 1
    # rlhf data checks the saved splits it finds
    assert validate_command(str(folder)) == 0
    assert "train: " in capsys.readouterr().out
    # A saved Dataset is one split: cut like a single file
    datasets.Dataset.from_list(HH * 4).save_to_disk(str(tmp_path / "one"))
    cfg = DataConfig(dataset=str(tmp_path / "one"), file_test_fraction=0.25)
    assert len(load_preferences(cfg, "train")[0]) == 9 and len(load_preferences(cfg, "test")[0]) == 3
    # a bad row of a saved dataset is named by folder and row
    datasets.Dataset.from_list([HH[0], {"chosen": HH[1]["chosen"], "rejected": "no turn"}]).save_to_disk(
        str(tmp_path / "bad"))
    with pytest.raises(DataError, match=rf"^{tmp_path / 'bad'} row 1: no_assistant_turn: 'rejected'"):
        _load(str(tmp_path / "bad"))


def test_hub_configuration_name(monkeypatch):
    calls = []

    def fake_load(name, *config, data_dir=None, split=None):
        calls.append((name, config, data_dir, split))
        return datasets.Dataset.from_list(HH)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    rows, report = load_preferences(DataConfig(dataset="someone/hh:helpful"), "test")
    assert len(rows) == 3 and report.source == "someone/hh (config helpful) [test]"
    load_preferences(DataConfig(dataset="Anthropic/hh-rlhf", data_dir="helpful-base"), "train")
    assert calls == [("someone/hh", ("helpful",), None, "test"), ("Anthropic/hh-rlhf", (), "helpful-base", "train")]
    with pytest.raises(DataError, match=r"names configuration 'helpful' but data.config is 'harmless'"):
        load_preferences(DataConfig(dataset="someone/hh:helpful", config="harmless"), "train")
    with pytest.raises(DataError, match=r"expected NAME or NAME:CONFIG"):
        load_preferences(DataConfig(dataset="someone/hh:"), "train")
    with pytest.raises(DataError, match=r"^data.config 'helpful': a configuration name is for Hub datasets, and "
                                        r"embedded is not one$"):
        load_preferences(DataConfig(config="helpful"), "train")


def test_offline_hub_id_with_a_config_is_one_line(hub_offline, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError) as info:
        load_preferences(DataConfig(dataset="no-such-user/no-such-hh:helpful-base"), "train")
    message = str(info.value)
    assert "\n" not in message and "no-such-user/no-such-hh (config helpful-base)" in message
    assert "HF_HUB_OFFLINE" in message


PROMPT = [{"role": "user", "content": "How do I teach kids to meditate?"}]
ANSWER = [{"role": "assistant", "content": "Start with one minute."}]
OTHER = [{"role": "assistant", "content": "Kids can't."}]
# (row, problem kind, the reason's fragment): every check of a conversational row
BAD_CONVERSATIONS = [
    ({"prompt": PROMPT, "chosen": [{"role": "user", "content": "Start."}], "rejected": OTHER}, "bad_conversation",
     "'chosen' message 0: role 'user' where 'assistant' was expected"),
    ({"chosen": PROMPT + ANSWER, "rejected": PROMPT}, "bad_conversation",
     "'rejected' does not end with an assistant message"),
    ({"chosen": ANSWER + PROMPT + ANSWER, "rejected": PROMPT + OTHER}, "bad_conversation",
     "'chosen' message 0: role 'assistant' where 'user' was expected (roles alternate, starting with user)"),
    ({"chosen": PROMPT + ANSWER, "rejected": [{"role": "user", "content": "Other question?"}] + OTHER},
     "prompt_mismatch", "chosen and rejected have different prompts"),
    ({"prompt": PROMPT + ANSWER, "chosen": ANSWER, "rejected": OTHER}, "bad_conversation",
     "'prompt' does not end with a user message"),
    ({"chosen": [{"role": "system", "content": "Be nice."}] + PROMPT + ANSWER, "rejected": PROMPT + OTHER},
     "bad_conversation", "'chosen' message 0: role 'system' has no HH turn"),
    ({"chosen": PROMPT + [{"role": "assistant", "content": 3}], "rejected": PROMPT + OTHER}, "bad_conversation",
     "'chosen' message 1: content is int, not a string"),
    ({"chosen": PROMPT + [{"role": "assistant"}], "rejected": PROMPT + OTHER}, "bad_conversation",
     "'chosen' message 1: expected an object with 'role' and 'content', got dict with fields role"),
    ({"chosen": [], "rejected": PROMPT + OTHER}, "bad_conversation", "'chosen' has no messages"),
    ({"prompt": "How?", "chosen": ANSWER, "rejected": OTHER}, "bad_conversation",
     "'prompt' is str, but 'chosen' is a list of messages"),
    ({"chosen": PROMPT + [{"role": "assistant", "content": "Sure.\n\nHuman: and me?"}], "rejected": PROMPT + OTHER},
     "bad_conversation", "'chosen' message 1: content holds an HH turn marker"),
    ({"chosen": PROMPT + [{"role": "assistant", "content": " "}], "rejected": PROMPT + OTHER}, "empty_response",
     "chosen response is empty"),
    ({"chosen": PROMPT + ANSWER, "rejected": PROMPT + ANSWER}, "identical_responses", "identical"),
]


@pytest.mark.parametrize(("bad", "kind", "reason"), BAD_CONVERSATIONS,
                         ids=[f"{k}-{i}" for i, (_, k, _) in enumerate(BAD_CONVERSATIONS)])
def test_bad_conversations_are_one_line_naming_file_row_and_field(tmp_path: Path, bad, kind, reason):
    good = {"prompt": PROMPT, "chosen": ANSWER, "rejected": OTHER}
    path = _jsonl(tmp_path / "conv.jsonl", [good, bad])
    with pytest.raises(DataError) as info:
        _load(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path} line 2: {kind}: "), message
    assert reason in message
    rows, report = load_preferences(DataConfig(dataset=str(path), file_test_fraction=0.0), "train")
    assert len(rows) == 1 and report.problems[kind] == 1


def test_rlhf_data_reads_conversational_files(tmp_path: Path, capsys):
    path = _jsonl(tmp_path / "conv.jsonl", conversational_rows() + [{"chosen": PROMPT + ANSWER, "rejected": PROMPT}])
    assert validate_command(str(path), on_bad_rows="skip") == 0
    out = capsys.readouterr().out
    assert "rows read            4" in out and "rows kept            3" in out and "bad_conversation     1" in out
    assert validate_command(str(path)) == 1
    assert "line 4: bad_conversation: 'rejected' does not end with an assistant message" in capsys.readouterr().err


def test_prompt_only_data_takes_a_conversational_prompt_column(tmp_path: Path):
    rows = [{"prompt": r["prompt"]} for r in conversational_prompt_rows()] + [{"prompt": [{"role": "assistant",
                                                                                        "content": "x"}]}]
    path = _jsonl(tmp_path / "prompts.jsonl", rows)
    prompts, report = load_prompts(PromptsConfig(source=str(path), test_fraction=0.0), "train")
    assert prompts == [_split(r["chosen"])[0] for r in HH]
    assert report.problems["bad_conversation"] == 1
    assert "'prompt' message 0: role 'assistant' where 'user' was expected" in report.examples["bad_conversation"][0]
