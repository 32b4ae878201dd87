"""The evaluation report's schema (docs/report-schema.md, schema_version 1) as data, and its validator.

`REPORT_SCHEMA` is a JSON Schema (draft 2020-12 keywords) of `eval/report.json` as the evaluation
writes it today: every field the card, `rlhf reproduce` and the Space read, with its type and shape.
It is strict where a reader relies on a name (a renamed or missing key fails) and open where the
report copies another stage's files verbatim (`training.sft`, `training.reward`, `config`).
Optional sections are absent keys, never nulls: an optional key is simply not `required`.

`validate_report(report)` checks a report against it with a small validator of the keyword
subset used here (no third-party dependency) plus the cross-field rules a JSON Schema cannot say,
and raises a one-line `ValueError` naming the path of the first bad field, e.g.
`report.json: metrics.gold.ppo.ci_low: expected number or null, got str`.

Reports written before the current fields (no `win_rate_ties_half`, no `decoding.samples_per_prompt`)
are readable by the card and reproduce but do not validate: this is the schema of what the writer
produces now, not of every report ever written.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .policies import ALL_PAIRS, MODEL_KEYS, MODELS, POLICY_KEYS, model_pairs

REFERENCE_ROW = "chosen"  # evaluation.report.REFERENCE_ROWS: the dataset's chosen responses
PAIR_NAMES = tuple(f"{a}_vs_{b}" for a, b in ALL_PAIRS)
FINDING_IDS = (
    *(f"{p}_beats_{u}_reward" for p in POLICY_KEYS for u in ("sft", "base")), "sft_beats_base_reward",
    *(f"{p}_beats_{u}_gold" for p in POLICY_KEYS for u in ("sft", "base")),
    *(f"{p}_reward_hacking" for p in POLICY_KEYS if MODELS[p].optimises_reward),
    *(f"{p}_judge_hacking" for p in POLICY_KEYS if MODELS[p].optimises_reward),
    *(f"{p}_gold_win_rate" for p in POLICY_KEYS),
    "ppo_overoptimisation", "ppo_monitor", "rm_beats_length_baseline", "rm_on_policy_accuracy")
PLOT_NAMES = ("reward_distribution", "win_rates", "ppo_training", "overoptimisation", "policies")

NUM = {"type": "number"}
NUM_OR_NULL = {"type": ["number", "null"]}
INT = {"type": "integer", "minimum": 0}
STR = {"type": "string"}
BOOL = {"type": "boolean"}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None, extra: bool | dict = False) -> dict:
    """An object with these required and optional properties; `extra`: what other keys may hold."""
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})},
            "additionalProperties": extra}


def _keyed(names: tuple[str, ...], value: dict[str, Any], min_properties: int = 1) -> dict:
    """An object whose keys are some of `names` (in any subset), each holding `value`."""
    return {"type": "object", "propertyNames": {"enum": list(names)}, "additionalProperties": value,
            "minProperties": min_properties}


V = _obj({"value": NUM, "ci_low": NUM_OR_NULL, "ci_high": NUM_OR_NULL, "n": INT})
PER_MODEL = _keyed(MODEL_KEYS, {"$ref": "#/$defs/V"})
PER_MODEL_AND_REFERENCE = _keyed(MODEL_KEYS + (REFERENCE_ROW,), {"$ref": "#/$defs/V"})
WIN = _obj({"win": NUM, "tie": NUM, "loss": NUM, "ci_low": NUM_OR_NULL, "ci_high": NUM_OR_NULL, "n": INT,
            "win_rate_ties_half": NUM, "win_rate_ties_half_ci_low": NUM_OR_NULL,
            "win_rate_ties_half_ci_high": NUM_OR_NULL})
WIN_RATES = _keyed(PAIR_NAMES, {"$ref": "#/$defs/win"}, min_properties=0)
STAGE_ROW = {"type": "object", "required": ["update", "episodes"],  # a metrics.jsonl row of the PPO trainer
             "properties": {"update": {"type": "integer", "minimum": 1}, "episodes": INT},
             "additionalProperties": NUM}
POINT = _obj({"label": STR, "round": INT, "kl": {"$ref": "#/$defs/V"}, "sqrt_kl": NUM, "reward": {"$ref": "#/$defs/V"}},
             {"episodes": INT, "gold": {"$ref": "#/$defs/V"}})
POLICY = {"enum": list(POLICY_KEYS)}
NUM_OR_UNKNOWN = {"type": ["number", "string"], "pattern": "^unknown$"}  # "unknown": not recorded / undefined
RANKED = _obj({"best": POLICY, "ranking": {"type": "array", "minItems": 1, "items": POLICY}, "separated": BOOL,
               "values": _keyed(POLICY_KEYS, NUM), "text": {"type": "string", "minLength": 1}})


def _per(cost: str, rate: str) -> dict:
    """A gain over SFT per unit of cost (`comparison.per_kl`, `comparison.per_second`)."""
    return _obj({"metric": {"enum": ["gold", "reward"]}, "best": {"enum": [*POLICY_KEYS, "unknown", "none"]},
                 "values": _keyed(POLICY_KEYS, _obj({"gain": NUM, cost: NUM_OR_UNKNOWN, rate: NUM_OR_UNKNOWN})),
                 "text": {"type": "string", "minLength": 1}})


COMPARISON = _obj({"policies": {"type": "array", "minItems": 1, "items": POLICY}, "reward": RANKED},
                  {"gold": RANKED, "per_kl": _per("kl", "per_nat"), "per_second": _per("train_s", "per_second")})

REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "eval/report.json, schema_version 1 (docs/report-schema.md)",
    "$defs": {"V": V, "win": WIN},
    **_obj(
        {
            "schema_version": {"const": 1},
            "created": STR,
            "wall_time_s": NUM,
            "versions": {"type": "object", "additionalProperties": STR,
                         "required": ["gpt2_rlhf", "python", "torch", "transformers", "trl", "evaluate", "datasets",
                                      "huggingface_hub"]},
            "seed": {"type": "integer"},
            "dataset": _obj({"name": STR, "data_dir": {"type": ["string", "null"]}, "split": {"type": ["string", "null"]},
                             "n_prompts": {"type": "integer", "minimum": 1}, "n_pairs": INT,
                             "n_responses": {"type": "integer", "minimum": 1}},
                            {"prompts_file": STR, "template": {"enum": ["plain", "dialogue"]}}),
            "decoding": _obj({"mode": {"enum": ["sampled", "greedy"]}, "max_new_tokens": {"type": "integer", "minimum": 1},
                              "temperature": NUM, "top_k": INT, "top_p": NUM, "seed": {"type": "integer"},
                              "batch_size": {"type": "integer", "minimum": 1}, "max_prompt_tokens": INT,
                              "samples_per_prompt": {"type": "integer", "minimum": 1}}),
            "models": _keyed(MODEL_KEYS, _obj({"path": STR, "revision": STR, "source": {"enum": ["local", "hub"]},
                                               "parameters": {"type": "integer", "minimum": 1}})),
            "reference": {"enum": list(MODEL_KEYS)},
            # what scored the responses: the reward model (its block below), or a function or classifier
            "reward": _obj({"kind": {"enum": ["reward_model", "function", "classifier"]}},
                           {"function": STR, "classifier": STR, "label": STR,
                            "score": {"enum": ["log_odds", "logit", "probability"]},
                            "text": {"enum": ["full", "response"]}}),
            "metrics": _obj({"reward": PER_MODEL_AND_REFERENCE, "kl_to_reference": PER_MODEL,
                             "distinct_1": PER_MODEL, "distinct_2": PER_MODEL, "unique_responses": PER_MODEL,
                             "response_length": PER_MODEL, "eos_rate": PER_MODEL},
                            {"reward_raw": PER_MODEL, "reward_positive": PER_MODEL, "judges": PER_MODEL,
                             "gold": PER_MODEL_AND_REFERENCE, "proxy_gold_correlation": PER_MODEL,
                             "perplexity_chosen": PER_MODEL, "perplexity_rejected": PER_MODEL, "classifier": PER_MODEL}),
            "win_rates": WIN_RATES,
            "reward_improvement": _keyed(PAIR_NAMES, _obj(
                {"difference": NUM, "sd_units": NUM, "reference_std": NUM, "difference_ci_low": NUM_OR_NULL,
                 "difference_ci_high": NUM_OR_NULL, "sd_units_ci_low": NUM_OR_NULL, "sd_units_ci_high": NUM_OR_NULL},
                {"percent": NUM}), min_properties=0),
            "findings": {"type": "array", "items": _obj({"id": {"enum": list(FINDING_IDS)}, "holds": BOOL,
                                                         "good": BOOL, "text": {"type": "string", "minLength": 1}})},
            "training": _obj({}, {
                "sft": {"type": "object"}, "reward": {"type": "object"},  # the stages' metrics.json, verbatim
                **{p: {"type": "object"} for p in POLICY_KEYS if p != "ppo"},
                "ppo": {"type": "object",  # PPO's metrics.json verbatim, plus metrics.jsonl's count and ends
                        "properties": {"updates": INT, "first": STAGE_ROW, "last": STAGE_ROW},
                        "dependentRequired": {"first": ["updates", "last"], "last": ["updates", "first"]}},
                "feedback": _obj({"rounds": {"type": "array", "minItems": 1,
                                             "items": {"type": "object", "required": ["round"],
                                                       "properties": {"round": {"type": "integer", "minimum": 1}}}}}),
            }),
            "tolerance": _obj({"default_rel": NUM, "default_abs": NUM}),
            "plots": {**_keyed(PLOT_NAMES, STR), "required": ["reward_distribution", "win_rates"]},
            "samples": {"const": "samples.jsonl"},
            "config": {"type": "object", "required": ["seed", "data", "eval"],
                       "properties": {"seed": {"type": "integer"}, "data": {"type": "object"},
                                      "eval": {"type": "object"}}},
        },
        {
            "reward_model": {
                **_obj({"path": STR, "revision": STR, "source": {"enum": ["local", "hub"]},
                        "stats": _obj({"mean": NUM, "std": NUM, "n": INT, "source": STR})},
                       {"accuracy": NUM, "accuracy_ci_low": NUM_OR_NULL, "accuracy_ci_high": NUM_OR_NULL,
                        "mean_margin": NUM, "length_baseline_accuracy": NUM, "n_pairs": INT,
                        "untrained_accuracy": NUM,
                        "on_policy": _obj({"accuracy": NUM, "length_baseline_accuracy": NUM, "pairs": INT,
                                           "prompts": INT, "source": STR},
                                          {"initial_accuracy": NUM_OR_NULL, "rank_correlation": NUM_OR_NULL},
                                          extra=True)}),  # "other keys the stage writes are kept"
                # the accuracy fields come together, from one measurement on the eval pairs
                "dependentRequired": {"accuracy": ["accuracy_ci_low", "accuracy_ci_high", "mean_margin",
                                                   "length_baseline_accuracy", "n_pairs"]},
            },
            "gold_win_rates": WIN_RATES,
            "overoptimisation": _obj(
                {"prompts": {"type": "integer", "minimum": 1}, "points": {"type": "array", "minItems": 1, "items": POINT}},
                {"gold_peak": _obj({"index": INT, "label": STR, "kl": NUM, "sqrt_kl": NUM, "gold": NUM}),
                 "proxy_rises_past_gold_peak": BOOL, "gold_falls_after_peak": BOOL}),
            "classifier": _obj({"path": STR, "revision": STR, "label": STR}),
            # the held-out judges that scored metrics.judges (reward/judges/<name>/ of the reward model)
            "judges": _obj({"names": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                            "path": STR}, {"aggregate": {"enum": ["min", "mean"]}}),  # absent: mean (older reports)
            "comparison": COMPARISON,
            "reference_metrics": {"type": "object", "additionalProperties": _keyed(
                MODEL_KEYS, {"type": "object", "additionalProperties": NUM}, min_properties=0)},
        },
    ),
}


# ----------------------------------------------------------------------------- the validator

KEYWORDS = {"$schema", "title", "$defs", "$ref", "type", "const", "enum", "required", "properties",
            "additionalProperties", "propertyNames", "minProperties", "dependentRequired", "items", "minItems",
            "minimum", "minLength", "pattern"}


def _type_ok(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if name == "integer":
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)  # number: the report has no NaN/inf


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return f"non-finite {value}"
    return {bool: "bool", dict: "object", list: "array"}.get(type(value), type(value).__name__)


def _join(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


class SchemaError(ValueError):
    """The first field that does not fit; `path` is dotted (`metrics.gold.ppo.ci_low`, `findings[2].id`)."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path or "(top level)", problem
        super().__init__(f"{self.path}: {problem}")


def check(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "") -> None:
    """Raises SchemaError at the first place `value` does not fit `schema` (the keyword subset KEYWORDS)."""
    unknown = set(schema) - KEYWORDS
    if unknown:  # a keyword this validator would silently ignore: the schema, not the value, is wrong
        raise TypeError(f"schema at {path or '(top level)'} uses unsupported keywords {sorted(unknown)}")
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/$defs/"):
            raise TypeError(f"schema at {path}: only local #/$defs/ references are supported, not {ref!r}")
        check(value, root["$defs"][ref[len("#/$defs/"):]], root, path)
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, n) for n in names):
            raise SchemaError(path, f"expected {' or '.join(names)}, got {_kind(value)}")
    if "const" in schema and not (value == schema["const"] and type(value) is type(schema["const"])):
        raise SchemaError(path, f"expected {schema['const']!r}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(path, f"{value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise SchemaError(path, "empty string")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise SchemaError(path, f"{value!r} does not match {schema['pattern']!r}")
    if _type_ok(value, "number") and "minimum" in schema and value < schema["minimum"]:
        raise SchemaError(path, f"{value!r} is below the minimum {schema['minimum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise SchemaError(path, f"expected at least {schema['minItems']} items, got {len(value)}")
        if "items" in schema:
            for i, item in enumerate(value):
                check(item, schema["items"], root, _join(path, i))
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                raise SchemaError(_join(path, key), "required field missing")
        for key, needs in schema.get("dependentRequired", {}).items():
            for other in needs if key in value else ():
                if other not in value:
                    raise SchemaError(_join(path, other), f"required with {key!r}, missing")
        if len(value) < schema.get("minProperties", 0):
            raise SchemaError(path, f"expected at least {schema['minProperties']} keys, got {len(value)}")
        props = schema.get("properties", {})
        for key, item in value.items():
            if "propertyNames" in schema:
                try:
                    check(key, schema["propertyNames"], root, _join(path, key))
                except SchemaError as e:
                    raise SchemaError(e.path, f"unexpected key ({e.problem})") from None
            if key in props:
                check(item, props[key], root, _join(path, key))
            elif schema.get("additionalProperties") is False:
                raise SchemaError(_join(path, key), "unexpected key (not in the schema)")
            elif isinstance(schema.get("additionalProperties"), dict):
                check(item, schema["additionalProperties"], root, _join(path, key))


def _cross_checks(report: dict[str, Any]) -> None:
    """What the card and reproduce assume between fields, beyond each field's own shape."""
    models = list(report["models"])
    for name, per_model in report["metrics"].items():
        for key in per_model:
            if key != REFERENCE_ROW and key not in models:
                raise SchemaError(f"metrics.{name}.{key}", f"not an evaluated model ({models})")
    present = [f"{a}_vs_{b}" for a, b in model_pairs(models)]
    for section in ("win_rates", "gold_win_rates", "reward_improvement"):
        for pair in report.get(section, {}):
            if pair not in present:
                raise SchemaError(f"{section}.{pair}", f"a pair of models that were not both evaluated ({models})")
    for section in ("win_rates", "gold_win_rates"):  # the pairs of present models, in report order
        if section in report and list(report[section]) != present:
            raise SchemaError(section, f"expected the pairs {present}, got {list(report[section])}")
    if "gold_win_rates" in report and "gold" not in report["metrics"]:
        raise SchemaError("gold_win_rates", "present without metrics.gold")
    if ("judges" in report) != ("judges" in report["metrics"]):  # the judges' block names what scored the row
        raise SchemaError("judges" if "judges" in report["metrics"] else "metrics.judges",
                          "required with " + ("metrics.judges" if "judges" in report["metrics"] else "the judges block")
                          + ", missing")
    if "judges" in report and report["reward"]["kind"] != "reward_model":
        raise SchemaError("judges", "present without a reward model (the judges belong to a reward stage)")
    curve = report.get("overoptimisation")
    if curve is not None:
        peak = curve.get("gold_peak")
        if peak is not None and not 0 <= peak["index"] < len(curve["points"]):
            raise SchemaError("overoptimisation.gold_peak.index", f"{peak['index']} is not a point index")
        if "overoptimisation" not in report["plots"]:
            raise SchemaError("plots.overoptimisation", "required with the overoptimisation curve, missing")
    kind = report["reward"]["kind"]
    wanted = {"reward_model": (("reward_model", "reward_raw"), ("reward_positive",)),
              "function": (("reward_positive",), ("reward_model", "reward_raw")),
              "classifier": (("reward_positive",), ("reward_model", "reward_raw"))}[kind]
    for key in wanted[0]:  # the reward model's block and raw scores, or a function's share of positive rewards
        if key not in report and key not in report["metrics"]:
            raise SchemaError(key if key == "reward_model" else f"metrics.{key}",
                              f"required with reward.kind {kind!r}, missing")
    for key in wanted[1]:
        if key in report or key in report["metrics"]:
            raise SchemaError(key if key == "reward_model" else f"metrics.{key}",
                              f"present with reward.kind {kind!r} (no reward model scored the responses)")
    for key, needed in (("function", "function"), ("classifier", "classifier")):
        if kind == key and needed not in report["reward"]:
            raise SchemaError(f"reward.{needed}", f"required with reward.kind {kind!r}, missing")
    pols = [p for p in POLICY_KEYS if p in models]
    if pols and "comparison" not in report:
        raise SchemaError("comparison", f"required with trained policies ({pols}), missing")
    comparison = report.get("comparison")
    if comparison is not None:
        if comparison["policies"] != pols:
            raise SchemaError("comparison.policies", f"expected the evaluated policies {pols}, got {comparison['policies']}")
        for key in ("gold", "reward", "per_kl", "per_second"):
            part = comparison.get(key) or {}
            for where in ("values", "ranking"):
                if where in part and sorted(part[where]) != sorted(pols):
                    raise SchemaError(f"comparison.{key}.{where}", f"expected the evaluated policies {pols}")
        if "gold" in comparison and "gold" not in report["metrics"]:
            raise SchemaError("comparison.gold", "present without metrics.gold")
    ids = [f["id"] for f in report["findings"]]
    if len(set(ids)) != len(ids):
        raise SchemaError("findings", f"an id appears twice: {ids}")


def validate_report(report: Any) -> None:
    """None when `report` fits the report schema; else a one-line ValueError naming the first bad field."""
    try:
        check(report, REPORT_SCHEMA, REPORT_SCHEMA)
        _cross_checks(report)
    except SchemaError as e:
        raise ValueError(f"report.json: {e}") from None
