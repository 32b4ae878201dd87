"""space/inference.py: sampling maths by hand, agreement with the project's own helpers, the engine."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from gpt2_rlhf.space.inference import (
    Decoding,
    Engine,
    InputError,
    Limits,
    ModelSources,
    Policy,
    RewardScorer,
    clean_prompt,
    continue_dialogue,
    cut_at_stop,
    format_prompt,
    hold_back,
    last_token_index,
    next_token,
    pad_right,
    read_reward_stats,
    top_p_filter,
)
from space_helpers import REWARD_STATS, ScriptedLM, make_run, make_tokenizer

SPACE_DIR = Path(__file__).resolve().parent.parent / "space"
PROMPT = "\n\nHuman: How do I make tea?\n\nAssistant:"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return make_run(tmp_path_factory.mktemp("space_run"))


@pytest.fixture(scope="module")
def engine(run_dir):
    return Engine.load(ModelSources.from_run_dir(run_dir), device="cpu")


# ----------------------------------------------------------------------------- pure maths


def test_top_p_filter_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    # mass before each token (most likely first): 0, .5, .8 -> top_p .6 keeps {.5, .3}
    kept = top_p_filter(logits, 0.6).isfinite()
    assert kept.tolist() == [[True, True, False]]
    assert top_p_filter(logits, 0.5).isfinite().tolist() == [[True, False, False]]
    assert top_p_filter(logits, 0.01).isfinite().tolist() == [[True, False, False]]  # always one token
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    # vocabulary order is preserved when the most likely token is not first
    shuffled = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    assert top_p_filter(shuffled, 0.6).isfinite().tolist() == [[False, True, True]]


def test_top_p_filter_matches_transformers_warper():
    from transformers import TopPLogitsWarper

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, generator=g) * 3
    for p in (0.3, 0.7, 0.95):
        ours = top_p_filter(logits, p)
        theirs = TopPLogitsWarper(p)(None, logits.clone())
        assert torch.equal(ours.isfinite(), theirs.isfinite()), p


def test_next_token_greedy_and_seeded():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert next_token(logits, 0.0, 1.0, None).tolist() == [1, 0]
    draws = [next_token(logits, 1.0, 1.0, torch.Generator().manual_seed(7)).tolist() for _ in range(2)]
    assert draws[0] == draws[1]
    # with top_p small enough only the argmax survives, whatever the generator
    assert next_token(logits, 1.0, 0.05, torch.Generator().manual_seed(1)).tolist() == [1, 0]


def test_last_token_index_and_pad_right_by_hand():
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 3, 0, 0]
    ids, m = pad_right([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert m.tolist() == [[1, 1, 1], [1, 0, 0]]


# ----------------------------------------------------------------------------- prompts and settings


def test_clean_prompt_makes_text_safe_and_keeps_html_as_text():
    limits = Limits(max_prompt_chars=100)
    assert clean_prompt("a\x00b\x1b[31mc\x7f\r\nd\te", limits) == "ab[31mc\nd\te"
    assert clean_prompt("<script>alert(1)</script>", limits) == "<script>alert(1)</script>"
    assert clean_prompt("x\ud800y", limits) == "x?y"  # lone surrogate
    for empty in ("", "   \n\t", None, "\x00\x01"):
        with pytest.raises(InputError, match="Please type a prompt"):
            clean_prompt(empty, limits)
    with pytest.raises(InputError, match="101 characters long; this Space accepts at most 100"):
        clean_prompt("x" * 101, limits)


def test_format_prompt():
    assert format_prompt("  Hi there \n") == "\n\nHuman: Hi there\n\nAssistant:"
    assert format_prompt("Human: Hi") == "\n\nHuman: Hi\n\nAssistant:"
    assert format_prompt(PROMPT) == PROMPT
    two = "\n\nHuman: a\n\nAssistant: b\n\nHuman: c"
    assert format_prompt(two) == two + "\n\nAssistant:"


def test_decoding_checked_caps_and_rejects():
    limits = Limits(max_new_tokens=32)
    assert Decoding(1000, 0.7, 0.9, 3.0).checked(limits) == Decoding(32, 0.7, 0.9, 3)
    for bad, match in (((0, 0.7, 1.0, 0), "at least 1"), ((8, -0.1, 1.0, 0), "temperature"),
                       ((8, 0.7, 0.0, 0), "top-p"), ((8, 0.7, 1.0, -1), "seed"), ((8, 0.7, 1.0, 1.5), "seed"),
                       ((8, float("nan"), 1.0, 0), "finite"), ((None, 0.7, 1.0, 0), "numbers")):
        with pytest.raises(InputError, match=match):
            Decoding(*bad).checked(limits)


# ----------------------------------------------------------------------------- generation


def test_stream_stops_after_eos_and_caps_tokens():
    tok = make_tokenizer()
    script = tok("Hi <b>there</b>", add_special_tokens=False)["input_ids"]
    lm = ScriptedLM(script, len(tok), tok.eos_token_id)
    policy = Policy("rlhf", "scripted", lm, tok)
    chunks = list(policy.stream(PROMPT, Decoding(50, 0.0, 1.0, 0)))
    assert chunks[-1] == "Hi <b>there</b>"  # EOS ends the response and is not part of the text
    assert len(lm.calls) == len(script) + 1  # one forward per token, EOS included, then stop
    assert lm.calls[0].shape[1] == len(tok(PROMPT)["input_ids"]) and all(c.shape == (1, 1) for c in lm.calls[1:])
    assert all(chunks[-1].startswith(c) for c in chunks)
    lm.calls.clear()
    assert list(policy.stream(PROMPT, Decoding(3, 0.0, 1.0, 0)))[-1] == tok.decode(script[:3])
    assert len(lm.calls) == 3


def test_greedy_stream_matches_project_generate_and_transformers(run_dir):
    from gpt2_rlhf.train.modeling import load_causal_lm, load_tokenizer
    from gpt2_rlhf.train.sampling import GenerationSettings, generate

    policy = Policy.load("rlhf", str(run_dir / "ppo"))
    chunks = list(policy.stream(PROMPT, Decoding(12, 0.0, 1.0, 0)))
    model, tok = load_causal_lm(run_dir / "ppo"), load_tokenizer(run_dir / "ppo")
    ref = generate(model, tok, [PROMPT], GenerationSettings(max_new_tokens=12, temperature=0.0))
    assert chunks[-1] == ref.texts[0]
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    hf = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    assert chunks[-1] == tok.decode(hf[0, ids.shape[1]:], skip_special_tokens=True)
    assert len(chunks) >= 2 and all(chunks[-1].startswith(c) for c in chunks)  # streamed prefixes


@pytest.mark.parametrize("temperature,top_p,seed", [(1.0, 1.0, 0), (0.7, 0.8, 5)])
def test_seeded_sampling_matches_project_generate(run_dir, temperature, top_p, seed):
    """The Space's stream draws exactly what the project's sampler draws for the same seed."""
    from gpt2_rlhf.train.modeling import load_causal_lm, load_tokenizer
    from gpt2_rlhf.train.sampling import GenerationSettings, generate

    policy = Policy.load("base", str(run_dir / "base"))
    ours = list(policy.stream(PROMPT, Decoding(16, temperature, top_p, seed)))[-1]
    model, tok = load_causal_lm(run_dir / "base"), load_tokenizer(run_dir / "base")
    ref = generate(model, tok, [PROMPT], GenerationSettings(max_new_tokens=16, temperature=temperature, top_k=0,
                                                             top_p=top_p), seed=seed)
    assert ours == ref.texts[0]


# ----------------------------------------------------------------------------- reward model


def test_reward_scores_match_project_reward_model_and_hand_normalisation(run_dir):
    from transformers import AutoModelForSequenceClassification

    from gpt2_rlhf.train.modeling import RewardModel

    scorer = RewardScorer.load(str(run_dir / "reward"))
    responses = [" Boil water.", " A much longer answer about tea, with several more words in it."]
    raw, norm = scorer.score(PROMPT, responses)
    ref = RewardModel.load(run_dir / "reward")
    assert raw == pytest.approx(ref.score([PROMPT] * 2, responses).tolist(), abs=1e-5)
    assert norm == pytest.approx([(r - REWARD_STATS["mean"]) / REWARD_STATS["std"] for r in raw], abs=1e-6)
    # by hand: one unpadded sequence, the library's own head at the last token
    hf = AutoModelForSequenceClassification.from_pretrained(run_dir / "reward")
    ids = scorer.tokenizer(PROMPT + responses[0] + scorer.tokenizer.eos_token, return_tensors="pt")["input_ids"]
    assert raw[0] == pytest.approx(hf(ids).logits[0, 0].item(), abs=1e-5)
    # padding never leaks: each score equals the score alone
    assert raw[1] == pytest.approx(scorer.score(PROMPT, responses[1:])[0][0], abs=1e-5)
    assert len(set(raw)) == 2 and all(math.isfinite(x) for x in raw)


def test_reward_stats(tmp_path):
    assert read_reward_stats(str(tmp_path)) == (0.0, 1.0, "none")
    (tmp_path / "reward_stats.json").write_text(json.dumps({"mean": 1.5, "std": 0.5, "source": "x"}))
    assert read_reward_stats(str(tmp_path)) == (1.5, 0.5, "x")
    (tmp_path / "reward_stats.json").write_text(json.dumps({"mean": 1.5, "std": 0.0}))
    with pytest.raises(ValueError, match="reward_stats.json: mean must be finite and std positive"):
        read_reward_stats(str(tmp_path))
    (tmp_path / "reward_stats.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid reward_stats.json"):
        read_reward_stats(str(tmp_path))


# ----------------------------------------------------------------------------- sources and engine


def test_model_sources(tmp_path, run_dir):
    env = {"RLHF_BASE_ID": "me/base", "RLHF_POLICY_ID": "me/ppo", "RLHF_REWARD_ID": "me/rm"}
    assert ModelSources.from_env(env) == ModelSources(policy="me/ppo", reward="me/rm", base="me/base", sft=None)
    assert ModelSources.from_env({**env, "RLHF_SFT_ID": "me/sft"}).sft == "me/sft"
    assert ModelSources.from_env({**env, "RLHF_REVISION": "v1"}).revision == "v1"
    with pytest.raises(ValueError, match=r"RLHF_REWARD_ID \(a reward model id, or `none`\) and at least two of .*"
                                         r"\(have: RLHF_BASE_ID\)"):
        ModelSources.from_env({"RLHF_BASE_ID": "me/base", "RLHF_POLICY_ID": " "})
    # any two models make a Space: here SFT against DPO and RLOO, no PPO and no base
    two = ModelSources.from_env({"RLHF_SFT_ID": "me/sft", "RLHF_DPO_ID": "me/dpo", "RLHF_RLOO_ID": "me/rloo",
                                 "RLHF_REWARD_ID": "none"})
    assert two.policies() == {"sft": "me/sft", "dpo": "me/dpo", "rloo": "me/rloo"} and two.reward is None
    src = ModelSources.from_run_dir(run_dir)
    assert (src.base, src.sft, src.policy, src.reward) == tuple(str(run_dir / s) for s in ("base", "sft", "ppo", "reward"))
    partial = tmp_path / "run"
    shutil.copytree(run_dir, partial)
    (partial / "sft" / "COMPLETE").unlink()
    assert ModelSources.from_run_dir(partial).sft is None  # an unfinished SFT stage is left out
    (partial / "ppo" / "COMPLETE").unlink()
    with pytest.raises(FileNotFoundError, match=r"ppo: missing or unfinished"):
        ModelSources.from_run_dir(partial)


def test_compare_same_seed_same_pair(engine):
    prompt, decoding = engine.prepare("How do I make tea?", Decoding(12, 0.9, 1.0, 11))
    updates = list(engine.compare(prompt, decoding, "base", "rlhf"))
    last = updates[-1]
    assert last.done and not any(u.done for u in updates[:-1])
    assert (last.left.role, last.right.role) == ("base", "rlhf")
    assert last.left.model_id.endswith("base") and last.right.model_id.endswith("ppo")
    assert last.left.response != last.right.response
    assert all(isinstance(s.reward_normalised, float) for s in (last.left, last.right))
    again = list(engine.compare(prompt, decoding, "base", "rlhf"))[-1]
    assert again == last
    other = list(engine.compare(prompt, Decoding(12, 0.9, 1.0, 12), "base", "rlhf"))[-1]
    assert (other.left.response, other.right.response) != (last.left.response, last.right.response)
    # each side is independent of the other: rlhf alone with the same seed gives the same text
    assert list(engine.policies["rlhf"].stream(prompt, decoding))[-1] == last.right.response
    with pytest.raises(InputError, match="no 'critic' model"):
        list(engine.compare(prompt, decoding, "critic", "rlhf"))


def test_long_prompt_is_cut_to_the_context(engine):
    # within the character limit but far beyond the 96-token context of the tiny models
    prompt, decoding = engine.prepare("tea " * 900, Decoding(8, 0.0, 1.0, 0))
    last = list(engine.compare(prompt, decoding, "sft", "rlhf"))[-1]
    assert last.done and math.isfinite(last.left.reward) and math.isfinite(last.right.reward)


def test_engine_without_sft(tmp_path):
    run = make_run(tmp_path / "run", sft=False)
    engine = Engine.load(ModelSources.from_run_dir(run), device="cpu")
    assert engine.roles == ["base", "rlhf"] and engine.default_pair == ("rlhf", "base")


def test_run_dir_with_dpo_and_rloo(tmp_path):
    run = make_run(tmp_path / "run", extra=("dpo", "rloo"))
    src = ModelSources.from_run_dir(run)
    assert src.policies() == {r: str(run / s) for r, s in (("base", "base"), ("sft", "sft"), ("rlhf", "ppo"),
                                                            ("dpo", "dpo"), ("rloo", "rloo"))}
    (run / "rloo" / "COMPLETE").unlink()
    assert ModelSources.from_run_dir(run).rloo is None  # an unfinished stage is left out


# ----------------------------------------------------------------------------- turn markers, both sides at once


def test_cut_at_stop_and_hold_back_by_hand():
    stops = ("\n\nHuman:", "\n\nAssistant:")
    assert cut_at_stop(" Sure.\n\nHuman: thanks", stops) == " Sure."
    assert cut_at_stop(" a\n\nAssistant: b\n\nHuman:", stops) == " a"  # the earliest marker
    assert cut_at_stop(" no marker\n\nHum", stops) is None and cut_at_stop("x", ()) is None
    assert hold_back(" Sure.\n\nHum", stops) == " Sure."  # might become a marker: not shown yet
    assert hold_back(" Sure.\n", stops) == " Sure." and hold_back(" Sure.\n\nHa", stops) == " Sure.\n\nHa"
    assert hold_back(" Sure.", stops) == " Sure." and hold_back(" x\n", ()) == " x\n"
    assert continue_dialogue(PROMPT, " Boil water. ", " And milk? ") == (
        "\n\nHuman: How do I make tea?\n\nAssistant: Boil water.\n\nHuman: And milk?\n\nAssistant:")


def test_a_response_ends_at_the_next_turn_marker():
    tok = make_tokenizer()
    script = tok(" Boil water.\n\nHuman: and now I ask myself\n\nAssistant: ok", add_special_tokens=False)["input_ids"]
    lm = ScriptedLM(script, len(tok), tok.eos_token_id)
    policy = Policy("base", "scripted", lm, tok)
    chunks = list(policy.stream(PROMPT, Decoding(64, 0.0, 1.0, 0), stop=("\n\nHuman:", "\n\nAssistant:")))
    assert chunks[-1] == " Boil water." and all("\n" not in c for c in chunks)  # no half marker ever shown
    assert len(lm.calls) < len(script)  # it stopped generating there, not at the end of the script
    lm.calls.clear()
    assert "\n\nHuman:" in list(policy.stream(PROMPT, Decoding(64, 0.0, 1.0, 0)))[-1]  # plain text: no stop
    run_engine = Engine({"base": policy, "rlhf": Policy("rlhf", "s2", ScriptedLM(script, len(tok), tok.eos_token_id),
                                                        tok)}, None)
    last = list(run_engine.compare(PROMPT, Decoding(64, 0.0, 1.0, 0), "base", "rlhf"))[-1]
    assert last.left.response == last.right.response == " Boil water."
    assert last.left.tokens == len(tok(" Boil water.", add_special_tokens=False)["input_ids"])
    plain = Engine(run_engine.policies, None, prompt_format="plain")
    assert "\n\nHuman:" in list(plain.compare("Once", Decoding(64, 0.0, 1.0, 0), "base", "rlhf"))[-1].left.response


def test_both_sides_generate_at_the_same_time():
    """Two models of 0.05 s a token: the pair takes about one side's time, and updates show both growing."""
    tok = make_tokenizer()
    script = tok(" one two three four five six seven eight", add_special_tokens=False)["input_ids"]
    policies = {r: Policy(r, r, ScriptedLM(script, len(tok), tok.eos_token_id, delay_s=0.05), tok)
                for r in ("base", "rlhf")}
    engine = Engine(policies, None)
    decoding = Decoding(64, 0.0, 1.0, 0)
    t0 = time.perf_counter()
    list(policies["base"].stream(PROMPT, decoding))
    one_side = time.perf_counter() - t0
    t0 = time.perf_counter()
    updates = [(u.left.response, u.right.response, u.done) for u in engine.compare(PROMPT, decoding, "base", "rlhf")]
    both = time.perf_counter() - t0
    assert both < 1.5 * one_side, (both, one_side)  # one after the other would take 2x
    final = updates[-1]
    assert final[2] and final[0] == final[1] == tok.decode(script)
    assert sum(1 for a, b, _ in updates[:-1] if 0 < len(a) < len(final[0]) and 0 < len(b) < len(final[1])) >= 3
    with pytest.raises(InputError, match="Pick two different models"):
        list(engine.compare(PROMPT, decoding, "rlhf", "rlhf"))


def test_a_failing_side_stops_the_pair_and_says_why():
    tok = make_tokenizer()

    class Broken(ScriptedLM):
        def forward(self, *args, **kwargs):
            if len(self.calls) >= 2:
                raise RuntimeError("out of memory")
            return super().forward(*args, **kwargs)

    script = tok(" one two three four five six", add_special_tokens=False)["input_ids"]
    engine = Engine({"base": Policy("base", "b", Broken(script, len(tok), tok.eos_token_id), tok),
                     "rlhf": Policy("rlhf", "r", ScriptedLM(script, len(tok), tok.eos_token_id, delay_s=0.01), tok)},
                    None)
    with pytest.raises(RuntimeError, match="out of memory"):
        list(engine.compare(PROMPT, Decoding(64, 0.0, 1.0, 0), "base", "rlhf"))
    assert not [t for t in threading.enumerate() if t.name.startswith("space-")]  # no thread left behind


def test_space_folder_is_self_contained(tmp_path):
    """Uploaded alone, the Space imports without the gpt2-rlhf package and builds nothing at import."""
    for name in ("app.py", "inference.py", "votes.py"):
        shutil.copy(SPACE_DIR / name, tmp_path / name)
    code = ("import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; sys.path.insert(0, '.');"
            "import inference, votes;"
            "assert 'gradio' not in sys.modules, 'inference/votes import gradio';"
            "import app;"
            "assert not any(m.split('.')[0] in ('train', 'evaluation', 'space') for m in sys.modules), 'imports train';"
            "assert not hasattr(app, 'demo'), 'built at import'; print('ok')")
    env = {"PATH": "/usr/bin:/bin", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
