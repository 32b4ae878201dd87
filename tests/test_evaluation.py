"""The evaluation: generation, model passes, the report, the CLI (tiny random models built here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from gpt2_rlhf.evaluation.schema import validate_report
from gpt2_rlhf.train.rundir import write_json

TEXTS = [
    "\n\nHuman: How do I stay focused?\n\nAssistant: Keep regular hours and take a break.",
    "\n\nHuman: How can I sleep better?\n\nAssistant: Go to bed at the same time every night.",
    "\n\nHuman: Any tips for cooking rice?\n\nAssistant: Rinse the rice, then use two cups of water.",
    "\n\nHuman: How do I learn to code?\n\nAssistant: Start small, build a project, and practice daily.",
]


def make_tokenizer(path: Path):
    """A tiny byte-level BPE tokenizer with GPT-2's special-token layout (EOS, and a distinct pad)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXTS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|pad|>", padding_side="left")
    fast.save_pretrained(path)
    return fast


def _stage(path: Path, stage: str) -> None:
    write_json(path / "COMPLETE", {"stage": stage})


def make_tiny_run(run_dir: Path, n_positions: int = 96) -> Path:
    """run_dir/{base,sft,ppo,reward}: random 1-layer GPT-2s sharing one tokenizer, each with COMPLETE."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    run_dir.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(run_dir / "_tok")
    cfg = GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=16, n_layer=1, n_head=2,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    for i, key in enumerate(("base", "sft", "ppo")):
        torch.manual_seed(i)
        model = GPT2LMHeadModel(cfg)
        model.save_pretrained(run_dir / key)
        tok.save_pretrained(run_dir / key)
        _stage(run_dir / key, key)
    torch.manual_seed(10)
    rm_cfg = GPT2Config(**{k: v for k, v in cfg.to_dict().items() if k not in ("id2label", "label2id")}, num_labels=1)
    rm = GPT2ForSequenceClassification(rm_cfg)
    rm.save_pretrained(run_dir / "reward")
    tok.save_pretrained(run_dir / "reward")
    write_json(run_dir / "reward" / "reward_stats.json", {"mean": 0.1, "std": 2.0, "n": 8, "source": "test"})
    _stage(run_dir / "reward", "reward")
    # PPO's per-update log (what the training-curve plot and the report's `training.ppo` read)
    rows = [{"update": i + 1, "episodes": 8 * (i + 1), "score": 0.1 * i, "kl": 0.01 * i, "entropy": 2.0 - 0.1 * i} for i in range(5)]
    (run_dir / "ppo" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("evalrun") / "run")


@pytest.fixture(scope="module")
def policy(tiny_run):
    from gpt2_rlhf.train.modeling import load_causal_lm, load_tokenizer

    return load_causal_lm(tiny_run / "sft").eval(), load_tokenizer(tiny_run / "sft")


def eval_recipe(**overrides):
    from gpt2_rlhf.stages import load_recipe

    base = {"eval.n_prompts": 6, "eval.batch_size": 4, "eval.max_new_tokens": 8, "eval.bootstrap_samples": 50,
            "eval.device": "cpu"}
    return load_recipe("micro", {**base, **overrides})


@pytest.fixture(scope="module")
def evaluated(tiny_run):
    """One evaluation of the tiny run; (report, samples lines, eval dir)."""
    from gpt2_rlhf.evaluation.run import main

    torch.set_num_threads(1)
    out = main(eval_recipe(), tiny_run)
    report = json.loads((out / "report.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return report, samples, out


# ----------------------------------------------------------------------------- model passes


def _manual_logprobs(model, tok, prompt: str, response_ids: list[int]) -> list[float]:
    """log p(response token t | prompt, response < t), one unpadded sequence, full logits."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + response_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    return [logp[len(p) - 1 + t, tok_id].item() for t, tok_id in enumerate(response_ids)]


def test_pair_logprobs_match_an_unpadded_forward(policy):
    """Left-padded prompts + right-padded responses in one batch give each row's own unpadded log-probs."""
    from gpt2_rlhf.evaluation.generate import pair_logprobs

    model, tok = policy
    prompts = ["\n\nHuman: How can I sleep better?\n\nAssistant:", "\n\nHuman: Hi\n\nAssistant:"]
    responses = [" Go to bed", " Rinse the rice, then use two cups of water."]
    got = pair_logprobs(model, tok, prompts, responses, batch_size=2, max_prompt_tokens=64, max_response_tokens=64)
    for prompt, response, lp in zip(prompts, responses, got):
        ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert lp == pytest.approx(_manual_logprobs(model, tok, prompt, ids), abs=1e-5)


def test_pass_seeds_and_sample_groups():
    from gpt2_rlhf.evaluation.config import SAMPLE_SEED_STRIDE
    from gpt2_rlhf.evaluation.run import pass_seed, sample_groups

    assert SAMPLE_SEED_STRIDE == 1_000_003
    assert [pass_seed(7, j) for j in range(3)] == [7, 1_000_010, 2_000_013]  # pass 0: the evaluation's own seed
    assert sample_groups(3, 2).tolist() == [0, 1, 2, 0, 1, 2]  # sample-major: pass 0 first
    assert sample_groups(2, 1).tolist() == [0, 1]


def test_score_unique_across_passes_scores_each_prompt_response_once():
    from gpt2_rlhf.evaluation.run import score_unique

    calls = []

    def fake(prompts, responses):
        calls.append(list(zip(prompts, responses)))
        return [float(len(p) + len(r)) for p, r in zip(prompts, responses)]

    # two passes over prompts p0, p1: "x" answers p0 twice (once per pass) and p1 once
    out = score_unique(fake, ["p0", "pp1"], {"a": ["x", "yy", "x", "x"]}, groups=[0, 1, 0, 1])
    assert calls[0] == [("p0", "x"), ("pp1", "yy"), ("pp1", "x")]
    assert out["a"].tolist() == [3.0, 5.0, 3.0, 4.0]


def test_score_unique_scores_identical_responses_once():
    from gpt2_rlhf.evaluation.run import score_unique

    calls = []

    def fake(prompts, responses):
        calls.append(list(zip(prompts, responses)))
        return [float(len(r)) for r in responses]

    out = score_unique(fake, ["p0", "p1"], {"a": ["x", "yy"], "b": ["x", "zzz"]})
    assert len(calls[0]) == 3  # (p0, x) once for both models
    assert out["a"].tolist() == [1.0, 2.0] and out["b"].tolist() == [1.0, 3.0]


# ----------------------------------------------------------------------------- findings and table


def V(value, lo, hi, n=10):
    return {"value": value, "ci_low": lo, "ci_high": hi, "n": n}


@pytest.mark.parametrize("ppo, sft, holds", [
    (V(1.0, 0.8, 1.2), V(0.0, -0.2, 0.2), True),
    (V(1.0, 0.1, 1.9), V(0.0, -0.2, 0.2), False),   # overlapping intervals: no claim
    (V(1.0, None, None, 1), V(0.0, None, None, 1), False),  # a single prompt: no claim
])
def test_findings_require_non_overlapping_cis(ppo, sft, holds):
    from gpt2_rlhf.evaluation.report import findings

    out = findings({"reward": {"sft": sft, "ppo": ppo}}, {})
    assert [f["id"] for f in out] == ["ppo_beats_sft_reward"]
    assert out[0]["holds"] is holds and ("do not overlap" in out[0]["text"]) is holds


def test_reward_hacking_finding():
    from gpt2_rlhf.evaluation.report import findings

    metrics = {"reward": {"sft": V(0.0, -0.1, 0.1), "ppo": V(2.0, 1.9, 2.1)},
               "gold": {"sft": V(0.6, 0.5, 0.7), "ppo": V(0.4, 0.3, 0.5)}}
    out = {f["id"]: f for f in findings(metrics, {"accuracy": 0.7, "length_baseline_accuracy": 0.8, "n_pairs": 10})}
    assert out["ppo_reward_hacking"]["holds"] and "Reward hacking" in out["ppo_reward_hacking"]["text"]
    assert not out["ppo_beats_sft_gold"]["holds"] and not out["rm_beats_length_baseline"]["holds"]


# ----------------------------------------------------------------------------- prompts files


def test_read_prompts_file_formats(tmp_path):
    from gpt2_rlhf.evaluation.run import read_prompts_file

    txt = tmp_path / "p.txt"
    txt.write_text("How do I sleep?\n\nWhat is rice?\n")
    assert [r["prompt"] for r in read_prompts_file(txt)] == ["\n\nHuman: How do I sleep?\n\nAssistant:",
                                                             "\n\nHuman: What is rice?\n\nAssistant:"]
    jl = tmp_path / "p.jsonl"
    jl.write_text(json.dumps({"prompt": "Hello?"}) + "\n" +
                  json.dumps({"chosen": "\n\nHuman: Q\n\nAssistant: good", "rejected": "\n\nHuman: Q\n\nAssistant: bad"}) + "\n")
    rows = read_prompts_file(jl)
    assert rows[0] == {"prompt": "\n\nHuman: Hello?\n\nAssistant:"}
    assert rows[1] == {"prompt": "\n\nHuman: Q\n\nAssistant:", "chosen": " good", "rejected": " bad"}


@pytest.mark.parametrize("line, message", [
    ("{not json", "p.jsonl:2: not valid JSON"),
    ('["a list"]', "p.jsonl:2: expected a JSON object"),
    ('{"text": "x"}', "p.jsonl:2: needs a non-empty 'prompt'"),
])
def test_read_prompts_file_names_the_bad_line(tmp_path, line, message):
    from gpt2_rlhf.evaluation.run import read_prompts_file

    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "ok"}) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message):
        read_prompts_file(p)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("override, message", [
    ({"eval.temperature": "0"}, "temperature must be > 0"),
    ({"eval.models": "base,rlhf"}, "unknown key"),
    ({"eval.reference": "gold"}, "reference must be one of"),
    ({"eval.top_p": "0"}, "top_p must be in"),
    ({"eval.classifier_label": "toxic"}, "classifier_label needs classifier_model"),
    ({"eval.samples_per_prompt": "0"}, "samples_per_prompt must be >= 1"),
    ({"eval.samples_per_prompt": "3", "eval.mode": "greedy"}, "samples_per_prompt 3 needs mode: sampled"),
])
def test_eval_config_rejects_bad_values(override, message):
    from gpt2_rlhf.train.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        eval_recipe(**override)


def test_greedy_mode_ignores_sampling_settings():
    cfg = eval_recipe(**{"eval.mode": "greedy", "eval.temperature": "0.3", "eval.top_k": "5"}).eval
    g = cfg.generation
    assert g.greedy and (g.temperature, g.top_k, g.top_p) == (0.0, 0, 1.0)


# ----------------------------------------------------------------------------- end to end


TOP_LEVEL = {"schema_version", "created", "wall_time_s", "versions", "seed", "dataset", "decoding", "models",
             "reference", "reward", "reward_model", "metrics", "win_rates", "reward_improvement", "findings", "training",
             "tolerance", "plots", "samples", "config", "gold_win_rates", "overoptimisation", "comparison"}


def is_v(v) -> bool:
    return set(v) == {"value", "ci_low", "ci_high", "n"} and isinstance(v["value"], float) and isinstance(v["n"], int)


def test_report_follows_the_schema(evaluated):
    report, samples, out = evaluated
    validate_report(report)  # evaluation/schema.py; the checks below are this configuration's values
    keys = ["base", "sft", "ppo"]
    assert set(report) == TOP_LEVEL and report["schema_version"] == 1
    assert list(report["models"]) == keys and all(m["revision"].startswith("sha256:") for m in report["models"].values())
    assert report["dataset"] == {"name": "embedded", "data_dir": None, "split": "test", "n_prompts": 6, "n_pairs": 6,
                                 "n_responses": 6, "template": "dialogue"}
    assert report["reward"] == {"kind": "reward_model"}  # the reward model scored: its block is reward_model
    assert report["decoding"]["mode"] == "sampled" and report["decoding"]["batch_size"] == 4
    assert report["decoding"]["samples_per_prompt"] == 1
    expected = {"reward", "reward_raw", "gold", "kl_to_reference", "perplexity_chosen", "perplexity_rejected",
                "distinct_1", "distinct_2", "unique_responses", "response_length", "eos_rate"}
    assert expected <= set(report["metrics"]) <= expected | {"proxy_gold_correlation"}
    for name, per_model in report["metrics"].items():
        # the dataset's chosen responses are a reference row of reward and gold (every prompt has a pair)
        expected_keys = keys + ["chosen"] if name in ("reward", "gold") else keys
        assert name == "proxy_gold_correlation" or list(per_model) == expected_keys, name
        assert all(is_v(v) for v in per_model.values()), name
    assert report["metrics"]["kl_to_reference"]["sft"] == {"value": 0.0, "ci_low": None, "ci_high": None, "n": 6}
    assert list(report["win_rates"]) == list(report["gold_win_rates"]) == ["ppo_vs_sft", "ppo_vs_base", "sft_vs_base"]
    for w in [*report["win_rates"].values(), *report["gold_win_rates"].values()]:
        assert w["win"] + w["tie"] + w["loss"] == pytest.approx(1.0) and w["n"] == 6
        assert w["win_rate_ties_half"] == pytest.approx(w["win"] + w["tie"] / 2)
        assert w["win_rate_ties_half_ci_low"] <= w["win_rate_ties_half"] <= w["win_rate_ties_half_ci_high"]
    assert set(report["models"]) == {"base", "sft", "ppo"} and "chosen" not in report["metrics"]["kl_to_reference"]
    assert {"sd_units", "reference_std", "difference"} <= set(report["reward_improvement"]["ppo_vs_sft"])
    ids = {f["id"] for f in report["findings"]}
    assert {"ppo_beats_sft_reward", "ppo_beats_base_reward", "sft_beats_base_reward", "ppo_reward_hacking",
            "ppo_gold_win_rate", "ppo_overoptimisation", "rm_beats_length_baseline"} <= ids
    assert all(isinstance(f["good"], bool) for f in report["findings"])
    assert report["reward_model"]["n_pairs"] == 6 and 0.0 <= report["reward_model"]["accuracy"] <= 1.0
    assert report["training"]["ppo"]["updates"] == 5 and report["training"]["ppo"]["last"]["score"] == pytest.approx(0.4)
    assert set(report["plots"]) == {"reward_distribution", "win_rates", "ppo_training", "overoptimisation"}
    curve = report["overoptimisation"]  # no snapshots in this run: SFT and the final policy
    assert curve["prompts"] == 6 and [p["label"] for p in curve["points"]] == ["sft", "ppo"]
    assert curve["points"][0]["kl"] == {"value": 0.0, "ci_low": None, "ci_high": None, "n": 6}
    # the evaluation's own responses on these prompts: the same numbers as the report's metrics
    for p, key in zip(curve["points"], ("sft", "ppo")):
        assert p["reward"] == report["metrics"]["reward"][key] and p["gold"] == report["metrics"]["gold"][key]
    assert curve["points"][1]["kl"] == report["metrics"]["kl_to_reference"]["ppo"]
    assert all((out / p).stat().st_size > 1000 for p in report["plots"].values())
    assert report["config"]["eval"]["n_prompts"] == 6 and (out / "COMPLETE").is_file()


def test_samples_hold_every_response_and_its_score(evaluated):
    report, samples, _ = evaluated
    assert [s["index"] for s in samples] == list(range(6))
    for s in samples:
        assert set(s) == {"index", "prompt", "responses", "scores", "gold"}
        assert list(s["responses"]) == list(s["scores"]) == list(s["gold"]) == ["base", "sft", "ppo"]
    # the report's reward is the mean of the per-prompt normalised scores it wrote
    for key in ("base", "sft", "ppo"):
        mean = sum(s["scores"][key] for s in samples) / len(samples)
        assert report["metrics"]["reward"][key]["value"] == pytest.approx(mean, abs=1e-9)


def test_same_seed_gives_identical_reports(evaluated, tiny_run):
    from gpt2_rlhf.evaluation.report import NON_DETERMINISTIC, comparable
    from gpt2_rlhf.evaluation.run import main

    first, samples, out = evaluated
    main(eval_recipe(), tiny_run)
    second = json.loads((out / "report.json").read_text())
    assert NON_DETERMINISTIC == ("created", "wall_time_s")
    assert comparable(second) == comparable(first)
    assert [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()] == samples


def test_one_sample_per_prompt_is_the_evaluation_without_the_field(evaluated, tiny_run, tmp_path):
    """eval.samples_per_prompt: 1 written out is the report with the field left to its default, and its
    responses are the sampler's with seed + batch index (what the evaluation sampled before the field)."""
    from gpt2_rlhf.evaluation.report import comparable
    from gpt2_rlhf.evaluation.run import load_prompts, main
    from gpt2_rlhf.train.modeling import load_causal_lm, load_tokenizer
    from gpt2_rlhf.train.sampling import measure_policy

    first, samples, _ = evaluated
    recipe = eval_recipe(**{"eval.samples_per_prompt": "1"})
    run = tmp_path / "run"
    for key in ("base", "sft", "ppo", "reward"):
        shutil.copytree(tiny_run / key, run / key)
    shutil.copy(tiny_run / "ppo" / "metrics.jsonl", run / "ppo" / "metrics.jsonl")
    out = main(recipe, run)
    again = json.loads((out / "report.json").read_text())

    def measured(r):  # where the models were is not what was measured
        return {**comparable(r), "models": {k: {**v, "path": None} for k, v in r["models"].items()},
                "reward_model": {**r["reward_model"], "path": None}}

    assert measured(again) == measured(first)
    assert [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()] == samples
    cfg = recipe.eval
    prompts, _, _ = load_prompts(recipe, cfg)
    sft = measure_policy(load_causal_lm(tiny_run / "sft").eval(), load_tokenizer(tiny_run / "sft"), prompts,
                         cfg.generation, first["seed"], cfg.batch_size, cfg.max_prompt_tokens)
    assert [s["responses"]["sft"] for s in samples] == sft.texts


@pytest.fixture(scope="module")
def evaluated_k2(tiny_run, tmp_path_factory):
    """The tiny run evaluated with two samples per prompt, in a copy (the shared eval/ stays k = 1)."""
    from gpt2_rlhf.evaluation.run import main

    run = tmp_path_factory.mktemp("k2") / "run"
    for key in ("base", "sft", "ppo", "reward"):
        shutil.copytree(tiny_run / key, run / key)
    torch.set_num_threads(1)
    out = main(eval_recipe(**{"eval.samples_per_prompt": "2"}), run)
    report = json.loads((out / "report.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return report, samples


def test_two_samples_per_prompt_average_per_prompt_and_resample_prompts(evaluated, evaluated_k2):
    one, one_samples, _ = evaluated
    report, samples = evaluated_k2
    validate_report(report)
    keys = ["base", "sft", "ppo"]
    assert report["decoding"]["samples_per_prompt"] == 2 and report["config"]["eval"]["samples_per_prompt"] == 2
    assert report["dataset"]["n_prompts"] == 6 and report["dataset"]["n_responses"] == 12
    # every interval is over the 6 prompts, whatever it averages
    for name, per_model in report["metrics"].items():
        assert all(is_v(v) and v["n"] == 6 for v in per_model.values()), name
    for w in [*report["win_rates"].values(), *report["gold_win_rates"].values()]:
        assert w["n"] == 6 and w["win_rate_ties_half"] == pytest.approx(w["win"] + w["tie"] / 2)
    assert report["metrics"]["kl_to_reference"]["sft"] == {"value": 0.0, "ci_low": None, "ci_high": None, "n": 6}
    # samples.jsonl: one row per prompt; the first pass on top (the one-sample evaluation's own responses)
    assert len(samples) == 6
    for s, s1 in zip(samples, one_samples):
        assert set(s) == {"index", "prompt", "responses", "scores", "gold", "samples"} and len(s["samples"]) == 2
        assert s["samples"][0] == {k: s[k] for k in ("responses", "scores", "gold")}
        assert s["responses"] == s1["responses"] and s["gold"] == s1["gold"]
        assert s["scores"] == pytest.approx(s1["scores"], abs=1e-5)  # scored in other reward-model batches
    assert any(s["samples"][1]["responses"] != s["samples"][0]["responses"] for s in samples)  # another seed
    for key in keys:
        per_prompt = [sum(p["scores"][key] for p in s["samples"]) / 2 for s in samples]
        assert report["metrics"]["reward"][key]["value"] == pytest.approx(sum(per_prompt) / 6, abs=1e-9)
        gold = [sum(p["gold"][key] for p in s["samples"]) / 2 for s in samples]
        assert report["metrics"]["gold"][key]["value"] == pytest.approx(sum(gold) / 6, abs=1e-12)
        texts = [p["responses"][key] for p in (x for s in samples for x in s["samples"])]
        assert report["metrics"]["unique_responses"][key]["value"] == pytest.approx(len(set(texts)) / 12)
    a, b = ([sum(p["gold"][m] for p in s["samples"]) for s in samples] for m in ("ppo", "sft"))
    w = report["gold_win_rates"]["ppo_vs_sft"]  # won on the per-prompt means
    assert w["win"] == sum(x > y for x, y in zip(a, b)) / 6 and w["tie"] == sum(x == y for x, y in zip(a, b)) / 6
    # the chosen reference row is one response per prompt, as before; perplexity does not sample
    assert report["metrics"]["reward"]["chosen"] == one["metrics"]["reward"]["chosen"]
    assert report["metrics"]["perplexity_chosen"] == one["metrics"]["perplexity_chosen"]
    # the curve stays one sample per prompt: the first pass, the same points as the one-sample evaluation
    for p, q in zip(report["overoptimisation"]["points"], one["overoptimisation"]["points"]):
        assert p["label"] == q["label"] and p["gold"] == q["gold"]
        assert p["reward"]["value"] == pytest.approx(q["reward"]["value"], abs=1e-5)
        assert p["kl"]["value"] == pytest.approx(q["kl"]["value"], abs=1e-5)
    text = next(f["text"] for f in report["findings"] if f["id"] == "ppo_gold_win_rate")
    assert "ties counted half" in text and f"{w['win_rate_ties_half']:.3f} over 6 prompts" in text


def test_a_missing_stage_evaluates_the_rest(tiny_run, tmp_path):
    from gpt2_rlhf.evaluation.run import main

    run = tmp_path / "run"
    for key in ("base", "sft", "reward"):
        shutil.copytree(tiny_run / key, run / key)
    out = main(eval_recipe(**{"eval.n_prompts": 3, "eval.bootstrap_samples": 0}), run)
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    assert list(report["models"]) == ["base", "sft"] and list(report["win_rates"]) == ["sft_vs_base"]
    assert "ppo_training" not in report["plots"] and "ppo" not in report["training"]
    assert report["metrics"]["reward"]["sft"]["ci_low"] is None  # bootstrap_samples 0: no intervals


def add_snapshot(stage: Path, source: Path, update: int, episodes: int) -> None:
    """stage/snapshots/update-N: a copy of the model directory `source`, listed in stage/snapshots.json."""
    rel = f"snapshots/update-{update:06d}"
    shutil.copytree(source, stage / rel, ignore=shutil.ignore_patterns("COMPLETE", "metrics.json*"))
    index = stage / "snapshots.json"
    rows = json.loads(index.read_text())["snapshots"] if index.is_file() else []
    write_json(index, {"snapshots": rows + [{"update": update, "episodes": episodes, "path": rel}]})


def make_feedback_run(tiny_run: Path, run: Path) -> Path:
    """The tiny run with a feedback round before the final PPO, snapshots in both, and on-policy RM accuracy.

    ppo_round1 is a copy of the PPO policy whose snapshot is a copy of SFT; the final ppo's snapshot is a
    copy of the PPO policy too: so some points must equal others exactly (the same weights, prompts, seeds)."""
    for key in ("base", "sft", "reward", "ppo"):
        shutil.copytree(tiny_run / key, run / key)
    shutil.copytree(tiny_run / "ppo", run / "ppo_round1")
    write_json(run / "ppo_round1" / "metrics.json", {"round": 1, "episodes": 16})
    add_snapshot(run / "ppo_round1", tiny_run / "sft", 1, 8)
    write_json(run / "ppo" / "metrics.json", {"round": 2, "episodes": 8})
    add_snapshot(run / "ppo", tiny_run / "ppo", 1, 4)
    shutil.copytree(tiny_run / "ppo", run / "ppo_round3")  # unfinished: no COMPLETE, left out
    (run / "ppo_round3" / "COMPLETE").unlink()
    write_json(run / "reward" / "metrics.json", {"initial_accuracy": 0.48, "on_policy": {
        "accuracy": 0.7, "length_baseline_accuracy": 0.55, "initial_accuracy": 0.5, "rank_correlation": None,
        "pairs": 40, "prompts": 20, "source": "gold"}})
    return run


@pytest.mark.parametrize("curve_prompts", [4, 3])  # a whole batch (reuses the evaluation's responses), or not
def test_overoptimisation_curve_over_rounds_and_snapshots(tiny_run, tmp_path, curve_prompts):
    from gpt2_rlhf.evaluation.run import main

    run = make_feedback_run(tiny_run, tmp_path / "run")
    out = main(eval_recipe(**{"eval.curve_prompts": curve_prompts}), run)
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    curve = report["overoptimisation"]
    points = {p["label"]: p for p in curve["points"]}
    assert curve["prompts"] == curve_prompts
    assert list(points) == ["sft", "ppo_round1/update-000001", "ppo_round1", "ppo/update-000001", "ppo"]
    assert [p["round"] for p in curve["points"]] == [0, 1, 1, 2, 2]
    assert [p["episodes"] for p in curve["points"]] == [0, 8, 16, 20, 24]  # cumulative over rounds
    for p in curve["points"]:
        assert set(p) == {"label", "round", "episodes", "kl", "sqrt_kl", "reward", "gold"}
        assert all(is_v(p[k]) and p[k]["n"] == curve_prompts for k in ("kl", "reward", "gold"))
        assert p["sqrt_kl"] == pytest.approx(max(p["kl"]["value"], 0.0) ** 0.5)
    # the same weights on the same prompts and seeds give the same point, measured or reused
    same = [("sft", "ppo_round1/update-000001"), ("ppo", "ppo_round1"), ("ppo", "ppo/update-000001")]
    for a, b in same:
        assert points[a]["reward"]["value"] == pytest.approx(points[b]["reward"]["value"], abs=1e-5), (a, b)
        assert points[a]["gold"] == points[b]["gold"], (a, b)
        assert points[a]["kl"]["value"] == pytest.approx(points[b]["kl"]["value"], abs=1e-4), (a, b)
    assert points["ppo_round1/update-000001"]["kl"]["value"] == pytest.approx(0.0, abs=1e-5)
    peak = curve["gold_peak"]
    assert curve["points"][peak["index"]]["label"] == peak["label"]
    assert peak["gold"] == max(p["gold"]["value"] for p in curve["points"])
    assert isinstance(curve["proxy_rises_past_gold_peak"], bool) and isinstance(curve["gold_falls_after_peak"], bool)
    assert report["plots"]["overoptimisation"] == "plots/overoptimisation.png"
    assert (out / "plots/overoptimisation.png").stat().st_size > 1000
    ids = {f["id"]: f for f in report["findings"]}
    assert "ppo_overoptimisation" in ids
    # the reward stage's on-policy accuracy, from the reward model's own metrics.json
    rm = report["reward_model"]
    assert rm["on_policy"]["accuracy"] == 0.7 and rm["untrained_accuracy"] == 0.48
    assert not ids["rm_on_policy_accuracy"]["good"] and "below 0.75: 0.700" in ids["rm_on_policy_accuracy"]["text"]


def test_no_curve_when_curve_prompts_is_zero(tiny_run, tmp_path):
    from gpt2_rlhf.evaluation.run import main

    run = tmp_path / "run"
    for key in ("sft", "reward", "ppo"):
        shutil.copytree(tiny_run / key, run / key)
    out = main(eval_recipe(**{"eval.curve_prompts": 0, "eval.n_prompts": 3, "eval.bootstrap_samples": 0}), run)
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    assert "overoptimisation" not in report and "overoptimisation" not in report["plots"]
    assert "ppo_overoptimisation" not in {f["id"] for f in report["findings"]}
    assert not (out / "plots/overoptimisation.png").exists()
    assert "on_policy" not in report["reward_model"] and "rm_on_policy_accuracy" not in {f["id"] for f in report["findings"]}


def test_ppo_trajectory_reads_the_stage_files(tmp_path):
    """Order by recorded round (not name), snapshots before their stage's policy, episodes unknown after a gap."""
    from gpt2_rlhf.evaluation.run import ppo_trajectory

    for name, meta in (("ppo_round1", {"round": 2, "episodes": 10}), ("ppo_round2", {"round": 1}),
                       ("ppo", {"round": 3, "episodes": 5})):
        d = tmp_path / name
        (d / "snapshots" / "update-000001").mkdir(parents=True)
        _stage(d, name)
        write_json(d / "metrics.json", meta)
        write_json(d / "snapshots.json", {"snapshots": [{"update": 1, "episodes": 2, "path": "snapshots/update-000001"},
                                                        {"update": 2, "episodes": 4, "path": "snapshots/gone"}]})
    points = ppo_trajectory(tmp_path / "ppo")
    assert [(p["label"], p["round"], p.get("episodes")) for p in points] == [
        ("ppo_round2/update-000001", 1, 2), ("ppo_round2", 1, None),  # round 1 recorded no episodes
        ("ppo_round1/update-000001", 2, None), ("ppo_round1", 2, None),
        ("ppo/update-000001", 3, None), ("ppo", 3, None)]
    assert points[-1]["path"] == tmp_path / "ppo"
    (tmp_path / "alone").mkdir()
    assert [(p["label"], p["round"]) for p in ppo_trajectory(tmp_path / "alone" / "ppo")] == [("ppo", 1)]


def make_classifier(path: Path, tokenizer_dir: Path) -> Path:
    """A random 2-label GPT-2 text classifier ("ok", "toxic"), standing in for e.g. a toxicity model."""
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(20)
    model = GPT2ForSequenceClassification(GPT2Config(
        vocab_size=len(tok), n_positions=96, n_embd=16, n_layer=1, n_head=2, pad_token_id=tok.pad_token_id,
        id2label={0: "ok", 1: "toxic"}, label2id={"ok": 0, "toxic": 1}))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_cli_prompts_file_and_explicit_model(tiny_run, tmp_path, capsys):
    from gpt2_rlhf.cli import main as rlhf

    classifier = make_classifier(tmp_path / "clf", tiny_run / "sft")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("How do I sleep better?\nHow do I cook rice?\n")
    run = tmp_path / "run"
    code = rlhf(["evaluate", str(run), "--config", "micro", "--prompts", str(prompts),
                 "--eval.models", "sft,ppo", "--eval.sft_model", str(tiny_run / "sft"),
                 "--eval.ppo_model", str(tiny_run / "ppo"), "--eval.reward_model", str(tiny_run / "reward"),
                 "--eval.mode", "greedy", "--eval.max_new_tokens", "4", "--eval.bootstrap_samples", "20",
                 "--eval.classifier_model", str(classifier), "--eval.classifier_label", "toxic"])
    assert code == 0
    report = json.loads((run / "eval" / "report.json").read_text())
    validate_report(report)  # a prompts file without pairs, a classifier, greedy, two models
    assert report["classifier"]["label"] == "toxic" and report["classifier"]["revision"].startswith("sha256:")
    assert all(0.0 < v["value"] < 1.0 and v["n"] == 2 for v in report["metrics"]["classifier"].values())
    assert report["dataset"]["prompts_file"] == str(prompts) and report["dataset"]["n_pairs"] == 0
    assert "perplexity_chosen" not in report["metrics"] and "gold" not in report["metrics"]  # absent, never null
    assert "accuracy" not in report["reward_model"] and report["decoding"]["temperature"] == 0.0
    assert "ppo_vs_sft" in capsys.readouterr().out  # the terminal table


def test_cli_errors_are_one_line_and_write_nothing(tiny_run, tmp_path, capsys):
    from gpt2_rlhf.cli import main as rlhf

    run = tmp_path / "run"
    shutil.copytree(tiny_run / "sft", run / "sft")  # no reward model
    assert rlhf(["evaluate", str(run), "--config", "micro"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlhf evaluate: error: reward model:") and "\n" not in err
    assert not (run / "eval").exists() and not (run / "eval.partial").exists()
    assert rlhf(["evaluate", str(tmp_path / "nothing"), "--config", "micro"]) == 2
    assert "none of the models" in capsys.readouterr().err


EXACT_MATCH = """
import datasets
import evaluate


class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="share of predictions equal to their reference", citation="",
                                   features=datasets.Features({"predictions": datasets.Value("string"),
                                                               "references": datasets.Value("string")}))

    def _compute(self, predictions, references):
        return {"exact_match": sum(p == r for p, r in zip(predictions, references)) / len(predictions), "note": "x"}
"""


def test_reference_metrics_from_a_local_script_and_offline_hub(tiny_run, tmp_path, monkeypatch, capsys):
    from gpt2_rlhf.evaluation.run import main
    from gpt2_rlhf.cli import main as rlhf

    script = tmp_path / "exact_match" / "exact_match.py"
    script.parent.mkdir()
    script.write_text(EXACT_MATCH)
    run = tmp_path / "run"
    for key in ("sft", "reward"):
        shutil.copytree(tiny_run / key, run / key)
    out = main(eval_recipe(**{"eval.n_prompts": 2, "eval.reference_metrics": str(script.parent),
                              "eval.bootstrap_samples": 0}), run)
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    assert report["reference_metrics"] == {str(script.parent): {"sft": {"exact_match": 0.0}}}  # floats only
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert rlhf(["evaluate", str(run), "--config", "micro", "--eval.reference_metrics", "rouge"]) == 2
    err = capsys.readouterr().err
    assert "metric 'rouge'" in err and "HF_HUB_OFFLINE" in err


def test_offline_hub_model_is_one_clear_line(tiny_run, tmp_path, capsys, monkeypatch):
    from gpt2_rlhf.cli import main as rlhf

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: patch it too
    code = rlhf(["evaluate", str(tmp_path / "run"), "--config", "micro", "--eval.models", "ppo",
                 "--eval.ppo_model", "someone/gpt2-rlhf-missing", "--eval.reward_model", str(tiny_run / "reward")])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after any progress bars
    assert code == 2 and err.startswith("rlhf evaluate: error: ") and "someone/gpt2-rlhf-missing" in err
    assert not (tmp_path / "run" / "eval").exists()


@pytest.mark.slow
def test_micro_run_evaluates(micro_run, tmp_path):
    """On the shared micro run (base, SFT, reward from the real stages)."""
    from gpt2_rlhf.evaluation.run import main

    run, tmp = micro_run, tmp_path / "run"
    for key in ("base", "sft", "reward", "ppo"):
        if (run / key).exists():
            shutil.copytree(run / key, tmp / key)
    out = main(eval_recipe(**{"eval.n_prompts": 4}), tmp)
    report = json.loads((out / "report.json").read_text())
    assert {"base", "sft"} <= set(report["models"]) and "gold" in report["metrics"]


@pytest.mark.slow
def test_embedded_run_ppo_beats_base_and_sft(tmp_path):
    """The issue's claim on a finished embedded (tiny recipe) run: set RLHF_TINY_RUN to its directory.

    Training the tiny recipe takes tens of minutes on 2 cores, so this test only runs when such a run
    exists; it evaluates a copy with the tiny recipe's eval section and checks the report's findings.
    """
    import os

    from gpt2_rlhf.evaluation.run import main
    from gpt2_rlhf.stages import load_recipe

    src = Path(os.environ.get("RLHF_TINY_RUN", "outputs/tiny"))
    if not all((src / k / "COMPLETE").is_file() for k in ("base", "sft", "reward", "ppo")):
        pytest.skip(f"no finished embedded run at {src} (set RLHF_TINY_RUN)")
    run = tmp_path / "run"
    for key in ("base", "sft", "reward", "ppo"):
        shutil.copytree(src / key, run / key)
    report = json.loads((main(load_recipe("tiny"), run) / "report.json").read_text())
    found = {f["id"]: f for f in report["findings"]}
    assert found["ppo_beats_sft_reward"]["holds"] and found["ppo_beats_base_reward"]["holds"]
    r = report["metrics"]["reward"]
    assert r["ppo"]["ci_low"] > max(r["sft"]["ci_high"], r["base"]["ci_high"])
