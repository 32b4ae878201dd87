"""The template context of a card: every value a template shows, formatted, from a run's sources.

Every number is formatted by `fmt` from a value in the report or the configs; a
value that is absent drops its row or section (no "None", no empty cell). The
sentences around the values are in the Jinja templates (`templates/`); this
module passes them data only: labels, formatted numbers, flags.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Iterable

from gpt2_rlhf.evaluation.policies import LABELS, MODEL_KEYS, MODELS, NAMES, POLICY_KEYS
from gpt2_rlhf.evaluation.report import GOLD_WIN_RATE_TARGET, REFERENCE_ROWS, beats, has_ci, judges_aggregate

from .markdown import ci_decimals, code_block, fmt, fmt_at, fmt_ci, fmt_count, md_cell
from .sources import CardSources, get_path, is_number

MODEL_ORDER = MODEL_KEYS  # base, sft, then the trained policies (evaluation/policies.py): the order of every table
# Headings of the report's reference rows (`metrics.<name>.chosen`): scored like a model, not a model.
REFERENCE_LABELS = {"chosen": "Dataset's chosen responses"}
# Findings whose bad outcome is stated first, under "Read this first"; the Findings list then refers to it:
# reward hacking by the gold judge and by the held-out judges, overoptimisation, and a warning of PPO's
# reward-hacking monitor.
WARNING_IDS = (*(f"{p}_reward_hacking" for p in POLICY_KEYS), *(f"{p}_judge_hacking" for p in POLICY_KEYS),
               "ppo_overoptimisation", "ppo_monitor")
# Findings about the reward model: the reward card shows these.
RM_FINDING_IDS = ("rm_beats_length_baseline", "rm_on_policy_accuracy")


# Metric name -> (label, note). Unknown metrics are shown under their own name.
METRIC_INFO: dict[str, tuple[str, str]] = {
    "reward": ("Reward (normalised RM score)", "mean reward-model score of the model's responses, "
               "normalised with the reward model's statistics; the quantity PPO maximised."),
    "reward_raw": ("Reward (raw RM score)", ""),
    "reward_positive": ("Share of positive rewards", "per prompt, the fraction of its responses the reward scores "
                        "above 0, averaged over prompts; for a +1/-1 keyword reward, the share of responses with the "
                        "keyword."),
    "judges": ("Held-out judges (mean normalised score)", "the mean score of reward models trained beside the "
               "reward model (other seeds, or on preference pairs withheld from it) that no policy was optimised "
               "against, each normalised with its own statistics on the SFT model's samples, so that zero is "
               "SFT's level on every judge's scale, as on the reward model's; a reward gain the judges do not "
               "share is reward hacking."),
    "gold": ("Gold judge score", "the hidden rule that generated the synthetic preferences; it is what the reward "
             "model tries to learn, so reward up with gold flat means reward hacking."),
    "kl_to_reference": ("KL to the reference (nats per response)", "how far the model's own responses moved from "
                        "the reference model; PPO pays a penalty for it."),
    "perplexity_chosen": ("Perplexity of held-out chosen responses", "lower means the model finds the preferred "
                          "responses more likely."),
    "perplexity_rejected": ("Perplexity of held-out rejected responses", ""),
    "distinct_1": ("Distinct-1", "unique words over all words of all responses (Li et al.)."),
    "distinct_2": ("Distinct-2", "unique word bigrams over all bigrams; a drop signals mode collapse."),
    "unique_responses": ("Unique responses", "distinct response strings over responses."),
    "proxy_gold_correlation": ("Reward-model vs gold correlation", "agreement of the reward model with the gold "
                               "judge on the model's own responses."),
    "response_length": ("Response length (tokens)", ""),
    "eos_rate": ("EOS rate", "fraction of responses that ended by themselves within the token budget."),
    "classifier": ("Classifier probability", ""),
}

PLOT_TITLES = {
    "reward_distribution": "Reward distribution per model",
    "win_rates": "Win rates (reward-model judge)",
    "ppo_training": "PPO training curves",
    "overoptimisation": "Overoptimisation curve: gold and reward-model score against KL to SFT",
}




# ----------------------------------------------------------------------------- tables


def models_of(report: dict) -> list[str]:
    return [m for m in MODEL_ORDER if m in report.get("models", {})] + \
        [m for m in report.get("models", {}) if m not in MODEL_ORDER]


def policy_of(report: dict) -> str:
    """The model the card is about: the first trained policy present (evaluation/policies.py order: PPO, then
    DPO, then RLOO), else SFT, else base."""
    models = models_of(report)
    for key in (*POLICY_KEYS, "sft", "base"):
        if key in models:
            return key
    return models[-1]


def label(model: str) -> str:
    return LABELS.get(model) or REFERENCE_LABELS.get(model, model)


def value_cell(v: Any) -> str | None:
    """A metric value `{"value", "ci_low", "ci_high", "n"}` as `value [low, high]`, rounded to the interval's
    precision (`markdown.fmt_ci`); the value alone at `fmt`'s precision when it has no interval."""
    if not isinstance(v, dict) or not is_number(v.get("value")):
        return None
    if is_number(v.get("ci_low")) and is_number(v.get("ci_high")):
        return fmt_ci(v["value"], v["ci_low"], v["ci_high"])
    return fmt(v["value"])


def reward_context(report: dict) -> dict:
    """What scored the responses (the report's `reward`: the reward model, or a function or classifier that
    replaced it) and whether the prompts were plain text the model continues (`dataset.template`)."""
    r = report.get("reward") if isinstance(report.get("reward"), dict) else {}
    kind = r.get("kind") if r.get("kind") in ("function", "classifier") else "reward_model"
    text = lambda k: md_cell(str(r[k])) if isinstance(r.get(k), str) and r[k] else None
    return {"kind": kind, "model": kind == "reward_model", "function": text("function"),
            "classifier": text("classifier"), "label": text("label"), "score": text("score"),
            "reads": "the response alone" if r.get("text") == "response" else "prompt + response",
            "continuation": get_path(report, "dataset", "template") == "plain",
            "share": isinstance((report.get("metrics") or {}).get("reward_positive"), dict)}


def reward_label(report: dict) -> tuple[str, str]:
    """(label, note) of the `reward` metric row: the normalised reward-model score, or the function's or
    classifier's own value."""
    rc = reward_context(report)
    if rc["kind"] == "function":
        return (f"Reward (`{rc['function']}`)", "the reward function's mean score per response, as it is (not "
                "normalised); the quantity PPO maximised, in place of a reward model.")
    if rc["kind"] == "classifier":
        label = f" of label '{rc['label']}'" if rc["label"] else ""
        return (f"Reward ({rc['score'] or 'score'}{label}, classifier `{rc['classifier']}`)",
                f"the classifier's score of the label on {rc['reads']}; the quantity PPO maximised, in place of a "
                "reward model.")
    return METRIC_INFO["reward"]


def metric_label(report: dict, name: str) -> tuple[str, str]:
    """(label, note) of a metric row: the reward's own (`reward_label`), the judges' as they were combined
    (the report's `judges.aggregate`; absent in older reports: the mean), else METRIC_INFO's."""
    if name == "reward":
        return reward_label(report)
    if name == "judges" and judges_aggregate(report) == "min":
        return ("Held-out judges (worst-case normalised score)",
                "per response, the lowest score of the reward models trained beside the reward model (other "
                "seeds, or on preference pairs withheld from it) that no policy was optimised against, each "
                "normalised with its own statistics on the SFT model's samples, so that zero is SFT's level on "
                "every judge's scale; a response counts as good only when every judge says so, and a reward gain "
                "the judges do not share is reward hacking.")
    return METRIC_INFO.get(name, (name, ""))


def results_table(report: dict, names: Iterable[str] | None = None, models: list[str] | None = None) -> dict:
    """Rows = metrics, columns = models. A metric no model has is dropped; a missing cell says so in words."""
    models = models or models_of(report)
    rows = []
    for name, per_model in (report.get("metrics") or {}).items():
        if names is not None and name not in names:
            continue
        if not isinstance(per_model, dict):
            continue
        cells = [value_cell(per_model.get(m)) for m in models]
        if all(c is None for c in cells):
            continue
        lbl, note = metric_label(report, name)
        if name == "kl_to_reference" and report.get("reference"):
            lbl = f"KL to {label(str(report['reference']))} (nats per response)"
        if name == "classifier" and get_path(report, "classifier", "label"):
            lbl = f"Classifier probability of '{md_cell(report['classifier']['label'])}'"
        ns = sorted({per_model[m]["n"] for m in models if isinstance(per_model.get(m), dict)
                     and is_number(per_model[m].get("n"))})
        rows.append({"name": name, "label": md_cell(lbl), "note": note,
                     "cells": [c if c is not None else "not measured" for c in cells], "ns": ns})
    return {"columns": [label(m) for m in models], "rows": rows}


def judges_context(report: dict) -> dict | None:
    """The held-out judges that scored `metrics.judges` (the report's `judges` block): their names, as code;
    None for a run without them."""
    block = report.get("judges")
    if not isinstance(block, dict) or not isinstance((report.get("metrics") or {}).get("judges"), dict):
        return None
    names = [f"`{md_cell(n)}`" for n in block.get("names") or [] if isinstance(n, str) and n]
    return {"names": names} if names else None


def reference_metric_table(report: dict) -> dict:
    """`reference_metrics` ({metric: {model: {key: float}}}): rows metric.key, columns models. No CIs."""
    models = models_of(report)
    rows = []
    for metric, per_model in (report.get("reference_metrics") or {}).items():
        if not isinstance(per_model, dict):
            continue
        keys = []
        for m in models:
            keys += [k for k, v in (per_model.get(m) or {}).items() if is_number(v) and k not in keys]
        for k in keys:
            cells = [fmt(get_path(per_model, m, k)) if is_number(get_path(per_model, m, k)) else "not measured" for m in models]
            rows.append({"label": md_cell(f"{metric} {k}" if k != metric else metric), "cells": cells})
    return {"columns": [label(m) for m in models], "rows": rows}




def ci_context(report: dict) -> dict:
    """What the sentence under a results table says about its intervals and sample sizes."""
    cfg = get_path(report, "config", "eval") or {}
    b, level = cfg.get("bootstrap_samples"), cfg.get("confidence")
    n = get_path(report, "dataset", "n_prompts")
    pairs = get_path(report, "dataset", "n_pairs")
    k = get_path(report, "decoding", "samples_per_prompt")  # absent in reports before it: one per prompt
    return {"level": fmt(level) if is_number(level) else None, "resamples": fmt(b) if is_number(b) else None,
            "n_prompts": fmt(n) if is_number(n) else None,
            "n_pairs": fmt(pairs) if is_number(pairs) and pairs else None,
            "samples_per_prompt": fmt(k) if is_number(k) and k > 1 else None}


def win_rate_rows(report: dict, section: str = "win_rates") -> list[dict]:
    """`win_rates` (reward-model judge) or `gold_win_rates` (gold judge), one row per pair."""
    rows = []
    for key, w in (report.get(section) or {}).items():
        if not isinstance(w, dict) or not all(is_number(w.get(k)) for k in ("win", "tie", "loss")):
            continue
        a, _, b = key.partition("_vs_")
        d = ci_decimals(w.get("ci_low"), w.get("ci_high"))  # win, tie and loss at the win rate's precision
        ci = f"[{fmt_at(w['ci_low'], d)}, {fmt_at(w['ci_high'], d)}]" if d is not None else "not estimated"
        rows.append({"key": key, "label": f"{label(a)} vs {label(b)}", "win": fmt_at(w["win"], d),
                     "tie": fmt_at(w["tie"], d), "loss": fmt_at(w["loss"], d), "ci": ci,
                     "n": fmt(w["n"]) if is_number(w.get("n")) else "not recorded"})
    return rows


def improvement_rows(report: dict) -> list[dict]:
    rows = []
    for key, r in (report.get("reward_improvement") or {}).items():
        if not isinstance(r, dict) or not is_number(r.get("sd_units")):
            continue
        a, _, b = key.partition("_vs_")
        # the paired bootstrap intervals (reports before them: none); no interval says why
        diff = (fmt_ci(r["difference"], r.get("difference_ci_low"), r.get("difference_ci_high"))
                if is_number(r.get("difference")) else "not recorded")
        sd = fmt_ci(r["sd_units"], r.get("sd_units_ci_low"), r.get("sd_units_ci_high"))
        rows.append({"key": key, "label": f"{label(a)} vs {label(b)}", "difference": diff, "sd_units": sd,
                     "interval": is_number(r.get("sd_units_ci_low")) and is_number(r.get("sd_units_ci_high")),
                     "recorded": "sd_units_ci_low" in r,
                     "reference_std": fmt(r["reference_std"]) if is_number(r.get("reference_std")) else "not recorded",
                     "percent": fmt(r["percent"]) if is_number(r.get("percent")) else "undefined (raw score near zero)"})
    return rows


def reference_rows(report: dict) -> list[dict]:
    """The dataset's chosen responses scored like a model's (`metrics.<name>.chosen`): one row per metric."""
    rows = []
    for ref in REFERENCE_ROWS:
        for name, per_model in (report.get("metrics") or {}).items():
            cell = value_cell(per_model.get(ref)) if isinstance(per_model, dict) else None
            if cell is not None:
                rows.append({"name": name, "label": md_cell(metric_label(report, name)[0]),
                             "column": label(ref), "cell": cell})
    return rows


def _acc(v: Any, lo: Any = None, hi: Any = None) -> str:
    if not is_number(v):
        return "not measured"
    return fmt(v) + (f" [{fmt(lo)}, {fmt(hi)}]" if is_number(lo) and is_number(hi) else "")


def rm_rows(report: dict) -> dict:
    """The reward model's accuracy beside its baselines, on the evaluation's dataset pairs and (when the
    reward stage measured it) on held-out labelled pairs of policy samples (`reward_model.on_policy`).

    {"rows": [{"key", "label", "dataset", "on_policy"}], "on_policy": {...} or None}; no rows when
    neither accuracy was measured."""
    rm = report.get("reward_model") or {}
    op = rm.get("on_policy") if isinstance(rm.get("on_policy"), dict) else None
    if op is not None and not is_number(op.get("accuracy")):
        op = None
    if not is_number(rm.get("accuracy")) and op is None:
        return {"rows": [], "on_policy": None}
    n = rm.get("n_pairs")
    op = op or {}
    rows = [{"key": "accuracy", "label": "trained reward model",
             "dataset": _acc(rm.get("accuracy"), rm.get("accuracy_ci_low"), rm.get("accuracy_ci_high")),
             "on_policy": _acc(op.get("accuracy"))},
            {"key": "length_baseline_accuracy", "label": "baseline: the longer response wins",
             "dataset": _acc(rm.get("length_baseline_accuracy")), "on_policy": _acc(op.get("length_baseline_accuracy"))},
            {"key": "untrained_accuracy", "label": "baseline: the reward model before training",
             "dataset": _acc(rm.get("untrained_accuracy")), "on_policy": _acc(op.get("initial_accuracy"))}]
    rows = [r for r in rows if r["dataset"] != "not measured" or r["on_policy"] != "not measured"]
    on_policy = None
    if op:
        on_policy = {"pairs": fmt(op["pairs"]) if is_number(op.get("pairs")) else None,
                     "prompts": fmt(op["prompts"]) if is_number(op.get("prompts")) else None,
                     "source": md_cell(op["source"]) if isinstance(op.get("source"), str) and op["source"] else None,
                     "rank_correlation": fmt(op["rank_correlation"]) if is_number(op.get("rank_correlation")) else None}
    return {"rows": rows, "on_policy": on_policy, "n_pairs": fmt(n) if is_number(n) and is_number(rm.get("accuracy")) else None}


def curve_context(report: dict) -> dict | None:
    """The overoptimisation curve's points as table rows (`overoptimisation`), None when the report has none."""
    curve = report.get("overoptimisation")
    if not isinstance(curve, dict) or not isinstance(curve.get("points"), list) or not curve["points"]:
        return None
    points = [p for p in curve["points"] if isinstance(p, dict)]
    gold = all(isinstance(p.get("gold"), dict) for p in points)
    peak = get_path(curve, "gold_peak", "index")
    rows = [{"label": md_cell(p.get("label", "")), "round": fmt(p["round"]) if is_number(p.get("round")) else "not recorded",
             "episodes": fmt(p["episodes"]) if is_number(p.get("episodes")) else "not recorded",
             "kl": value_cell(p.get("kl")) or "not measured",
             "sqrt_kl": fmt(p["sqrt_kl"]) if is_number(p.get("sqrt_kl")) else "not measured",
             "reward": value_cell(p.get("reward")) or "not measured",
             "gold": (value_cell(p.get("gold")) or "not measured") if gold else None,
             "peak": i == peak} for i, p in enumerate(points)]
    return {"prompts": fmt(curve["prompts"]) if is_number(curve.get("prompts")) else None, "gold": gold, "rows": rows}


def is_good(f: dict) -> bool:
    """The card's mark: `good` (the outcome is good for the model). A report written before `good` existed
    has `holds` only, which is the good outcome except for the findings that name a failure."""
    if isinstance(f.get("good"), bool):
        return f["good"]
    return bool(f.get("holds")) != (f.get("id") in WARNING_IDS)


def warned(f: dict) -> bool:
    """A finding the policy card states first, under "Read this first": a detected failure."""
    return f.get("id") in WARNING_IDS and bool(f.get("holds")) and not is_good(f)


def findings(report: dict, ids: Iterable[str] | None = None) -> list[dict]:
    out = []
    for f in report.get("findings") or []:
        if not isinstance(f, dict) or not isinstance(f.get("text"), str) or not f["text"].strip():
            continue
        if ids is not None and f.get("id") not in ids:
            continue
        good = is_good(f)
        out.append({"id": f.get("id"), "holds": bool(f.get("holds")), "good": good, "warned": warned(f),
                    "mark": "✅" if good else "❌", "text": " ".join(f["text"].split())})
    return out


def _help_texts(stage: str) -> dict[str, str]:
    """Field help of the stage's config dataclass, when its module is importable."""
    try:
        from gpt2_rlhf.train.config import section_class

        cls = section_class(stage)
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
    except Exception:  # a card can be rendered without the training code importable
        return {}


def _param_value(v: Any) -> str:
    if v is None:
        return "not set"
    if isinstance(v, (dict, list)):
        return md_cell(json.dumps(v)) if v else "empty"
    if isinstance(v, str):
        return f"`{md_cell(v)}`" if v else "empty"
    return fmt(v)


def _scalars(d: Any) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in d.items() if is_number(v) or isinstance(v, bool)] if isinstance(d, dict) else []


def stage_context(src: CardSources, stage: str) -> dict | None:
    section = src.stage_section(stage)
    training = (src.report.get("training") or {}).get(stage)
    if section is None and not training:
        return None
    helps = _help_texts(stage)
    params = [{"name": k, "value": _param_value(v), "help": md_cell(helps.get(k, "")) or "see the config class"}
              for k, v in (section or {}).items()]
    ctx = {"key": stage, "params": params,
           "training": [{"name": k, "value": fmt(v)} for k, v in _scalars(training)], "progress": None}
    if stage == "ppo" and isinstance(training, dict):
        first, last = training.get("first"), training.get("last")
        if isinstance(first, dict) and isinstance(last, dict):
            keys = [k for k, v in first.items() if is_number(v) and is_number(last.get(k))]
            if keys:
                ctx["progress"] = {"updates": fmt(training.get("updates", len(keys))) if is_number(training.get("updates")) else "several",
                                   "rows": [{"name": k, "first": fmt(first[k]), "last": fmt(last[k])} for k in keys]}
        ctx["training"] = [m for m in ctx["training"] if m["name"] != "updates"]
    return ctx


def feedback_context(report: dict) -> list[dict]:
    """The feedback rounds (`training.feedback.rounds`) as table rows; [] for a run without feedback."""
    rows = get_path(report, "training", "feedback", "rounds") or []
    out = []
    for f in rows if isinstance(rows, list) else []:
        if not isinstance(f, dict):
            continue
        noise = f.get("noise") or {}
        who = md_cell(str(f.get("labeller") or "?"))
        if is_number(noise.get("flip_rate")) and noise["flip_rate"] > 0:
            who += f", flip rate {fmt(noise['flip_rate'])}"
        if is_number(noise.get("temperature")) and noise["temperature"] > 0:
            who += f", Bradley-Terry temperature {fmt(noise['temperature'])}"
        num = lambda *p: fmt(get_path(f, *p)) if is_number(get_path(f, *p)) else "-"
        out.append({"round": f.get("round"), "policy": md_cell(str(f.get("policy") or "?")), "labeller": who,
                    "comparisons": num("comparisons"), "flipped": num("flipped"),
                    "test_comparisons": num("test_comparisons"), "dataset_accuracy": num("reward", "accuracy"),
                    "on_policy_accuracy": num("reward", "on_policy", "accuracy"), "episodes": num("ppo", "episodes"),
                    "final_kl": num("ppo", "final_kl")})
    return out


def plot_context(src: CardSources) -> list[dict]:
    titles = dict(PLOT_TITLES)
    if not reward_context(src.report)["model"]:
        titles.update(reward_distribution="Reward distribution per model (the reward PPO maximised)",
                      win_rates="Win rates (judged by the reward PPO maximised)",
                      overoptimisation="Overoptimisation curve: gold and the reward PPO maximised against KL to SFT")
    return [{"name": name, "title": titles.get(name, name.replace("_", " ")),
             "path": f"eval/{src.report['plots'][name]}"} for name in src.plot_files]



def example_context(src: CardSources, n: int) -> list[dict]:
    """The first `n` prompts of the evaluation, in file order: not picked to flatter the model."""
    models = models_of(src.report)
    out = []
    for i, row in enumerate(src.samples[:max(n, 0)]):
        responses = []
        for m in models:
            if not isinstance(row["responses"].get(m), str):
                continue
            reward, gold = get_path(row, "scores", m), get_path(row, "gold", m)
            responses.append({"label": label(m), "reward": fmt(reward) if is_number(reward) else None,
                              "gold": fmt(gold) if is_number(gold) else None,
                              "text": code_block(row["responses"][m] or "(empty response)")})
        number = row.get("index", i)
        out.append({"number": fmt(number) if is_number(number) else fmt(i), "prompt": code_block(row["prompt"]),
                    "responses": responses})
    return out


def data_context(src: CardSources) -> dict:
    """The preference data the run trained on: its name and `data_dir` (None when unknown)."""
    ds = src.report.get("dataset") or {}
    return {"name": ds.get("name") or get_path(src.configs.get("sft") or {}, "data", "dataset"),
            "data_dir": ds.get("data_dir") or None}


def comparison_context(report: dict) -> dict | None:
    """The report's `comparison` of the trained policies: its sentences and a table of the gains over SFT
    per nat of KL and per second of training; None with fewer than two policies (nothing to compare)."""
    comp = report.get("comparison")
    if not isinstance(comp, dict) or len(comp.get("policies") or ()) < 2:
        return None
    texts = [" ".join(comp[k]["text"].split()) for k in ("gold", "reward", "per_kl", "per_second")
             if isinstance(comp.get(k), dict) and isinstance(comp[k].get("text"), str)]
    cell = lambda v: fmt(v) if is_number(v) else "unknown"
    rows = []
    for p in comp["policies"]:
        kl, sec = get_path(comp, "per_kl", "values", p) or {}, get_path(comp, "per_second", "values", p) or {}
        rows.append({"label": label(p), "gain": cell(kl.get("gain", sec.get("gain"))), "kl": cell(kl.get("kl")),
                     "per_nat": cell(kl.get("per_nat")), "train_s": cell(sec.get("train_s")),
                     "per_second": cell(sec.get("per_second"))})
    metric = get_path(comp, "per_kl", "metric") or get_path(comp, "per_second", "metric")
    return {"texts": texts, "rows": rows if metric else [], "metric": metric}


# ----------------------------------------------------------------------------- headline


@dataclass(frozen=True)
class Headline:
    """A metric that gets a `model-index` entry: where it is in the report and what it is called."""

    id: str
    name: str
    path: tuple[str, ...]  # "{policy}" and "{vs}" are filled in


HEADLINES = (
    Headline("reward", "mean normalised reward", ("metrics", "reward", "{policy}", "value")),
    Headline("reward_positive", "share of positive rewards", ("metrics", "reward_positive", "{policy}", "value")),
    Headline("gold", "mean gold score", ("metrics", "gold", "{policy}", "value")),
    Headline("win_rate", "win rate vs {vs}", ("win_rates", "{policy}_vs_{vs}", "win")),
    Headline("reward_improvement_sd", "reward improvement vs {vs} (sd units)",
             ("reward_improvement", "{policy}_vs_{vs}", "sd_units")),
    Headline("kl_to_reference", "KL to {ref}", ("metrics", "kl_to_reference", "{policy}", "value")),
    Headline("perplexity", "perplexity of chosen responses", ("metrics", "perplexity_chosen", "{policy}", "value")),
    Headline("distinct_2", "distinct-2", ("metrics", "distinct_2", "{policy}", "value")),
)


def headline_values(report: dict, policy: str | None = None) -> list[tuple[str, str, tuple[str, ...], float]]:
    """(metric_type, name, report path, value) for every headline metric the report has."""
    policy = policy or policy_of(report)
    others = [m for m in models_of(report) if m != policy]
    out = []
    for h in HEADLINES:
        for vs in (others if "{vs}" in "".join(h.path) else [None]):
            path = tuple(p.format(policy=policy, vs=vs) for p in h.path)
            if policy == report.get("reference") and h.id == "kl_to_reference":
                continue  # exactly zero by construction
            v = get_path(report, *path)
            name = h.name
            if h.id == "reward" and not reward_context(report)["model"]:  # a function's value is not normalised
                name = f"mean reward ({reward_context(report)['kind']})"
            if is_number(v):
                out.append((h.id, name.format(vs=label(vs or ""), ref=label(str(report.get("reference", "reference")))),
                            path, float(v)))
    return out



def headline_rows(report: dict, policy: str) -> list[dict]:
    """The headline metrics: name and cell, with its interval where there is one (rounded to its precision)."""
    rows = []
    for _, name, path, value in headline_values(report, policy):
        parent = get_path(report, *path[:-1])
        if path[-1] == "value":
            cell = value_cell(parent)
        elif path[-1] in ("win", "sd_units"):
            lo, hi = ("ci_low", "ci_high") if path[-1] == "win" else ("sd_units_ci_low", "sd_units_ci_high")
            cell = fmt_ci(value, parent.get(lo), parent.get(hi))
        else:
            cell = fmt(value)
        rows.append({"name": name, "cell": cell})
    return rows


def versus(report: dict, policy: str) -> str | None:
    """What the card's headline claims compare the policy with: SFT, else base (a run without SFT)."""
    models = models_of(report)
    return next((m for m in ("sft", "base") if m in models and m != policy), None)


def _finding(report: dict, fid: str) -> dict | None:
    return next((f for f in report.get("findings") or [] if isinstance(f, dict) and f.get("id") == fid), None)


def outcome(report: dict, metric: str, a: str, b: str) -> str:
    """How `a` compares with `b` on `metric`, in the findings' terms: "above" exactly when the finding
    `{a}_beats_{b}_{metric}` holds (from the numbers with `beats` when the report has no such finding),
    "below" when b beats a, "unassessed" without both intervals, else "overlap"."""
    va, vb = get_path(report, "metrics", metric, a), get_path(report, "metrics", metric, b)
    f = _finding(report, f"{a}_beats_{b}_{metric}")
    if (f is not None and f.get("holds")) or (f is None and beats(va, vb)):
        return "above"
    if beats(vb, va):
        return "below"
    if not (has_ci(va) and has_ci(vb)):
        return "unassessed"
    return "overlap"


def claims_context(report: dict, policy: str) -> dict:
    """The card's first screen: one plain claim per headline result of `policy` against SFT (or base), each a
    dict of formatted numbers and the outcome its finding states; the template writes the sentences."""
    vs = versus(report, policy)
    metrics = report.get("metrics") or {}
    out: dict[str, Any] = {"policy": NAMES.get(policy, policy), "vs": NAMES.get(vs, vs) if vs else None,
                           "level": ci_context(report)["level"], "gold": None, "reward": None, "win": None,
                           "gold_win": None, "kl": None}
    if vs is None or (policy not in POLICY_KEYS and policy != "sft"):  # SFT's card: against base
        return out
    for metric in ("gold", "reward"):
        a, b = get_path(metrics, metric, policy), get_path(metrics, metric, vs)
        if value_cell(a) and value_cell(b):
            out[metric] = {"a": value_cell(a), "b": value_cell(b), "outcome": outcome(report, metric, policy, vs)}
    w = get_path(report, "win_rates", f"{policy}_vs_{vs}")
    if isinstance(w, dict) and all(is_number(w.get(k)) for k in ("win", "tie", "loss")):
        d = ci_decimals(w.get("ci_low"), w.get("ci_high"))
        out["win"] = {"win": fmt_ci(w["win"], w.get("ci_low"), w.get("ci_high")), "tie": fmt_at(w["tie"], d),
                      "loss": fmt_at(w["loss"], d), "n": fmt(w["n"]) if is_number(w.get("n")) else None}
    g = get_path(report, "gold_win_rates", f"{policy}_vs_{vs}")
    f = _finding(report, f"{policy}_gold_win_rate")
    if isinstance(g, dict) and is_number(g.get("win_rate_ties_half")):
        out["gold_win"] = {"value": fmt_ci(g["win_rate_ties_half"], g.get("win_rate_ties_half_ci_low"),
                                           g.get("win_rate_ties_half_ci_high")),
                           "target": fmt(GOLD_WIN_RATE_TARGET) if f is not None else None,
                           "reached": bool(f.get("holds")) if f is not None else None}
    kl = get_path(metrics, "kl_to_reference", policy)
    if report.get("reference") != policy and value_cell(kl):
        out["kl"] = {"value": value_cell(kl), "reference": NAMES.get(report.get("reference"), report.get("reference"))}
    return out


def compact_table(report: dict, policy: str) -> dict:
    """The first screen's results table: gold, reward, the held-out judges (when the reward stage trained
    them), win rates against SFT (or base) and KL, one column per model; a cell that does not apply (a model
    against itself) is a dash."""
    models = models_of(report)
    vs = versus(report, policy)
    rows = []
    lbl = lambda name: metric_label(report, name)[0]
    for name in ("gold", "reward", "judges"):  # the held-out judges beside the reward model, when it had them
        if isinstance(get_path(report, "metrics", name), dict):
            rows.append({"label": md_cell(lbl(name)),
                         "cells": [value_cell(get_path(report, "metrics", name, m)) or "not measured" for m in models]})
    for section, what in (("win_rates", "Win rate"), ("gold_win_rates", "Gold win rate, ties half")):
        if vs is None or not isinstance(report.get(section), dict):
            continue
        cells = []
        for m in models:
            w = get_path(report, section, f"{m}_vs_{vs}")
            key = "win" if section == "win_rates" else "win_rate_ties_half"
            lo, hi = ("ci_low", "ci_high") if key == "win" else ("win_rate_ties_half_ci_low", "win_rate_ties_half_ci_high")
            cells.append(fmt_ci(w[key], w.get(lo), w.get(hi)) if isinstance(w, dict) and is_number(w.get(key)) else "–")
        if any(c != "–" for c in cells):
            rows.append({"label": f"{what} against {label(vs)}", "cells": cells})
    if isinstance(get_path(report, "metrics", "kl_to_reference"), dict):
        ref = label(str(report.get("reference", "reference")))
        rows.append({"label": f"KL to {ref} (nats per response)",
                     "cells": [value_cell(get_path(report, "metrics", "kl_to_reference", m)) or "not measured"
                               for m in models]})
    return {"columns": [label(m) for m in models], "rows": rows}


def model_context(src: CardSources, policy: str) -> dict:
    """What the model is, for the card's first sentence: its size (parameters, counted by the evaluation),
    the base it started from, the data and its size (the SFT stage's training rows), the method."""
    r = src.report
    params = get_path(r, "models", policy, "parameters")
    base = get_path(src.configs.get("base") or {}, "base", "model") or get_path(src.recipe or {}, "base", "model")
    training = r.get("training") or {}
    rows = next((training[s]["train_rows"] for s in ("sft", policy) if is_number(get_path(training, s, "train_rows"))),
                None)
    return {"label": label(policy), "key": policy, "parameters": fmt_count(int(params)) if is_number(params) else None,
            "base": md_cell(base) if isinstance(base, str) and base and base != "embedded" else None,
            "embedded_base": base == "embedded", "data": data_context(src),
            "train_rows": fmt(rows) if is_number(rows) else None,
            "n_prompts": fmt(get_path(r, "dataset", "n_prompts")) if is_number(get_path(r, "dataset", "n_prompts")) else None,
            "optimises_reward": policy in MODELS and MODELS[policy].optimises_reward,
            "trained": policy in POLICY_KEYS}


# ----------------------------------------------------------------------------- sentences' data


def summary_context(report: dict, policy: str) -> dict:
    """The card's first sentence: which model, compared with which, on how many prompts of what."""
    n_prompts = get_path(report, "dataset", "n_prompts")
    return {"policy": label(policy), "key": policy, "ppo": policy == "ppo",
            "optimises_reward": policy in MODELS and MODELS[policy].optimises_reward,
            "trained": policy in POLICY_KEYS,
            "others": [label(m) for m in models_of(report) if m != policy],
            "n_prompts": fmt(n_prompts) if is_number(n_prompts) else None,
            "dataset": get_path(report, "dataset", "name") or None}


def limitation_context(report: dict, kind: str, gpt2: bool) -> dict:
    """What the Limitations section of a `kind` card ("policy", "sft", "reward") must say.

    `gpt2`: the base model is a Hub model (GPT-2), not one built locally. A card that lists findings
    (policy, reward) refers to its ❌ findings by id (`refs`) instead of repeating their text; the SFT card
    lists none, so it states its own (`not_established`: SFT against base) once, here."""
    shown = {"policy": None, "reward": RM_FINDING_IDS, "sft": ()}[kind]
    bad = [f for f in findings(report, shown) if not f["good"]]
    sft_bad = [f["text"] for f in findings(report) if not f["good"] and str(f["id"]).startswith("sft_")]
    policy = policy_of(report)
    return {"kind": kind, "synthetic": get_path(report, "dataset", "name") == "embedded",
            "policy": NAMES.get(policy, policy),
            "direct": kind == "policy" and policy in POLICY_KEYS and not MODELS[policy].optimises_reward,
            "reward": reward_context(report), "prompts": get_path(report, "dataset", "name") or None,
            "gold": "gold" in (report.get("metrics") or {}), "gpt2": gpt2,
            "refs": [f"`{f['id']}`" for f in bad], "not_established": sft_bad if kind == "sft" else []}


def usage_context(report: dict, model_id: str) -> dict:
    """The generation call of the card's snippet, with the decoding settings the evaluation used."""
    d = report.get("decoding") or {}
    greedy = d.get("mode") == "greedy" or not is_number(d.get("temperature")) or d.get("temperature") == 0
    return {"model_id": model_id,
            "max_new_tokens": fmt(d["max_new_tokens"]) if is_number(d.get("max_new_tokens")) else None,
            "sample": not greedy,
            "temperature": None if greedy else fmt(d["temperature"]),
            "top_k": fmt(d["top_k"]) if not greedy and is_number(d.get("top_k")) and d["top_k"] > 0 else None,
            "top_p": fmt(d["top_p"]) if not greedy and is_number(d.get("top_p")) and d["top_p"] < 1 else None}


def reproduce_context(report: dict, repo_id: str | None) -> dict:
    """The commands, settings, versions and tolerances of the card's "How to reproduce"."""
    r = report
    version = get_path(r, "versions", "gpt2_rlhf")
    shown = version if version and version != "missing" else None
    ds = r.get("dataset") or {}
    tol = r.get("tolerance") or {}
    recipe_seed = get_path(r, "config", "seed")
    return {"version": shown, "pip": bool(shown) and "unknown" not in str(version),
            "target": repo_id or "RUN_DIR", "repo_id": repo_id,
            "decoding": [{"name": k, "value": _param_value(v)} for k, v in (r.get("decoding") or {}).items()],
            "dataset": [{"name": k, "value": _param_value(ds[k])}
                        for k in ("name", "data_dir", "split", "n_prompts", "n_pairs") if ds.get(k) is not None],
            "eval_seed": fmt(r["seed"]) if is_number(r.get("seed")) else None,
            "seed": fmt(recipe_seed) if is_number(recipe_seed) else None,
            "versions": [{"name": k, "value": md_cell(v)} for k, v in (r.get("versions") or {}).items()],
            "tol_abs": fmt(tol.get("default_abs")) if is_number(tol.get("default_abs")) else None,
            "tol_rel": fmt(tol.get("default_rel")) if is_number(tol.get("default_rel")) else None}
