"""A run directory fabricated for tests of the card, push and reproduce: every file a
finished run has, with the evaluation report of docs/report-schema.md filled by a
seeded random generator. Test fixture only: no product code reads these numbers.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from pathlib import Path

import yaml

from gpt2_rlhf.evaluation.policies import MODEL_KEYS, policies_of
from gpt2_rlhf.evaluation.report import comparison_summary, curve_summary, present_pairs, training_seconds

MODELS = ("base", "sft", "ppo")  # the default run; any subset of MODEL_KEYS (ALL_MODELS) can be fabricated
ALL_MODELS = MODEL_KEYS
SAMPLES_PER_PROMPT = 4  # the fabricated evaluation sampled several responses per prompt


def tiny_png() -> bytes:
    """A valid 1x1 PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


def _v(rng: random.Random, lo: float, hi: float, n: int, ci: bool = True) -> dict:
    value = rng.uniform(lo, hi)
    width = rng.uniform(0.01, 0.2) * (hi - lo)
    return {"value": value, "ci_low": value - width if ci else None, "ci_high": value + width if ci else None, "n": n}


def _win(rng: random.Random, n: int) -> dict:
    w, t = rng.uniform(0.2, 0.7), rng.uniform(0, 0.2)
    return {"win": w, "tie": t, "loss": 1 - w - t, "ci_low": w - 0.1, "ci_high": w + 0.1, "n": n,
            "win_rate_ties_half": w + t / 2, "win_rate_ties_half_ci_low": w + t / 2 - 0.1,
            "win_rate_ties_half_ci_high": w + t / 2 + 0.1}


def make_report(seed: int = 0, gold: bool = True, models: tuple[str, ...] = MODELS, n: int = 24) -> dict:
    rng = random.Random(seed)
    metrics: dict[str, dict] = {}
    ranges = {"reward": (-1, 2), "reward_raw": (-3, 3), "gold": (0, 1), "kl_to_reference": (0.1, 9),
              "perplexity_chosen": (3, 90), "perplexity_rejected": (3, 90), "distinct_1": (0, 1), "distinct_2": (0, 1),
              "unique_responses": (0, 1), "response_length": (4, 40), "eos_rate": (0, 1)}
    for name, (lo, hi) in ranges.items():
        if name == "gold" and not gold:
            continue
        metrics[name] = {m: _v(rng, lo, hi, n) for m in models}
    if "sft" in models:
        metrics["kl_to_reference"]["sft"] = {"value": 0.0, "ci_low": None, "ci_high": None, "n": n}
    pairs = [f"{a}_vs_{b}" for a, b in present_pairs(list(models))]
    win_rates = {}
    for p in pairs:
        win_rates[p] = _win(rng, n)
    improvement = {}
    for p in pairs:  # the paired bootstrap interval of the difference, and of sd_units (the same / the unit)
        diff, std, half = rng.uniform(-1, 1), rng.uniform(0.5, 1.5), rng.uniform(0.05, 0.4)
        improvement[p] = {"difference": diff, "sd_units": diff / std, "reference_std": std,
                          "difference_ci_low": diff - half, "difference_ci_high": diff + half,
                          "sd_units_ci_low": (diff - half) / std, "sd_units_ci_high": (diff + half) / std,
                          "percent": rng.uniform(-50, 300)}
    if "sft" in models:  # the dataset's chosen responses: a reference row, not a model
        metrics["reward"]["chosen"] = _v(rng, -1, 2, n)
        if gold:
            metrics["gold"]["chosen"] = _v(rng, 0, 1, n)
    gold_win_rates = {}
    for p in pairs if gold else ():
        gold_win_rates[p] = _win(rng, n)
    reward_model = {"path": "run/reward", "revision": "sha256:" + "ab" * 32, "source": "local",
                    "stats": {"mean": rng.uniform(-1, 1), "std": rng.uniform(0.5, 2), "n": 333, "source": "train responses"},
                    "accuracy": rng.uniform(0.6, 0.9), "accuracy_ci_low": 0.55, "accuracy_ci_high": 0.93,
                    "mean_margin": rng.uniform(0.1, 2), "length_baseline_accuracy": rng.uniform(0.4, 0.6),
                    "n_pairs": n + 8, "untrained_accuracy": rng.uniform(0.45, 0.55),
                    "on_policy": {"accuracy": rng.uniform(0.6, 0.9), "length_baseline_accuracy": rng.uniform(0.4, 0.6),
                                  "initial_accuracy": rng.uniform(0.45, 0.55), "rank_correlation": rng.uniform(0, 0.8),
                                  "pairs": 96, "prompts": 48, "source": "gold"}}
    curve = None
    if "sft" in models and "ppo" in models:
        labels = [("sft", 0, 0), ("ppo_round1/update-000002", 1, 64), ("ppo_round1", 1, 128),
                  ("ppo/update-000002", 2, 192), ("ppo", 2, 256)]
        points = []
        for i, (label, rnd, episodes) in enumerate(labels):
            kl = {"value": 0.0, "ci_low": None, "ci_high": None, "n": n} if i == 0 else _v(rng, 0.5 * i, 2 * i, n)
            point = {"label": label, "round": rnd, "episodes": episodes, "kl": kl, "sqrt_kl": kl["value"] ** 0.5,
                     "reward": _v(rng, -1, 2, n)}
            if gold:
                point["gold"] = _v(rng, 0, 1, n)
            points.append(point)
        curve = {"prompts": n, "points": points, **curve_summary(points)}
    from gpt2_rlhf.evaluation.report import findings as measured_findings

    # the findings the evaluation states about these numbers (its texts, good and holds marks)
    findings = measured_findings(metrics, reward_model, gold_win_rates, curve)
    training = {"sft": {"train_loss": rng.uniform(1, 3), "eval_loss": rng.uniform(1, 3), "steps": 123, "train_rows": 480},
                "reward": {"train_accuracy": rng.uniform(0.6, 1), "eval_accuracy": rng.uniform(0.6, 1),
                           "untrained_accuracy": 0.51}}
    for p in policies_of(models):
        training[p] = dict(POLICY_STAGE_METRICS[p])
    if "ppo" in models:
        training["ppo"].update(first=PPO_ROWS[0], last=PPO_ROWS[-1])
    comparison = comparison_summary(metrics, {p: training_seconds([training[p]]) for p in policies_of(models)},
                                    "sft", reward={"kind": "reward_model"})
    report = {
        "schema_version": 1, "created": "2031-05-17T10:11:12+0000", "wall_time_s": rng.uniform(5, 50),
        "versions": {"gpt2_rlhf": "0.1.0", "python": "3.11.9", "torch": "2.13.0+cpu", "transformers": "5.23.0",
                     "trl": "1.16.0", "evaluate": "0.4.6", "datasets": "5.2.0", "huggingface_hub": "2.4.0"},
        "seed": 7,
        "dataset": {"name": "embedded" if gold else "Anthropic/hh-rlhf", "data_dir": None if gold else "helpful-base",
                    "split": "test", "n_prompts": n, "n_pairs": n + 8, "n_responses": n * SAMPLES_PER_PROMPT},
        "decoding": {"mode": "sampled", "max_new_tokens": 37, "temperature": 0.83, "top_k": 0, "top_p": 0.97,
                     "seed": 7, "batch_size": 11, "max_prompt_tokens": 201, "samples_per_prompt": SAMPLES_PER_PROMPT},
        "models": {m: {"path": f"run/{m}", "revision": "sha256:" + f"{i:064x}", "source": "local",
                       "parameters": 1_498_112 if m != "base" else 1_497_856} for i, m in enumerate(models)},
        "reference": "sft",
        "reward": {"kind": "reward_model"},
        "reward_model": reward_model,
        "reference_metrics": {"rouge": {m: {"rouge1": rng.uniform(0, 1), "rougeL": rng.uniform(0, 1)} for m in models}},
        "metrics": metrics, "win_rates": win_rates, "reward_improvement": improvement, "findings": findings,
        "training": training,
        "tolerance": {"default_rel": 0.02, "default_abs": 0.001},
        "plots": {"reward_distribution": "plots/reward_distribution.png", "win_rates": "plots/win_rates.png",
                  **({"ppo_training": "plots/ppo_training.png"} if "ppo" in models else {}),
                  **({"policies": "plots/policies.png"} if len(policies_of(models)) > 1 else {})},
        "samples": "samples.jsonl",
        "config": {"seed": 5, "data": {"dataset": "embedded"},
                   "eval": {"bootstrap_samples": 499, "max_prompts": n, "samples_per_prompt": SAMPLES_PER_PROMPT}},
    }
    report["training"]["reward"]["on_policy"] = reward_model["on_policy"]  # the reward stage's metrics.json
    if gold_win_rates:
        report["gold_win_rates"] = gold_win_rates
    if comparison:
        report["comparison"] = comparison
    if curve is not None:
        report["overoptimisation"] = curve
        report["plots"]["overoptimisation"] = "plots/overoptimisation.png"
    return report


def make_samples(report: dict, seed: int = 0) -> list[dict]:
    rng = random.Random(seed + 1)
    rows = []
    more = random.Random(seed + 2)  # the later passes: the first pass's rows are those of one sample per prompt
    k = (report.get("decoding") or {}).get("samples_per_prompt", 1)
    for i in range(report["dataset"]["n_prompts"]):
        passes = []
        for j in range(k):  # the first pass at the top level, every pass under `samples` (k > 1)
            r = rng if j == 0 else more
            one = {"responses": {m: f" Water it {r.randint(1, 9)} times a week, model {m}." for m in report["models"]},
                   "scores": {m: r.uniform(-2, 2) for m in report["models"]}}
            if "gold" in report["metrics"]:
                one["gold"] = {m: r.uniform(0, 1) for m in report["models"]}
            passes.append(one)
        row = {"index": i, "prompt": f"\n\nHuman: How do I water plant number {i + 40}?\n\nAssistant:", **passes[0]}
        if k > 1:
            row["samples"] = passes
        rows.append(row)
    return rows


# PPO's per-update log (ppo/metrics.jsonl) with the trainer's own keys (PPOTrainer.step's row), and its
# metrics.json: the report's `training.ppo` is the latter plus the count and the first and last rows
PPO_ROWS = [{"update": u, "episodes": 8 * u, "score": round(-0.42 + (0.917 + 0.42) * (u - 1) / 18, 6),
             "kl": round(0.013 + (2.26 - 0.013) * (u - 1) / 18, 6),
             "policy_loss": round(0.021 - (0.021 + 0.0071) * (u - 1) / 18, 6)} for u in range(1, 20)]
PPO_STAGE_METRICS = {"updates": 19, "episodes": 152, "train_s": 12.5}
# the other policy stages' metrics.json: DPO on a Hugging Face trainer (`train_seconds`); RLOO records no
# training time, so the comparison says "unknown" for it
POLICY_STAGE_METRICS = {"ppo": PPO_STAGE_METRICS,
                        "dpo": {"train_loss": 0.61, "rewards/accuracies": 0.72, "samples_per_second": 40.5,
                                "train_seconds": 8.25},
                        "rloo": {"episodes": 160, "train_loss": 0.12}}


STAGE_SECTIONS = {
    "base": {"model": "embedded", "n_layer": 2, "n_embd": 32},
    "sft": {"learning_rate": 5e-5, "epochs": 2, "batch_size": 8},
    "reward": {"learning_rate": 1e-5, "epochs": 1, "batch_size": 8},
    "ppo": {"learning_rate": 1e-5, "kl_coef": 0.1, "cliprange": 0.2, "total_episodes": 256},
    "dpo": {"learning_rate": 5e-6, "beta": 0.1, "loss_type": "sigmoid", "num_train_epochs": 1},
    "rloo": {"learning_rate": 1e-5, "kl_coef": 0.05, "total_episodes": 160},
}


def _stage(run: Path, stage: str, files: dict[str, bytes], metrics: dict | None = None) -> None:
    d = run / stage
    d.mkdir(parents=True)
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))
    section = STAGE_SECTIONS.get(stage, {"max_prompts": 24})
    (d / "config.yaml").write_text(yaml.safe_dump({"seed": 5, "data": {"dataset": "embedded"}, stage: section}))
    (d / "COMPLETE").write_text(json.dumps({"stage": stage}))


def model_bytes(tag: str) -> dict[str, bytes]:
    return {"config.json": json.dumps({"model_type": "gpt2", "tag": tag}).encode(),
            "model.safetensors": (tag * 50).encode(), "tokenizer.json": b"{}", "tokenizer_config.json": b"{}"}


def make_run(root: Path, seed: int = 0, gold: bool = True, hub: dict | None = None,
             models: tuple[str, ...] = MODELS) -> Path:
    """A finished run directory at `root` with a fabricated report (see module docstring) of `models`."""
    run = Path(root)
    run.mkdir(parents=True, exist_ok=True)
    report = make_report(seed, gold, models)
    pols = policies_of(models)
    recipe = {"seed": 5, "stages": ["base", "sft", "reward", *pols, "eval"], "data": {"dataset": "embedded"},
              **{k: v for k, v in STAGE_SECTIONS.items() if k not in ("ppo", "dpo", "rloo") or k in pols}}
    if hub:
        recipe["hub"] = hub
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    _stage(run, "base", model_bytes("base"), {"eval_loss": 3.3})
    _stage(run, "sft", model_bytes("sft"), report["training"]["sft"])
    _stage(run, "reward", {**model_bytes("reward"), "reward_stats.json": json.dumps(report["reward_model"]["stats"]).encode()},
           report["training"]["reward"])
    if "ppo" in pols:
        _stage(run, "ppo", {**model_bytes("ppo"), "metrics.jsonl": "".join(json.dumps(r) + "\n" for r in PPO_ROWS).encode(),
                            "checkpoints/step1/x.bin": b"x"}, PPO_STAGE_METRICS)
    for p in pols:
        if p != "ppo":
            _stage(run, p, model_bytes(p), POLICY_STAGE_METRICS[p])
    eval_files = {"report.json": json.dumps(report, indent=1).encode(),
                  "samples.jsonl": "".join(json.dumps(r) + "\n" for r in make_samples(report, seed)).encode(),
                  **{rel: tiny_png() for rel in report["plots"].values()}}
    _stage(run, "eval", eval_files, {"n_prompts": report["dataset"]["n_prompts"]})
    return run


def all_numbers(obj, out: set[str] | None = None) -> list:
    """Every numeric leaf of a JSON-like object."""
    found = [] if out is None else out
    if isinstance(obj, dict):
        for v in obj.values():
            all_numbers(v, found)
    elif isinstance(obj, list):
        for v in obj:
            all_numbers(v, found)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        found.append(obj)
    return found


def all_strings(obj) -> list[str]:
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in [str(k), *all_strings(v)]]
    if isinstance(obj, list):
        return [s for v in obj for s in all_strings(v)]
    return [obj] if isinstance(obj, str) else []


# ----------------------------------------------------------------------------- a PPO monitor's monitor.json

MONITOR_JUDGES = ["holdout", "seed-101"]  # the names train/reward.py gives a held-out judge and one seed judge
MONITOR_MESSAGE = ("the proxy pulled 0.700 spreads away from the judges (noise band 0.100) since update 2, the judges' best: "
                   "the proxy changed +0.500, the judges -0.200, and they set no new best for 2 points")


def make_monitor(verdict: str, gold: bool = False, **extra) -> dict:
    """A hand-made ppo/monitor.json in the shape of train/ppo/monitor.py's Monitor.report: four points at updates
    0, 2, 4, 6, the judges' pick at update 2; with `gold`, each point carries the embedded world's gold."""
    points = [{"update": u, "proxy": 0.1 * u, "judge": j} for u, j in ((0, 0.0), (2, 0.3), (4, 0.2), (6, 0.1))]
    if gold:
        for p, g in zip(points, (0.50, 0.62, 0.70, 0.58)):
            p["gold"] = g
    judges = [] if verdict == "no judges" else list(MONITOR_JUDGES)
    out = {"settings": {"every": 2, "prompts": 8, "judges": judges}, "verdict": verdict, "first_warning": None,
           "warnings": 0, "updates_done": 6, "updates_planned": 6, "stopped_early_at": None, "points": points,
           "policy_kept": "last"}
    if verdict == "warning":
        out.update(first_warning={"update": 6, "point": 3, "message": MONITOR_MESSAGE}, warnings=1)
    if judges:
        out["judges_pick"] = {"update": 2, "point": 1, "judge": 0.3, "proxy": 0.2, "path": "snapshots/update-000002",
                              "initial_policy": False}
    return {**out, **extra}
