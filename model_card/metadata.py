"""A card's YAML metadata on the Hub's terms: `ModelCardData` with license, tags,
`base_model`, `datasets` and a `model-index` holding an `EvalResult` per headline
metric (values cast to plain floats), each pointing at where its evidence is: the
evaluation's samples dataset when one is pushed (`CardOptions.samples_repo_id`: the
per-sample details and the report), else the report in the repo."""

from __future__ import annotations

import re
from pathlib import Path

from gpt2_rlhf.evaluation.policies import MODELS, POLICY_KEYS

from .context import headline_values, policy_of
from .options import CardOptions
from .sources import CardSources, get_path, is_number


def hub_url(repo_id: str | None) -> str | None:
    return f"https://huggingface.co/{repo_id}" if repo_id else None


def dataset_url(repo_id: str | None) -> str | None:
    """The page of a Hub dataset repo."""
    return f"https://huggingface.co/datasets/{repo_id}" if repo_id else None


def hub_base_model(src: CardSources, opts: CardOptions) -> str | None:
    """A Hub id for `base_model` metadata: the recipe's base model unless it was built locally."""
    if opts.base_repo_id:
        return opts.base_repo_id
    model = get_path(src.configs.get("base") or {}, "base", "model") or get_path(src.recipe or {}, "base", "model")
    if isinstance(model, str) and model != "embedded" and not Path(model).exists() and re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", model):
        return model
    return None


def hub_dataset(src: CardSources) -> str | None:
    """The Hub id of the data for `datasets:`: the evaluation's, else the one the SFT stage (or the recipe)
    trained on (an evaluation on a prompts file still names the training data); None for local data."""
    for name in (get_path(src.report, "dataset", "name"), get_path(src.configs.get("sft") or {}, "data", "dataset"),
                 get_path(src.recipe or {}, "data", "dataset")):
        if isinstance(name, str) and name != "embedded" and not Path(name).exists() \
                and re.fullmatch(r"[\w.\-]+/[\w.\-]+", name):
            return name
    return None


def _dataset_meta(src: CardSources) -> dict:
    ds = src.report.get("dataset") or {}
    return {"dataset_type": str(ds.get("name") or "unknown"), "dataset_name": str(ds.get("name") or "unknown"),
            "dataset_split": str(ds.get("split") or "test"),
            "dataset_config": str(ds["data_dir"]) if ds.get("data_dir") else None}


def _source(repo_id: str | None, samples_repo_id: str | None = None) -> dict:
    """Where a model-index value comes from (the Hub wants a URL with a source name): the samples dataset, which
    holds every scored response and the report, when one is pushed; else the report in the repo."""
    if samples_repo_id:
        return {"source_name": "gpt2-rlhf evaluation samples and report", "source_url": dataset_url(samples_repo_id)}
    if not repo_id:
        return {}
    return {"source_name": "gpt2-rlhf evaluation report", "source_url": f"{hub_url(repo_id)}/blob/main/eval/report.json"}


def eval_results(src: CardSources, policy: str, repo_id: str | None, samples_repo_id: str | None = None) -> list:
    from huggingface_hub import EvalResult

    return [EvalResult(task_type="text-generation", metric_type=mtype, metric_name=name, metric_value=float(value),
                       **_source(repo_id, samples_repo_id), **_dataset_meta(src))
            for mtype, name, _, value in headline_values(src.report, policy)]


def card_data(src: CardSources, opts: CardOptions, kind: str, model_name: str):
    from huggingface_hub import EvalResult, ModelCardData

    tags = ["gpt2-rlhf", "gpt2", "rlhf", "trl", "transformers"]
    if kind == "policy":
        # PPO on a reward function or classifier is reinforcement learning, but not from human feedback
        human = (src.report.get("reward") or {}).get("kind", "reward_model") == "reward_model"
        policy = policy_of(src.report)
        if policy in POLICY_KEYS:  # the policy's method, and what it learnt from
            tags += [policy, "reinforcement-learning-from-human-feedback" if human or not MODELS[policy].optimises_reward
                     else "reinforcement-learning"]
        else:
            tags += ["sft"]
        results = eval_results(src, policy_of(src.report), opts.repo_id, opts.samples_repo_id)
        pipeline_tag = "text-generation"
    elif kind == "sft":
        tags += ["sft"]
        results = (eval_results(src, "sft", opts.sft_repo_id, opts.samples_repo_id)
                   if "sft" in src.report.get("models", {}) else [])
        pipeline_tag = "text-generation"
    else:
        tags += ["reward-model"]
        rm = src.report.get("reward_model") or {}
        results = [EvalResult(task_type="text-classification", metric_type=k, metric_name=n,
                              metric_value=float(rm[k]), **_source(opts.repo_id, opts.samples_repo_id),
                              **_dataset_meta(src))
                   for k, n in (("accuracy", "pairwise accuracy"), ("mean_margin", "mean raw score margin"))
                   if is_number(rm.get(k))]
        pipeline_tag = "text-classification"
    base = hub_base_model(src, opts)
    dataset = hub_dataset(src)
    return ModelCardData(
        license=opts.license, language=opts.language or None, library_name="transformers", pipeline_tag=pipeline_tag,
        tags=tags, base_model=base, datasets=[dataset] if dataset else None,
        model_name=model_name if results else None, eval_results=results or None,
    )
