"""Smoke tests for the benchmark scripts that have no timing target (they must not rot)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reward_ceiling_on_the_micro_run(micro_run, capsys):
    ceiling = _load("reward_ceiling")
    assert ceiling.main(["--run-dir", str(micro_run), "--n-prompts", "5", "--samples", "4"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n_prompts"] == 5 and out["samples"] == 4
    assert set(out["best_of_n"]) == {"2", "4"}
    # best-of-n includes the first sample, so it never scores below it; gains grow with n
    gains = [out["best_of_n"][k]["score_gain_in_sft_std"] for k in ("2", "4")]
    assert 0 <= gains[0] <= gains[1]
    assert math.isclose(out["best_of_n"]["4"]["kl_bound"], math.log(4) - 3 / 4, abs_tol=1e-4)
    assert 0 <= out["sft_gold"] <= 1  # the micro recipe uses the embedded dataset
    # the gold judge's own best-of-n: the best gold among more samples is never lower, and at least the proxy's
    oracle = [out["gold_best_of_n"][k]["gold"] for k in ("2", "4")]
    assert oracle[0] <= oracle[1] <= 1
    assert all(out["gold_best_of_n"][k]["gold"] >= out["best_of_n"][k]["gold"] for k in ("2", "4"))
    # the gold judge agrees with every embedded label: chosen responses score above rejected ones
    assert out["dataset_chosen"]["gold"] > out["dataset_rejected"]["gold"]


def test_reward_ceiling_names_a_missing_run(tmp_path, capsys):
    ceiling = _load("reward_ceiling")
    assert ceiling.main(["--run-dir", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_reward_ceiling_refuses_empty_sampling(tmp_path, capsys):
    ceiling = _load("reward_ceiling")
    with pytest.raises(SystemExit) as e:
        ceiling.main(["--run-dir", str(tmp_path), "--samples", "0"])
    assert e.value.code == 2 and "--samples (0)" in capsys.readouterr().err
