"""PNG plots of the report: reward distributions, win-rate bars, PPO training curves, the overoptimisation curve,
and the trained policies side by side (gold and reward against KL to SFT).

matplotlib with the Agg backend (no display), fixed sizes and no timestamps in the
PNG metadata, so two identical reports give identical images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# one colour per model key (evaluation/policies.py); a key without one gets matplotlib's next colour
COLORS = {"base": "#7f7f7f", "sft": "#1f77b4", "ppo": "#d62728", "dpo": "#2ca02c", "rloo": "#9467bd"}
PPO_CURVES = ("score", "score_norm", "kl", "entropy", "policy_loss", "value_loss")
METADATA = {"Software": None}  # keep the PNG free of version strings


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reward_distribution(scores: dict[str, list[float]], means: dict[str, dict], path: Path,
                        axis: str = "normalised reward-model score") -> None:
    """Overlaid histograms of each model's normalised reward, with its mean and CI marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    all_scores = np.concatenate([np.asarray(s, float) for s in scores.values()])
    lo, hi = float(all_scores.min()), float(all_scores.max())
    bins = np.linspace(lo - 1e-6, hi + 1e-6, 31)
    for key, s in scores.items():
        c = COLORS.get(key)
        ax.hist(s, bins=bins, alpha=0.45, color=c, label=f"{key} (mean {means[key]['value']:.2f})")
        ax.axvline(means[key]["value"], color=c, lw=2)
        if means[key]["ci_low"] is not None:
            ax.axvspan(means[key]["ci_low"], means[key]["ci_high"], color=c, alpha=0.15)
    ax.set_xlabel(axis)
    ax.set_ylabel("responses")
    ax.set_title("Reward per model on the same held-out prompts (line: mean, band: 95% CI)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata=METADATA)
    plt.close(fig)


def win_rates(win: dict[str, dict], path: Path) -> None:
    """Stacked horizontal bars: win / tie / loss per pair, with the win-rate CI."""
    plt = _plt()
    pairs = list(win)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.6 * max(len(pairs), 1)), dpi=100)
    y = np.arange(len(pairs))
    w = np.array([win[p]["win"] for p in pairs])
    t = np.array([win[p]["tie"] for p in pairs])
    l_ = np.array([win[p]["loss"] for p in pairs])
    ax.barh(y, w, color="#2ca02c", label="win")
    ax.barh(y, t, left=w, color="#bbbbbb", label="tie")
    ax.barh(y, l_, left=w + t, color="#d62728", label="loss")
    for i, p in enumerate(pairs):
        if win[p]["ci_low"] is not None:
            ax.plot([win[p]["ci_low"], win[p]["ci_high"]], [i, i], color="black", lw=2)
    ax.axvline(0.5, color="black", ls=":", lw=1)
    ax.set_yticks(y, [p.replace("_vs_", " vs ") for p in pairs])
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of prompts (black: 95% CI of the win rate)")
    ax.legend(loc="lower right", ncols=3, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, metadata=METADATA)
    plt.close(fig)


def ppo_curves(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """The PPO_CURVES present in metrics.jsonl rows (the trainer's, one per update): key -> [(update, value)].

    x is the row's own `update` (the trainer writes it in every row); a row without it is not a trainer row."""
    curves = {}
    for key in PPO_CURVES:
        pts = []
        for i, r in enumerate(rows):
            v = r.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if "update" not in r:
                    raise ValueError(f"ppo/metrics.jsonl row {i + 1} has no 'update' (keys: {sorted(r)})")
                pts.append((r["update"], v))
        if pts:
            curves[key] = pts
    return curves


def ppo_training(rows: list[dict[str, Any]], path: Path) -> bool:
    """PPO curves from metrics.jsonl (one row per update); False (no file) when no known key is present."""
    curves = ppo_curves(rows)
    if not curves:
        return False
    keys = list(curves)
    plt = _plt()
    cols = min(3, len(keys))
    nrows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.8 * nrows), dpi=100, squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = curves[key]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.5)
        ax.set_title(key)
        ax.set_xlabel("update")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle("PPO training (metrics.jsonl)")
    fig.tight_layout()
    fig.savefig(path, metadata=METADATA)
    plt.close(fig)
    return True


def overoptimisation(curve: dict[str, Any], path: Path, axis: str = "normalised reward-model score") -> None:
    """Gold score and reward-model score against sqrt(KL to SFT) along the PPO trajectory (Gao et al. 2022).

    Two panels sharing the x axis (two y axes on one panel would invite comparing scales that have
    nothing in common): points in training order, joined by a line, with the 95% CI of each mean as a
    vertical bar; the gold peak is ringed. Without gold (not the embedded data) only the reward panel."""
    plt = _plt()
    points = curve["points"]
    panels = [("gold", "gold-judge score")] if all("gold" in p for p in points) else []
    panels.append(("reward", axis))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), dpi=100, squeeze=False)
    x = np.array([p["sqrt_kl"] for p in points])
    rounds = sorted({p["round"] for p in points})
    cmap = plt.get_cmap("viridis")
    for ax, (key, name) in zip(axes.flat, panels):
        y = np.array([p[key]["value"] for p in points])
        lo = np.array([p[key]["value"] if p[key]["ci_low"] is None else p[key]["ci_low"] for p in points])
        hi = np.array([p[key]["value"] if p[key]["ci_high"] is None else p[key]["ci_high"] for p in points])
        ax.plot(x, y, color="#999999", lw=1, zorder=1)
        for r in rounds:
            idx = [i for i, p in enumerate(points) if p["round"] == r]
            color = cmap(0.0 if r == 0 else 0.25 + 0.65 * (r - 1) / max(len(rounds) - 1, 1))
            ax.errorbar(x[idx], y[idx], yerr=[y[idx] - lo[idx], hi[idx] - y[idx]], fmt="o", ms=4, capsize=2,
                        color=color, label="SFT" if r == 0 else f"PPO round {r}", zorder=2)
        peak = curve.get("gold_peak")
        if peak is not None:
            ax.plot([x[peak["index"]]], [y[peak["index"]]], "o", ms=12, mfc="none", mec="black",
                    label="gold peak" if key == "gold" else None, zorder=3)
        ax.set_xlabel("sqrt(KL to SFT), nats^0.5 per response")
        ax.set_ylabel(name)
        ax.set_title(f"{name} along training", fontsize=10)
    axes.flat[0].legend(fontsize="small")
    fig.suptitle(f"Overoptimisation curve: {curve['prompts']} held-out prompts (bars: 95% CI)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, metadata=METADATA)
    plt.close(fig)


def policies(metrics: dict[str, dict], keys: list[str], path: Path, axis: str = "normalised reward-model score") -> None:
    """Each evaluated model's gold score (when measured) and reward against sqrt(KL to the reference), with
    the 95% CIs as bars: which policy gained what for how far it moved (the report's `comparison`)."""
    import math

    plt = _plt()
    panels = [("gold", "gold-judge score")] if "gold" in metrics else []
    panels.append(("reward", axis))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), dpi=100, squeeze=False)
    for ax, (name, label) in zip(axes.flat, panels):
        for key in keys:
            v, kl = metrics[name][key], metrics["kl_to_reference"][key]["value"]
            x = math.sqrt(max(kl, 0.0))  # a finite-sample KL estimate can be < 0
            lo = v["value"] if v["ci_low"] is None else v["ci_low"]
            hi = v["value"] if v["ci_high"] is None else v["ci_high"]
            ax.errorbar([x], [v["value"]], yerr=[[v["value"] - lo], [hi - v["value"]]], fmt="o", ms=6, capsize=3,
                        color=COLORS.get(key), label=key)
        ax.set_xlabel("sqrt(KL to the reference), nats^0.5 per response")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per model", fontsize=10)
    axes.flat[0].legend(fontsize="small")
    fig.suptitle("The policies side by side on the same held-out prompts (bars: 95% CI)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, metadata=METADATA)
    plt.close(fig)
