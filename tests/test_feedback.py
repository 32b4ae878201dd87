"""The feedback stage: the simulated rater, the labellers, provenance, and the reward model judged on policy samples."""

from __future__ import annotations

import copy
import json
import math
import random

import pytest
import torch

from gpt2_rlhf.train import feedback
from gpt2_rlhf.train.feedback import (
    LabelConfig,
    compare,
    distinct,
    label_prompts,
    preference_probability,
    spearman,
    within_prompt_rank_correlation,
)

# ----------------------------------------------------------------------------- the rater, by hand values


def test_preference_probability_is_bradley_terry_with_a_temperature():
    assert preference_probability(0.2, 0.0) == 1.0
    assert preference_probability(-0.2, 0.0) == 0.0
    assert preference_probability(0.0, 0.0) == 0.5
    # sigmoid(0.2 / 0.1) = sigmoid(2) = 0.880797
    assert preference_probability(0.2, 0.1) == pytest.approx(1 / (1 + math.exp(-2)))
    assert preference_probability(-0.2, 0.1) == pytest.approx(1 - 1 / (1 + math.exp(-2)))


def test_compare_without_noise_prefers_the_higher_score_and_skips_ties():
    # scores 0.9, 0.85, 0.1: (0, 1) differ by 0.05 < min_gap -> a tie, no comparison
    pairs = compare([0.9, 0.85, 0.1], min_gap=0.1, temperature=0.0, flip_rate=0.0, rng=None)
    assert pairs == [(0, 2, False), (1, 2, False)]
    # the lower-scored first response becomes the rejected one
    assert compare([0.1, 0.9], 0.1, 0.0, 0.0, None) == [(1, 0, False)]
    # equal scores are never a comparison, even with min_gap 0
    assert compare([0.5, 0.5], 0.0, 0.0, 0.0, None) == []


def test_flip_rate_flips_that_share_of_labels():
    rng = random.Random(0)
    n, flipped, wrong = 4000, 0, 0
    for _ in range(n):
        (c, r, f), = compare([1.0, 0.0], 0.1, 0.0, 0.2, rng)
        flipped += f
        wrong += c == 1  # the worse response chosen
    assert flipped == wrong  # a flip is exactly a wrong label when the rater has no other noise
    assert flipped / n == pytest.approx(0.2, abs=0.02)  # binomial sd 0.0063


def test_bradley_terry_noise_errs_more_on_close_pairs():
    rng = random.Random(1)

    def error_rate(gap):
        return sum(compare([gap, 0.0], 0.0, 0.1, 0.0, rng)[0][0] == 1 for _ in range(4000)) / 4000

    close, far = error_rate(0.05), error_rate(0.5)
    assert close == pytest.approx(1 / (1 + math.exp(0.5)), abs=0.025)  # 0.378
    assert far == pytest.approx(1 / (1 + math.exp(5)), abs=0.01)  # 0.0067
    assert close > far


def test_distinct_drops_repeats_empty_responses_and_assistant_turns():
    assert distinct([" a", "b", "a ", "", "  ", "c", "b"]) == [0, 1, 5]
    # a sampled "\n\nAssistant:" turn would move part of the response into the prompt of an HH row
    assert distinct([" fine", " tip.\n\nAssistant: more", " tip.\n\nHuman: thanks"]) == [0, 2]


def test_labelled_rows_read_back_with_their_prompt():
    """Rows built from responses that contain turn markers still read back as (prompt, chosen, rejected)."""
    from gpt2_rlhf.train.data import split_prompt_response

    cfg = LabelConfig(min_gap=0.1)
    prompt = "\n\nHuman: hi\n\nAssistant:"
    group = [" good tip.", " x.\n\nAssistant: sneaky", " meh.\n\nHuman: ok"]
    rows, _ = label_prompts([prompt], [group], [[0.9, 0.5, 0.1]], cfg, None, noisy=False)
    assert len(rows) == 1
    for r in rows:
        assert split_prompt_response(r["chosen"])[0] == prompt == split_prompt_response(r["rejected"])[0]


def test_label_prompts_builds_hh_rows_within_budget():
    cfg = LabelConfig(min_gap=0.1)
    prompts = ["\n\nHuman: hi\n\nAssistant:", "\n\nHuman: yo\n\nAssistant:"]
    groups = [[" good", " bad", " good"], [" x", " y"]]
    scores = [[0.9, 0.2, 0.9], [0.5, 0.55]]
    rows, flips = label_prompts(prompts, groups, scores, cfg, None, noisy=False)
    # prompt 0: the repeated " good" is one response -> one pair; prompt 1: within min_gap -> none
    assert rows == [{"chosen": prompts[0] + " good", "rejected": prompts[0] + " bad", "prompt_index": 0,
                     "gap": 0.7, "flipped": False}]
    assert flips == 0
    groups = [[" a", " b", " c"]] * 2
    scores = [[0.9, 0.5, 0.1]] * 2
    rows, _ = label_prompts(prompts, groups, scores, cfg, None, noisy=False, budget=4)
    assert len(rows) == 4 and [r["prompt_index"] for r in rows] == [0, 0, 0, 1]


def test_spearman_by_hand():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ranks x (0, 1, 2), y (0.5, 0.5, 2): cov = 1.5, var_x = 2, var_y = 1.5 -> 1.5 / sqrt(3) = 0.866
    assert spearman([1, 2, 3], [0, 0, 5]) == pytest.approx(1.5 / math.sqrt(3))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    mean, n = within_prompt_rank_correlation([([1, 2, 3], [1, 2, 3]), ([1, 2, 3], [3, 2, 1]), ([1, 1], [1, 2]),
                                              ([1, 2, 3], [1, 3, 2])])
    assert n == 3 and mean == pytest.approx((1 - 1 + 0.5) / 3)


def test_config_checks_name_the_field():
    with pytest.raises(ValueError, match="flip_rate"):
        LabelConfig(flip_rate=0.7)
    with pytest.raises(ValueError, match="labeller"):
        LabelConfig(labeller="human")
    with pytest.raises(ValueError, match="samples_per_prompt"):
        LabelConfig(samples_per_prompt=1)


# ----------------------------------------------------------------------------- the stage, on a tiny run


def judge(prompt: str, response: str) -> float:
    """A graded stand-in for the gold judge: the micro policy writes noise, which gold scores 0 throughout."""
    return min(len(response), 30) / 30


@pytest.fixture(scope="module")
def label_run(micro_run, tmp_path_factory):
    """`rlhf label` on the micro run's SFT model with the gold labeller (graded stand-in) and a 20% flip rate."""
    import shutil

    from gpt2_rlhf.stages import load_recipe

    out = tmp_path_factory.mktemp("label_run")
    for stage in ("base", "sft"):
        shutil.copytree(micro_run / stage, out / stage)
    recipe = load_recipe("micro", {"label.comparisons": "40", "label.test_prompts": "8", "label.flip_rate": "0.2",
                                   "label.samples_per_prompt": "4", "label.max_new_tokens": "12", "label.min_gap": "0.05"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(feedback, "gold_scorer", lambda: lambda ps, rs: [judge(p, r) for p, r in zip(ps, rs)])
        path = feedback.main(recipe, out)
    return recipe, out, path


def test_label_stage_writes_hh_pairs_with_provenance(label_run):
    from gpt2_rlhf.train.data import DataConfig, load_preferences

    gold_score = judge
    recipe, out, path = label_run
    prov = json.loads((path / "provenance.json").read_text())
    assert prov["labeller"] == "gold" and prov["policy"] == str(out / "sft")
    assert prov["seed"] == recipe.seed + recipe.label.seed_offset
    assert prov["comparisons"] == 40 and prov["noise"] == {"temperature": 0.0, "flip_rate": 0.2, "min_gap": 0.05}
    assert prov["samples_per_prompt"] == 4 and prov["prompts"] >= 1
    rows, _ = load_preferences(DataConfig(dataset=str(path), on_bad_rows="error"), "train")
    assert len(rows) == 40
    raw = [json.loads(line) for line in (path / "train.jsonl").read_text().splitlines()]
    assert sum(r["flipped"] for r in raw) == prov["flipped"] > 0
    for row, r in zip(rows, raw):
        gc, gr = gold_score(row["prompt"], row["chosen"]), gold_score(row["prompt"], row["rejected"])
        # a kept label's gold gap is the recorded one; a flipped label points the wrong way
        assert r["gap"] == pytest.approx(gc - gr, abs=1e-5)
        assert (gc < gr) == r["flipped"]
    # the held-out split is labelled without noise
    test = [json.loads(line) for line in (path / "test.jsonl").read_text().splitlines()]
    assert test and not any(r["flipped"] for r in test) and all(r["gap"] >= 0.05 for r in test)
    samples = [json.loads(line) for line in (path / "samples.jsonl").read_text().splitlines()]
    assert {s["split"] for s in samples} == {"train", "test"}
    assert all(len(s["responses"]) == 4 == len(s["scores"]) for s in samples)


def test_reward_model_on_policy_metrics_on_hand_made_pairs(tmp_path, micro_run):
    """A reward model that prefers one word: its on-policy accuracy and rank correlation, derived by hand."""
    from gpt2_rlhf.train.reward import on_policy_metrics

    p = "\n\nHuman: q\n\nAssistant:"
    test = [{"chosen": p + " good good", "rejected": p + " bad"},          # RM right (2 > 0)
            {"chosen": p + " bad", "rejected": p + " good bad bad"},       # RM wrong (0 < 1)
            {"chosen": p + " good", "rejected": p + " plain words here"}]  # RM right (1 > 0)
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    samples = [{"split": "test", "prompt": p, "responses": [" good good", " good", " bad"], "scores": [0.9, 0.5, 0.1]},
               {"split": "test", "prompt": p, "responses": [" good", " bad", " x"], "scores": [0.1, 0.5, 0.9]},
               {"split": "train", "prompt": p, "responses": [" a", " b"], "scores": [0, 1]}]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))

    class CountsGood:
        tokenizer = __import__("gpt2_rlhf.train.modeling", fromlist=["load_tokenizer"]).load_tokenizer(micro_run / "sft")

        def score(self, prompts, responses, batch_size=32, max_length=None):
            return torch.tensor([float(r.split().count("good")) for r in responses])

    m = on_policy_metrics(CountsGood(), tmp_path, 8, initial_accuracy=0.5)
    assert m["accuracy"] == pytest.approx(2 / 3) and m["pairs"] == 3 and m["prompts"] == 1
    assert m["initial_accuracy"] == 0.5
    # longer (tokens) wins: pair 1 chosen longer? " good good" vs " bad": yes; pair 2: no; pair 3: no
    assert m["length_baseline_accuracy"] == pytest.approx(1 / 3)
    # prompt 1: RM (2, 1, 0) vs (0.9, 0.5, 0.1) -> +1; prompt 2: RM (1, 0, 0) vs (0.1, 0.5, 0.9): ranks
    # (2, 0.5, 0.5) vs (0, 1, 2), cov -1.5, variances 1.5 and 2 -> -1.5 / sqrt(3) = -0.866
    assert m["rank_correlation"] == pytest.approx((1 - 1.5 / math.sqrt(3)) / 2)
    assert m["rank_correlation_prompts"] == 2


def test_function_labeller_scores_with_the_python_function(label_run, tmp_path):
    """A Python reward function as the labeller: the response with more words wins (response_length)."""
    import dataclasses
    import shutil

    from gpt2_rlhf.train.config import Recipe
    from gpt2_rlhf.train.data import split_prompt_response

    recipe, out, _ = label_run
    run = tmp_path / "run"
    shutil.copytree(out / "sft", run / "sft")
    cfg = dataclasses.replace(recipe.label, labeller="function", labeller_path="train.rewards:response_length",
                              comparisons=5, test_prompts=0, min_gap=1.0, flip_rate=0.0)
    r2 = Recipe(seed=recipe.seed, stages=recipe.stages, sections={**recipe.sections, "label": cfg},
                table=recipe.table)
    path = feedback.main(r2, run)
    rows = [json.loads(line) for line in (path / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    for r in rows:
        chosen, rejected = split_prompt_response(r["chosen"])[1], split_prompt_response(r["rejected"])[1]
        assert len(chosen.split()) - len(rejected.split()) == r["gap"] >= 1
    assert json.loads((path / "provenance.json").read_text())["labeller_name"].startswith("reward function")


def test_votes_labeller_keeps_blind_decisive_votes_only(tmp_path):
    from gpt2_rlhf.space.votes import votes_to_preferences, write_jsonl
    from gpt2_rlhf.stages import load_recipe

    p = "\n\nHuman: q\n\nAssistant:"
    base = {"schema": "gpt2-rlhf/vote/v1", "time": "2026-01-01T00:00:00Z", "left": {}, "right": {},
            "reward_model": "rm", "decoding": {}, "prompt": p, "chosen_model": "a", "rejected_model": "b"}
    votes = [{**base, "id": "1", "vote": "left", "chosen": " yes", "rejected": " no", "anonymised": True},
             {**base, "id": "2", "vote": "left", "chosen": " seen", "rejected": " names", "anonymised": False},
             {**base, "id": "3", "vote": "tie", "chosen": None, "rejected": None, "chosen_model": None,
              "rejected_model": None, "anonymised": True}]
    f = tmp_path / "votes.jsonl"
    f.write_text("".join(json.dumps(v) + "\n" for v in votes))
    rows, counts = votes_to_preferences(f, blind_only=True)  # what `rlhf votes --blind-only` writes
    assert counts["skipped_not_blind"] == 1 and counts["skipped_not_decisive"] == 1
    write_jsonl(rows, tmp_path / "blind.jsonl")
    recipe = load_recipe("micro", {"label.labeller": "votes", "label.labeller_path": str(tmp_path / "blind.jsonl")})
    path = feedback.main(recipe, tmp_path / "run")
    got = [json.loads(line) for line in (path / "train.jsonl").read_text().splitlines()]
    assert got == [{"chosen": p + " yes", "rejected": p + " no"}]
    prov = json.loads((path / "provenance.json").read_text())
    assert prov["labeller"] == "votes" and prov["comparisons"] == 1 and prov["test_comparisons"] == 0


def test_votes_labeller_without_a_file_fails_in_one_line(tmp_path):
    from gpt2_rlhf.stages import load_recipe

    recipe = load_recipe("micro", {"label.labeller": "votes"})
    with pytest.raises(ValueError, match="label.labeller_path: the votes labeller needs one"):
        feedback.main(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def two_round_run(label_run, micro_run, run, stages=("base", "sft")):
    """(a copy of the fixture's recipe, label directories): run/ with the micro run's stages and the label stage's
    output twice, as round 1's and round 2's (`label_round1`, `label`)."""
    import shutil

    recipe, _, label_dir = label_run
    for stage in stages:
        shutil.copytree(micro_run / stage, run / stage)
    shutil.copytree(label_dir, run / "label_round1")
    shutil.copytree(label_dir, run / "label")
    return copy.deepcopy(recipe), [str(run / "label_round1"), str(run / "label")]  # the fixture's recipe is shared


def test_warm_started_reward_round_trains_on_new_labels_plus_replay(label_run, micro_run, tmp_path):
    """reward.warm_start: the round starts from the previous reward model and trains on its newest labels plus
    `replay` x as many earlier pairs; its untrained baseline is still a fresh head on SFT."""
    import dataclasses

    from safetensors.torch import load_file

    from gpt2_rlhf.train import reward
    from gpt2_rlhf.train.reward import replay_sample

    rows = [{"i": i} for i in range(10)]
    drawn = replay_sample(rows, 4, seed=3)
    assert len(drawn) == 4 and drawn == replay_sample(rows, 4, seed=3) and drawn != replay_sample(rows, 4, seed=4)
    assert replay_sample(rows, 99, seed=3) == rows and replay_sample(rows, 0, seed=3) == []

    run = tmp_path / "run"
    recipe, labels = two_round_run(label_run, micro_run, run, stages=("base", "sft", "reward"))
    prev = run / "reward_round1"
    (run / "reward").rename(prev)
    recipe.sections["reward"] = dataclasses.replace(
        recipe.reward, warm_start=True, replay=0.5, init_from=str(prev), labels=labels)
    m = json.loads((reward.main(recipe, run) / "metrics.json").read_text())
    assert m["init_from"] == str(prev)
    assert m["labelled_pairs"] == 40 and m["replayed_pairs"] == 20 and m["train_pairs"] == 60
    # the same fresh head on the same SFT model as the round-1 stage: the same untrained accuracy
    first = json.loads((prev / "metrics.json").read_text())
    assert m["initial_accuracy"] == first["initial_accuracy"]
    w0, w1 = load_file(prev / "model.safetensors"), load_file(run / "reward" / "model.safetensors")
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)  # it trained
    assert "sft samples" in json.loads((run / "reward" / "reward_stats.json").read_text())["source"]


def test_later_rounds_keep_every_label_and_a_sample_of_the_dataset_pairs(label_run, micro_run, tmp_path):
    """reward.later_dataset_pairs: a fresh round 2+ trains on every label so far (both directories' 40) and that
    many dataset pairs; round 1 (one label directory) trains on every dataset pair."""
    import dataclasses
    import shutil

    from gpt2_rlhf.train import reward

    run = tmp_path / "run"
    recipe, labels = two_round_run(label_run, micro_run, run)
    full = json.loads((micro_run / "reward" / "metrics.json").read_text())
    recipe.sections["reward"] = dataclasses.replace(recipe.reward, later_dataset_pairs=5, labels=labels)
    m = json.loads((reward.main(recipe, run) / "metrics.json").read_text())
    assert m["dataset_pairs"] == 5 and m["labelled_pairs"] == 80 and m["train_pairs"] == 85
    assert m["replayed_pairs"] is None
    shutil.rmtree(run / "reward")
    recipe.sections["reward"] = dataclasses.replace(recipe.reward, later_dataset_pairs=5, labels=labels[:1])
    m1 = json.loads((reward.main(recipe, run) / "metrics.json").read_text())
    assert m1["dataset_pairs"] == full["dataset_pairs"] and m1["train_pairs"] == full["dataset_pairs"] + 40


def test_capped_fresh_reward_round_trains_on_new_labels_plus_a_sample_of_the_rest(label_run, micro_run, tmp_path):
    """reward.max_round_pairs: a fresh round (from SFT, not warm-started) keeps every newest label and fills the
    cap with a seeded sample of the dataset pairs and earlier labels; round 1 (one label directory) uses all."""
    import dataclasses
    import shutil

    from safetensors.torch import load_file

    from gpt2_rlhf.train import reward

    run = tmp_path / "run"
    recipe, labels = two_round_run(label_run, micro_run, run)
    full = json.loads((micro_run / "reward" / "metrics.json").read_text())
    cap = full["dataset_pairs"] // 2 + 40  # the 40 newest labels and half the dataset pairs' count on top
    recipe.sections["reward"] = dataclasses.replace(recipe.reward, max_round_pairs=cap, labels=labels)
    m = json.loads((reward.main(recipe, run) / "metrics.json").read_text())
    assert m["init_from"] == "sft"
    assert m["labelled_pairs"] == 40 and m["replayed_pairs"] == cap - 40 and m["train_pairs"] == cap
    # a fresh head on SFT: the untrained baseline is the uncapped stage's
    assert m["initial_accuracy"] == full["initial_accuracy"]
    w0 = load_file(run / "sft" / "model.safetensors")
    w1 = load_file(run / "reward" / "model.safetensors")
    shared = [k for k in w1 if k in w0 and w0[k].shape == w1[k].shape]
    assert shared and any(not torch.equal(w1[k], w0[k]) for k in shared)  # it trained

    # one label directory (round 1): the cap does not apply, every pair trains
    shutil.rmtree(run / "reward")
    recipe.sections["reward"] = dataclasses.replace(recipe.reward, max_round_pairs=cap, labels=labels[:1])
    m1 = json.loads((reward.main(recipe, run) / "metrics.json").read_text())
    assert m1["replayed_pairs"] is None and m1["train_pairs"] == full["dataset_pairs"] + 40
