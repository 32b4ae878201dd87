"""PPO trainer and stage: rollout conventions, one update, checkpoints, resume, the stage output.

Tiny random GPT-2 models (2 layers, width 32) with a byte-level BPE tokenizer
built in the fixtures; CPU; seconds per test.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

TOPICS = ["bake bread", "grow tomatoes", "save money", "sleep better", "learn to swim", "fix a bike"]
PROMPTS = [f"\n\nHuman: How do I {t}?\n\nAssistant:" for t in TOPICS] + [
    f"\n\nHuman: Hi.\n\nAssistant: Hello!\n\nHuman: Any tips to {t}?\n\nAssistant:" for t in TOPICS]
ANSWERS = [" Sure, that is a good question. Start slowly and practice every day.",
           " No. Figure it out yourself.", " Good luck! Take small steps and be patient."]


def build_tiny_models(root: Path, seed: int = 0) -> dict[str, Path]:
    """Writes policy/ (GPT2LMHeadModel + tokenizer) and reward/ (GPT2ForSequenceClassification + stats)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, PreTrainedTokenizerFast

    texts = [p + a for p in PROMPTS for a in ANSWERS]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|pad|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                      show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>", pad_token="<|pad|>", model_max_length=128)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                     eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    paths = {"policy": root / "policy", "reward": root / "reward"}
    policy = GPT2LMHeadModel(cfg)
    # make EOS likely enough (p ~ 0.06 per token at T 0.7) that some responses end by themselves: shift the final
    # layer norm's output along EOS's (tied) embedding, which raises the EOS logit by 2
    with torch.no_grad():
        w = policy.transformer.wte.weight[tok.eos_token_id]
        policy.transformer.ln_f.bias += 2.0 * w / w.dot(w)
    policy.save_pretrained(paths["policy"])
    tok.save_pretrained(paths["policy"])
    rm = GPT2ForSequenceClassification(GPT2Config(**{**cfg.to_dict(), "num_labels": 1}))
    rm.save_pretrained(paths["reward"])
    tok.save_pretrained(paths["reward"])
    (paths["reward"] / "reward_stats.json").write_text(json.dumps({"mean": 0.1, "std": 2.0, "n": 10, "source": "test"}))
    return paths


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_models(tmp_path_factory.mktemp("tiny_ppo"))


def _cfg(**kw):
    from gpt2_rlhf.train.ppo.config import PPOConfig

    base = dict(total_episodes=16, batch_size=8, max_new_tokens=6, learning_rate=1e-3, save_every=0, eval_prompts=0,
                max_prompt_tokens=64)
    base.update(kw)
    return PPOConfig(**base)


def _trainer(tiny, cfg, seed=0, **kw):
    from gpt2_rlhf.train.modeling import RewardModel, load_causal_lm, load_sequence_classifier, load_tokenizer
    from gpt2_rlhf.train.ppo.trainer import PPOTrainer, RewardModelScorer

    tok = load_tokenizer(tiny["policy"])
    rm = RewardModel.load(tiny["reward"])
    critic = None if cfg.shared_value_head else load_sequence_classifier(tiny["reward"])
    return PPOTrainer(cfg, load_causal_lm(tiny["policy"]), load_causal_lm(tiny["policy"]), tok,
                      kw.pop("scorer", None) or RewardModelScorer(rm, tok), PROMPTS, critic=critic, seed=seed,
                      progress=False, **kw)


# ----------------------------------------------------------------------------- rollout conventions


def test_recomputed_logprobs_equal_the_samplers(tiny):
    """The training forward's temperature-scaled log-probs are those of the KV-cached sampling distribution.

    transformers' `generate` (with its per-step scores) is the independent oracle of that distribution.
    """
    from transformers import GenerationConfig

    from gpt2_rlhf.train.ppo.trainer import pack_episodes, response_logits
    from gpt2_rlhf.train.modeling import pad_sequences
    from gpt2_rlhf.train.sampling import token_logprobs

    tr = _trainer(tiny, _cfg(temperature=0.7))
    tok, policy = tr.tokenizer, tr.policy.eval()
    q_ids, q_mask = pad_sequences([tr.prompt_tokens[i] for i in range(6)], tok.pad_token_id, "left")
    assert (q_mask == 0).any(), "the batch must contain left padding"
    torch.manual_seed(0)
    out = policy.generate(input_ids=q_ids, attention_mask=q_mask, generation_config=GenerationConfig(
        do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=6, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id), output_scores=True, return_dict_in_generate=True)
    resp = out.sequences[:, q_ids.shape[1]:]
    sampler = torch.stack(out.scores, 1).log_softmax(-1).gather(-1, resp.unsqueeze(-1)).squeeze(-1)  # (B, R)
    keep = (resp == tok.eos_token_id).long().cumsum(1) - (resp == tok.eos_token_id).long() == 0
    resp = torch.where(keep, resp, tok.pad_token_id)
    ids, mask, index = pack_episodes(q_ids, q_mask, resp, keep.float(), tok.pad_token_id)
    with torch.no_grad():
        ours = token_logprobs(response_logits(policy, ids, mask, index), resp, 0.7)
        logits, _ = tr.model(ids, mask, index)
        ours_ac = token_logprobs(logits, resp, 0.7)
    assert torch.allclose(ours[keep], sampler[keep], atol=1e-4)
    assert torch.allclose(ours_ac[keep], sampler[keep], atol=1e-4)
    # and not those of the untempered distribution
    assert not torch.allclose(token_logprobs(response_logits(policy, ids, mask, index), resp)[keep],
                              sampler[keep], atol=1e-2)


def test_pack_episodes_by_hand():
    from gpt2_rlhf.train.ppo.trainer import pack_episodes

    pad = 0
    q_ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]])  # left-padded prompts of 2 and 4 tokens
    q_mask = (q_ids != 0).long()
    r_ids = torch.tensor([[11, 12, 13], [14, 0, 0]])  # right-padded responses of 3 and 1 tokens
    r_mask = (r_ids != 0).float()
    ids, mask, index = pack_episodes(q_ids, q_mask, r_ids, r_mask, pad)
    assert ids.tolist() == [[5, 6, 11, 12, 13], [7, 8, 9, 10, 14]]  # L = max(2 + 3, 4 + 1) = 5, not 4 + 3
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    # the state that predicts response token t sits at prompt_len - 1 + t (clamped on padding)
    assert index.tolist() == [[1, 2, 3], [3, 4, 4]]
    ids, mask, index = pack_episodes(q_ids, q_mask, torch.tensor([[11, 0, 0], [14, 0, 0]]),
                                     torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]), pad)
    assert ids.tolist() == [[5, 6, 11, 0, 0], [7, 8, 9, 10, 14]] and mask.tolist()[0] == [1, 1, 1, 0, 0]


def _move_reference(tr, seed: int = 3) -> None:
    """Perturb the frozen reference so that it differs from the policy (at the start they are the same
    weights, every KL is 0 and a KL term or a policy/reference mix-up cannot show)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tr.ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_rollout_truncates_after_first_eos_and_penalises_missing_eos(tiny):
    tr = _trainer(tiny, _cfg(max_new_tokens=12))
    _move_reference(tr)
    torch.manual_seed(1)
    batch, _ = tr.rollout(list(range(12)))
    eos, pad = tr.tokenizer.eos_token_id, tr.tokenizer.pad_token_id
    ids, mask = batch.response_ids, batch.response_mask.bool()
    lengths = mask.sum(1)
    assert batch.has_eos.any() and (~batch.has_eos).any(), "fixture should give both kinds of responses"
    for i in range(len(ids)):
        L = int(lengths[i])
        assert mask[i, :L].all() and not mask[i, L:].any()  # right-padded
        assert (ids[i, L:] == pad).all()
        assert (ids[i, :L] == eos).sum() == int(batch.has_eos[i])  # at most one EOS, the last real token
        if batch.has_eos[i]:
            assert ids[i, L - 1] == eos
        else:
            assert L == 12
    t = batch.tensors
    # the score of a response without EOS carries the -1 penalty, in normalised units
    norm = tr.scorer.rm.normalise(t["raw_score"])
    assert torch.allclose(t["score"], torch.where(batch.has_eos, norm, norm - 1.0))
    # rewards: -kl_coef * kl everywhere, plus the score on the last real token only
    last = lengths.long() - 1
    expected = -0.1 * t["kl"]
    expected[torch.arange(len(ids)), last] += t["score"]
    assert torch.allclose(t["rewards"], expected * mask, atol=1e-6)
    # the KL penalty and advantages are zero on padding (and the KL is not zero elsewhere)
    assert (t["kl"][~mask] == 0).all() and (t["advantages"][~mask] == 0).all()
    assert t["kl"][mask].abs().mean() > 0.01
    # what PPO's ratio and KL are computed from: the log-probs the rollout records for its sampled tokens
    # are those of the distribution it sampled (temperature 0.7), policy and reference alike; the oracle is
    # one unpadded forward per episode, outside the trainer's padding, packing and batching
    T = tr.cfg.temperature
    assert T == 0.7
    for i in range(len(ids)):
        L = int(lengths[i])
        prompt = batch.query_ids[i][batch.query_mask[i].bool()]
        seq = torch.cat([prompt, ids[i, :L]])[None]
        for model, key in ((tr.policy, "logprobs"), (tr.ref, "ref_logprobs")):
            with torch.no_grad():
                logp = torch.log_softmax(model(seq).logits[0].float() / T, -1)  # dropout is off in PPO models
            oracle = logp[len(prompt) - 1 + torch.arange(L), ids[i, :L]]
            assert torch.allclose(t[key][i, :L], oracle, atol=1e-4), (i, key)
    # the responses are drawn from the generator the trainer seeds per update (what exact resume relies
    # on), not from the global RNG: the same seed gives the same episodes, another seed others
    def seeded(seed, global_seed):
        torch.manual_seed(global_seed)
        return tr.rollout(list(range(12)), generator=torch.Generator().manual_seed(seed))[0]

    a, b, c = seeded(7, 100), seeded(7, 101), seeded(8, 100)
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.has_eos, b.has_eos)
    assert not torch.equal(a.response_ids[:, :3], c.response_ids[:, :3])


def test_reward_model_scores_prompt_response_eos(tiny):
    """Batched, padded scoring == RM on each unpadded prompt + response (+ EOS when it has none)."""
    tr = _trainer(tiny, _cfg(max_new_tokens=12))
    torch.manual_seed(1)
    batch, _ = tr.rollout(list(range(12)))
    raw, norm = tr.scorer(batch)
    eos = tr.tokenizer.eos_token_id
    for i in range(len(raw)):
        prompt = batch.query_ids[i][batch.query_mask[i].bool()]
        response = batch.response_ids[i][batch.response_mask[i].bool()]
        if not batch.has_eos[i]:
            response = torch.cat([response, torch.tensor([eos])])
        assert response[-1] == eos and (response == eos).sum() == 1
        ids = torch.cat([prompt, response])[None]
        alone = tr.scorer.rm.score_ids(ids, torch.ones_like(ids))
        assert torch.allclose(raw[i], alone[0], atol=1e-4), i
    assert torch.allclose(norm, (raw - 0.1) / 2.0)  # reward_stats.json of the fixture


def test_reward_function_scorer_validates_output(tiny):
    from gpt2_rlhf.train.ppo.trainer import FunctionScorer, load_reward_function
    from gpt2_rlhf.train.rewards import contains_good, contains_good_exact

    assert contains_good(["p"] * 4, ["a good day", "Good luck", "GOOD", "bad"]) == [1.0, 1.0, 1.0, -1.0]
    assert contains_good_exact(["p"] * 3, ["a good day", "Good", "bad"]) == [1.0, -1.0, -1.0]
    assert load_reward_function("gpt2_rlhf.train.rewards:contains_good") is contains_good
    # recipes written before the gpt2_rlhf namespace keep working
    assert load_reward_function("train.rewards:contains_good") is contains_good
    with pytest.raises(ValueError, match="cannot import"):
        load_reward_function("gpt2_rlhf.train.rewards:nope")
    tr = _trainer(tiny, _cfg(), scorer=FunctionScorer(lambda p, r: [1.0]))
    with pytest.raises(ValueError, match="returned 1 scores for 8"):
        tr.step()


def test_fused_gelu_is_the_same_function(tiny):
    from transformers import AutoModelForCausalLM

    from gpt2_rlhf.train.ppo.trainer import use_fused_gelu

    a = AutoModelForCausalLM.from_pretrained(tiny["policy"]).eval()
    b = AutoModelForCausalLM.from_pretrained(tiny["policy"]).eval()
    assert use_fused_gelu(b) == 2 and use_fused_gelu(b) == 0  # one per block, idempotent
    ids = torch.randint(2, 200, (3, 20))
    with torch.no_grad():
        assert torch.allclose(a(input_ids=ids).logits, b(input_ids=ids).logits, atol=1e-5)


# ----------------------------------------------------------------------------- updates


def _params(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("shared", [False, True])
def test_one_update_changes_policy_and_critic_only(tiny, shared):
    cfg = _cfg(shared_value_head=shared, num_mini_batches=2, gradient_accumulation_steps=2, ppo_epochs=2)
    tr = _trainer(tiny, cfg)
    before = _params(tr.model)
    ref_before, rm_before = _params(tr.ref), _params(tr.scorer.rm.model)
    row = tr.step()
    after = _params(tr.model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("policy.") for k in changed)
    assert any(k.startswith("critic." if not shared else "value_head.") for k in changed)
    assert all(torch.equal(v, _params(tr.ref)[k]) for k, v in ref_before.items())
    assert all(torch.equal(v, _params(tr.scorer.rm.model)[k]) for k, v in rm_before.items())
    for key in ("score", "score_norm", "kl", "entropy", "policy_loss", "value_loss", "clipfrac", "approx_kl",
                "ratio_mean", "eos_rate", "response_length", "gen_s", "train_s"):
        assert key in row and math.isfinite(row[key]), key


def test_first_ratio_is_exactly_one_when_the_rollout_forward_is_reused(tiny):
    """One minibatch, no accumulation: the rollout's forward is the first training forward (ratio 1 exactly)."""
    tr = _trainer(tiny, _cfg(ppo_epochs=1))
    row = tr.step()
    assert row["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert row["clipfrac"] == 0.0 and row["approx_kl"] == pytest.approx(0.0, abs=1e-10)


def test_fused_and_separate_first_forward_give_the_same_update(tiny):
    """Reusing the rollout forward changes speed, not results: same parameters as with a separate forward."""
    a = _trainer(tiny, _cfg(ppo_epochs=2))
    b = _trainer(tiny, _cfg(ppo_epochs=2))
    b.reuse_rollout_forward = False
    ra, rb = a.step(), b.step()
    assert ra["score"] == rb["score"] and ra["kl"] == rb["kl"]  # same samples
    pa, pb = _params(a.model), _params(b.model)
    assert all(torch.allclose(pa[k], pb[k], atol=1e-5) for k in pa)


def test_training_raises_a_rewarded_behaviour(tiny):
    """Reward = number of letters 'e' in the response: PPO must raise it within a few updates."""
    from gpt2_rlhf.train.ppo.trainer import FunctionScorer

    count_e = FunctionScorer(lambda p, r: [float(x.count("e")) for x in r])
    tr = _trainer(tiny, _cfg(total_episodes=128, batch_size=16, learning_rate=1e-2, lr_schedule="constant",
                             max_new_tokens=8, kl_coef=0.01), scorer=count_e)
    rows = tr.train()
    first, last = rows[0]["score"], sum(r["score"] for r in rows[-2:]) / 2
    assert last > first + 2.0, [r["score"] for r in rows]


# ----------------------------------------------------------------------------- checkpoints and resume


def test_checkpoint_resume_gives_identical_results(tiny, tmp_path):
    cfg = _cfg(total_episodes=32, batch_size=8, save_every=2)
    full = _trainer(tiny, cfg, checkpoint_dir=tmp_path / "a", metrics_path=tmp_path / "a.jsonl")
    rows_full = full.train()
    # an interrupted run: stops after 3 updates (checkpoint at 2), a new trainer resumes from it
    part = _trainer(tiny, cfg, checkpoint_dir=tmp_path / "b", metrics_path=tmp_path / "b.jsonl")
    for _ in range(3):
        part.history.append(part.step())
        if part.update_idx % 2 == 0:
            part.save_checkpoint()
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["update-000002"]
    resumed = _trainer(tiny, cfg, checkpoint_dir=tmp_path / "b", metrics_path=tmp_path / "b.jsonl")
    rows_resumed = resumed.train(resume=True)
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]  # noqa: E731
    assert strip(rows_resumed) == strip(rows_full)
    assert all(torch.equal(v, _params(resumed.model)[k]) for k, v in _params(full.model).items())
    lines = (tmp_path / "b.jsonl").read_text().splitlines()
    assert [json.loads(x)["update"] for x in lines] == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- the stage (rlhf ppo)


def _strip_times(rows):
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]


def _read_jsonl(path: Path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def _weights(path: Path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_stage_writes_policy_metrics_and_comparison(micro_run, tmp_path):
    from conftest import copy_run
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train.ppo import main

    run = copy_run(micro_run, tmp_path / "run")
    recipe = load_recipe("micro")
    out = main(recipe, run)
    assert out == run / "ppo" and (out / "COMPLETE").is_file() and not (run / "ppo.partial").exists()
    rows = _read_jsonl(out / "metrics.jsonl")
    assert [r["update"] for r in rows] == list(range(1, recipe.ppo.num_updates + 1))
    for key in ("score", "score_norm", "kl", "entropy", "policy_loss", "value_loss", "clipfrac", "value_clipfrac",
                "approx_kl", "ratio_mean", "eos_rate", "response_length", "gen_s", "score_s", "train_s"):
        assert all(math.isfinite(r[key]) for r in rows), key
    metrics = json.loads((out / "metrics.json").read_text())
    cmp = metrics["comparison"]
    for name in ("sft", "ppo"):
        assert cmp[name]["n"] == 8
        for key in ("score", "score_norm", "score_norm_std", "kl", "gold", "eos_rate", "response_length"):
            assert math.isfinite(cmp[name][key]), (name, key)
    assert cmp["sft"]["kl"] == pytest.approx(0.0, abs=1e-5)  # the SFT policy is the reference
    assert set(cmp["summary"]) >= {"kl", "score_norm_gain", "score_gain_in_sft_std", "gold_gain",
                                   "chosen_score_in_sft_std"}
    # the dataset's chosen responses to the same prompts: the gold judge agrees with every embedded label
    assert cmp["chosen"]["n"] == 8 and cmp["chosen"]["gold"] > 0.9
    assert cmp["summary"]["chosen_score_in_sft_std"] == pytest.approx(
        (cmp["chosen"]["score_norm"] - cmp["sft"]["score_norm"]) / cmp["sft"]["score_norm_std"], abs=1e-5)
    assert "ppo" in (out / "config.yaml").read_text()
    # a Hugging Face model + tokenizer that differs from the SFT policy it started from
    AutoTokenizer.from_pretrained(out)
    AutoModelForCausalLM.from_pretrained(out)
    before, after = _weights(run / "sft"), _weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in after if k in before)


def test_stage_bad_inputs_fail_before_writing(micro_run, tmp_path):
    from conftest import copy_run

    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train.ppo import main
    from gpt2_rlhf.train.rundir import StageError

    run = copy_run(micro_run, tmp_path / "run", stages=("base", "sft"))
    with pytest.raises(StageError, match="reward"):
        main(load_recipe("micro"), run)
    with pytest.raises(ValueError, match="cannot import"):
        main(load_recipe("micro", {"ppo.reward_function": "gpt2_rlhf.train.rewards:no_such_function"}), run)
    assert not (run / "ppo.partial").exists() and not (run / "ppo").exists()
    with pytest.raises(Exception, match="module:function"):
        load_recipe("micro", {"ppo.reward_function": "contains_good"})


def _cli(run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gpt2_rlhf.cli", "ppo", "--config", "micro", "--output-dir", str(run),
            "--ppo.total_episodes", "64", "--ppo.save_every", "2", *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.slow
def test_accelerate_launch_two_processes(micro_run, tmp_path):
    from conftest import copy_run

    run = copy_run(micro_run, tmp_path / "run")
    # `--cpu --num_processes 2` would start ONE process (accelerate's multi-CPU launcher needs mpirun);
    # --multi_gpu goes through torch.distributed, and without GPUs we ask for the CPU (gloo)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "gpt2_rlhf.cli", "ppo", "--config", "micro",
           "--output-dir", str(run)]
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = run / "ppo"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2
    rows = _read_jsonl(out / "metrics.jsonl")
    assert [r["update"] for r in rows] == [1, 2, 3, 4]  # written once, by the main process
    assert (out / "COMPLETE").is_file() and not (run / "ppo.partial").exists()


def test_recipe_ppo_hyperparameters_are_the_ones_training_uses(tiny, monkeypatch):
    """A recipe's ppo learning rates, KL coefficient and clip ranges reach the optimiser, the per-token
    rewards and both clipped losses. The values differ from every default and from each other, so a
    hard-coded, defaulted or swapped hyperparameter in the trainer shows here (a recipe's YAML values
    are not what this checks: see test_recipes_are_consistent)."""
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train.ppo import core

    given = {"learning_rate": 3e-4, "value_learning_rate": 7e-4, "kl_coef": 0.37, "cliprange": 0.05,
             "cliprange_value": 0.3}
    ppo = load_recipe("micro", {f"ppo.{k}": str(v) for k, v in given.items()}).ppo
    tr = _trainer(tiny, _cfg(**{k: getattr(ppo, k) for k in given}))
    assert [g["initial_lr"] for g in tr.optimizer.param_groups] == [3e-4, 7e-4]  # policy, critic
    seen = {}
    policy_loss, value_loss = core.policy_loss, core.value_loss

    def spy_policy(*a, **kw):
        seen["cliprange"] = a[4] if len(a) > 4 else kw["cliprange"]
        return policy_loss(*a, **kw)

    def spy_value(*a, **kw):
        seen["cliprange_value"] = a[4] if len(a) > 4 else kw["cliprange_value"]
        return value_loss(*a, **kw)

    monkeypatch.setattr(core, "policy_loss", spy_policy)
    monkeypatch.setattr(core, "value_loss", spy_value)
    row = tr.step()
    assert seen == {"cliprange": 0.05, "cliprange_value": 0.3} and row["kl_coef"] == 0.37
    _move_reference(tr)
    torch.manual_seed(0)
    batch, _ = tr.rollout(list(range(8)))
    t, mask = batch.tensors, batch.response_mask
    assert t["kl"][mask.bool()].abs().mean() > 0.01
    expected = -0.37 * t["kl"]
    expected[torch.arange(len(mask)), mask.sum(1).long() - 1] += t["score"]
    assert torch.allclose(t["rewards"], expected * mask, atol=1e-6)


def test_recipes_are_consistent():
    """The recipe files agree with each other and with what they reproduce: keyword.yaml shares tiny.yaml's
    data, base and SFT (so those stages are reused) without feedback; gpt2-hh keeps the seed card's PPO
    hyperparameters. This locks YAML values only; that a recipe's values are what training uses is
    test_recipe_ppo_hyperparameters_are_the_ones_training_uses."""
    import yaml

    from gpt2_rlhf.stages import load_recipe

    tiny = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())
    keyword = yaml.safe_load((ROOT / "configs/keyword.yaml").read_text())
    for section in ("seed", "data", "base", "sft"):
        assert keyword.get(section) == tiny.get(section), f"keyword.yaml section {section!r} differs from tiny.yaml"
    assert "label" not in keyword["stages"]  # a keyword reward needs no labelled comparisons
    assert load_recipe(ROOT / "configs/keyword.yaml").ppo.reward_function == "gpt2_rlhf.train.rewards:contains_good"
    ppo = load_recipe("gpt2-hh").ppo
    assert (ppo.learning_rate, ppo.kl_coef, ppo.cliprange) == (1e-5, 0.1, 0.2)
    assert ppo.policy_path is None and ppo.reward_function is None  # the run's sft/ and reward/
