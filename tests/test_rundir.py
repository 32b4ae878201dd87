"""Stage outputs are swapped in atomically; a failed run never destroys a good one."""

from __future__ import annotations

import json

import pytest

from gpt2_rlhf.train.rundir import COMPLETE, StageError, StageWriter, is_complete, require_stage, write_json


def _finish(run, stage, value, **kw):
    with StageWriter(run, stage, **kw) as w:
        (w.path / "weights.txt").write_text(value)
        w.finish(metrics={"value": value}, config={"x": 1})


def test_finish_swaps_in_a_complete_stage(tmp_path):
    _finish(tmp_path, "sft", "one")
    assert is_complete(tmp_path / "sft")
    assert json.loads((tmp_path / "sft" / "metrics.json").read_text()) == {"value": "one"}
    assert (tmp_path / "sft" / "config.yaml").read_text() == "x: 1\n"
    assert not (tmp_path / "sft.partial").exists()
    assert json.loads((tmp_path / "sft" / COMPLETE).read_text())["stage"] == "sft"


def test_failed_run_keeps_the_previous_good_output(tmp_path):
    _finish(tmp_path, "sft", "good")
    with pytest.raises(RuntimeError):
        with StageWriter(tmp_path, "sft") as w:
            (w.path / "weights.txt").write_text("half")
            raise RuntimeError("killed")
    assert (tmp_path / "sft" / "weights.txt").read_text() == "good"
    assert (tmp_path / "sft.partial" / "weights.txt").read_text() == "half"  # kept for --resume
    assert not is_complete(tmp_path / "sft.partial")


def test_resume_keeps_partial_and_fresh_start_clears_it(tmp_path):
    (tmp_path / "sft.partial" / "checkpoints").mkdir(parents=True)
    (tmp_path / "sft.partial" / "checkpoints" / "step-3").write_text("ckpt")
    with StageWriter(tmp_path, "sft", resume=True) as w:
        assert (w.checkpoints / "step-3").exists()
    with StageWriter(tmp_path, "sft", resume=False) as w:
        assert not w.checkpoints.exists()


def test_second_run_replaces_the_first(tmp_path):
    _finish(tmp_path, "sft", "one")
    _finish(tmp_path, "sft", "two")
    assert (tmp_path / "sft" / "weights.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]


def test_require_stage_names_the_problem(tmp_path):
    with pytest.raises(StageError, match="does not exist"):
        require_stage(tmp_path / "sft", "sft model")
    (tmp_path / "sft").mkdir()
    with pytest.raises(StageError, match="no COMPLETE marker"):
        require_stage(tmp_path / "sft", "sft model")
    (tmp_path / "sft" / COMPLETE).write_text("{}")
    assert require_stage(tmp_path / "sft", "sft model") == tmp_path / "sft"


def test_write_json_refuses_nan_and_leaves_old_file(tmp_path):
    p = tmp_path / "m.json"
    write_json(p, {"a": 1})
    with pytest.raises(ValueError):
        write_json(p, {"a": float("nan")})
    assert json.loads(p.read_text()) == {"a": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["m.json"]
