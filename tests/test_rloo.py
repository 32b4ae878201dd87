"""The rloo stage (TRL's RLOOTrainer from SFT against PPO's reward): the settings it takes from the ppo section
and their mapping onto TRL, the prompt cut, the reward (PPO's normalisation and missing-EOS penalty), the micro
run, --resume, bad config in one line, and where `rlhf run` places it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from gpt2_rlhf.cli import main as cli
from gpt2_rlhf.pipeline import plan
from gpt2_rlhf.stages import load_recipe, unneeded_stages
from gpt2_rlhf.train.config import ConfigError
from gpt2_rlhf.train.rloo import FROM_PPO, TRLReward, cut_prompt, function_scores, has_eos, trl_arguments

from conftest import copy_run
from trainer_callbacks import CountSteps, CrashAt

# the micro recipe's RLOO: ppo's 32 episodes in batches of 8 = 2 prompts x 4, 2 passes each, checkpoints every update
MICRO = {"stages": "base,sft,reward,rloo", "ppo.save_every": "1", "ppo.eval_prompts": "4"}


# ----------------------------------------------------------------------------- the settings


def test_null_fields_take_the_ppo_sections_values(micro_recipe):
    ppo = micro_recipe.ppo
    cfg = micro_recipe.rloo.resolve(ppo)
    assert cfg.resolved and micro_recipe.rloo.resolve(ppo) == cfg
    for name, src in FROM_PPO.items():
        if name == "missing_eos_penalty":
            assert cfg.missing_eos_penalty == ppo.missing_eos_penalty == -1.0
        else:
            assert getattr(cfg, name) == getattr(ppo, src), name
    assert (cfg.kl_coef, cfg.num_iterations, cfg.total_episodes) == (0.1, 2, 32)  # configs/micro.yaml's ppo
    # a value of its own wins; PPO's "no penalty" (null) is 0 here, where null means "inherit"
    own = load_recipe("micro", {"rloo.kl_coef": "0.05", "ppo.missing_eos_penalty": "null"})
    resolved = own.rloo.resolve(own.ppo)
    assert resolved.kl_coef == 0.05 and own.ppo.kl_coef == 0.1 and resolved.missing_eos_penalty == 0.0
    assert own.rloo.kl_coef == 0.05 and own.rloo.temperature is None  # resolve returns a copy


def test_the_reward_is_inherited_as_a_whole():
    fn = load_recipe("micro", {"ppo.reward_function": "gpt2_rlhf.train.rewards:contains_good"})
    assert fn.rloo.resolve(fn.ppo).reward_spec.name == "gpt2_rlhf.train.rewards:contains_good"
    # RLOO naming its own reward model does not pick up PPO's function
    own = load_recipe("micro", {"ppo.reward_function": "gpt2_rlhf.train.rewards:contains_good",
                                "rloo.reward_model_path": "/some/rm"})
    cfg = own.rloo.resolve(own.ppo)
    assert cfg.reward_spec is None and cfg.reward_model_path == "/some/rm"


def test_trl_arguments_by_hand(micro_recipe, tmp_path):
    cfg = micro_recipe.rloo.resolve(micro_recipe.ppo)
    args = trl_arguments(cfg, seed=3, output_dir=tmp_path)
    # 32 episodes / 8 per update = 4 updates; 1 minibatch x 2 passes = 2 optimizer steps per update
    assert args["max_steps"] == 8 and args["steps_per_generation"] == 1 and args["num_iterations"] == 2
    assert args["per_device_train_batch_size"] == 8 and args["num_generations"] == 4
    assert (args["beta"], args["epsilon"], args["temperature"], args["max_completion_length"]) == (0.1, 0.2, 0.7, 16)
    assert args["logging_steps"] == 2 and args["save_steps"] == 2 * 2  # ppo.save_every 2 updates
    assert args["warmup_steps"] == 0 and args["lr_scheduler_type"] == "linear" and args["disable_dropout"]
    assert not args["bf16"] and not args["activation_checkpointing"]  # TRL's defaults turned off on CPU
    two = load_recipe("micro", {"ppo.num_mini_batches": "2", "ppo.warmup_updates": "1"})
    args = trl_arguments(two.rloo.resolve(two.ppo), 3, tmp_path, world_size=2)
    assert args["per_device_train_batch_size"] == 2 and args["steps_per_generation"] == 2
    assert args["max_steps"] == 4 * 2 * 2 and args["warmup_steps"] == 4
    from trl import RLOOConfig

    built = RLOOConfig(**trl_arguments(micro_recipe.rloo.resolve(micro_recipe.ppo), 3, tmp_path))
    assert built.generation_batch_size == 8  # TRL agrees: one update samples ppo.batch_size completions


# ----------------------------------------------------------------------------- prompts and the reward


def test_cut_prompt_keeps_the_last_tokens(tiny_tokenizer):
    text = "\n\nHuman: How do I grow tomatoes?\n\nAssistant: Water them.\n\nHuman: How can I sleep better?\n\nAssistant:"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert cut_prompt(tiny_tokenizer, text, len(ids)) == text
    cut = cut_prompt(tiny_tokenizer, text, 8)
    cut_ids = tiny_tokenizer(cut, add_special_tokens=False)["input_ids"]
    assert len(cut_ids) <= 8 and text.endswith(cut) and cut.endswith("\n\nAssistant:")


def test_history_rows_give_the_kl_per_response_by_hand():
    from gpt2_rlhf.train.rloo import history_rows

    log = [{"step": 2, "reward": 0.5, "kl": 0.1, "completions/mean_length": 12.0, "loss": 0.0},
           {"step": 2, "train_runtime": 3.0}, {"step": 4, "reward": 0.7, "completions/mean_length": 10.0}]
    rows = history_rows(log)
    assert [r["step"] for r in rows] == [2, 4]  # the trainer's summary row is not an update
    assert rows[0]["kl"] == pytest.approx(1.2) and rows[0]["kl_per_token"] == 0.1 and rows[0]["length"] == 12.0
    assert rows[1]["kl"] is None  # beta 0: TRL logs no KL


def test_the_reward_adds_ppos_missing_eos_penalty():
    eos = 0
    score = function_scores(lambda ps, rs: [float(len(r)) for r in rs])
    reward = TRLReward(score, eos, -1.0, "length")
    # completions as TRL hands them: ids up to and including the first EOS; the second never ended
    out = reward(prompts=["a", "b", "c"], completions=["xy", "xyz", ""], completion_ids=[[5, 6, 0], [5, 6, 7], [0]])
    assert out == [2.0, 3.0 - 1.0, 0.0]
    assert TRLReward(score, eos, 0.0, "length")(["a"], ["xyz"], [[5, 6, 7]]) == [3.0]  # 0 = off
    assert has_eos([[1, 0], [], [0, 1]], 0).tolist() == [True, False, False]
    assert reward.__name__ == "length"


def test_reward_model_scores_are_ppos_normalised_scores(micro_run):
    """The ids path (prompt ids + sampled ids, EOS appended where missing) equals RewardModel.score on the text,
    normalised with reward_stats.json, as PPO scores."""
    from gpt2_rlhf.train.modeling import RewardModel, load_tokenizer
    from gpt2_rlhf.train.rloo import reward_model_scores

    rm = RewardModel.load(micro_run / "reward")
    tok = load_tokenizer(micro_run / "sft")
    prompts = ["\n\nHuman: How do I grow tomatoes?\n\nAssistant:", "\n\nHuman: Hi\n\nAssistant:"]
    responses = [" Water them deeply.", " Hello"]
    ids = [tok(r, add_special_tokens=False)["input_ids"] for r in responses]
    ids[0] = ids[0] + [tok.eos_token_id]  # the first ended with EOS, the second did not (EOS appended to score it)
    got = reward_model_scores(rm, tok, normalise=True)(prompts, responses, ids)
    want = rm.normalise(rm.score(prompts, responses))
    assert torch.allclose(got.cpu(), want, atol=1e-5)
    assert rm.stats.std != 1.0 or rm.stats.mean != 0.0  # the normalisation is not the identity here
    raw = reward_model_scores(rm, tok, normalise=False)(prompts, responses, ids)
    assert torch.allclose(raw.cpu(), rm.score(prompts, responses), atol=1e-5)


# ----------------------------------------------------------------------------- the stage



def test_micro_rloo_trains_resumes_and_writes_a_complete_stage(micro_run, tmp_path):
    """Killed mid-run, resumed from its last checkpoint: the stage finishes, moves the SFT weights and looks
    like PPO's to a reader."""
    from safetensors.torch import load_file

    from gpt2_rlhf.train import rloo

    run = copy_run(micro_run, tmp_path / "run")
    with pytest.raises(RuntimeError, match="simulated crash"):
        rloo.main(load_recipe("micro", MICRO), run, callbacks=[CrashAt(5)])
    assert not (run / "rloo").exists() and (run / "rloo.partial/checkpoints/checkpoint-4").is_dir()
    counter = CountSteps()
    final = rloo.main(load_recipe("micro", MICRO), run, resume=True, callbacks=[counter])
    assert counter.steps == [5, 6, 7, 8], "the resumed run continues after its checkpoint at update 2"
    assert final == run / "rloo" and not (run / "rloo.partial").exists() and not (final / "checkpoints").exists()
    for name in ("COMPLETE", "config.yaml", "metrics.json", "model.safetensors", "config.json", "tokenizer.json"):
        assert (final / name).is_file(), name
    sft_w, rloo_w = load_file(run / "sft/model.safetensors"), load_file(final / "model.safetensors")
    assert [k for k in sft_w if not torch.equal(sft_w[k], rloo_w[k])], "RLOO must move the SFT weights"
    m = json.loads((final / "metrics.json").read_text())
    assert m["resumed_from_step"] == 4 and m["global_step"] == 8
    assert (m["updates"], m["episodes"], m["num_generations"], m["kl_coef"]) == (4, 32, 4, 0.1)
    assert [r["step"] for r in m["history"]] == [2, 4, 6, 8]  # one row per update, across the restart
    assert all(r["kl"] == pytest.approx(r["kl_per_token"] * r["length"]) for r in m["history"])
    assert m["reward"] == {"kind": "reward_model", "path": str(run / "reward")}
    assert m["episodes_per_second"] > 0 and m["inputs"]["policy"] == str(run / "sft")
    cmp = m["comparison"]
    assert set(cmp) == {"sft", "rloo", "chosen"} and cmp["sft"]["kl"] == 0.0 and cmp["rloo"]["n"] == 4
    recorded = yaml.safe_load((final / "config.yaml").read_text())["rloo"]
    assert recorded["kl_coef"] == 0.1 and recorded["total_episodes"] == 32 and recorded["save_every"] == 1
    assert all(recorded[k] is not None for k in FROM_PPO if not k.startswith("reward_")), "inherited values recorded"


# ----------------------------------------------------------------------------- bad config


@pytest.mark.parametrize("flags,needle", [
    (["--rloo.num_generations", "1"], "at least 2 completions per prompt"),
    (["--rloo.temperature", "0"], "temperature: must be positive"),
    (["--rloo.num_generations", "3"], "ppo section's"),  # 8 completions per update (ppo.batch_size) / 3
])
def test_bad_rloo_config_is_one_line(flags, needle, tmp_path, capsys, micro_run):
    run = copy_run(micro_run, tmp_path / "run")
    before = sorted(p.name for p in run.iterdir())
    assert cli(["rloo", "--config", "micro", "--output-dir", str(run), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlhf rloo: error:") and needle in err[0], err
    assert sorted(p.name for p in run.iterdir()) == before


def test_an_inherited_conflict_names_the_ppo_fields():
    recipe = load_recipe("micro", {"rloo.num_generations": "3"})
    with pytest.raises(ConfigError, match=r"rloo \(with the ppo section's .*batch_size.*\): batch_size \(8\) must be "
                                          r"divisible by num_generations \(3\)"):
        recipe.rloo.resolve(recipe.ppo)


# ----------------------------------------------------------------------------- where `rlhf run` places it


def test_plan_records_rloos_resolved_settings(tmp_path):
    recipe = load_recipe("micro", {"stages": "base,sft,reward,ppo,rloo,eval"})
    steps = plan(recipe, tmp_path)
    assert [s.name for s in steps] == ["base", "sft", "reward", "ppo", "rloo", "eval"]
    rloo = steps[4].recipe.rloo
    assert rloo.resolved and rloo.kl_coef == recipe.ppo.kl_coef and recipe.rloo.kl_coef is None
    # with feedback rounds: after the last round, against the final reward model (OUTPUT/reward, the default)
    rounds = load_recipe("micro", {"stages": "base,sft,label,reward,ppo,rloo,eval", "label.rounds": "3"})
    names = [s.name for s in plan(rounds, tmp_path)]
    assert names[-3:] == ["ppo", "rloo", "eval"] and names.index("rloo") > names.index("reward")
    assert plan(rounds, tmp_path)[-2].recipe.rloo.reward_model_path is None


def test_the_reward_stage_is_skipped_only_when_every_online_method_uses_a_function():
    fn = "gpt2_rlhf.train.rewards:contains_good"
    both = load_recipe("micro", {"stages": "base,sft,reward,ppo,rloo,eval", "ppo.reward_function": fn})
    assert list(unneeded_stages(both)) == ["reward"]  # RLOO takes PPO's function too
    own_rm = load_recipe("micro", {"stages": "base,sft,reward,ppo,rloo,eval", "ppo.reward_function": fn,
                                   "rloo.reward_model_path": "/rm"})
    assert unneeded_stages(own_rm) == {}


def test_rlhf_run_trains_ppo_dpo_and_rloo_then_reuses_them(micro_run, tmp_path):
    """`rlhf run` on the micro recipe with all three methods: each finishes from SFT; run again, every stage's
    recorded (resolved) config matches and nothing retrains."""
    from gpt2_rlhf.pipeline import run_pipeline

    run = copy_run(micro_run, tmp_path / "run")
    recipe = load_recipe("micro", {"stages": "base,sft,reward,ppo,dpo,rloo", "dpo.max_steps": "2",
                                   "ppo.total_episodes": "16", "ppo.eval_prompts": "0"})
    timings = run_pipeline(recipe, run)
    assert timings["base"] == timings["sft"] == timings["reward"] == 0.0
    assert all(timings[s] > 0 for s in ("ppo", "dpo", "rloo")), timings
    for s in ("ppo", "dpo", "rloo"):
        assert (run / s / "COMPLETE").is_file(), s
    assert json.loads((run / "rloo/metrics.json").read_text())["episodes"] == 16  # ppo.total_episodes, inherited
    again = run_pipeline(load_recipe("micro", {"stages": "base,sft,reward,ppo,dpo,rloo", "dpo.max_steps": "2",
                                               "ppo.total_episodes": "16", "ppo.eval_prompts": "0"}), run)
    assert set(again.values()) == {0.0}, again
