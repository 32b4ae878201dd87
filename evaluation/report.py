"""The report's pure parts: findings from the numbers, the terminal table, versions, determinism helpers.

Nothing here touches a model; `evaluation/run.py` measures, this module states.
The schema is documented in docs/report-schema.md (schema_version 1).
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

# Fields that differ between two runs by nature; everything else must be identical (docs/report-schema.md).
NON_DETERMINISTIC = ("created", "wall_time_s")

# Pairs in report order: (a, b) reads "a against b".
PAIRS = (("ppo", "sft"), ("ppo", "base"), ("sft", "base"))

# How each model (keyed by its stage) is named: NAMES inside a sentence (the report's findings),
# LABELS as a heading (the card's tables). The Space ships alone and keeps its own role names.
NAMES = {"base": "base", "sft": "SFT", "ppo": "PPO"}
LABELS = {"base": "Base", "sft": "SFT", "ppo": "PPO (RLHF)"}

PACKAGES = {"gpt2_rlhf": "gpt2-rlhf", "torch": "torch", "transformers": "transformers", "trl": "trl",
            "evaluate": "evaluate", "datasets": "datasets", "huggingface_hub": "huggingface_hub"}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for key, dist in PACKAGES.items():
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = "0+unknown" if key == "gpt2_rlhf" else "missing"
    return dict(sorted(out.items()))


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its non-deterministic fields: two same-seed runs on one CPU give equal results."""
    return {k: v for k, v in report.items() if k not in NON_DETERMINISTIC}


def file_sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def present_pairs(keys: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for a, b in PAIRS if a in keys and b in keys]


# ----------------------------------------------------------------------------- findings


def _fmt(v: dict[str, Any]) -> str:
    if v.get("ci_low") is None:
        return f"{v['value']:.3f} (no CI, n={v['n']})"
    return f"{v['value']:.3f} (95% CI {v['ci_low']:.3f} to {v['ci_high']:.3f})"


def beats(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Non-overlapping CIs with a above b; False when either CI is missing (n < 2)."""
    if a.get("ci_low") is None or b.get("ci_high") is None:
        return False
    return a["ci_low"] > b["ci_high"]


def compare_finding(metric: str, what: str, values: dict[str, dict], a: str, b: str) -> dict[str, Any]:
    va, vb = values[a], values[b]
    holds = beats(va, vb)
    if holds:
        text = (f"{NAMES[a]}'s {what} {_fmt(va)} is above {NAMES[b]}'s {_fmt(vb)}: "
                f"the 95% confidence intervals do not overlap.")
    elif va.get("ci_low") is None or vb.get("ci_high") is None:
        text = (f"{NAMES[a]}'s {what} {_fmt(va)} against {NAMES[b]}'s {_fmt(vb)}: too few prompts for a "
                f"confidence interval, so no difference is claimed.")
    else:
        text = (f"{NAMES[a]}'s {what} {_fmt(va)} is not above {NAMES[b]}'s {_fmt(vb)} with non-overlapping "
                f"95% confidence intervals.")
    return {"id": f"{a}_beats_{b}_{metric}", "holds": holds, "text": text}


def findings(metrics: dict[str, dict], reward_model: dict[str, Any]) -> list[dict[str, Any]]:
    """Statements computed from the numbers (docs/report-schema.md, `findings`)."""
    keys = list(metrics["reward"])
    out = [compare_finding("reward", "mean normalised reward", metrics["reward"], a, b) for a, b in present_pairs(keys)]
    if "gold" in metrics:
        out += [compare_finding("gold", "mean gold-judge score", metrics["gold"], a, b)
                for a, b in present_pairs(keys) if a == "ppo"]
        if "ppo" in keys and "sft" in keys:
            proxy_up = beats(metrics["reward"]["ppo"], metrics["reward"]["sft"])
            gold_ppo, gold_sft = metrics["gold"]["ppo"]["value"], metrics["gold"]["sft"]["value"]
            hacked = proxy_up and gold_ppo <= gold_sft
            if hacked:
                text = (f"Reward hacking: PPO beats SFT on the reward model but its gold score {gold_ppo:.3f} is "
                        f"not above SFT's {gold_sft:.3f}.")
            elif proxy_up:
                text = (f"No sign of reward hacking: PPO beats SFT on the reward model and its gold score "
                        f"{gold_ppo:.3f} is above SFT's {gold_sft:.3f}.")
            else:
                text = (f"PPO does not beat SFT on the reward model, so reward hacking is not assessed "
                        f"(gold: PPO {gold_ppo:.3f}, SFT {gold_sft:.3f}).")
            out.append({"id": "ppo_reward_hacking", "holds": hacked, "text": text})
    if "accuracy" in reward_model:
        acc, base = reward_model["accuracy"], reward_model["length_baseline_accuracy"]
        holds = acc > base
        text = (f"The reward model's held-out accuracy {acc:.3f} (n={reward_model['n_pairs']} pairs) is "
                f"{'above' if holds else 'not above'} the length-only baseline's {base:.3f}.")
        out.append({"id": "rm_beats_length_baseline", "holds": holds, "text": text})
    return out


# ----------------------------------------------------------------------------- terminal


def table(report: dict[str, Any]) -> str:
    """A compact text table: one row per metric, one column per model, value [CI]."""
    keys = list(report["models"])
    rows = [["metric", *keys]]
    for name, per_model in report["metrics"].items():
        cells = [name]
        for k in keys:
            v = per_model.get(k)
            if v is None:
                cells.append("-")
            elif v["ci_low"] is None:
                cells.append(f"{v['value']:.3f}")
            else:
                cells.append(f"{v['value']:.3f} [{v['ci_low']:.2f}, {v['ci_high']:.2f}]")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for pair, w in report["win_rates"].items():
        ci = "" if w["ci_low"] is None else f" [{w['ci_low']:.2f}, {w['ci_high']:.2f}]"
        lines.append(f"win rate {pair}: win {w['win']:.3f}{ci}  tie {w['tie']:.3f}  loss {w['loss']:.3f}  (n={w['n']})")
    for pair, r in report["reward_improvement"].items():
        pct = f"{r['percent']:+.1f}% raw, " if "percent" in r else ""
        lines.append(f"reward improvement {pair}: {pct}{r['sd_units']:+.2f} SD")
    for f in report["findings"]:
        lines.append(f"[{'x' if f['holds'] else ' '}] {f['id']}: {f['text']}")
    return "\n".join(lines)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON: {e.msg}") from None
    return rows
