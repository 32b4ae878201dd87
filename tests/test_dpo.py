"""The dpo stage (TRL's DPOTrainer from SFT): its maths by hand, its tokens as TRL's, the micro run, --resume,
the pairs of the feedback rounds, bad config in one line, and where `rlhf run` places it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gpt2_rlhf.cli import main as cli
from gpt2_rlhf.pipeline import plan
from gpt2_rlhf.stages import load_recipe
from gpt2_rlhf.train.config import ConfigError
from gpt2_rlhf.train.dpo import implicit_rewards, logged_mean, reward_margins, sequence_logprobs, split_completion

from conftest import copy_run
from trainer_callbacks import CountSteps, CrashAt

ROWS = [
    {"prompt": "\n\nHuman: How do I grow tomatoes?\n\nAssistant:", "chosen": " Water them deeply twice a week.",
     "rejected": " I can't help with that."},
    {"prompt": "\n\nHuman: How can I sleep better?\n\nAssistant:", "chosen": " Keep a regular bedtime.",
     "rejected": " Ask someone else, idiot."},
]

# the micro recipe's DPO: a few steps, checkpoints every 2
MICRO = {"stages": "base,sft,dpo", "dpo.max_steps": "4", "dpo.learning_rate": "1e-3", "dpo.save_steps": "2",
         "dpo.logging_steps": "2", "dpo.max_eval_samples": "8", "dpo.per_device_train_batch_size": "4"}


# ----------------------------------------------------------------------------- maths, by hand


def test_implicit_rewards_and_margins_by_hand():
    # chosen: log pi - log pi_ref = (-3 - -4, -5 - -5) = (1, 0); rejected: (-6 - -5, -2 - -3) = (-1, 1)
    chosen = implicit_rewards(torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -5.0]), beta=0.5)
    rejected = implicit_rewards(torch.tensor([-6.0, -2.0]), torch.tensor([-5.0, -3.0]), beta=0.5)
    assert chosen.tolist() == [0.5, 0.0] and rejected.tolist() == [-0.5, 0.5]
    m = reward_margins(chosen, rejected)
    assert m["accuracy"] == 0.5  # pair 1 right (0.5 > -0.5), pair 2 wrong (0 < 0.5)
    assert m["mean_margin"] == pytest.approx(((0.5 + 0.5) + (0.0 - 0.5)) / 2)
    assert m["chosen_reward"] == pytest.approx(0.25) and m["rejected_reward"] == pytest.approx(0.0)
    # before any training policy == reference: every reward is 0, a tie, which is not a correct pair
    zero = torch.zeros(3)
    assert reward_margins(zero, zero)["accuracy"] == 0.0


def test_logged_mean_weights_each_window_by_its_steps():
    history = [{"step": 2, "rewards/accuracies": 0.5}, {"step": 3, "loss": 1.0},
               {"step": 6, "rewards/accuracies": 1.0}, {"step": 6, "train_runtime": 1.0}]
    assert logged_mean(history, "rewards/accuracies") == pytest.approx((0.5 * 2 + 1.0 * 4) / 6)
    assert logged_mean(history, "absent") is None


# ----------------------------------------------------------------------------- the tokens TRL trains on


def test_held_out_pairs_are_split_into_the_tokens_trl_trains_on(micro_run, micro_recipe, tmp_path):
    from gpt2_rlhf.train.dpo import build_trainer
    from gpt2_rlhf.train.modeling import load_causal_lm, load_tokenizer

    sft = micro_run / "sft"
    tok = load_tokenizer(sft)
    trainer = build_trainer(micro_recipe, load_causal_lm(sft), load_causal_lm(sft), tok, ROWS, tmp_path / "ckpt",
                            max_length=128)
    for i, row in enumerate(ROWS):
        ex = trainer.train_dataset[i]
        assert split_completion(tok, row["prompt"], row["chosen"]) == (ex["prompt_ids"], ex["chosen_ids"])
        assert split_completion(tok, row["prompt"], row["rejected"]) == (ex["prompt_ids"], ex["rejected_ids"])
        assert ex["chosen_ids"][-1] == tok.eos_token_id  # completion-only, EOS included


def test_sequence_logprobs_by_a_plain_forward(micro_run):
    """Batched (left-padded prompts, right-padded responses) equals an unpadded forward summed by hand."""
    from gpt2_rlhf.train.modeling import load_causal_lm, load_tokenizer

    sft = micro_run / "sft"
    tok, model = load_tokenizer(sft), load_causal_lm(sft).eval()
    prompts, responses = [r["prompt"] for r in ROWS], [r["chosen"] for r in ROWS]
    got = sequence_logprobs(model, tok, prompts, responses, batch_size=2)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        p_ids, r_ids = split_completion(tok, p, r)
        ids = torch.tensor([p_ids + r_ids])
        with torch.no_grad():
            logp = model(input_ids=ids).logits[0].log_softmax(-1)
        want = sum(logp[len(p_ids) + t - 1, tok_id].item() for t, tok_id in enumerate(r_ids))
        assert got[i].item() == pytest.approx(want, abs=1e-4)


# ----------------------------------------------------------------------------- the stage


def test_micro_dpo_moves_the_sft_model_and_writes_a_complete_stage(micro_run, tmp_path):
    from safetensors.torch import load_file

    run = copy_run(micro_run, tmp_path / "run", stages=("base", "sft"))
    flags = [a for k, v in MICRO.items() if k != "stages" for a in (f"--{k}", v)]
    assert cli(["dpo", "--config", "micro", "--output-dir", str(run), *flags]) == 0  # `rlhf dpo`, end to end
    final = run / "dpo"
    assert not (run / "dpo.partial").exists()
    for name in ("COMPLETE", "config.yaml", "metrics.json", "model.safetensors", "config.json", "tokenizer.json"):
        assert (final / name).is_file(), name
    assert not (final / "checkpoints").exists()
    sft_w, dpo_w = load_file(run / "sft/model.safetensors"), load_file(final / "model.safetensors")
    changed = [k for k in sft_w if not torch.equal(sft_w[k], dpo_w[k])]
    assert len(changed) > len(sft_w) // 2, "a DPO step moves (nearly) every weight of the SFT model"
    m = json.loads((final / "metrics.json").read_text())
    assert m["global_step"] == 4 and m["resumed_from_step"] is None and m["beta"] == 0.1
    assert m["train_pairs"] == m["dataset_pairs"] > 0 and m["labelled_pairs"] == 0
    for key in ("train_loss", "samples_per_second", "seconds"):
        assert math.isfinite(m[key]), key
    for block in ("train", "train_last", "heldout"):
        assert set(m[block]) >= {"accuracies" if "train" in block else "accuracy"}, block
    # held out, by our code: the trained policy gives the chosen responses more implicit reward than before
    # (policy == reference: every margin 0), so its margin is no longer 0
    h = m["heldout"]
    assert h["pairs"] == 8 and 0.0 <= h["accuracy"] <= 1.0 and h["mean_margin"] != 0.0
    assert h["mean_margin"] == pytest.approx(h["chosen_reward"] - h["rejected_reward"], abs=1e-6)
    import yaml

    recorded = yaml.safe_load((final / "config.yaml").read_text())
    assert recorded["dpo"]["max_steps"] == 4 and recorded["dpo"]["labelled_repeats"] == 1  # resolved, not null



def test_interrupted_dpo_resumes_from_its_checkpoint(micro_run, tmp_path):
    from gpt2_rlhf.train import dpo

    run = copy_run(micro_run, tmp_path / "run", stages=("base", "sft"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        dpo.main(load_recipe("micro", MICRO), run, callbacks=[CrashAt(3)])
    assert not (run / "dpo").exists() and (run / "dpo.partial/checkpoints/checkpoint-2").is_dir()
    counter = CountSteps()
    final = dpo.main(load_recipe("micro", MICRO), run, resume=True, callbacks=[counter])
    m = json.loads((final / "metrics.json").read_text())
    assert counter.steps == [3, 4], "the resumed run continues at step 3"
    assert m["resumed_from_step"] == 2 and m["global_step"] == 4 and (final / "COMPLETE").is_file()


def _label_dir(path: Path, n: int) -> Path:
    """A finished label directory of n HH comparisons (what `rlhf label` writes, as far as DPO reads it)."""
    path.mkdir(parents=True)
    rows = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in (ROWS * n)[:n]]
    (path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "COMPLETE").write_text("{}")
    return path


def test_dpo_trains_on_the_pairs_the_reward_model_saw(micro_run, tmp_path):
    """Dataset pairs + every label directory x reward.labelled_repeats (train.reward.labelled_rows)."""
    from gpt2_rlhf.train.dpo import training_rows
    from gpt2_rlhf.train.modeling import load_tokenizer

    labels = [str(_label_dir(tmp_path / "label_round1", 3)), str(_label_dir(tmp_path / "label", 2))]
    recipe = load_recipe("micro", {"reward.labelled_repeats": "2"})
    recipe.reward.labels = labels
    cfg = recipe.dpo.resolve(recipe.reward)
    assert cfg.labels == labels and cfg.labelled_repeats == 2
    assert recipe.dpo.labels == [] and recipe.dpo.labelled_repeats is None  # the section itself is unchanged
    rows, info = training_rows(recipe, cfg, load_tokenizer(micro_run / "sft"), 128)
    assert info["labelled_pairs"] == 5 and info["labelled_repeats"] == 2
    assert len(rows) == info["dataset_pairs"] + 10 and rows[-1]["chosen"] == ROWS[1]["chosen"]
    # a section naming its own labels and repeats keeps them
    own = load_recipe("micro", {"dpo.labels": labels[0], "dpo.labelled_repeats": "1"}).dpo.resolve(recipe.reward)
    assert own.labels == labels[:1] and own.labelled_repeats == 1


# ----------------------------------------------------------------------------- bad config


@pytest.mark.parametrize("flag,value,needle", [
    ("dpo.beta", "0", "beta: must be positive"),
    ("dpo.loss_type", "kto", "is not one of"),
    ("dpo.label_smoothing", "0.5", "label_smoothing"),
    ("dpo.lr_scheduler_type", "wobbly", "lr_scheduler_type"),
])
def test_bad_dpo_config_is_one_line_naming_the_flag(flag, value, needle, tmp_path, capsys):
    with pytest.raises(ConfigError, match=needle):
        load_recipe("micro", {flag: value})
    out = tmp_path / "run"
    assert cli(["dpo", "--config", "micro", "--output-dir", str(out), f"--{flag}", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlhf dpo: error:") and f"--{flag}" in err[0] and needle in err[0]
    assert not out.exists()


def test_unknown_dpo_key_in_a_recipe_names_the_file_and_a_close_match(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages: [base, sft, dpo]\ndpo:\n  betta: 0.2\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: dpo: unknown key 'betta' \(did you mean 'beta'\?\)"):
        load_recipe(recipe)


def test_dpo_without_an_sft_or_base_model_says_which_stage_is_missing(tmp_path, capsys):
    assert cli(["dpo", "--config", "micro", "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dpo needs the sft model" in err[0] and "does not exist" in err[0]


# ----------------------------------------------------------------------------- where `rlhf run` places it


def test_plan_runs_dpo_and_rloo_after_the_last_round_on_its_pairs(tmp_path):
    recipe = load_recipe("micro", {"stages": "base,sft,label,reward,ppo,dpo,rloo,eval", "label.rounds": "2"})
    steps = plan(recipe, tmp_path)
    assert [s.name for s in steps] == ["base", "sft", "label_round1", "reward_round1", "ppo_round1",
                                       "label", "reward", "ppo", "dpo", "rloo", "eval"]
    by = {s.name: s for s in steps}
    # DPO: the final reward model's pairs (every round's labels, its repeats), recorded in its section
    assert by["dpo"].recipe.dpo.labels == by["reward"].recipe.reward.labels == [
        str(tmp_path / "label_round1"), str(tmp_path / "label")]
    assert by["dpo"].recipe.dpo.labelled_repeats == recipe.reward.labelled_repeats
    assert by["dpo"].round == 2
    # the caller's recipe is untouched
    assert recipe.dpo.labels == [] and recipe.dpo.labelled_repeats is None


def test_plan_without_feedback_places_dpo_after_ppo_and_before_eval(tmp_path):
    recipe = load_recipe("micro", {"stages": "eval,dpo,base,sft,reward,ppo"})
    steps = plan(recipe, tmp_path)
    assert [s.name for s in steps] == ["base", "sft", "reward", "ppo", "dpo", "eval"]
    assert all(s.recipe is recipe for s in steps if s.stage != "dpo")
    assert plan(load_recipe("micro", {"stages": "base,sft,dpo,eval"}), tmp_path)[2].name == "dpo"  # ppo absent


def test_compare_recipes_run_all_three_methods():
    for name in ("compare", "gpt2-hh-compare"):
        recipe = load_recipe(name)
        assert {"ppo", "dpo", "rloo", "eval"} <= set(recipe.stages), name
        rloo = recipe.rloo.resolve(recipe.ppo)
        assert rloo.resolved and rloo.total_episodes > 0 and recipe.dpo.num_train_epochs > 0
