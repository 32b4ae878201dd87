"""`rlhf card RUN_DIR`: model cards that print only measured numbers.

The seed card (seed 003) claimed "70-80% accuracy" and "500%+ reward
improvement" that nothing measured. Here a card is a pure function of the files
a run wrote:

    eval/report.json, eval/samples.jsonl, eval/plots/*.png   (rlhf evaluate)
    <stage>/config.yaml                                       (each stage's resolved config)
    recipe.yaml                                               (the resolved recipe)

1. Read those files (`CardSources`); a missing or malformed one is a one-line
   error naming it.
2. Build the template context: every number is formatted by `fmt` from a value
   in those files; the Jinja templates in `model_card/templates/` contain no
   number (tests/test_card.py checks each number of a rendered card against the
   report). A value that is absent drops its row or section: no "None", no
   empty cell.
3. Render with `huggingface_hub.ModelCard.from_template`: the YAML metadata
   (license, base_model, datasets, tags, pipeline_tag and a `model-index` with an
   `EvalResult` per headline metric, values cast to plain floats) and the body.
4. Write `OUTPUT/card/` atomically (`gpt2_rlhf.train.rundir.StageWriter`): the policy card
   `README.md`, the reward-model card `reward/README.md`, the SFT card
   `sft/README.md`, and the card's inputs (`eval/`, `configs/`, `recipe.yaml`,
   `card.json`), so the folder is exactly what `rlhf push` uploads next to the
   weights and what `rlhf reproduce` re-renders and compares.

Deviation from the Hub's default template: we drop its many "[More Information
Needed]" sections; a section without measured content is left out instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
POLICY_TEMPLATE = TEMPLATES / "policy_card.md"
REWARD_TEMPLATE = TEMPLATES / "reward_card.md"
SFT_TEMPLATE = TEMPLATES / "sft_card.md"

CARD_DIR = "card"
CARD_META = "card.json"
MODEL_ORDER = ("base", "sft", "ppo")
STAGES = ("base", "sft", "reward", "ppo", "eval")
MODEL_LABELS = {"base": "Base", "sft": "SFT", "ppo": "PPO (RLHF)"}

# Metric name -> (label, note). Unknown metrics are shown under their own name.
METRIC_INFO: dict[str, tuple[str, str]] = {
    "reward": ("Reward (normalised RM score)", "mean reward-model score of the model's responses, "
               "normalised with the reward model's statistics; the quantity PPO maximised."),
    "reward_raw": ("Reward (raw RM score)", ""),
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
}


class CardError(ValueError):
    """A run directory or card that cannot be rendered or read; the message names the file."""


# ----------------------------------------------------------------------------- formatting


def fmt(x: Any) -> str:
    """The one way a number is printed on a card: four significant digits, no exponent below 1e9.

    `rlhf reproduce` compares a card with a re-rendered one at this precision.
    """
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x == 0:
            return "0"
        if 1000 <= abs(x) < 1e9:
            return f"{x:.0f}"
        return f"{x:.4g}"
    return str(x)


# A number not glued to a word (so GPT-2, gpt2, distinct_1 and sha256 are names, not numbers).
_NUMBER = re.compile(r"(?<![\w.+\-])[-+]?\d+(?:\.\d+)*(?:[eE][-+]?\d+)?")
_URL = re.compile(r"(?:https?://|\]\()[^\s)]*\)?")


def numbers_in(text: str) -> list[str]:
    """Every number written in `text`, in order, as written; links and image paths are skipped."""
    return _NUMBER.findall(_URL.sub(" ", text))


def md_cell(text: Any) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def code_block(text: str, lang: str = "text") -> str:
    """A fenced block that no backtick run inside `text` can close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.strip(chr(10))}\n{fence}"


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# ----------------------------------------------------------------------------- inputs


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CardError(f"{what}: {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CardError(f"{what}: {path} is not valid JSON ({e})") from e


def _read_yaml(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CardError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from e
    return data if isinstance(data, dict) else None


def read_samples(path: Path) -> list[dict]:
    """samples.jsonl rows; a bad line is an error naming the file and line."""
    if not path.is_file():
        raise CardError(f"samples: {path} does not exist")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CardError(f"{path}:{i}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(row.get("responses"), dict):
            raise CardError(f"{path}:{i}: expected an object with 'prompt' and 'responses'")
        rows.append(row)
    return rows


def check_report(report: Any, where: str) -> dict:
    """The fields a card cannot do without; everything else is optional and drops its section."""
    if not isinstance(report, dict):
        raise CardError(f"{where}: expected a JSON object")
    if report.get("schema_version") != 1:
        raise CardError(f"{where}: schema_version {report.get('schema_version')!r} is not supported (expected 1)")
    for key in ("models", "metrics"):
        if not isinstance(report.get(key), dict) or not report[key]:
            raise CardError(f"{where}: field '{key}' is missing or empty")
    return report


@dataclass
class CardOptions:
    """What a card shows that the run does not record: where the models live, license, language."""

    repo_id: str | None = None
    sft_repo_id: str | None = None
    reward_repo_id: str | None = None
    base_repo_id: str | None = None
    license: str = "mit"
    language: list[str] = field(default_factory=lambda: ["en"])
    examples: int = 3

    @classmethod
    def from_hub_config(cls, hub: Any, **overrides: Any) -> "CardOptions":
        opts = cls(repo_id=hub.repo_id, sft_repo_id=hub.sft_repo_id, reward_repo_id=hub.reward_repo_id,
                   base_repo_id=hub.base_repo_id, license=hub.license, language=list(hub.language),
                   examples=hub.card_examples)
        return dataclasses.replace(opts, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class CardSources:
    """Everything a card is rendered from, read from a run directory or from a card folder / Hub snapshot."""

    report: dict
    samples: list[dict]
    configs: dict[str, dict]  # stage -> its config.yaml ({"seed", "data", "<stage>": {...}})
    recipe: dict | None
    plot_files: dict[str, Path]  # report plot name -> existing file
    where: str  # what the card calls the report

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> "CardSources":
        from gpt2_rlhf.train.rundir import require_stage

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise CardError(f"run directory {run_dir} does not exist")
        eval_dir = require_stage(run_dir / "eval", "evaluation (run `rlhf evaluate RUN_DIR` first)")
        return cls._read(eval_dir, {s: run_dir / s / "config.yaml" for s in STAGES}, run_dir / "recipe.yaml")

    @classmethod
    def from_bundle(cls, folder: str | Path) -> "CardSources":
        """A rendered card folder or a downloaded Hub repo: eval/, configs/<stage>.yaml, recipe.yaml."""
        folder = Path(folder)
        return cls._read(folder / "eval", {s: folder / "configs" / f"{s}.yaml" for s in STAGES}, folder / "recipe.yaml")

    @classmethod
    def _read(cls, eval_dir: Path, config_paths: dict[str, Path], recipe_path: Path) -> "CardSources":
        report_path = eval_dir / "report.json"
        report = check_report(_read_json(report_path, "evaluation report"), str(report_path))
        samples = read_samples(eval_dir / str(report.get("samples", "samples.jsonl")))
        configs = {s: c for s, p in config_paths.items() if (c := _read_yaml(p)) is not None}
        plots = {}
        for name, rel in (report.get("plots") or {}).items():
            p = eval_dir / str(rel)
            if p.is_file():
                plots[name] = p
            else:
                logger.warning("plot %s listed in the report is missing (%s); the card leaves it out", name, p)
        return cls(report, samples, configs, _read_yaml(recipe_path), plots, "eval/report.json")

    def stage_section(self, stage: str) -> dict | None:
        cfg = self.configs.get(stage) or {}
        sec = cfg.get(stage)
        return sec if isinstance(sec, dict) else None


# ----------------------------------------------------------------------------- context


def models_of(report: dict) -> list[str]:
    return [m for m in MODEL_ORDER if m in report.get("models", {})] + \
        [m for m in report.get("models", {}) if m not in MODEL_ORDER]


def policy_of(report: dict) -> str:
    """The model the card is about: the last trained one (PPO normally)."""
    models = models_of(report)
    for key in ("ppo", "sft", "base"):
        if key in models:
            return key
    return models[-1]


def label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def value_cell(v: Any) -> str | None:
    """A metric value `{"value", "ci_low", "ci_high", "n"}` as `value [low, high]`."""
    if not isinstance(v, dict) or not _is_number(v.get("value")):
        return None
    text = fmt(v["value"])
    if _is_number(v.get("ci_low")) and _is_number(v.get("ci_high")):
        text += f" [{fmt(v['ci_low'])}, {fmt(v['ci_high'])}]"
    return text


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
        lbl, note = METRIC_INFO.get(name, (name, ""))
        if name == "kl_to_reference" and report.get("reference"):
            lbl = f"KL to {label(str(report['reference']))} (nats per response)"
        if name == "classifier" and _get(report, "classifier", "label"):
            lbl = f"Classifier probability of '{md_cell(report['classifier']['label'])}'"
        ns = sorted({per_model[m]["n"] for m in models if isinstance(per_model.get(m), dict)
                     and _is_number(per_model[m].get("n"))})
        rows.append({"name": name, "label": md_cell(lbl), "note": note,
                     "cells": [c if c is not None else "not measured" for c in cells], "ns": ns})
    return {"columns": [label(m) for m in models], "rows": rows}


def reference_metric_table(report: dict) -> dict:
    """`reference_metrics` ({metric: {model: {key: float}}}): rows metric.key, columns models. No CIs."""
    models = models_of(report)
    rows = []
    for metric, per_model in (report.get("reference_metrics") or {}).items():
        if not isinstance(per_model, dict):
            continue
        keys = []
        for m in models:
            keys += [k for k, v in (per_model.get(m) or {}).items() if _is_number(v) and k not in keys]
        for k in keys:
            cells = [fmt(_get(per_model, m, k)) if _is_number(_get(per_model, m, k)) else "not measured" for m in models]
            rows.append({"label": md_cell(f"{metric} {k}" if k != metric else metric), "cells": cells})
    return {"columns": [label(m) for m in models], "rows": rows}


def ci_text(report: dict) -> str:
    cfg = _get(report, "config", "eval") or {}
    b, level = cfg.get("bootstrap_samples"), cfg.get("confidence")
    text = ("Brackets: the confidence interval (percentile bootstrap over prompts, responses or pairs; jackknife "
            "for the diversity metrics)")
    if _is_number(level):
        text += f" at confidence level {fmt(level)}"
    if _is_number(b):
        text += f" ({fmt(b)} resamples)"
    text += ", as defined in the evaluation report schema."
    n = _get(report, "dataset", "n_prompts")
    if _is_number(n):
        text += f" Responses to {fmt(n)} held-out prompts"
        pairs = _get(report, "dataset", "n_pairs")
        text += f"; perplexities and accuracies on {fmt(pairs)} held-out preference pairs." if _is_number(pairs) and pairs else "."
    return text


def win_rate_rows(report: dict) -> list[dict]:
    rows = []
    for key, w in (report.get("win_rates") or {}).items():
        if not isinstance(w, dict) or not all(_is_number(w.get(k)) for k in ("win", "tie", "loss")):
            continue
        a, _, b = key.partition("_vs_")
        ci = f"[{fmt(w['ci_low'])}, {fmt(w['ci_high'])}]" if _is_number(w.get("ci_low")) and _is_number(w.get("ci_high")) else "not estimated"
        rows.append({"key": key, "label": f"{label(a)} vs {label(b)}", "win": fmt(w["win"]), "tie": fmt(w["tie"]),
                     "loss": fmt(w["loss"]), "ci": ci, "n": fmt(w["n"]) if _is_number(w.get("n")) else "not recorded"})
    return rows


def improvement_rows(report: dict) -> list[dict]:
    rows = []
    for key, r in (report.get("reward_improvement") or {}).items():
        if not isinstance(r, dict) or not _is_number(r.get("sd_units")):
            continue
        a, _, b = key.partition("_vs_")
        rows.append({"key": key, "label": f"{label(a)} vs {label(b)}",
                     "difference": fmt(r["difference"]) if _is_number(r.get("difference")) else "not recorded",
                     "sd_units": fmt(r["sd_units"]),
                     "reference_std": fmt(r["reference_std"]) if _is_number(r.get("reference_std")) else "not recorded",
                     "percent": fmt(r["percent"]) if _is_number(r.get("percent")) else "undefined (raw score near zero)"})
    return rows


def rm_rows(report: dict) -> list[dict]:
    rm = report.get("reward_model") or {}
    rows = []
    if _is_number(rm.get("accuracy")):
        text = fmt(rm["accuracy"])
        if _is_number(rm.get("accuracy_ci_low")) and _is_number(rm.get("accuracy_ci_high")):
            text += f" [{fmt(rm['accuracy_ci_low'])}, {fmt(rm['accuracy_ci_high'])}]"
        n = rm.get("n_pairs")
        rows.append({"key": "accuracy", "label": "trained reward model" + (f" ({fmt(n)} pairs)" if _is_number(n) else ""),
                     "value": text})
    if _is_number(rm.get("length_baseline_accuracy")):
        rows.append({"key": "length_baseline_accuracy", "label": "baseline: the longer response wins",
                     "value": fmt(rm["length_baseline_accuracy"])})
    if _is_number(rm.get("untrained_accuracy")):
        rows.append({"key": "untrained_accuracy", "label": "baseline: the reward model before training",
                     "value": fmt(rm["untrained_accuracy"])})
    return rows if rows and rows[0]["key"] == "accuracy" else []


def findings(report: dict, ids: Iterable[str] | None = None) -> list[dict]:
    out = []
    for f in report.get("findings") or []:
        if not isinstance(f, dict) or not isinstance(f.get("text"), str) or not f["text"].strip():
            continue
        if ids is not None and f.get("id") not in ids:
            continue
        out.append({"id": f.get("id"), "holds": bool(f.get("holds")),
                    "mark": "✅" if f.get("holds") else "❌", "text": " ".join(f["text"].split())})
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
    return [(k, v) for k, v in d.items() if _is_number(v) or isinstance(v, bool)] if isinstance(d, dict) else []


STAGE_TEXT = {
    "sft": ("Supervised fine-tuning (SFT)",
            "The base model is fine-tuned with the language-modelling loss on the *chosen* response of each "
            "preference pair, the loss counted on response tokens only."),
    "reward": ("Reward model",
               "A copy of the SFT model with a scalar head is trained on the preference pairs with the pairwise "
               "loss `-log sigmoid(r(chosen) - r(rejected))`. Its scores are normalised with statistics measured "
               "after training (see the reward model's own card)."),
    "ppo": ("PPO",
            "The policy (initialised from SFT) samples responses to training prompts; the reward model scores "
            "`prompt + response + EOS`; PPO with a clipped objective, a value head and GAE maximises that score "
            "minus a KL penalty to the SFT model."),
}


def stage_context(src: CardSources, stage: str) -> dict | None:
    section = src.stage_section(stage)
    training = (src.report.get("training") or {}).get(stage)
    if section is None and not training:
        return None
    helps = _help_texts(stage)
    params = [{"name": k, "value": _param_value(v), "help": md_cell(helps.get(k, "")) or "see the config class"}
              for k, v in (section or {}).items()]
    ctx = {"key": stage, "title": STAGE_TEXT[stage][0], "what": STAGE_TEXT[stage][1], "params": params,
           "training": [{"name": k, "value": fmt(v)} for k, v in _scalars(training)], "progress": None}
    if stage == "ppo" and isinstance(training, dict):
        first, last = training.get("first"), training.get("last")
        if isinstance(first, dict) and isinstance(last, dict):
            keys = [k for k, v in first.items() if _is_number(v) and _is_number(last.get(k))]
            if keys:
                ctx["progress"] = {"updates": fmt(training.get("updates", len(keys))) if _is_number(training.get("updates")) else "several",
                                   "rows": [{"name": k, "first": fmt(first[k]), "last": fmt(last[k])} for k in keys]}
        ctx["training"] = [m for m in ctx["training"] if m["name"] != "updates"]
    return ctx


def plot_context(src: CardSources) -> list[dict]:
    return [{"name": name, "title": PLOT_TITLES.get(name, name.replace("_", " ")),
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
            bits = []
            if _is_number(_get(row, "scores", m)):
                bits.append(f"normalised reward {fmt(row['scores'][m])}")
            if _is_number(_get(row, "gold", m)):
                bits.append(f"gold {fmt(row['gold'][m])}")
            responses.append({"label": label(m), "score": "; ".join(bits) or "not scored",
                              "text": code_block(row["responses"][m] or "(empty response)")})
        number = row.get("index", i)
        out.append({"number": fmt(number) if _is_number(number) else fmt(i), "prompt": code_block(row["prompt"]),
                    "responses": responses})
    return out


def data_text(src: CardSources) -> str:
    ds = src.report.get("dataset") or {}
    name = ds.get("name") or _get(src.configs.get("sft") or {}, "data", "dataset")
    if name == "embedded":
        return ("The data is the synthetic HH-format preference set shipped with gpt2-rlhf (`embedded`): "
                "generated by a hidden rule, so the gold score measures true quality.")
    if name:
        sub = f" (`{ds['data_dir']}`)" if ds.get("data_dir") else ""
        return f"The preference data is `{name}`{sub}."
    return ""


def hub_base_model(src: CardSources, opts: CardOptions) -> str | None:
    """A Hub id for `base_model` metadata: the recipe's base model unless it was built locally."""
    if opts.base_repo_id:
        return opts.base_repo_id
    model = _get(src.configs.get("base") or {}, "base", "model") or _get(src.recipe or {}, "base", "model")
    if isinstance(model, str) and model != "embedded" and not Path(model).exists() and re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", model):
        return model
    return None


def hub_dataset(src: CardSources) -> str | None:
    name = _get(src.report, "dataset", "name")
    if isinstance(name, str) and name != "embedded" and not Path(name).exists() and re.fullmatch(r"[\w.\-]+/[\w.\-]+", name):
        return name
    return None


# ----------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class Headline:
    """A metric that gets a `model-index` entry: where it is in the report and what it is called."""

    id: str
    name: str
    path: tuple[str, ...]  # "{policy}" and "{vs}" are filled in


HEADLINES = (
    Headline("reward", "mean normalised reward", ("metrics", "reward", "{policy}", "value")),
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
            v = _get(report, *path)
            if _is_number(v):
                out.append((h.id, h.name.format(vs=label(vs or ""), ref=label(str(report.get("reference", "reference")))),
                            path, float(v)))
    return out


def _dataset_meta(src: CardSources) -> dict:
    ds = src.report.get("dataset") or {}
    return {"dataset_type": str(ds.get("name") or "unknown"), "dataset_name": str(ds.get("name") or "unknown"),
            "dataset_split": str(ds.get("split") or "test"),
            "dataset_config": str(ds["data_dir"]) if ds.get("data_dir") else None}


def _source(repo_id: str | None) -> dict:
    """Where a model-index value comes from: the report in the repo (the Hub wants a URL with a source name)."""
    if not repo_id:
        return {}
    return {"source_name": "gpt2-rlhf evaluation report", "source_url": f"{_hub_url(repo_id)}/blob/main/eval/report.json"}


def eval_results(src: CardSources, policy: str, repo_id: str | None) -> list:
    from huggingface_hub import EvalResult

    return [EvalResult(task_type="text-generation", metric_type=mtype, metric_name=name, metric_value=float(value),
                       **_source(repo_id), **_dataset_meta(src))
            for mtype, name, _, value in headline_values(src.report, policy)]


def card_data(src: CardSources, opts: CardOptions, kind: str, model_name: str):
    from huggingface_hub import EvalResult, ModelCardData

    tags = ["gpt2-rlhf", "gpt2", "rlhf", "trl", "transformers"]
    if kind == "policy":
        tags += ["ppo", "reinforcement-learning-from-human-feedback"] if policy_of(src.report) == "ppo" else ["sft"]
        results = eval_results(src, policy_of(src.report), opts.repo_id)
        pipeline_tag = "text-generation"
    elif kind == "sft":
        tags += ["sft"]
        results = eval_results(src, "sft", opts.sft_repo_id) if "sft" in src.report.get("models", {}) else []
        pipeline_tag = "text-generation"
    else:
        tags += ["reward-model"]
        rm = src.report.get("reward_model") or {}
        results = [EvalResult(task_type="text-classification", metric_type=k, metric_name=n,
                              metric_value=float(rm[k]), **_source(opts.repo_id), **_dataset_meta(src))
                   for k, n in (("accuracy", "pairwise accuracy"), ("mean_margin", "mean raw score margin"))
                   if _is_number(rm.get(k))]
        pipeline_tag = "text-classification"
    base = hub_base_model(src, opts)
    dataset = hub_dataset(src)
    return ModelCardData(
        license=opts.license, language=opts.language or None, library_name="transformers", pipeline_tag=pipeline_tag,
        tags=tags, base_model=base, datasets=[dataset] if dataset else None,
        model_name=model_name if results else None, eval_results=results or None,
    )


# ----------------------------------------------------------------------------- rendering


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _hub_url(repo_id: str | None) -> str | None:
    return f"https://huggingface.co/{repo_id}" if repo_id else None


def _limitations(src: CardSources, kind: str) -> list[str]:
    r = src.report
    out = []
    name = _get(r, "dataset", "name")
    if name == "embedded":
        out.append("The preferences are synthetic (a hidden rule, not people): results show that the pipeline "
                   "works, not that the model is helpful or harmless to real users.")
    else:
        out.append("Preference data such as HH-RLHF reflects its crowdworkers, is English only and mixes "
                   "helpfulness with harmlessness; the model inherits its biases.")
    if kind != "reward":
        out.append("Win rates and rewards are judged by the same reward model PPO optimised, so they overstate "
                   "real improvement; " + ("the gold score is the independent check." if "gold" in (r.get("metrics") or {})
                                            else "only a human or an independent judge can confirm them."))
        base = hub_base_model(src, CardOptions())
        out.append(f"{'GPT-2' if base else 'The base model'} is a small language model: responses can be wrong, "
                   "repetitive or offensive. Not for deployment to users.")
    for f in findings(r):
        if not f["holds"] and (kind != "reward" or f["id"] == "rm_beats_length_baseline"):
            out.append(f"Not established by this evaluation: {f['text']}")
    if kind == "reward":
        out.append("A reward model is exploitable: a policy optimised against it can raise its score without "
                   "improving (reward hacking). Monitor the KL and an independent judge.")
    return out


def _usage(src: CardSources, model_id: str) -> dict:
    """The generation call of the card's snippet, with the decoding settings the evaluation used."""
    d = src.report.get("decoding") or {}
    greedy = d.get("mode") == "greedy" or not _is_number(d.get("temperature")) or d.get("temperature") == 0
    kwargs = []
    if _is_number(d.get("max_new_tokens")):
        kwargs.append(f"max_new_tokens={fmt(d['max_new_tokens'])}")
    kwargs.append(f"do_sample={not greedy}")
    if not greedy:
        kwargs.append(f"temperature={fmt(d['temperature'])}")
        if _is_number(d.get("top_k")) and d["top_k"] > 0:
            kwargs.append(f"top_k={fmt(d['top_k'])}")
        if _is_number(d.get("top_p")) and d["top_p"] < 1:
            kwargs.append(f"top_p={fmt(d['top_p'])}")
    kwargs.append("return_full_text=False")
    return {"model_id": model_id, "kwargs": ", ".join(kwargs)}


def _reproduce(src: CardSources, opts: CardOptions) -> dict:
    r = src.report
    version = _get(r, "versions", "gpt2_rlhf")
    target = opts.repo_id or "RUN_DIR"
    commands = []
    if version and version != "missing" and "unknown" not in str(version):
        commands.append(f"pip install gpt2-rlhf=={version}")
    commands += ["rlhf run --config recipe.yaml --output-dir run   # train every stage and evaluate",
                 "rlhf reproduce run                                # compare with this card's numbers",
                 f"rlhf reproduce {target}" + ("   # rerun this repository's evaluation" if opts.repo_id else "")]
    settings = []
    for k, v in (r.get("decoding") or {}).items():
        settings.append({"name": f"decoding `{k}`", "value": _param_value(v)})
    ds = r.get("dataset") or {}
    for k in ("name", "data_dir", "split", "n_prompts", "n_pairs"):
        if ds.get(k) is not None:
            settings.append({"name": f"dataset `{k}`", "value": _param_value(ds[k])})
    if _is_number(r.get("seed")):
        settings.append({"name": "evaluation seed", "value": fmt(r["seed"])})
    tol = r.get("tolerance") or {}
    recipe_seed = _get(r, "config", "seed")
    return {"version": version if version and version != "missing" else None, "commands": commands,
            "settings": settings, "seed": fmt(recipe_seed) if _is_number(recipe_seed) else None,
            "versions": [{"name": k, "value": md_cell(v)} for k, v in (r.get("versions") or {}).items()],
            "tol_abs": fmt(tol.get("default_abs")) if _is_number(tol.get("default_abs")) else "the absolute tolerance",
            "tol_rel": fmt(tol.get("default_rel")) if _is_number(tol.get("default_rel")) else "the relative tolerance"}


def _render(template: Path, data, **context) -> str:
    from huggingface_hub import ModelCard

    text = str(ModelCard.from_template(data, template_path=str(template), **context))
    return _squeeze(text).rstrip("\n") + "\n"


def _squeeze(text: str) -> str:
    """Collapses runs of blank lines left by dropped sections, outside fenced blocks only."""
    out, fence = [], None
    for line in text.split("\n"):
        m = re.match(r"^(`{3,})", line)
        if m and (fence is None or m.group(1) == fence):
            fence = None if fence else m.group(1)
        if fence is None and not line.strip() and out and not out[-1].strip():
            continue
        out.append(line)
    return "\n".join(out)


def render_texts(src: CardSources, opts: CardOptions) -> dict[str, str]:
    """The three cards as text: {"README.md": policy card, "reward/README.md": ..., "sft/README.md": ...}."""
    r = src.report
    policy = policy_of(r)
    models = models_of(r)
    # Without a repo id (a local card) the snippets load from the run directory.
    policy_id = opts.repo_id or f"RUN_DIR/{policy}"
    title = opts.repo_id or f"gpt2-rlhf {label(policy)} model"
    table = results_table(r)
    headline_lines = []
    for mtype, name, path, value in headline_values(r, policy):
        parent = _get(r, *path[:-1])
        if path[-1] == "value":
            cell = value_cell(parent)
        elif path[-1] == "win" and _is_number(parent.get("ci_low")) and _is_number(parent.get("ci_high")):
            cell = f"{fmt(value)} [{fmt(parent['ci_low'])}, {fmt(parent['ci_high'])}]"
        else:
            cell = fmt(value)
        headline_lines.append(f"{label(policy)} {name}: **{cell}**")
    warnings = [f"{f['text']}" for f in findings(r, {"ppo_reward_hacking"}) if f["holds"]]
    n_prompts = _get(r, "dataset", "n_prompts")
    summary = (f"{label(policy)} model trained with gpt2-rlhf: "
               + ("supervised fine-tuning, a reward model and PPO with a KL penalty. " if policy == "ppo" else
                  "supervised fine-tuning. ")
               + f"Compared with {_and([label(m) for m in models if m != policy] or ['no other model'])} on "
               + (f"{fmt(n_prompts)} held-out prompts" if _is_number(n_prompts) else "held-out prompts")
               + f" of `{_get(r, 'dataset', 'name') or 'the test split'}`:")
    examples = example_context(src, opts.examples)
    texts = {}
    texts["README.md"] = _render(
        POLICY_TEMPLATE, card_data(src, opts, "policy", title),
        title=title, summary=summary, headline_lines=headline_lines, warnings=warnings,
        report_path=src.where, reproduce_target=opts.repo_id or "RUN_DIR", data_text=data_text(src),
        stages=[c for s in ("sft", "reward", "ppo") if (c := stage_context(src, s))],
        eval_text=(f"{_and([label(m) for m in models])} generate one response per held-out prompt with the same "
                   "decoding settings and seeds; the metrics below are computed on those responses and on held-out "
                   "preference pairs."),
        results=table, ci_text=ci_text(r), reference_metrics=reference_metric_table(r), win_rates=win_rate_rows(r), improvements=improvement_rows(r),
        rm_rows=rm_rows(r), findings=findings(r), plots=plot_context(src),
        examples=examples, examples_text=("The first prompts of the evaluation set, in order (not picked), with each "
                                          "model's sampled response and its normalised reward-model score."),
        usage=_usage(src, policy_id), reproduce=_reproduce(src, opts), limitations=_limitations(src, "policy"),
        citation={"key": re.sub(r"\W+", "_", title).strip("_"), "title": f"{title}: GPT-2 trained with RLHF",
                  "version": _get(r, "versions", "gpt2_rlhf"), "year": str(r.get("created", ""))[:4] or None,
                  "url": _hub_url(opts.repo_id)},
    )
    rm = r.get("reward_model") or {}
    if rm or src.stage_section("reward"):
        stats = rm.get("stats") or {}
        reward_id = opts.reward_repo_id or "RUN_DIR/reward"
        texts["reward/README.md"] = _render(
            REWARD_TEMPLATE, card_data(src, opts, "reward", opts.reward_repo_id or "gpt2-rlhf reward model"),
            title=opts.reward_repo_id or "gpt2-rlhf reward model",
            policy_id=opts.repo_id, policy_url=_hub_url(opts.repo_id), data_text=data_text(src),
            rm_rows=rm_rows(r), margin=fmt(rm["mean_margin"]) if _is_number(rm.get("mean_margin")) else None,
            findings=findings(r, {"rm_beats_length_baseline"}),
            stats=[{"name": k, "value": fmt(v) if _is_number(v) else f"`{md_cell(v)}`"} for k, v in stats.items()],
            stage=stage_context(src, "reward"), model_id=reward_id, limitations=_limitations(src, "reward"),
        )
    if "sft" in models or src.stage_section("sft"):
        sft_id = opts.sft_repo_id or "RUN_DIR/sft"
        sft_models = [m for m in models if m in ("base", "sft")]
        texts["sft/README.md"] = _render(
            SFT_TEMPLATE, card_data(src, opts, "sft", opts.sft_repo_id or "gpt2-rlhf SFT model"),
            title=opts.sft_repo_id or "gpt2-rlhf SFT model", policy_id=opts.repo_id,
            policy_url=_hub_url(opts.repo_id), data_text=data_text(src),
            results=results_table(r, models=sft_models) if sft_models else {"columns": [], "rows": []},
            ci_text=ci_text(r), stage=stage_context(src, "sft"), usage=_usage(src, sft_id),
            limitations=_limitations(src, "sft"),
        )
    return texts


def write_bundle(src: CardSources, opts: CardOptions, out: Path) -> Path:
    """Writes the cards and their inputs into `out` (an empty folder); returns the policy card path."""
    from gpt2_rlhf.train.config import write_yaml
    from gpt2_rlhf.train.rundir import package_version, write_json, write_text

    texts = render_texts(src, opts)
    for rel, text in texts.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        write_text(out / rel, text)
    (out / "eval").mkdir(exist_ok=True)
    write_json(out / "eval" / "report.json", src.report)
    write_text(out / "eval" / str(src.report.get("samples", "samples.jsonl")),
               "".join(json.dumps(row) + "\n" for row in src.samples))
    for name, path in src.plot_files.items():
        dest = out / "eval" / src.report["plots"][name]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    if src.configs:
        (out / "configs").mkdir(exist_ok=True)
        for stage, cfg in src.configs.items():
            write_yaml(cfg, out / "configs" / f"{stage}.yaml")
    if src.recipe is not None:
        write_yaml(src.recipe, out / "recipe.yaml")
    write_json(out / CARD_META, {"options": dataclasses.asdict(opts), "gpt2_rlhf": package_version()})
    return out / "README.md"


def load_options(folder: Path) -> CardOptions:
    meta = _read_json(folder / CARD_META, "card metadata")
    try:
        return CardOptions(**meta["options"])
    except (KeyError, TypeError) as e:
        raise CardError(f"{folder / CARD_META}: not a card metadata file ({e})") from e


def hub_config_of(run_dir: Path):
    """The `hub` section of the run's recipe.yaml (defaults when absent)."""
    from gpt2_rlhf.train.config import build
    from gpt2_rlhf.train.hub import HubConfig

    raw = _read_yaml(run_dir / "recipe.yaml") or {}
    section = raw.get("hub") or {}
    return build(HubConfig, section, f"{run_dir / 'recipe.yaml'}: hub") if isinstance(section, dict) else HubConfig()


def render_card(run_dir: str | Path, repo_id: str | None = None) -> Path:
    """Renders OUTPUT/card/ from OUTPUT/eval and the stage configs; returns OUTPUT/card/README.md."""
    from gpt2_rlhf.train.rundir import StageWriter

    run_dir = Path(run_dir)
    src = CardSources.from_run_dir(run_dir)  # every input is checked before anything is written
    opts = CardOptions.from_hub_config(hub_config_of(run_dir), repo_id=repo_id)
    logger.info("card options: %s", dataclasses.asdict(opts))
    with StageWriter(run_dir, CARD_DIR) as w:
        write_bundle(src, opts, w.path)
        final = w.finish()
    return final / "README.md"


def cli(args) -> int:
    path = render_card(Path(args.run_dir))
    print(path)
    return 0
