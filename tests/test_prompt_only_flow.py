"""Seed 000's flow: PPO on your own prompts with your own reward, no preference data and no reward model.

PPO from a text file of prompts and from a JSONL `prompt` column, a bad line named before anything is
written, TRL-style reward functions, a sequence classifier as the reward through the recipe, and
`rlhf run` on a story recipe end to end: no reward stage trained, the evaluation scoring with the
reward function (share of positive rewards, KL, distinct-2 with CIs), the card naming the reward,
the Space continuing plain text, `rlhf reproduce` passing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from conftest import copy_run

ROOT = Path(__file__).resolve().parent.parent
OPENERS = ["Once upon a time", "Long ago", "One morning", "Late one evening", "Far away"]
CHARACTERS = ["a little fox", "an old fisherman", "a curious girl", "a tired dragon", "a clever mouse"]
VERBS = ["found", "met", "wanted", "lived", "saw", "made", "heard", "lost"]
STORY_PROMPTS = [f"{o}, {c} {v}" for o in OPENERS for c in CHARACTERS for v in VERBS]  # 200 prompts
SEEN: list[str] = []  # the prompts the reward functions below were called with


def recording_reward(prompts, completions, **kwargs):
    """TRL's reward_funcs signature: keyword prompts and completions; +1 with an 'e', else -1."""
    SEEN.extend(prompts)
    return [1.0 if "e" in c else -1.0 for c in completions]


def positional_reward(prompts, responses):
    SEEN.extend(prompts)
    return [float(len(r.split())) for r in responses]


def _read(path: Path):
    return json.loads(path.read_text())


def test_story_prompts_are_200():
    assert len(STORY_PROMPTS) == 200 == len(set(STORY_PROMPTS))


def test_ppo_from_a_text_file_of_200_prompts(micro_run, tmp_path):
    """No reward model in the run: the reward function (TRL's signature) replaces it; the prompts are used
    as they are (plain continuation), the last 10% held out for the before/after comparison."""
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train.ppo import main

    run = copy_run(micro_run, tmp_path / "run", stages=("base", "sft"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(STORY_PROMPTS) + "\n")
    recipe = load_recipe("micro", {"prompts.source": str(prompts),
                                   "ppo.reward_function": "test_prompt_only_flow:recording_reward"})
    SEEN.clear()
    out = main(recipe, run)
    metrics = _read(out / "metrics.json")
    assert metrics["prompts"]["template"] == "plain" and metrics["prompts"]["source"] == str(prompts)
    assert metrics["prompts"]["train"]["rows_kept"] == 180 and metrics["prompts"]["test"]["rows_kept"] == 20
    assert metrics["reward"] == {"kind": "function", "function": "test_prompt_only_flow:recording_reward"}
    assert metrics["inputs"]["reward"] is None and not (run / "reward").exists()
    train, held_out = set(STORY_PROMPTS[:180]), set(STORY_PROMPTS[180:])
    rollouts = SEEN[:recipe.ppo.total_episodes]  # then the held-out comparison's two passes
    assert len(rollouts) == recipe.ppo.total_episodes and set(rollouts) <= train
    assert set(SEEN[recipe.ppo.total_episodes:]) <= held_out
    cmp = metrics["comparison"]
    assert cmp["sft"]["n"] == recipe.ppo.eval_prompts and "chosen" not in cmp  # prompt-only: no chosen responses
    for name in ("sft", "ppo"):
        assert 0.0 <= cmp[name]["reward_fn_positive"] <= 1.0 and math.isfinite(cmp[name]["reward_fn"])
    assert "gold" not in cmp["sft"]  # the embedded judge grades its dialogues, not these prompts
    assert all(abs(r["score"]) <= 1.0 for r in _read_jsonl(out / "metrics.jsonl"))  # means of +1/-1 rewards
    assert yaml.safe_load((out / "config.yaml").read_text())["prompts"]["source"] == str(prompts)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_ppo_from_a_jsonl_prompt_column(micro_run, tmp_path):
    """A JSONL file's `prompt` column, here in the dialogue template; bad rows counted and left out."""
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train.ppo import main

    run = copy_run(micro_run, tmp_path / "run", stages=("base", "sft"))
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": p, "id": i} for i, p in enumerate(STORY_PROMPTS[:40])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:10]) + '{"prompt": ""}\n{"prompt": 7}\n'
                    + "".join(json.dumps(r) + "\n" for r in rows[10:]))
    recipe = load_recipe("micro", {"prompts.source": str(path), "prompts.template": "dialogue",
                                   "ppo.reward_function": "test_prompt_only_flow:positional_reward"})
    SEEN.clear()
    out = main(recipe, run)
    metrics = _read(out / "metrics.json")
    train_report = metrics["prompts"]["train"]
    # 42 rows: the last 5 (10%, rounded up) held out; the first 37 hold the two bad ones
    assert train_report["rows_read"] == 37 and train_report["rows_kept"] == 35
    assert train_report["problems"]["empty_prompt"] == 1
    assert train_report["problems"]["not_a_string"] == 1
    assert all(p.startswith("\n\nHuman: ") and p.endswith("\n\nAssistant:") for p in SEEN)
    assert {p[len("\n\nHuman: "):-len("\n\nAssistant:")] for p in SEEN[:recipe.ppo.total_episodes]} <= set(STORY_PROMPTS)


def test_a_bad_prompt_line_stops_ppo_before_anything_is_written(micro_run, tmp_path):
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train.data import DataError
    from gpt2_rlhf.train.ppo import main

    run = copy_run(micro_run, tmp_path / "run", stages=("base", "sft"))
    txt = tmp_path / "prompts.txt"
    txt.write_bytes(("\n".join(STORY_PROMPTS[:6]) + "\n").encode() + b"Once upon a \xe9t\xe9\n")
    overrides = {"prompts.source": str(txt), "prompts.on_bad_rows": "error",
                 "ppo.reward_function": "gpt2_rlhf.train.rewards:contains_good"}
    with pytest.raises(DataError, match=r"prompts\.txt line 7: undecodable_line: not valid UTF-8 \(byte 0xe9 at column 13\)"):
        main(load_recipe("micro", overrides), run)
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('{"prompt": "Once upon a time"}\n{"prompt": "Long ago", }\n')
    with pytest.raises(DataError, match=r"prompts\.jsonl line 2: undecodable_line: bad JSON"):
        main(load_recipe("micro", {**overrides, "prompts.source": str(jsonl)}), run)
    assert not (run / "ppo").exists() and not (run / "ppo.partial").exists()
    # the pipeline checks the prompts before it writes recipe.yaml
    from gpt2_rlhf.pipeline import run_pipeline

    with pytest.raises(DataError, match="line 2"):
        run_pipeline(load_recipe("micro", {**overrides, "prompts.source": str(jsonl), "stages": "ppo,eval"}),
                     tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_trl_style_and_positional_reward_functions():
    from gpt2_rlhf.train.rewards import checked, load_reward_function, takes_keywords

    assert takes_keywords(recording_reward) and not takes_keywords(positional_reward)
    fn = load_reward_function("test_prompt_only_flow:recording_reward")
    assert fn(["p", "q"], ["yes", "no"]) == [1.0, -1.0]
    assert load_reward_function("test_prompt_only_flow:positional_reward") is positional_reward

    def completions_only(completions, **kwargs):  # TRL's most common form
        return [float(len(c)) for c in completions]

    import sys

    sys.modules[__name__].completions_only = completions_only
    assert load_reward_function(f"{__name__}:completions_only")(["p"], ["abc"]) == [3]
    with pytest.raises(ValueError, match=r"score 1 is None, not a number"):
        checked(lambda p, r: [1.0, None], "f")(["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="returned 1 scores for 2"):
        checked(lambda p, r: [1.0], "f")(["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="non-finite"):
        checked(lambda p, r: [math.nan], "f")(["a"], ["x"])


# ----------------------------------------------------------------------------- a classifier as the reward


def make_classifier(tokenizer, path: Path, seed: int = 0) -> Path:
    """A tiny two-label sequence classifier (NEGATIVE, POSITIVE) on the policy's tokenizer, saved as safetensors."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=16, n_layer=1, n_head=2, num_labels=2,
                     id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1},
                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model = GPT2ForSequenceClassification(cfg)
    with torch.no_grad():  # a clear preference, so that log-odds have both signs on real text
        model.score.weight.normal_(0.0, 2.0)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def test_classifier_reward_by_hand(micro_run, tmp_path):
    from gpt2_rlhf.train.modeling import load_tokenizer
    from gpt2_rlhf.train.rewards import ClassifierReward, load_classifier

    path = make_classifier(load_tokenizer(micro_run / "base"), tmp_path / "clf")
    prompts, responses = ["Once upon a time", "Long ago"], [" a fox was glad.", ""]
    reward = ClassifierReward(str(path), "POSITIVE", "log_odds")
    model, tok = load_classifier(str(path))
    with torch.no_grad():
        logits = torch.stack([model(**tok(p + r if r else p + r or " ", return_tensors="pt")).logits[0]
                              for p, r in zip(prompts, responses)])
    expected = (logits[:, 1] - logits[:, 0]).tolist()  # log p/(1-p) of POSITIVE for two labels
    assert reward(prompts, responses) == pytest.approx(expected, abs=1e-5)
    assert reward.label_index == 1 and reward.label_name == "POSITIVE"
    assert ClassifierReward(str(path), "0", "logit")(prompts, responses) == pytest.approx(logits[:, 0].tolist(), abs=1e-5)
    probs = ClassifierReward(str(path), "POSITIVE", "probability", text="response")(prompts, responses)
    with torch.no_grad():
        only = torch.stack([model(**tok(r or " ", return_tensors="pt")).logits[0] for r in responses])
    assert probs == pytest.approx(torch.softmax(only, -1)[:, 1].tolist(), abs=1e-5)
    with pytest.raises(ValueError, match=r"reward_classifier_label: 'HAPPY' is not a label of .*NEGATIVE"):
        ClassifierReward(str(path), "HAPPY")


def test_a_hub_classifier_that_cannot_be_fetched_is_one_line(hub_offline):
    from gpt2_rlhf.train.rewards import ClassifierReward

    with pytest.raises(OSError, match="could not load reward classifier 'no-such-user/sentiment'") as e:
        ClassifierReward("no-such-user/sentiment", "POSITIVE")
    assert "\n" not in str(e.value)


def test_classifier_reward_through_the_recipe(micro_run, tmp_path):
    """ppo.reward_classifier + reward_classifier_label in the recipe: PPO trains on it, and the evaluation
    of a run without a reward model scores with the same classifier (and says so)."""
    from gpt2_rlhf.evaluation.run import main as evaluate
    from gpt2_rlhf.stages import load_recipe
    from gpt2_rlhf.train.modeling import load_tokenizer
    from gpt2_rlhf.train.ppo import main
    from gpt2_rlhf.train.rewards import ClassifierReward

    run = copy_run(micro_run, tmp_path / "run", stages=("base", "sft"))
    clf = make_classifier(load_tokenizer(micro_run / "base"), tmp_path / "sentiment")
    recipe = load_recipe("micro", {"prompts.source": "stories", "ppo.reward_classifier": str(clf),
                                   "ppo.reward_classifier_label": "POSITIVE"})
    out = main(recipe, run)
    metrics = _read(out / "metrics.json")
    assert metrics["reward"] == {"kind": "classifier", "classifier": str(clf), "score": "log_odds", "text": "full",
                                 "label": "POSITIVE"}
    assert metrics["comparison"]["ppo"]["n"] == recipe.ppo.eval_prompts
    evaluate(recipe, run)
    report = _read(run / "eval" / "report.json")
    assert report["reward"] == metrics["reward"] and "reward_model" not in report
    assert report["dataset"]["template"] == "plain" and report["dataset"]["name"] == "stories"
    samples = _read_jsonl(run / "eval" / "samples.jsonl")
    reward = ClassifierReward(str(clf), "POSITIVE")
    for key in ("base", "sft", "ppo"):
        scores = reward([s["prompt"] for s in samples], [s["responses"][key] for s in samples])
        assert [s["scores"][key] for s in samples] == pytest.approx(scores, abs=1e-5)
        assert report["metrics"]["reward"][key]["value"] == pytest.approx(sum(scores) / len(scores), abs=1e-5)
        assert report["metrics"]["reward_positive"][key]["value"] == pytest.approx(
            sum(v > 0 for v in scores) / len(scores), abs=1e-9)
    assert any(f["id"] == "ppo_beats_sft_reward" and "classifier" in f["text"] for f in report["findings"])


# ----------------------------------------------------------------------------- rlhf run, end to end


@pytest.fixture(scope="module")
def story_run(tmp_path_factory) -> tuple[Path, str]:
    """`rlhf run` on a micro story recipe that lists a reward stage it does not need."""
    from gpt2_rlhf.cli import main

    root = tmp_path_factory.mktemp("story")
    prompts = root / "openings.txt"
    prompts.write_text("\n".join(STORY_PROMPTS) + "\n")
    recipe = yaml.safe_load((ROOT / "configs" / "micro.yaml").read_text())
    recipe.update(stages=["base", "sft", "reward", "ppo", "eval"],
                  prompts={"source": str(prompts), "template": "plain"})
    recipe["ppo"]["reward_function"] = "gpt2_rlhf.train.rewards:contains_good"
    recipe["eval"].update(samples_per_prompt=2, n_prompts=0)
    path = root / "story.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = root / "run"
    assert main(["run", "--config", str(path), "--output-dir", str(run)]) == 0
    return run, str(prompts)


def test_rlhf_run_trains_no_reward_model_and_reports_the_reward_function(story_run):
    run, prompts = story_run
    assert not (run / "reward").exists()
    assert set(_read(run / "timings.json")) == {"base", "sft", "ppo", "eval", "card"}
    assert "reward" not in yaml.safe_load((run / "recipe.yaml").read_text())["stages"]
    report = _read(run / "eval" / "report.json")
    assert report["reward"] == {"kind": "function", "function": "gpt2_rlhf.train.rewards:contains_good"}
    assert report["dataset"] == {"name": prompts, "data_dir": None, "split": "test", "template": "plain",
                                 "n_prompts": 20, "n_pairs": 0, "n_responses": 40}
    samples = _read_jsonl(run / "eval" / "samples.jsonl")
    assert [s["prompt"] for s in samples] == STORY_PROMPTS[180:]  # the held-out openings, as they are
    for key in ("base", "sft", "ppo"):
        share = report["metrics"]["reward_positive"][key]
        texts = [x["responses"][key] for s in samples for x in s["samples"]]
        assert share["value"] == pytest.approx(sum("good" in t.lower() for t in texts) / len(texts), abs=1e-9)
        for metric in ("reward_positive", "reward", "distinct_2"):
            v = report["metrics"][metric][key]
            assert v["ci_low"] is not None and v["ci_low"] <= v["value"] <= v["ci_high"], (metric, key)
    kl = report["metrics"]["kl_to_reference"]["ppo"]
    assert kl["ci_low"] is not None and report["reference"] == "sft"
    assert "reward_raw" not in report["metrics"] and "gold" not in report["metrics"]


def test_the_card_says_what_the_reward_was(story_run):
    run, _ = story_run
    card = (run / "card" / "README.md").read_text()
    assert "PPO with a KL penalty against the reward function `gpt2_rlhf.train.rewards:contains_good`" in card
    assert "no reward model was trained" in card and "Share of positive rewards" in card
    assert "the model continues them" in card and 'prompt = "Once upon a time, a little fox"' in card
    assert "reward-model judge" not in card and "Human:" not in card
    assert "reinforcement-learning-from-human-feedback" not in card
    assert not (run / "card" / "reward").exists()  # no reward model, no reward-model card


def test_reproduce_reruns_with_the_reward_function(story_run):
    from gpt2_rlhf.model_card.reproduce import format_outcome, reproduce

    run, _ = story_run
    outcome = reproduce(str(run))
    assert outcome.passed, format_outcome(str(run), outcome)
    assert any(c.name == "reward" and c.reported == "function" for c in outcome.checks)


def test_the_space_continues_plain_text_without_a_reward_model(story_run):
    from gpt2_rlhf.space.inference import Decoding, Engine, ModelSources, format_prompt

    run, _ = story_run
    sources = ModelSources.from_run_dir(run)
    assert sources.reward is None and sources.prompt_format == "plain"
    engine = Engine.load(sources, device="cpu")
    prompt, decoding = engine.prepare("Once upon a time, a little fox  \n", Decoding(8, 0.9, 1.0, 3))
    assert prompt == "Once upon a time, a little fox" == format_prompt(prompt, "plain")
    last = list(engine.compare(prompt, decoding, "base", "rlhf"))[-1]
    assert last.done and last.left.reward is None and last.right.reward is None
    env = {"RLHF_BASE_ID": "me/base", "RLHF_POLICY_ID": "me/ppo", "RLHF_REWARD_ID": "none",
           "RLHF_PROMPT_FORMAT": "plain"}
    assert ModelSources.from_env(env) == ModelSources(policy="me/ppo", reward=None, base="me/base",
                                                      prompt_format="plain")
    with pytest.raises(ValueError, match="RLHF_PROMPT_FORMAT"):
        ModelSources.from_env({**env, "RLHF_PROMPT_FORMAT": "chat"})


def test_unneeded_stages():
    from gpt2_rlhf.stages import load_recipe, unneeded_stages

    keyword = load_recipe("keyword")
    assert "reward" not in keyword.stages and unneeded_stages(keyword) == {}
    listed = load_recipe("keyword", {"stages": "base,sft,reward,ppo,eval"})
    assert list(unneeded_stages(listed)) == ["reward"]
    assert unneeded_stages(load_recipe("micro")) == {}  # PPO on the reward model needs it
    feedback = load_recipe("keyword", {"stages": "base,sft,label,reward,ppo,eval"})
    assert unneeded_stages(feedback) == {}  # the feedback rounds retrain and use it
    story = load_recipe("story")
    assert story.stages == ["base", "ppo", "eval"] and story.prompts.source == "stories"
    assert story.ppo.reward_function == "gpt2_rlhf.train.rewards:contains_good"
    assert (story.eval.models, story.eval.reference) == (["base", "ppo"], "base")


def test_a_prompts_file_is_continued_as_it_is_in_a_plain_run(tmp_path):
    """`rlhf evaluate RUN --prompts FILE`: a run trained on plain prompts continues the file's prompts as
    they are; a dialogue run wraps them as a Human turn (as before)."""
    from gpt2_rlhf.evaluation.run import load_prompts
    from gpt2_rlhf.stages import load_recipe

    path = tmp_path / "more.txt"
    path.write_text("Once upon a time, a shy giant\nLong ago\n")
    plain = load_recipe("micro", {"prompts.source": "stories", "eval.prompts_file": str(path)})
    prompts, pairs, info = load_prompts(plain, plain.eval)
    assert prompts == ["Once upon a time, a shy giant", "Long ago"] and info["template"] == "plain" and not pairs
    dialogue = load_recipe("micro", {"eval.prompts_file": str(path)})
    prompts, _, info = load_prompts(dialogue, dialogue.eval)
    assert prompts[1] == "\n\nHuman: Long ago\n\nAssistant:" and info["template"] == "dialogue"
