"""The one sampler (train.sampling): pure tensor functions by hand, parity with transformers, long prompts.

A prompt longer than the context goes through every sampling path (reward statistics,
PPO rollouts, the evaluation, the Space) without error, keeping its last tokens.
"""

from __future__ import annotations

import math

import pytest
import torch

from test_evaluation import TEXTS, make_tiny_run


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    from gpt2_rlhf.train.modeling import load_causal_lm, load_tokenizer

    run = make_tiny_run(tmp_path_factory.mktemp("samplingrun") / "run")
    return load_causal_lm(run / "sft").eval(), load_tokenizer(run / "sft")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    # a 32-position context: the long prompts below are several times longer
    return make_tiny_run(tmp_path_factory.mktemp("shortrun") / "run", n_positions=32)


@pytest.fixture(scope="module")
def short_policy(tiny_run):
    from gpt2_rlhf.train.modeling import load_causal_lm, load_tokenizer

    return load_causal_lm(tiny_run / "sft").eval(), load_tokenizer(tiny_run / "sft")


LONG = "\n\nHuman: " + " and ".join(["tell me about rice"] * 40) + "?\n\nAssistant: Sure.\n\nHuman: Why?\n\nAssistant:"


def test_token_logprobs_by_hand():
    from gpt2_rlhf.train.sampling import token_logprobs

    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]])  # (1, 2, 2): p = (1/4, 3/4), then (1/2, 1/2)
    ids = torch.tensor([[1, 0]])
    assert token_logprobs(logits, ids)[0].tolist() == pytest.approx([math.log(0.75), math.log(0.5)])
    # temperature 2: logits / 2 -> p(1) = sqrt(3) / (1 + sqrt(3))
    s3 = math.sqrt(3.0)
    assert token_logprobs(logits, ids, 2.0)[0, 0].item() == pytest.approx(math.log(s3 / (1 + s3)))


@pytest.mark.parametrize("k, kept", [
    (0, [True, True, True, True]),     # off
    (2, [True, False, True, False]),   # the two largest
    (1, [False, False, True, False]),
    (3, [True, True, True, False]),
])
def test_top_k_filter_by_hand(k, kept):
    from gpt2_rlhf.train.sampling import top_k_filter

    out = top_k_filter(torch.tensor([[2.0, 1.0, 3.0, 0.0]]), k)
    assert torch.isfinite(out[0]).tolist() == kept


@pytest.mark.parametrize("p, kept", [
    (1.0, [True, True, True, True]),
    # probabilities .5, .25, .125, .125 (sorted ascending cum: .125, .25, .5, 1.0); drop cum <= 1 - p
    (0.5, [True, False, False, False]),   # 1 - p = .5: drops .125, .125, .25 (cum .5 <= .5)
    (0.6, [True, True, False, False]),    # 1 - p = .4: drops the two .125s
    (0.9, [True, True, True, True]),      # 1 - p = .1: drops nothing
    (0.01, [True, False, False, False]),  # the most likely token always stays
])
def test_top_p_filter_by_hand(p, kept):
    from gpt2_rlhf.train.sampling import top_p_filter

    logits = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]]))
    assert torch.isfinite(top_p_filter(logits, p)[0]).tolist() == kept


def test_next_tokens_greedy_and_sampled():
    from gpt2_rlhf.train.sampling import next_tokens
    from gpt2_rlhf.train.sampling import GenerationSettings

    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    assert next_tokens(logits, GenerationSettings(temperature=0.0), None).tolist() == [1, 0]
    # top_k = 1 makes sampling deterministic whatever the seed
    g = torch.Generator().manual_seed(0)
    assert next_tokens(logits, GenerationSettings(temperature=1.0, top_k=1), g).tolist() == [1, 0]


def test_masked_rows_keeps_the_masked_values():
    from gpt2_rlhf.train.sampling import masked_rows

    assert masked_rows(torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]), torch.tensor([[1, 1, 0], [1, 0, 0]])) == \
        [[1.0, 2.0], [3.0]]


# ----------------------------------------------------------------------------- model passes


def test_measure_policy_records_consistent_numbers(policy):
    from gpt2_rlhf.train.sampling import GenerationSettings, measure_policy

    model, tok = policy
    prompts = [TEXTS[i].split("Assistant:")[0] + "Assistant:" for i in range(3)]
    res = measure_policy(model, tok, prompts, GenerationSettings(max_new_tokens=6, temperature=1.0), seed=0, batch_size=2,
                     max_prompt_tokens=64, reference=model)
    assert len(res.texts) == len(res.lengths) == len(res.eos) == len(res.logprobs) == 3
    for n, eos, lp, rp in zip(res.lengths, res.eos, res.logprobs, res.ref_logprobs):
        assert len(lp) == n + int(eos) and lp == rp  # EOS has a log-prob but is not counted in the length
        assert all(v <= 0 for v in lp)


PROMPTS = ["\n\nHuman: How do I learn to code?\n\nAssistant:", "\n\nHuman: Hi\n\nAssistant:",
           "\n\nHuman: Any tips for cooking rice? Please.\n\nAssistant:", "\n\nHuman: How can I sleep?\n\nAssistant:"]


def test_greedy_batched_equals_one_prompt_at_a_time(policy):
    """Left padding, the KV cache and dropping finished rows do not change greedy outputs."""
    from gpt2_rlhf.train.sampling import GenerationSettings, measure_policy

    model, tok = policy
    greedy = GenerationSettings(max_new_tokens=8, temperature=0.0)
    batched = measure_policy(model, tok, PROMPTS, greedy, seed=0, batch_size=4, max_prompt_tokens=64)
    single = [measure_policy(model, tok, [p], greedy, seed=0, batch_size=1, max_prompt_tokens=64).texts[0] for p in PROMPTS]
    assert batched.texts == single


def hf_greedy(model, tok, prompts, max_new_tokens, max_prompt_tokens):
    """transformers' model.generate, greedy, on the same left-padded prompts: the independent oracle."""
    from transformers import GenerationConfig

    from gpt2_rlhf.train.modeling import context_length
    from gpt2_rlhf.train.modeling import pad_sequences
    from gpt2_rlhf.train.sampling import encode_prompts, first_eos_mask, prompt_budget

    budget = prompt_budget(context_length(model), max_prompt_tokens, max_new_tokens)
    ids, mask = pad_sequences(encode_prompts(tok, prompts, budget), tok.pad_token_id, "left")
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    resp = out[:, ids.shape[1]:]
    keep, has_eos = first_eos_mask(resp, tok.eos_token_id)
    return torch.where(keep, resp, tok.pad_token_id), keep, has_eos


@pytest.mark.parametrize("eos_offset", [None, 1, 3])
def test_sampler_matches_transformers_generate_under_greedy(policy, eos_offset):
    """The sampler == model.generate, tensor for tensor, also when rows end at different steps."""
    from gpt2_rlhf.train.sampling import GenerationSettings, generate

    model, tok = policy
    if eos_offset is not None:  # rows end at different steps and leave the batch early
        model = forced_eos(model, tok, eos_offset)
    greedy = GenerationSettings(max_new_tokens=6, temperature=0.0)
    ours = generate(model, tok, PROMPTS, greedy, seed=0, max_prompt_tokens=64)
    ref_ids, ref_mask, ref_eos = hf_greedy(model, tok, PROMPTS, 6, 64)
    width = ours.response_ids.shape[1]
    assert ours.texts == tok.batch_decode(ref_ids, skip_special_tokens=True) and torch.equal(ours.has_eos, ref_eos)
    assert torch.equal(ours.response_ids, ref_ids[:, :width]) and not ref_mask[:, width:].any()
    assert torch.equal(ours.response_mask, ref_mask[:, :width])
    if eos_offset is not None:
        lengths = ours.response_mask.sum(1)
        assert ours.has_eos.any() and len(set(lengths.tolist())) > 1  # really staggered


def forced_eos(model, tok, offset: int):
    """The model, except that EOS becomes the argmax once a row holds L = (longest prompt + offset) real tokens:
    rows with different prompt lengths end at different steps (some never). A rule on the input only, so
    both decoders see the same model."""
    import copy

    L = max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS) + offset
    m = copy.deepcopy(model)
    orig = m.forward

    def forward(*args, **kwargs):
        out = orig(*args, **kwargs)
        ends = kwargs["attention_mask"].sum(1) == L  # (B,)
        out.logits[ends, -1, tok.eos_token_id] = out.logits[ends, -1].max(-1).values + 10.0
        return out

    m.forward = forward
    return m


def test_sampling_is_seeded(policy):
    from gpt2_rlhf.train.sampling import GenerationSettings, generate

    model, tok = policy
    s = GenerationSettings(max_new_tokens=6, temperature=1.0, top_k=20, top_p=0.9)
    a, b = (generate(model, tok, PROMPTS, s, seed=3, max_prompt_tokens=64) for _ in range(2))
    c = generate(model, tok, PROMPTS, s, seed=4, max_prompt_tokens=64)
    assert a.texts == b.texts and torch.equal(a.response_ids, b.response_ids) and a.texts != c.texts




def test_prompt_budget_leaves_room_for_new_tokens_and_eos():
    from gpt2_rlhf.train.sampling import prompt_budget

    assert prompt_budget(1024, 512, 48) == 512
    assert prompt_budget(256, 512, 48) == 256 - 48 - 1
    with pytest.raises(ValueError, match="leaves no room"):
        prompt_budget(32, 64, 31)


def test_pad_sequences_by_hand():
    from gpt2_rlhf.train.modeling import pad_sequences

    ids, mask = pad_sequences([[5, 6], [7]], 0, "left")
    assert ids.tolist() == [[5, 6], [0, 7]] and mask.tolist() == [[1, 1], [0, 1]]
    ids, mask = pad_sequences([[5, 6], [7]], 0, "right")
    assert ids.tolist() == [[5, 6], [7, 0]] and mask.tolist() == [[1, 1], [1, 0]]


def _long_prompts(tok):
    n = len(tok(LONG, add_special_tokens=False)["input_ids"])
    assert n > 3 * 32, f"the long prompt must be far longer than the context ({n} tokens)"
    return [LONG, PROMPTS[1]]


def test_long_prompt_generate_keeps_its_end_and_fits_the_context(short_policy):
    """Reward statistics (`train.reward.policy_samples`) and the evaluation sample through `generate`."""
    from gpt2_rlhf.train.sampling import GenerationSettings, generate

    model, tok = short_policy
    before = (tok.padding_side, tok.truncation_side)
    gen = generate(model, tok, _long_prompts(tok), GenerationSettings(max_new_tokens=8, temperature=1.0), seed=0,
                   max_prompt_tokens=512)
    assert gen.prompt_ids.shape[1] + 8 + 1 <= 32  # prompt + new tokens + EOS fit the context
    end = tok(LONG, add_special_tokens=False)["input_ids"][-gen.prompt_ids.shape[1]:]
    assert gen.prompt_ids[0].tolist() == end  # the prompt's last tokens ("...Assistant:")
    assert (tok.padding_side, tok.truncation_side) == before  # the sampler never changes a tokenizer


def test_long_prompt_through_the_evaluation_and_the_reward_model(tiny_run, short_policy):
    from gpt2_rlhf.evaluation.generate import pair_logprobs
    from gpt2_rlhf.train.modeling import RewardModel, context_length
    from gpt2_rlhf.train.sampling import GenerationSettings, measure_policy

    model, tok = short_policy
    prompts = _long_prompts(tok)
    res = measure_policy(model, tok, prompts, GenerationSettings(max_new_tokens=8, temperature=1.0), seed=0,
                         batch_size=2, max_prompt_tokens=512, reference=model)
    assert len(res.texts) == 2 and all(math.isfinite(v) for v in res.kl())
    lp = pair_logprobs(model, tok, prompts, [" Rinse it.", " Yes."], batch_size=2, max_prompt_tokens=512,
                       max_response_tokens=64)
    assert all(len(x) > 0 for x in lp)
    rm = RewardModel.load(tiny_run / "reward")
    scores = rm.score(prompts, res.texts, max_length=context_length(rm.model))
    assert torch.isfinite(scores).all()


def test_long_prompt_through_reward_statistics(tiny_run):
    """The reward stage's normalisation samples (the crash on real HH pairs: prompts longer than the context)."""
    from gpt2_rlhf.train.reward import RewardStageConfig, policy_samples
    from gpt2_rlhf.train.modeling import load_tokenizer

    tok = load_tokenizer(tiny_run / "sft")
    cfg = RewardStageConfig(stats_max_new_tokens=8, per_device_eval_batch_size=2)
    texts = policy_samples(tiny_run / "sft", _long_prompts(tok), cfg, seed=0)
    assert len(texts) == 2


def test_long_prompt_through_ppo_rollouts(tiny_run):
    from gpt2_rlhf.train.modeling import RewardModel, load_causal_lm, load_tokenizer
    from gpt2_rlhf.train.ppo.config import PPOConfig
    from gpt2_rlhf.train.ppo.trainer import PPOTrainer, RewardModelScorer

    tok = load_tokenizer(tiny_run / "sft")
    prompts = _long_prompts(tok) * 2
    cfg = PPOConfig(total_episodes=4, batch_size=4, ppo_epochs=1, max_new_tokens=8, max_prompt_tokens=512,
                    eval_prompts=0, save_every=0)
    rm = RewardModel.load(tiny_run / "reward")
    tr = PPOTrainer(cfg, load_causal_lm(tiny_run / "sft"), load_causal_lm(tiny_run / "sft"), tok,
                    RewardModelScorer(rm, tok), prompts, progress=False)
    before = [p.detach().clone() for p in tr.policy.parameters()]
    row = tr.step()
    assert tr.max_prompt_tokens == 32 - 8 - 1 and math.isfinite(row["score"])
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.policy.parameters()))


def test_long_prompt_through_the_space(tiny_run):
    """The Space's own stream (its folder ships alone, so it keeps its copy of the sampler)."""
    from gpt2_rlhf.space.inference import Decoding, Engine, Limits, ModelSources

    engine = Engine.load(ModelSources.from_run_dir(tiny_run), Limits(max_prompt_chars=4000), device="cpu")
    prompt, decoding = engine.prepare(" and ".join(["tell me about rice"] * 40), Decoding(max_new_tokens=8, seed=0))
    updates = list(engine.compare(prompt, decoding, "base", "rlhf"))
    assert updates[-1].done and all(s.reward is not None for s in (updates[-1].left, updates[-1].right))
