"""Stage 2 (reward model): pooling at the last real token, pairwise maths, the stage's measured outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gpt2_rlhf.train.reward import normalisation_stats, pairwise_accuracy, pearson, score_summary

from conftest import copy_run

# ----------------------------------------------------------------------------- maths


def test_pairwise_accuracy_counts_ties_as_errors():
    chosen = torch.tensor([2.0, 1.0, 0.5, -1.0])
    rejected = torch.tensor([1.0, 1.0, 0.7, -3.0])
    assert pairwise_accuracy(chosen, rejected) == pytest.approx(0.5)  # win, tie, loss, win
    assert math.isnan(pairwise_accuracy(torch.zeros(0), torch.zeros(0)))


def test_pearson_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0])
    assert pearson(x, torch.tensor([2.0, 4.0, 6.0])) == pytest.approx(1.0)
    assert pearson(x, torch.tensor([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    # x - mean = (-1, 0, 1), y - mean = (-1/3, 2/3, -1/3): covariance 0
    assert pearson(x, torch.tensor([0.0, 1.0, 0.0])) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(pearson(x, torch.ones(3)))


def test_score_summary_by_hand():
    s = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    out = score_summary(s, torch.tensor([0.0, 2.0, 4.0]))
    assert out["mean"] == pytest.approx(2.0) and out["std"] == pytest.approx(math.sqrt(2.5))
    assert out["quantiles"]["q00"] == 0.0 and out["quantiles"]["q50"] == 2.0 and out["quantiles"]["q100"] == 4.0
    assert out["quantiles"]["q25"] == pytest.approx(1.0)
    assert out["histogram"] == [2, 3]  # [0, 2) and [2, 4]


def test_normalisation_stats_by_hand():
    mean, std = normalisation_stats(torch.tensor([1.0, 3.0]))
    assert mean == pytest.approx(2.0) and std == pytest.approx(math.sqrt(2.0))
    assert normalisation_stats(torch.tensor([5.0, 5.0]))[1] > 0  # floored, stays invertible


def test_holdout_split_by_hand():
    from gpt2_rlhf.train.reward import holdout_split

    rows = [{"i": i} for i in range(10)]
    kept, held = holdout_split(rows, 0.3, seed=0)
    assert len(held) == 3 and len(kept) == 7
    assert sorted(r["i"] for r in kept + held) == list(range(10))  # a partition
    assert [r["i"] for r in kept] == sorted(r["i"] for r in kept)  # file order kept
    assert holdout_split(rows, 0.3, seed=0) == (kept, held)  # seeded
    assert holdout_split(rows, 0.0, seed=0) == (rows, [])


def test_judge_plan_names_and_seeds():
    from gpt2_rlhf.train.reward import RewardStageConfig, judge_plan

    assert judge_plan(RewardStageConfig(), 0) == []
    assert judge_plan(RewardStageConfig(judges=2), 1) == [("seed-101", 101), ("seed-102", 102)]
    assert judge_plan(RewardStageConfig(judges=1, judge_holdout=0.2), 0) == [("holdout", 100), ("seed-101", 101)]

def test_cut_short_by_hand():
    from gpt2_rlhf.train.reward import cut_short

    text = " Stay home so you do not spread it. Drink water."
    assert cut_short(text, 4) == " Stay home so you."  # its own closing mark, its leading space
    assert cut_short(text, 7) == " Stay home so you do not spread."  # the cut word's comma/stop dropped first
    assert cut_short("Sure, happy to help!", 1) == "Sure!"
    assert cut_short(" no stop at the end", 2) == " no stop"


def test_augmented_pairs_by_hand():
    from gpt2_rlhf.train.reward import augmented_pairs

    rows = [{"prompt": f"p{i}", "chosen": f" answer {i} in five words.", "rejected": " bad."} for i in range(6)]
    out = augmented_pairs(rows, 2.0, seed=3)
    assert augmented_pairs(rows, 2.0, seed=3) == out  # seeded
    assert 0 < len(out) <= 12 and augmented_pairs(rows, 0.0, seed=3) == [] and augmented_pairs([], 1.0, 0) == []
    by_prompt = {r["prompt"]: r for r in rows}
    chosen = {r["chosen"] for r in rows}
    kinds = set()
    for pair in out:
        assert pair["chosen"] == by_prompt[pair["prompt"]]["chosen"]  # the row's own prompt and chosen response
        if pair["rejected"] in chosen:  # another prompt's answer
            assert pair["rejected"] != pair["chosen"]
            kinds.add("other prompt")
        else:  # the answer cut short, its full stop kept
            words = pair["rejected"].split()
            assert 1 <= len(words) < 5 and pair["chosen"].startswith(pair["rejected"][:-1])
            assert pair["rejected"].endswith(".")
            kinds.add("cut")
    assert kinds == {"other prompt", "cut"}
    one = [{"prompt": "p", "chosen": " one", "rejected": " x"}]
    assert augmented_pairs(one, 4.0, seed=0) == []  # no other prompt, nothing to cut: every draw skipped


# ----------------------------------------------------------------------------- pooling at the last real token


@pytest.fixture
def tiny_rm(tiny_tokenizer):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tiny_tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2, num_labels=1,
                     pad_token_id=tiny_tokenizer.pad_token_id, eos_token_id=tiny_tokenizer.eos_token_id)
    return GPT2ForSequenceClassification(cfg).eval()


def _pad(seqs, pad_id, side):
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(0, len(s)) if side == "right" else slice(T - len(s), T)
        ids[i, sl], mask[i, sl] = torch.tensor(s), 1
    return ids, mask


@pytest.mark.parametrize("side", ["right", "left"])
def test_scores_are_read_at_the_last_real_token_not_at_padding(tiny_rm, tiny_tokenizer, side):
    from gpt2_rlhf.train.modeling import sequence_scores

    tok = tiny_tokenizer
    seqs = [tok(t + tok.eos_token, add_special_tokens=False)["input_ids"] for t in
            ("\n\nHuman: Hi\n\nAssistant: Hello.", "\n\nHuman: How do I grow tomatoes?\n\nAssistant: Water them.")]
    alone = torch.stack([sequence_scores(tiny_rm, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0]
                         for s in seqs])
    ids, mask = _pad(seqs, tok.pad_token_id, side)
    batched = sequence_scores(tiny_rm, ids, mask)
    assert torch.allclose(batched, alone, atol=1e-5)
    # what sits in the padded positions cannot matter
    noisy = torch.where(mask.bool(), ids, torch.randint_like(ids, 2, len(tok)))
    assert torch.allclose(sequence_scores(tiny_rm, noisy, mask), alone, atol=1e-5)


def test_the_trainers_pooling_matches_ours_on_its_right_padded_batches(tiny_rm, tiny_tokenizer):
    """RewardTrainer trains through the library's pooling; on its (right-padded, pad != EOS) batches it must pick
    the same position as sequence_scores, which everything downstream uses."""
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from gpt2_rlhf.train.modeling import sequence_scores

    tok = tiny_tokenizer
    enc = lambda t: tok(t + tok.eos_token, add_special_tokens=False)["input_ids"]  # noqa: E731
    batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id)([
        {"chosen_ids": enc("\n\nHuman: Hi\n\nAssistant: Hello, how can I help?"), "rejected_ids": enc("A")},
        {"chosen_ids": enc("B"), "rejected_ids": enc("\n\nHuman: Tips?\n\nAssistant: Sleep well.")},
    ])
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    with torch.no_grad():
        library = tiny_rm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        ours = sequence_scores(tiny_rm, batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(library, ours, atol=1e-5)


# ----------------------------------------------------------------------------- the stage


def test_micro_reward_stage_outputs(micro_run):
    from safetensors.torch import load_file

    from gpt2_rlhf.train.modeling import RewardModel

    rd = micro_run / "reward"
    m = json.loads((rd / "metrics.json").read_text())
    for key in ("accuracy", "mean_margin", "length_baseline_accuracy", "initial_accuracy", "train_loss",
                "reward_mean", "reward_std", "samples_per_second", "seconds"):
        assert m[key] is not None and math.isfinite(m[key]), key
    assert m["init_from"] == "sft" and m["global_step"] == 6
    stats = json.loads((rd / "reward_stats.json").read_text())
    assert set(stats) == {"mean", "std", "n", "source"} and stats["n"] == 8 and stats["std"] > 0
    assert "sft samples" in stats["source"]
    health = json.loads((rd / "health.json").read_text())
    assert health["accuracy"] == m["accuracy"]
    assert sum(health["chosen"]["histogram"]) == sum(health["rejected"]["histogram"]) == m["pairs"]
    assert -1 <= health["score_length_correlation"] <= 1
    # training moved the transformer, not only the head
    sft_w, rm_w = load_file(micro_run / "sft/model.safetensors"), load_file(rd / "model.safetensors")
    assert not torch.equal(sft_w["transformer.h.0.attn.c_attn.weight"], rm_w["transformer.h.0.attn.c_attn.weight"])
    rm = RewardModel.load(rd)
    assert rm.stats.mean == stats["mean"] and rm.tokenizer.pad_token_id != rm.tokenizer.eos_token_id


def test_reported_accuracy_is_reproducible_from_the_saved_model(micro_run, micro_recipe):
    from gpt2_rlhf.train.modeling import RewardModel, load_tokenizer
    from gpt2_rlhf.train.reward import evaluate_pairs
    from gpt2_rlhf.train.hf_training import load_rows

    rd = micro_run / "reward"
    m = json.loads((rd / "metrics.json").read_text())
    rows = load_rows(micro_recipe, "test", load_tokenizer(rd), m["max_length"])
    again, _ = evaluate_pairs(RewardModel.load(rd), rows, batch_size=7)  # a different batching, same answer
    assert again["pairs"] == m["pairs"]
    assert again["accuracy"] == pytest.approx(m["accuracy"])
    assert again["mean_margin"] == pytest.approx(m["mean_margin"], abs=1e-4)


def test_reward_starts_from_base_when_sft_is_absent(micro_run, micro_recipe, tmp_path):
    from gpt2_rlhf.train import reward

    run = copy_run(micro_run, tmp_path / "run", stages=("base",))
    micro_recipe.reward.max_steps = 2
    micro_recipe.reward.stats_prompts = 4
    micro_recipe.data.max_test_pairs = 8
    final = reward.main(micro_recipe, run)
    m = json.loads((final / "metrics.json").read_text())
    assert m["init_from"] == "base" and m["global_step"] == 2
    assert "base samples" in json.loads((final / "reward_stats.json").read_text())["source"]


def test_reward_without_any_input_model_is_a_clear_error(micro_recipe, tmp_path):
    from gpt2_rlhf.train import reward
    from gpt2_rlhf.train.rundir import StageError

    with pytest.raises(StageError, match="base"):
        reward.main(micro_recipe, tmp_path)
    assert not (tmp_path / "reward.partial").exists()


def test_a_shallower_reward_model_keeps_the_first_blocks_and_ppo_reads_it(micro_run, micro_recipe, tmp_path):
    """reward.n_layer 1 of the micro SFT's 2 blocks: the saved model has one block, it trained (its block moved
    from SFT's), and PPO loads it as its reward model and, by default, as its critic."""
    from safetensors.torch import load_file

    from gpt2_rlhf.train import ppo, reward
    from gpt2_rlhf.train.modeling import RewardModel

    run = copy_run(micro_run, tmp_path / "run", stages=("base", "sft"))
    micro_recipe.reward.n_layer = 1
    micro_recipe.reward.max_steps = 2
    micro_recipe.reward.stats_prompts = 4
    micro_recipe.data.max_test_pairs = 8
    final = reward.main(micro_recipe, run)
    assert json.loads((final / "config.json").read_text())["n_layer"] == 1
    weights = load_file(final / "model.safetensors")
    assert not any(k.startswith("transformer.h.1.") for k in weights)
    sft_w = load_file(run / "sft/model.safetensors")
    assert not torch.equal(sft_w["transformer.h.0.attn.c_attn.weight"], weights["transformer.h.0.attn.c_attn.weight"])
    assert len(RewardModel.load(final).model.transformer.h) == 1
    micro_recipe.ppo.total_episodes = micro_recipe.ppo.batch_size
    done = ppo.main(micro_recipe, run)
    assert json.loads((done / "metrics.json").read_text())["updates"] == 1
    assert json.loads((done / "critic" / "config.json").read_text())["n_layer"] == 1


def test_reward_n_layer_beyond_the_start_is_a_one_line_error(micro_run, micro_recipe, tmp_path):
    from gpt2_rlhf.train import reward

    run = copy_run(micro_run, tmp_path / "run", stages=("base", "sft"))
    micro_recipe.reward.n_layer = 3
    with pytest.raises(ValueError, match=r"reward\.n_layer 3: the starting model .*sft has only 2 blocks"):
        reward.main(micro_recipe, run)
    assert not (run / "reward").exists() and not (run / "reward.partial").exists()
