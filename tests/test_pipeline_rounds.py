"""`rlhf run` with feedback rounds: which stage runs where, on whose inputs; and one end-to-end micro run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt2_rlhf.pipeline import plan, round_name
from gpt2_rlhf.stages import load_recipe


def test_round_names_keep_the_plain_name_for_the_last_round():
    assert [round_name("ppo", r, 3) for r in (1, 2, 3)] == ["ppo_round1", "ppo_round2", "ppo"]
    assert round_name("label", 1, 1) == "label"


def test_plan_of_two_rounds_wires_each_round_to_the_last(tmp_path):
    recipe = load_recipe("micro", {"stages": "base,sft,label,reward,ppo,eval", "label.rounds": "2"})
    steps = plan(recipe, tmp_path)
    assert [s.name for s in steps] == ["base", "sft", "label_round1", "reward_round1", "ppo_round1",
                                       "label", "reward", "ppo", "eval"]
    by = {s.name: s for s in steps}
    # round 1: SFT's samples; the reward model on round 1's labels; PPO from SFT against it
    assert by["label_round1"].recipe.label.policy == "auto"
    assert by["reward_round1"].recipe.reward.labels == [str(tmp_path / "label_round1")]
    r1 = by["ppo_round1"].recipe.ppo
    assert (r1.policy_path, r1.ref_path, r1.reward_model_path) == (None, None, str(tmp_path / "reward_round1"))
    # round 2: PPO's samples; every label so far; PPO continues round 1's policy, KL still to SFT
    assert by["label"].recipe.label.policy == str(tmp_path / "ppo_round1")
    assert by["reward"].recipe.reward.labels == [str(tmp_path / "label_round1"), str(tmp_path / "label")]
    r2 = by["ppo"].recipe.ppo
    assert (r2.policy_path, r2.ref_path, r2.reward_model_path) == (
        str(tmp_path / "ppo_round1"), str(tmp_path / "sft"), str(tmp_path / "reward"))
    # the critic: round 1's from its reward model (the default), round 2 continues round 1's
    assert r1.value_model_path is None and r2.value_model_path == str(tmp_path / "ppo_round1" / "critic")
    # each round draws its own samples
    assert by["label"].recipe.label.seed_offset == by["label_round1"].recipe.label.seed_offset + 10
    assert r2.seed_offset == r1.seed_offset + 10
    # the caller's recipe is untouched
    assert recipe.reward.labels == [] and recipe.ppo.policy_path is None


def test_plan_warm_starts_each_reward_round_from_the_last(tmp_path):
    recipe = load_recipe("micro", {"stages": "base,sft,label,reward,ppo", "label.rounds": "3",
                                   "reward.warm_start": "true"})
    inits = [s.recipe.reward.init_from for s in plan(recipe, tmp_path) if s.stage == "reward"]
    assert inits == ["auto", str(tmp_path / "reward_round1"), str(tmp_path / "reward_round2")]


def test_plan_can_start_every_round_critic_from_its_reward_model(tmp_path):
    recipe = load_recipe("micro", {"stages": "base,sft,label,reward,ppo", "label.rounds": "2",
                                   "ppo.continue_critic": "false"})
    assert [s.recipe.ppo.value_model_path for s in plan(recipe, tmp_path) if s.stage == "ppo"] == [None, None]


def test_plan_without_the_label_stage_is_the_plain_pipeline(tmp_path):
    recipe = load_recipe("micro")
    assert [s.name for s in plan(recipe, tmp_path)] == ["base", "sft", "reward", "ppo", "eval"]
    assert all(s.recipe is recipe for s in plan(recipe, tmp_path))


def test_two_feedback_rounds_end_to_end(micro_run, tmp_path, monkeypatch):
    """The micro recipe with two rounds: every round's stage finishes, round 2 builds on round 1, the card exists."""
    from conftest import copy_run

    from gpt2_rlhf.pipeline import run_pipeline
    from gpt2_rlhf.train import feedback

    # the micro policy writes noise that gold scores 0: a graded stand-in judge gives the rater something to rank
    monkeypatch.setattr(feedback, "gold_scorer", lambda: lambda ps, rs: [min(len(r), 30) / 30 for r in rs])
    run = copy_run(micro_run, tmp_path / "run", stages=("base", "sft"))
    recipe = load_recipe("micro", {"stages": "base,sft,label,reward,ppo,eval", "label.rounds": "2",
                                   "label.comparisons": "12", "label.test_prompts": "6", "label.max_new_tokens": "12",
                                   "label.min_gap": "0.05", "ppo.snapshot_every": "1"})
    timings = run_pipeline(recipe, run)
    for name in ("label_round1", "reward_round1", "ppo_round1", "label", "reward", "ppo", "eval"):
        assert (run / name / "COMPLETE").is_file(), name
    assert timings["base"] == timings["sft"] == 0.0 and "card" in timings
    assert (run / "card" / "README.md").is_file()
    prov = json.loads((run / "label" / "provenance.json").read_text())
    assert prov["policy"] == str(run / "ppo_round1")
    rm = json.loads((run / "reward" / "metrics.json").read_text())
    assert rm["labels"] == [str(run / "label_round1"), str(run / "label")]
    assert rm["labelled_pairs"] == 24 and rm["train_pairs"] == rm["dataset_pairs"] + 24
    assert 0.0 <= rm["on_policy"]["accuracy"] <= 1.0 and rm["on_policy"]["pairs"] > 0
    import torch
    from safetensors.torch import load_file

    ppo = json.loads((run / "ppo" / "metrics.json").read_text())
    assert ppo["round"] == 2 and ppo["inputs"]["policy"] == str(run / "ppo_round1")
    assert ppo["inputs"]["ref"] == str(run / "sft")
    # round 2's critic is round 1's trained critic, saved beside its policy
    assert ppo["inputs"]["value"] == str(run / "ppo_round1" / "critic")
    c1 = load_file(run / "ppo_round1" / "critic" / "model.safetensors")
    rm1 = load_file(run / "reward_round1" / "model.safetensors")
    assert any(not torch.equal(c1[k], rm1[k]) for k in c1 if k in rm1)  # it was trained, not a copy of the RM
    snaps = json.loads((run / "ppo" / "snapshots.json").read_text())["snapshots"]
    assert snaps and all((run / "ppo" / s["path"] / "model.safetensors").is_file() for s in snaps)
    # round 2's PPO starts from round 1's policy: its first rollout differs from SFT's
    w1 = load_file(run / "ppo_round1" / "model.safetensors")
    w2 = load_file(run / "ppo" / "model.safetensors")
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)
    # rerunning reuses every finished stage
    again = run_pipeline(recipe, run)
    assert all(v == 0.0 for k, v in again.items() if k != "card")
    # so does a copy of the run elsewhere: its stages name their inputs by the old path, COMPLETE says which
    import shutil

    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(run, moved)
    copied = run_pipeline(recipe, moved)
    assert all(v == 0.0 for k, v in copied.items() if k != "card"), copied


def test_a_moved_runs_recorded_paths_are_read_under_its_new_directory():
    from gpt2_rlhf.pipeline import moved

    recorded = {"reward": {"labels": ["/a/run/label_round1", "/a/run/label"], "init_from": "auto"},
                "ppo": {"policy_path": "/a/run/ppo_round1", "ref_path": "/a/run2/sft", "n": 3}}
    assert moved(recorded, "/a/run", "/b/copy") == {
        "reward": {"labels": ["/b/copy/label_round1", "/b/copy/label"], "init_from": "auto"},
        "ppo": {"policy_path": "/b/copy/ppo_round1", "ref_path": "/a/run2/sft", "n": 3}}  # /a/run2 is another run
