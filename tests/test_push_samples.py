"""`rlhf push` also pushes the evaluation samples as a Hub dataset: the run's eval/samples.jsonl and
eval/report.json, and a dataset card whose counts are the file's, linked from the model cards' `model-index`.

The real HfApi against the local stand-in for the Hub (tests/hub_stub.py), on a fabricated run
(tests/fake_run.py), as in tests/test_hub.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard, ModelCard

from tests.fake_run import make_run
from tests.test_hub import TOKEN, hub_env, run  # noqa: F401 (fixtures)
from gpt2_rlhf.cli import main
from gpt2_rlhf.model_card.publish import PushError, push

SAMPLES_ID = "alice/tiny-eval-samples"  # the default: the policy's repo id + "-eval-samples"


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def save(files: dict[str, bytes], folder: Path) -> Path:
    """A pushed repo's files in a local folder (as a download would leave them)."""
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def body(card_text: str) -> str:
    """A card without its YAML front matter."""
    return card_text.split("\n---\n", 1)[1]


def test_push_creates_the_samples_dataset_with_the_run_files_and_a_counted_card(run, hub_env, tmp_path):
    push(run, "alice/tiny", endpoint=hub_env.url, token=TOKEN, out=lambda s: None)
    repo = hub_env.repos[("dataset", SAMPLES_ID)]
    files = hub_env.files(SAMPLES_ID, "dataset")
    assert sorted(files) == ["README.md", "eval/report.json", "eval/samples.jsonl"]
    assert not repo.private and [c.repo_type for c in hub_env.commits if c.repo_id == SAMPLES_ID] == ["dataset"]
    # exactly the files the evaluation wrote
    assert files["eval/samples.jsonl"] == (run / "eval" / "samples.jsonl").read_bytes()
    assert files["eval/report.json"] == (run / "eval" / "report.json").read_bytes()

    folder = save(files, tmp_path / "dataset")
    card = DatasetCard.load(folder / "README.md")
    assert card.data.configs == [{"config_name": "default",
                                  "data_files": [{"split": "test", "path": "eval/samples.jsonl"}]}]
    assert card.data.license == "mit" and card.data.tags == ["gpt2-rlhf", "rlhf", "evaluation"]
    assert card.data.pretty_name == "alice/tiny evaluation samples"
    text = body((folder / "README.md").read_text())
    assert "[alice/tiny](https://huggingface.co/alice/tiny)" in text  # the model it evaluates
    assert f'load_dataset("{SAMPLES_ID}", split="test")' in text

    # the counts, from the file
    rows = rows_of(run / "eval" / "samples.jsonl")
    models = list(rows[0]["responses"])
    per_prompt = {len(r["samples"]) for r in rows}
    assert len(per_prompt) == 1  # the fabricated evaluation sampled every prompt as often
    k = per_prompt.pop()
    m = re.search(r"(\d+) rows, one per prompt \((\d+) distinct prompts\)\. (\d+) models, by key: (.*?); "
                  r"(\d+) sampled responses per prompt and model \((\d+) per model\)", text)
    assert m, text
    assert [int(m.group(i)) for i in (1, 2, 3, 5, 6)] == [len(rows), len({r["prompt"] for r in rows}), len(models),
                                                          k, k * len(rows)]
    assert re.findall(r"`(\w+)` for", m.group(4)) == models
    # every field of a row is described, and every number of the card is one of those counts (or the version)
    for field in rows[0]:
        assert f"| `{field}` |" in text, field
    report = json.loads((run / "eval" / "report.json").read_text())
    counted = {str(n) for n in (len(rows), len({r["prompt"] for r in rows}), len(models), k, k * len(rows))}
    numbers = set(re.findall(r"\d+(?:\.\d+)*", text.replace(report["versions"]["gpt2_rlhf"], "")
                             .replace("gpt2", "").replace("https://huggingface.co/", "")))
    assert numbers <= counted, numbers - counted


def test_the_pushed_samples_load_with_datasets_as_the_same_rows(run, hub_env, tmp_path):
    from datasets import load_dataset

    push(run, "alice/tiny", endpoint=hub_env.url, token=TOKEN, out=lambda s: None)
    folder = save(hub_env.files(SAMPLES_ID, "dataset"), tmp_path / "dataset")
    rows = rows_of(run / "eval" / "samples.jsonl")
    cache = str(tmp_path / "datasets-cache")
    by_file = load_dataset("json", data_files=str(folder / "eval" / "samples.jsonl"), split="train", cache_dir=cache)
    assert by_file.to_list() == rows
    # the repo as the Hub's viewer and load_dataset(ID) read it: the card's `configs:` give the test split
    by_card = load_dataset(str(folder), cache_dir=cache)
    assert list(by_card) == ["test"] and by_card["test"].to_list() == rows


def test_every_card_points_its_model_index_at_the_dataset(run, hub_env, tmp_path):
    push(run, "alice/tiny", sft_repo_id="alice/tiny-sft", reward_repo_id="alice/tiny-rm", endpoint=hub_env.url,
         token=TOKEN, out=lambda s: None)
    for rid in ("alice/tiny", "alice/tiny-sft", "alice/tiny-rm"):
        (tmp_path / "card.md").write_bytes(hub_env.files(rid)["README.md"])
        results = ModelCard.load(tmp_path / "card.md").data.eval_results
        assert results, rid
        assert {(r.source_name, r.source_url) for r in results} == {
            ("gpt2-rlhf evaluation samples and report", f"https://huggingface.co/datasets/{SAMPLES_ID}")}, rid
    # the policy card's text links it too
    assert f"https://huggingface.co/datasets/{SAMPLES_ID}" in hub_env.files("alice/tiny")["README.md"].decode()
    # the card's options say so, for `rlhf reproduce` to render the same card again
    assert json.loads(hub_env.files("alice/tiny")["card.json"])["options"]["samples_repo_id"] == SAMPLES_ID


def test_no_samples_pushes_no_dataset_and_keeps_the_report_as_the_source(run, hub_env, tmp_path, monkeypatch, capsys):
    assert main(["push", str(run), "--repo-id", "alice/tiny", "--no-samples", "--dry-run"]) == 0
    assert "dataset repo" not in capsys.readouterr().out and hub_env.requests == []
    push(run, "alice/tiny", samples=False, endpoint=hub_env.url, token=TOKEN, out=lambda s: None)
    assert [t for t, _ in hub_env.repos] == ["model"]
    (tmp_path / "card.md").write_bytes(hub_env.files("alice/tiny")["README.md"])
    assert {r.source_url for r in ModelCard.load(tmp_path / "card.md").data.eval_results} == {
        "https://huggingface.co/alice/tiny/blob/main/eval/report.json"}
    assert json.loads(hub_env.files("alice/tiny")["card.json"])["options"]["samples_repo_id"] is None


def test_dry_run_lists_the_dataset_and_its_card_metadata(run, hub_env, capsys):
    assert main(["push", str(run), "--repo-id", "alice/tiny", "--samples-repo-id", "alice/evals", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert hub_env.requests == []
    section = out.split("dataset repo alice/evals (samples;", 1)[1].split("\nmodel repo ", 1)[0]
    for line in ("README.md", "eval/report.json", "eval/samples.jsonl", "configs:", "- split: test",
                 "path: eval/samples.jsonl", "license: mit"):
        assert line in section, line
    assert "https://huggingface.co/datasets/alice/evals" in out  # the policy card's model-index source


def test_the_recipe_names_the_dataset_and_revision_pushes_leave_it_on_main(tmp_path, hub_env):
    run = make_run(tmp_path / "run", hub={"retry_backoff_s": 0.0, "samples_repo_id": "alice/evals"})
    push(run, "alice/tiny", revision="v1", endpoint=hub_env.url, token=TOKEN, out=lambda s: None)
    assert set(hub_env.repos) == {("dataset", "alice/evals"), ("model", "alice/tiny")}
    assert "eval/samples.jsonl" in hub_env.files("alice/evals", "dataset")  # main: what the viewer reads
    assert "README.md" in hub_env.files("alice/tiny", revision="v1")


def test_bad_samples_repo_ids_fail_in_one_line_before_anything_is_sent(run, hub_env, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(["push", str(run), "--repo-id", "alice/tiny", "--samples-repo-id", "bad..id"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err == ["rlhf push: error: --samples-repo-id: 'bad..id' is not a Hub repo id (namespace/name)"]
    long_name = "alice/" + "x" * 90  # a valid repo id whose derived dataset id is too long
    with pytest.raises(PushError, match="derived samples dataset id .* pass --samples-repo-id"):
        push(run, long_name, endpoint=hub_env.url, out=lambda s: None)
    with pytest.raises(SystemExit):  # one or the other
        main(["push", str(run), "--repo-id", "alice/tiny", "--samples-repo-id", "alice/evals", "--no-samples"])
    assert hub_env.requests == []
