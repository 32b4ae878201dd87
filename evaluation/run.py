"""`rlhf evaluate` and the pipeline's `eval` stage: base, SFT and every trained policy present (PPO, DPO,
RLOO: evaluation/policies.py) on the same held-out prompts.

Steps (`main`):
 1. resolve every input before writing anything: the models (RUN_DIR/<key> or
    `eval.<key>_model`), the reward model, the prompts and preference pairs;
 2. for each model: generate on every prompt with the same settings and seeds,
    with per-token log-probs under the model and the KL reference
    (evaluation/generate.py); `eval.samples_per_prompt` = k passes over the prompts,
    pass j with seeds `pass_seed(seed, j) + batch index` (pass 0 is the one-sample
    evaluation exactly);
 3. score every distinct (prompt, response) once with the reward model (identical
    responses get identical scores, so they tie exactly), with the held-out judges
    when the reward stage trained them (`<reward dir>/judges/<name>/`: their combined
    normalised score, `metrics.judges`), and with the gold judge on the embedded dataset;
 4. perplexity of every model on the held-out chosen and rejected responses, and
    the reward model's accuracy on those pairs;
 5. the metrics, each an `evaluate` module (evaluation/metrics/), with seeded
    bootstrap CIs over prompts: per-prompt numbers are the mean over a prompt's k
    responses (a cluster bootstrap: evaluation/stats.py); the dataset's chosen
    responses are scored as a reference row (`chosen`) when every prompt has a pair;
 6. the overoptimisation curve: SFT, then every PPO snapshot and stage's final
    policy in training order, on the first `eval.curve_prompts` prompts (KL to
    SFT, reward, gold); then the comparison of the policies (best by gold, by
    reward, per nat of KL, per second of training: evaluation/report.py);
 7. write eval/report.json (docs/report-schema.md), samples.jsonl and plots
    atomically through StageWriter, and print a compact table.

The reward model scores the decoded text `prompt + response + EOS`; the response
is re-tokenised from text (the convention every stage uses), not scored from the
sampled ids. `resume` is accepted for the stage contract; evaluation has no
checkpoints and simply reruns.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import SAMPLE_SEED_STRIDE, EvalConfig
from .policies import MODEL_KEYS, NAMES, POLICY_KEYS, policies_of
from .schema import validate_report
from .report import (SCHEMA_VERSION, comparison_summary, curve_summary, file_sha256, findings, present_pairs,
                     read_jsonl, reward_axis, table, training_seconds, versions)

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- inputs


@dataclass
class ModelSpec:
    key: str
    path: str
    source: str  # "local" | "hub"

    def info(self, revision: str, parameters: int | None = None) -> dict[str, Any]:
        """The report's `models.<key>` (`parameters`: the model's size, counted when it was loaded)."""
        out: dict[str, Any] = {"path": self.path, "revision": revision, "source": self.source}
        if parameters is not None:
            out["parameters"] = parameters
        return out


def _spec(key: str, override: str | None, run_dir: Path, what: str, required: bool) -> ModelSpec | None:
    from gpt2_rlhf.train.rundir import require_stage

    if override:
        p = Path(override)
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"eval.{key}_model: {p} is not a model directory")
            return ModelSpec(key, str(p), "local")
        if override.startswith((".", "/", "~")) or override.count("/") > 1:
            raise FileNotFoundError(f"eval.{key}_model: {override} does not exist")
        return ModelSpec(key, override, "hub")
    p = run_dir / key
    if not p.exists() and not required:
        logger.warning("%s: %s does not exist; evaluating without it", what, p)
        return None
    return ModelSpec(key, str(require_stage(p, what)), "local")


def resolve_models(cfg: EvalConfig, run_dir: Path) -> tuple[dict[str, ModelSpec], ModelSpec | None, Any]:
    """(policy specs, the reward model's spec or None, the reward function/classifier spec or None).

    The responses are scored by `eval.reward_function`/`eval.reward_classifier` when set; else by the
    reward model (`eval.reward_model`, or RUN_DIR/reward); in a run without one, by the reward the PPO
    policy was trained with (`ppo.reward_function`/`reward_classifier` of its config.yaml)."""
    specs = {}
    for key in cfg.models:
        s = _spec(key, cfg.model_override(key), run_dir, f"{NAMES[key]} model", required=False)
        if s is not None:
            specs[key] = s
    if not specs:
        flags = "/".join(f"--eval.{k}_model" for k in MODEL_KEYS)
        raise FileNotFoundError(f"{run_dir}: none of the models {cfg.models} exists (run the training stages first, "
                                f"or name models with {flags})")
    if cfg.reward_spec is not None:
        return specs, None, cfg.reward_spec
    if cfg.reward_model is None and not (run_dir / "reward").exists():
        for key in policies_of(specs):  # the first policy trained with a reward function or classifier
            trained_with = ppo_reward_spec(Path(specs[key].path), key) if specs[key].source == "local" else None
            if trained_with is not None:
                logger.info("no reward model: scoring with the reward %s was trained with, %s %s", NAMES[key],
                            trained_with.kind, trained_with.name)
                return specs, None, trained_with
    rm = _spec("reward", cfg.reward_model, run_dir, "reward model", required=True)
    return specs, rm, None


def ppo_reward_spec(ppo_dir: Path, section_name: str = "ppo"):
    """The reward function or classifier recorded in a policy stage's config.yaml (its `section_name`
    section: `ppo`, `rloo`), or None (a reward model, or a stage that has none, as DPO)."""
    import yaml

    from gpt2_rlhf.train.rewards import RewardSpec

    path = ppo_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        section = (yaml.safe_load(path.read_text()) or {}).get(section_name) or {}
    except (yaml.YAMLError, AttributeError) as e:
        raise ValueError(f"{path}: not a stage config ({e})") from None
    return RewardSpec.of(section) if isinstance(section, dict) else None


@dataclass
class Judge:
    """What scores the responses: the reward model (raw scores, normalised with its statistics) or a reward
    function or classifier (its value as is: raw and normalised are the same numbers)."""

    kind: str  # "reward_model" | "function" | "classifier"
    raw: Any  # (prompts, responses) -> np.ndarray of raw scores
    normalise: Any  # np.ndarray raw -> np.ndarray
    block: dict  # the report's `reward`
    rm: Any = None  # the RewardModel, for the reward-model-only parts

    def __call__(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        return self.normalise(self.raw(prompts, responses))


def load_judge(rm_spec: ModelSpec | None, reward_spec, cfg: EvalConfig, device) -> Judge:
    if rm_spec is None:
        fn = reward_spec.load(device, cfg.batch_size)
        return Judge(reward_spec.kind, lambda p, r: np.asarray(fn(list(p), list(r)), dtype=np.float64),
                     lambda raw: np.asarray(raw, dtype=np.float64), reward_spec.describe(fn))
    from gpt2_rlhf.train.modeling import RewardModel, context_length

    rm = RewardModel.load(rm_spec.path)
    rm.model.to(device)
    ctx = context_length(rm.model)
    return Judge("reward_model",
                 lambda p, r: rm.score(list(p), list(r), batch_size=cfg.batch_size, max_length=ctx).numpy(),
                 lambda raw: rm.normalise(torch.as_tensor(raw)).numpy().astype(np.float64),
                 {"kind": "reward_model"}, rm)  # where it is and what it measured: the report's reward_model


def held_out_judge_dirs(rm_spec: ModelSpec | None) -> list[Path]:
    """The finished held-out judges of the evaluated reward model: `<reward dir>/judges/<name>/` (reward
    models PPO never saw, `reward.judges` and `reward.judge_holdout`), in name order; [] when there are none.

    Only a local, finished reward stage has them (its COMPLETE marker is written after the judges); a judge
    is finished when it holds its metrics.json (train.reward.train_judge writes it last, after its weights
    and its normalisation statistics). An unfinished judge is left out with a warning."""
    from gpt2_rlhf.train.modeling import REWARD_STATS
    from gpt2_rlhf.train.reward import JUDGES
    from gpt2_rlhf.train.rundir import is_complete

    if rm_spec is None or rm_spec.source != "local":
        return []
    root = Path(rm_spec.path) / JUDGES
    if not root.is_dir():
        return []
    if not is_complete(rm_spec.path):
        logger.warning("%s: the reward model has no COMPLETE marker; its judges are not evaluated", root)
        return []
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if (d / "metrics.json").is_file() and (d / REWARD_STATS).is_file():
            out.append(d)
        else:
            logger.warning("%s: an unfinished judge (no metrics.json or %s); left out", d, REWARD_STATS)
    return out


def load_held_out_judges(rm_spec: ModelSpec | None, cfg: EvalConfig, device):
    """(scorer, report block) of the held-out judges, or (None, None) without any: the scorer maps
    (prompts, responses) to each response's combined normalised score (eval.judge_aggregate over the judges,
    each normalised with its own statistics, on the proxy's SFT samples: one scale, 0 at SFT's level)."""
    import torch

    from gpt2_rlhf.train.modeling import RewardModel, context_length
    from gpt2_rlhf.train.ppo.monitor import combine_judges

    dirs = held_out_judge_dirs(rm_spec)
    if not dirs:
        return None, None
    judges = []
    for d in dirs:
        j = RewardModel.load(d)
        j.model.to(device)
        judges.append(j)

    def scorer(prompts: list[str], responses: list[str]) -> np.ndarray:
        per_judge = [j.score(list(prompts), list(responses), batch_size=cfg.batch_size, normalised=True,
                             max_length=context_length(j.model)).numpy().astype(np.float64) for j in judges]
        return combine_judges(torch.from_numpy(np.stack(per_judge)), cfg.judge_aggregate).numpy()  # (N,)

    return scorer, {"names": [d.name for d in dirs], "path": str(dirs[0].parent), "aggregate": cfg.judge_aggregate}


def ppo_monitor(specs: dict[str, ModelSpec]) -> dict[str, Any] | None:
    """The evaluated PPO stage's reward-hacking monitor file (`<ppo dir>/monitor.json`), or None."""
    from gpt2_rlhf.train.ppo.monitor import MONITOR_FILE

    spec = specs.get("ppo")
    if spec is None or spec.source != "local" or not (Path(spec.path) / MONITOR_FILE).is_file():
        return None
    monitor = _json_or_empty(Path(spec.path) / MONITOR_FILE)
    if monitor.get("verdict") not in ("warning", "no warning", "no judges"):
        logger.warning("%s: no monitor verdict; the ppo_monitor finding is left out", Path(spec.path) / MONITOR_FILE)
        return None
    return monitor


def read_prompts_file(path: str | Path, plain: bool = False) -> list[dict[str, str]]:
    """Rows {"prompt"} or {"prompt", "chosen", "rejected"} from a .txt or .jsonl file, in file order.

    .txt: one prompt per line. .jsonl: {"prompt"} or {"prompt", "chosen", "rejected"}
    (responses only), or HH rows {"chosen", "rejected"} holding whole dialogues.
    A prompt without an Assistant turn is wrapped as "\\n\\nHuman: ...\\n\\nAssistant:", unless `plain`
    (a run trained to continue plain text: prompts are kept as they are).
    """
    from gpt2_rlhf.train.data import ASSISTANT_TAG, split_prompt_response

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--prompts {p}: no such file")

    def wrap(prompt: str) -> str:
        if plain:
            return prompt
        return prompt if ASSISTANT_TAG in prompt else f"\n\nHuman: {prompt.strip()}{ASSISTANT_TAG}"

    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"--prompts {p}: not UTF-8 text") from None
    rows: list[dict[str, str]] = []
    if p.suffix == ".txt":
        rows = [{"prompt": wrap(line)} for line in lines if line.strip()]
    for i, line in enumerate(lines if p.suffix != ".txt" else [], 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}:{i}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{p}:{i}: expected a JSON object, got {type(obj).__name__}")
        has_pair = isinstance(obj.get("chosen"), str) and isinstance(obj.get("rejected"), str)
        if isinstance(obj.get("prompt"), str) and obj["prompt"].strip():
            row = {"prompt": wrap(obj["prompt"])}
            if has_pair:
                row.update(chosen=obj["chosen"], rejected=obj["rejected"])
        elif has_pair:
            try:
                prompt, chosen = split_prompt_response(obj["chosen"])
                prompt_r, rejected = split_prompt_response(obj["rejected"])
            except ValueError as e:
                raise ValueError(f"{p}:{i}: {e}") from None
            if prompt_r != prompt:
                raise ValueError(f"{p}:{i}: 'chosen' and 'rejected' do not share the prompt before the last Assistant turn")
            row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        else:
            raise ValueError(f"{p}:{i}: needs a non-empty 'prompt' (or HH 'chosen'/'rejected' dialogues)")
        rows.append(row)
    if not rows:
        raise ValueError(f"--prompts {p}: no prompts in the file")
    return rows


def load_prompts(recipe, cfg: EvalConfig, tokenizer=None) -> tuple[list[str], list[dict[str, str]], dict[str, Any]]:
    """The evaluation prompts, the preference pairs among them, and the report's `dataset` block.

    `tokenizer` (the policies') is needed only to cut prompt-only data by tokens (`prompts.cut_tokens`)."""
    prompts_cfg = getattr(recipe, "prompts", None)
    if cfg.prompts_file:
        plain = prompts_cfg is not None and prompts_cfg.continuation  # continue them, as the run was trained to
        rows = read_prompts_file(cfg.prompts_file, plain)
        info = {"name": str(cfg.prompts_file), "data_dir": None, "split": None, "prompts_file": str(cfg.prompts_file),
                "template": "plain" if plain else "dialogue"}
    elif prompts_cfg is not None and prompts_cfg.enabled:
        # prompt-only data (the `prompts` section): its held-out split, used as it is (plain continuation) or
        # in the dialogue template, exactly as the PPO stage read it; no pairs
        from gpt2_rlhf.train.data import load_prompts as load_prompt_only

        rows = [{"prompt": p} for p in dict.fromkeys(load_prompt_only(prompts_cfg, prompts_cfg.test_split,
                                                                      tokenizer)[0])]
        info = {"name": prompts_cfg.source, "data_dir": prompts_cfg.data_dir, "split": prompts_cfg.test_split,
                "template": prompts_cfg.template}
    else:
        from gpt2_rlhf.train.data import load_preferences

        rows, _ = load_preferences(recipe.data, cfg.split)
        info = {"name": recipe.data.dataset, "data_dir": recipe.data.data_dir, "split": cfg.split,
                "template": "dialogue"}
    if cfg.n_prompts and len(rows) < cfg.n_prompts:
        logger.warning("only %d prompts available (eval.n_prompts = %d)", len(rows), cfg.n_prompts)
    rows = rows[:cfg.n_prompts] if cfg.n_prompts else rows
    prompts = [r["prompt"] for r in rows]
    pairs = [{**r, "index": i} for i, r in enumerate(rows) if "chosen" in r]  # index: the pair's prompt
    info.update(n_prompts=len(prompts), n_pairs=len(pairs))
    return prompts, pairs, info


def _device(cfg: EvalConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def load_policy(spec: ModelSpec, device: torch.device):
    """(model, tokenizer, revision) ready for generation: eval mode, dropout off, pad embedding present."""
    from gpt2_rlhf.train.modeling import disable_dropout, ensure_pad_embedding, load_causal_lm, load_tokenizer

    tok = load_tokenizer(spec.path)
    model = load_causal_lm(spec.path)
    ensure_pad_embedding(model, tok)
    disable_dropout(model)
    return model.to(device).eval(), tok, revision(spec, model.config)


def count_parameters(model) -> int:
    """Distinct parameters of a model (a tied input/output embedding counted once), as loaded for evaluation."""
    return int(sum(p.numel() for p in model.parameters()))


def revision(spec: ModelSpec, config) -> str:
    """Hub commit sha (recorded by transformers when it resolved the id), or sha256 of the local weights."""
    if spec.source == "hub":
        return str(getattr(config, "_commit_hash", None) or "unknown")
    files = sorted(Path(spec.path).glob("*.safetensors"))
    return f"sha256:{file_sha256(files)}" if files else "unknown"


def _same_vocab(tok, ref_tok, key: str, ref: str) -> None:
    if (len(tok), tok.eos_token_id, tok.pad_token_id) != (len(ref_tok), ref_tok.eos_token_id, ref_tok.pad_token_id):
        raise ValueError(f"model {key!r} and the KL reference {ref!r} use different tokenizers "
                         f"({len(tok)} vs {len(ref_tok)} tokens); their log-probs cannot be compared")


# ----------------------------------------------------------------------------- measuring


def pass_seed(seed: int, j: int) -> int:
    """The seed of sampling pass j (batch i then uses pass_seed + i): pass 0 is the evaluation's own seed."""
    return seed + j * SAMPLE_SEED_STRIDE


def sample_groups(n_prompts: int, k: int) -> np.ndarray:
    """(n_prompts * k,) the prompt index of each response when the k passes are laid end to end
    (sample-major: response r answers prompt r % n_prompts, in pass r // n_prompts)."""
    return np.tile(np.arange(n_prompts), k)


def concat_passes(passes: list) -> Any:
    """k PolicyResults (one per pass over the prompts) -> one, sample-major (pass 0's responses first)."""
    from gpt2_rlhf.train.sampling import PolicyResult

    out = PolicyResult()
    for p in passes:
        out.texts += p.texts
        out.lengths += p.lengths
        out.eos += p.eos
        out.logprobs += p.logprobs
        out.ref_logprobs += p.ref_logprobs
    return out


def score_unique(score_fn, prompts: list[str], responses: dict[str, list[str]],
                 groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Scores every distinct (prompt index, response) once; returns per-model score arrays in response order.

    Response r of a model answers prompts[groups[r]] (default: prompts[r], one response per prompt)."""
    def prompt_of(r: int) -> int:
        return r if groups is None else int(groups[r])

    index: dict[tuple[int, str], int] = {}
    for texts in responses.values():
        for r, t in enumerate(texts):
            index.setdefault((prompt_of(r), t), len(index))
    keys = list(index)
    scores = np.asarray(score_fn([prompts[i] for i, _ in keys], [t for _, t in keys]), dtype=np.float64)
    return {k: np.array([scores[index[(prompt_of(r), t)]] for r, t in enumerate(texts)])
            for k, texts in responses.items()}


def _classifier(cfg: EvalConfig, device):
    """(model, tokenizer, label index, report block) for eval.classifier_model (train.rewards loads it, as it
    loads a reward classifier: safetensors only, right padding, a long text keeps its end)."""
    from gpt2_rlhf.train.rewards import load_classifier, resolve_label

    name = cfg.classifier_model
    model, tok = load_classifier(name, "classifier")
    idx = resolve_label(model, cfg.classifier_label, "eval.classifier_label", name)
    spec = ModelSpec("classifier", str(name), "local" if Path(name).exists() else "hub")
    block = {"path": str(name), "revision": revision(spec, model.config),
             "label": str(model.config.id2label.get(idx, idx))}
    return model.to(device).eval(), tok, idx, block


def _training(run_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage in ("sft", "reward", *POLICY_KEYS):
        p = run_dir / stage / "metrics.json"
        if p.is_file():
            out[stage] = json.loads(p.read_text())
    rows_path = run_dir / "ppo" / "metrics.jsonl"
    if rows_path.is_file():
        rows = read_jsonl(rows_path)
        ppo = out.setdefault("ppo", {})
        ppo["updates"] = len(rows)
        if rows:
            num = lambda r: {k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            ppo["first"], ppo["last"] = num(rows[0]), num(rows[-1])
    rounds = feedback_rounds(run_dir)
    if rounds:
        out["feedback"] = {"rounds": rounds}
    return out


def policy_training_seconds(spec: ModelSpec) -> float | None:
    """Seconds a policy stage trained (its metrics.json, summed with its feedback rounds' `<dir>_round<r>/`
    beside it), or None when one of them records none or the policy is a Hub id (no stage files)."""
    import re

    if spec.source != "local":
        return None
    final = Path(spec.path)
    rounds = sorted(d for d in final.parent.glob(f"{final.name}_round*")
                    if d.is_dir() and re.fullmatch(rf"{re.escape(final.name)}_round\d+", d.name))
    return training_seconds([_json_or_empty(d / "metrics.json") for d in [*rounds, final]])


def feedback_rounds(run_dir: Path) -> list[dict[str, Any]]:
    """One row per feedback round (label_round<r>/, ..., label/): who was labelled by whom, how many
    comparisons, and what the round's reward model and PPO measured; [] without a feedback stage."""
    names = sorted((p.name for p in run_dir.glob("label_round*") if p.name[len("label_round"):].isdigit()),
                   key=lambda n: int(n[len("label_round"):]))
    names += ["label"] if (run_dir / "label" / "provenance.json").is_file() else []
    rows = []
    for r, name in enumerate(names, 1):
        suffix = name[len("label"):]
        prov_path = run_dir / name / "provenance.json"
        if not prov_path.is_file():
            continue
        prov = json.loads(prov_path.read_text())
        row: dict[str, Any] = {"round": r, "label_dir": name, **{k: prov.get(k) for k in (
            "policy", "labeller", "labeller_name", "comparisons", "flipped", "test_comparisons", "prompts",
            "samples_per_prompt", "noise", "mean_label_score")}}
        row["policy"] = Path(str(row["policy"])).name if row.get("policy") else row.get("policy")
        rm = run_dir / f"reward{suffix}" / "metrics.json"
        if rm.is_file():
            m = json.loads(rm.read_text())
            row["reward"] = {k: m.get(k) for k in ("accuracy", "dataset_pairs", "labelled_pairs", "on_policy")}
        ppo = run_dir / f"ppo{suffix}" / "metrics.json"
        if ppo.is_file():
            m = json.loads(ppo.read_text())
            row["ppo"] = {"episodes": m.get("episodes"), "final_kl": (m.get("final") or {}).get("kl"),
                          "final_gold": (m.get("final") or {}).get("gold")}
        rows.append(row)
    return rows


def reward_stage_metrics(rm_spec: ModelSpec) -> dict[str, Any]:
    """The reward stage's own `metrics.json` beside the evaluated reward model (a run's `reward/`, or
    `training/reward/` of a pushed reward repo); {} when it has none.

    Read from the reward model's folder, not the run directory's, so that what it reports (the untrained
    and on-policy accuracies) belongs to the reward model evaluated, also when `rlhf reproduce` reruns
    the evaluation in a temporary folder on the same model files."""
    if rm_spec.source != "local":
        return {}
    for p in (Path(rm_spec.path) / "metrics.json", Path(rm_spec.path) / "training" / "reward" / "metrics.json"):
        if p.is_file():
            return _json_or_empty(p)
    return {}


def _json_or_empty(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}


def _int(x: Any) -> int | None:
    return int(x) if isinstance(x, int) and not isinstance(x, bool) else None


def ppo_trajectory(final: Path) -> list[dict[str, Any]]:
    """The PPO policies of a run in training order: {"label", "round", "path", "episodes" (when known)}.

    The PPO stage directories are the feedback rounds `ppo_round<r>` beside `final` (each continues from
    the previous round's policy), ordered by the `round` of their metrics.json, then `final` itself (the
    highest round). Each contributes its `snapshots.json` entries in order, then its final policy (the
    directory). Episodes are cumulative over rounds; once a stage has not recorded its `episodes`, the
    points after it have none (absent, never guessed)."""
    import re

    from gpt2_rlhf.train.rundir import is_complete

    rounds = []
    for d in sorted(final.parent.glob("ppo_round*")):
        m = re.fullmatch(r"ppo_round(\d+)", d.name)
        if m and d.is_dir() and d.resolve() != final.resolve():
            if not is_complete(d):
                logger.warning("%s has no COMPLETE marker: left out of the overoptimisation curve", d)
                continue
            meta = _json_or_empty(d / "metrics.json")
            rounds.append((_int(meta.get("round")) or int(m.group(1)), d, meta))
    rounds.sort(key=lambda t: t[0])
    meta = _json_or_empty(final / "metrics.json")
    stages = [*rounds, (_int(meta.get("round")) or (rounds[-1][0] + 1 if rounds else 1), final, meta)]
    points: list[dict[str, Any]] = []
    offset: int | None = 0  # episodes of the earlier rounds
    for rnd, d, meta in stages:
        name = "ppo" if d is final else d.name
        listed = _json_or_empty(d / "snapshots.json").get("snapshots") or []
        for snap in listed if isinstance(listed, list) else []:
            rel = snap.get("path") if isinstance(snap, dict) else None
            if not isinstance(rel, str) or not (d / rel).is_dir():
                logger.warning("%s/snapshots.json: entry %r is not a snapshot directory; left out", d, snap)
                continue
            point = {"label": f"{name}/{Path(rel).name}", "round": rnd, "path": d / rel}
            if offset is not None and _int(snap.get("episodes")) is not None:
                point["episodes"] = offset + snap["episodes"]
            points.append(point)
        point = {"label": name, "round": rnd, "path": d}
        episodes = _int(meta.get("episodes"))
        offset = None if offset is None or episodes is None else offset + episodes
        if offset is not None:
            point["episodes"] = offset
        points.append(point)
    return points


def measure_curve(cfg: EvalConfig, specs: dict[str, ModelSpec], ref_key: str, results: dict, norm: dict,
                  gold: dict | None, judge: Judge, prompts: list[str], seed: int, device, boot: dict) -> dict:
    """The overoptimisation curve (Gao et al. 2022): KL to SFT, reward and gold of every policy of the trajectory.

    Every point samples the first `eval.curve_prompts` prompts once (one response per prompt, whatever
    `eval.samples_per_prompt`) with the evaluation's decoding settings and seeds. The SFT and final PPO
    points reuse the evaluation's own responses when these are exactly what a new pass would sample (the
    same batches: all prompts, or a whole number of batches, and KL against SFT): those of its first pass,
    which `results`, `norm` and `gold` hold first (sample-major), so index i < n is pass 0's response to
    prompt i. Every other point is one more generation pass with the SFT model as the KL reference."""
    import math

    from .metrics import load_metric
    from gpt2_rlhf.train.sampling import measure_policy

    n = min(cfg.curve_prompts, len(prompts))
    sub = prompts[:n]
    same_batches = n == len(prompts) or n % cfg.batch_size == 0
    m_reward, m_kl, m_gold = load_metric("reward"), load_metric("kl"), load_metric("proxy_gold")
    ppo_spec = specs["ppo"]
    if ppo_spec.source == "local":
        trajectory = ppo_trajectory(Path(ppo_spec.path))
    else:  # a Hub policy: no snapshots or rounds to read
        trajectory = [{"label": "ppo", "round": 1, "path": None}]
    sft: list = []  # (model, tokenizer), loaded when a point needs it as the KL reference

    def scored(texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        z = judge.normalise(score_unique(judge.raw, sub, {"x": texts})["x"])
        if gold is None:
            return z, None
        from gpt2_rlhf.train.synthetic.gold import gold_score

        return z, np.array([gold_score(a, b) for a, b in zip(sub, texts)], dtype=np.float64)

    def point(meta: dict, kl: dict, z: np.ndarray, g: np.ndarray | None) -> dict:
        out = {"label": meta["label"], "round": meta["round"]}
        if "episodes" in meta:
            out["episodes"] = meta["episodes"]
        out.update(kl=kl, sqrt_kl=math.sqrt(max(kl["value"], 0.0)),  # a finite-sample KL estimate can be < 0
                   reward=m_reward.compute(scores=z, **boot))
        if g is not None:
            out["gold"] = m_gold.compute(proxy=z, gold=g, **boot)["gold"]
        return out

    zero_kl = {"value": 0.0, "ci_low": None, "ci_high": None, "n": n}  # SFT against itself: exact
    if same_batches:
        first = point({"label": "sft", "round": 0, "episodes": 0}, zero_kl, norm["sft"][:n],
                      None if gold is None else gold["sft"][:n])
    else:
        model, tok, _ = load_policy(specs["sft"], device)
        sft.append((model, tok))
        res = measure_policy(model, tok, sub, cfg.generation, seed, cfg.batch_size, cfg.max_prompt_tokens,
                             desc="curve: sft")
        first = point({"label": "sft", "round": 0, "episodes": 0}, zero_kl, *scored(res.texts))
    points = [first]
    final = Path(ppo_spec.path).resolve() if ppo_spec.source == "local" else None
    for meta in trajectory:
        is_final = meta["path"] is None or meta["path"].resolve() == final
        if is_final and same_batches and ref_key == "sft":
            res = results["ppo"]
            kl = m_kl.compute(logprobs=res.logprobs[:n], ref_logprobs=res.ref_logprobs[:n], **boot)
            points.append(point(meta, kl, norm["ppo"][:n], None if gold is None else gold["ppo"][:n]))
            continue
        if not sft:
            model, tok, _ = load_policy(specs["sft"], device)
            sft.append((model, tok))
        ref_model, ref_tok = sft[0]
        spec = ppo_spec if meta["path"] is None else ModelSpec("ppo", str(meta["path"]), "local")
        model, tok, _ = load_policy(spec, device)
        _same_vocab(tok, ref_tok, meta["label"], "sft")
        logger.info("overoptimisation curve: %s on %d prompts", meta["label"], n)
        res = measure_policy(model, tok, sub, cfg.generation, seed, cfg.batch_size, cfg.max_prompt_tokens,
                             reference=ref_model, desc=f"curve: {meta['label']}")
        del model
        kl = m_kl.compute(logprobs=res.logprobs, ref_logprobs=res.ref_logprobs, **boot)
        points.append(point(meta, kl, *scored(res.texts)))
    return {"prompts": n, "points": points, **curve_summary(points)}


def measure(recipe, cfg: EvalConfig, run_dir: Path, specs: dict[str, ModelSpec], rm_spec: ModelSpec | None,
            prompts: list[str], pairs: list[dict[str, str]], dataset: dict[str, Any], seed: int,
            reward_spec=None) -> dict[str, Any]:
    """Steps 2-5: every model pass and every metric; returns the report body and the samples.

    Per-response arrays (texts, scores, log-probs) are sample-major over the k = eval.samples_per_prompt
    passes: response r answers prompt groups[r] = r % n in pass r // n, so the first n are pass 0, the
    one-sample evaluation. Per-prompt values are the mean over a prompt's k responses (group_means)."""
    from .generate import classifier_probs, pair_logprobs
    from .metrics import load_metric
    from .stats import group_means
    from gpt2_rlhf.train.sampling import measure_policy

    device = _device(cfg)
    settings = cfg.generation
    keys = list(specs)
    k_samples, n_prompts = cfg.samples_per_prompt, len(prompts)
    groups = sample_groups(n_prompts, k_samples)  # (n * k,) the prompt of each response
    by_prompt = lambda values: group_means(values, groups)  # (n * k,) -> (n,) per-prompt means
    grouped = dict(groups=groups.tolist())  # the metric modules' cluster argument (bootstrap over prompts)
    ref_key = cfg.reference if cfg.reference in specs else keys[0]
    if ref_key != cfg.reference:
        logger.warning("KL reference %r was not evaluated; measuring KL against %r", cfg.reference, ref_key)
    boot = dict(bootstrap_samples=cfg.bootstrap_samples, seed=seed, confidence=cfg.confidence)

    # the judges first: a bad reward model or classifier fails before minutes of generation
    judge = load_judge(rm_spec, reward_spec, cfg, device)
    rm = judge.rm  # None when a reward function or classifier scores
    held_out, judges_block = load_held_out_judges(rm_spec, cfg, device)  # reward models PPO never saw
    extra = {name: load_metric(name) for name in cfg.reference_metrics}  # a Hub id fails here when offline
    if extra and not pairs:
        raise ValueError("eval.reference_metrics need held-out chosen responses, and these prompts have no pairs")
    classifier, classifier_block = None, None
    if cfg.classifier_model:
        cmodel, ctok, label, classifier_block = _classifier(cfg, device)
        classifier = (cmodel, ctok, label)

    # 2. generation, log-probs under each model and the reference
    ref_model, ref_tok, ref_rev = load_policy(specs[ref_key], device)
    results, models_info, ppl_lp = {}, {}, {}
    for key in keys:
        if key == ref_key:
            model, tok, rev = ref_model, ref_tok, ref_rev
        else:
            model, tok, rev = load_policy(specs[key], device)
            _same_vocab(tok, ref_tok, key, ref_key)
        models_info[key] = specs[key].info(rev, count_parameters(model))
        logger.info("%s: generating %d x %d responses (%s)", key, n_prompts, k_samples, specs[key].path)
        # pass j: the same prompts, settings and seeds for every model; pass 0 is the one-sample evaluation
        results[key] = concat_passes([
            measure_policy(model, tok, prompts, settings, pass_seed(seed, j), cfg.batch_size, cfg.max_prompt_tokens,
                           reference=None if key == ref_key else ref_model,
                           desc=f"{key}: generate" + (f" {j + 1}/{k_samples}" if k_samples > 1 else ""))
            for j in range(k_samples)])
        if key == ref_key:
            results[key].ref_logprobs = results[key].logprobs
        # 4a. perplexity on the held-out chosen / rejected responses
        if pairs:
            for side in ("chosen", "rejected"):
                ppl_lp[(key, side)] = pair_logprobs(model, tok, [r["prompt"] for r in pairs], [r[side] for r in pairs],
                                                    cfg.batch_size, cfg.max_prompt_tokens, cfg.perplexity_max_tokens,
                                                    desc=f"{key}: perplexity {side}")
        if model is not ref_model:
            del model
    del ref_model

    # 3. reward scores (each distinct response once) and the gold judge
    responses = {k: r.texts for k, r in results.items()}  # (n * k,) per model
    raw = score_unique(judge.raw, prompts, responses, groups)
    norm = {k: judge.normalise(v) for k, v in raw.items()}
    gold = None
    if dataset["name"] == "embedded" and not cfg.prompts_file:
        from gpt2_rlhf.train.synthetic.gold import gold_score

        gold = score_unique(lambda p, r: [gold_score(a, b) for a, b in zip(p, r)], prompts, responses, groups)
    # the held-out judges' combined normalised score, each distinct response scored once, as the proxy's
    held_out_scores = None
    if held_out is not None:
        held_out_scores = score_unique(held_out, prompts, responses, groups)
        del held_out
    # per prompt: the mean over its k responses (k = 1: the response's own score, exactly)
    norm_p, raw_p = {k: by_prompt(v) for k, v in norm.items()}, {k: by_prompt(v) for k, v in raw.items()}
    gold_p = None if gold is None else {k: by_prompt(v) for k, v in gold.items()}

    # 4b. reward-model accuracy on the held-out pairs (a reward model only: a function is not a learned judge)
    rm_block: dict[str, Any] | None = None
    chosen = None
    if rm is not None:
        rm_block = {**rm_spec.info(revision(rm_spec, rm.model.config)),
                    "stats": {"mean": rm.stats.mean, "std": rm.stats.std, "n": rm.stats.n, "source": rm.stats.source}}
    if pairs:
        ps = [r["prompt"] for r in pairs]
        chosen = judge.raw(ps, [r["chosen"] for r in pairs])
    if pairs and rm is not None:
        rejected = judge.raw(ps, [r["rejected"] for r in pairs])
        rm_block.update(load_metric("rm_accuracy").compute(
            chosen_scores=chosen, rejected_scores=rejected, chosen_lengths=[len(r["chosen"]) for r in pairs],
            rejected_lengths=[len(r["rejected"]) for r in pairs], **boot))
    trained = reward_stage_metrics(rm_spec) if rm is not None else {}
    for key in ("untrained_accuracy", "initial_accuracy"):  # the reward stage measured its random-head start
        if isinstance(trained.get(key), (int, float)) and not isinstance(trained.get(key), bool):
            rm_block["untrained_accuracy"] = float(trained[key])
            break
    if isinstance(trained.get("on_policy"), dict):  # the feedback stage's held-out pairs of policy samples
        rm_block["on_policy"] = trained["on_policy"]
    # the dataset's chosen responses as a reference row: only when they answer exactly the eval prompts
    chosen_norm, chosen_gold = None, None
    if pairs and len(pairs) == len(prompts):
        chosen_norm = judge.normalise(chosen)
        if gold is not None:
            chosen_gold = np.array([gold_score(r["prompt"], r["chosen"]) for r in pairs], dtype=np.float64)

    # the overoptimisation curve (step 6), while the reward model is loaded
    curve = None
    if cfg.curve_prompts and "sft" in specs and "ppo" in specs:
        curve = measure_curve(cfg, specs, ref_key, results, norm, gold, judge, prompts, seed, device, boot)
    reward_block = judge.block
    del rm, judge

    # optional classifier (e.g. toxicity) on the responses
    cls_probs = {}  # per prompt
    if classifier is not None:
        cmodel, ctok, label = classifier
        cls_probs = {k: by_prompt(classifier_probs(cmodel, ctok, r.texts, label, cfg.batch_size))
                     for k, r in results.items()}
        del classifier, cmodel

    # 5. metrics, each an evaluate module
    m_reward, m_div, m_stats, m_kl = (load_metric(n) for n in ("reward", "diversity", "response_stats", "kl"))
    function_reward = rm_block is None  # a function's or classifier's value: nothing to normalise
    metrics: dict[str, dict[str, Any]] = {name: {} for name in (
        ("reward", "reward_positive") if function_reward else ("reward", "reward_raw"))}
    if held_out_scores is not None:
        metrics["judges"] = {}
    if gold is not None:
        metrics["gold"], metrics["proxy_gold_correlation"] = {}, {}
    metrics["kl_to_reference"] = {}
    if pairs:
        metrics["perplexity_chosen"], metrics["perplexity_rejected"] = {}, {}
    for name in ("distinct_1", "distinct_2", "unique_responses", "response_length", "eos_rate"):
        metrics[name] = {}
    if cls_probs:
        metrics["classifier"] = {}
    for key, res in results.items():
        metrics["reward"][key] = m_reward.compute(scores=norm_p[key], **boot)
        if function_reward:  # per prompt: the share of its responses with a positive reward
            metrics["reward_positive"][key] = m_reward.compute(scores=by_prompt((norm[key] > 0).astype(np.float64)),
                                                               **boot)
        else:
            metrics["reward_raw"][key] = m_reward.compute(scores=raw_p[key], **boot)
        if held_out_scores is not None:  # as metrics.reward: per-prompt means, bootstrap over prompts
            metrics["judges"][key] = m_reward.compute(scores=by_prompt(held_out_scores[key]), **boot)
        if gold is not None:  # gold: per-prompt means; the correlation: over all responses (cluster bootstrap)
            pg = load_metric("proxy_gold").compute(proxy=norm[key], gold=gold[key], **grouped, **boot)
            metrics["gold"][key] = pg["gold"]
            if "correlation" in pg:
                metrics["proxy_gold_correlation"][key] = pg["correlation"]
        kl = m_kl.compute(logprobs=res.logprobs, ref_logprobs=res.ref_logprobs, **grouped, **boot)
        if key == ref_key:  # exactly 0 by construction: no sampling error to bootstrap
            kl.update(ci_low=None, ci_high=None)
        metrics["kl_to_reference"][key] = kl
        for side in ("chosen", "rejected") if pairs else ():
            metrics[f"perplexity_{side}"][key] = load_metric("perplexity").compute(logprobs=ppl_lp[(key, side)], **boot)
        # diversity over all n * k responses, jackknife over prompts
        metrics.update({n: {**metrics[n], key: v}
                        for n, v in m_div.compute(responses=res.texts, **grouped, **boot).items()})
        lengths, eos = by_prompt(res.lengths), by_prompt(np.asarray(res.eos, np.float64))
        metrics.update({n: {**metrics[n], key: v}
                        for n, v in m_stats.compute(lengths=lengths, eos=eos, **boot).items()})
        if cls_probs:
            metrics["classifier"][key] = m_reward.compute(scores=cls_probs[key], **boot)
    if gold is not None and not metrics["proxy_gold_correlation"]:
        del metrics["proxy_gold_correlation"]
    if chosen_norm is not None:  # a reference level, not a model: no KL, win rate or finding of its own
        metrics["reward"]["chosen"] = m_reward.compute(scores=chosen_norm, **boot)
        if chosen_gold is not None:
            metrics["gold"]["chosen"] = load_metric("proxy_gold").compute(proxy=chosen_norm, gold=chosen_gold,
                                                                          **boot)["gold"]

    # user-named evaluate metrics against the held-out chosen responses (floats of their result only):
    # one prediction per reference, the first pass's response (index < n is pass 0)
    reference_metrics = {}
    for name, module in extra.items():
        reference_metrics[name] = {}
        for key, res in results.items():
            out = module.compute(predictions=[res.texts[r["index"]] for r in pairs],
                                 references=[r["chosen"] for r in pairs])
            reference_metrics[name][key] = {k: float(v) for k, v in (out or {}).items()
                                            if isinstance(v, (int, float, np.floating)) and np.isfinite(v)}

    win_rates, gold_win_rates, improvement = {}, {}, {}
    m_win, m_imp = load_metric("win_rate"), load_metric("reward_improvement")
    # the SD unit is the spread of the reference's responses (all n * k of them), not of its per-prompt
    # means: those shrink as k grows, and sd_units would grow with k for the same policies
    ref_std = float(np.std(norm[ref_key], ddof=1)) if len(prompts) > 1 else None
    for a, b in present_pairs(keys):  # a prompt is won on the per-prompt means
        win_rates[f"{a}_vs_{b}"] = m_win.compute(scores_a=norm_p[a], scores_b=norm_p[b], **boot)
        if gold is not None:  # the same pairs judged by gold: does the reward model's verdict hold up?
            gold_win_rates[f"{a}_vs_{b}"] = m_win.compute(scores_a=gold_p[a], scores_b=gold_p[b], **boot)
        std = ref_std if ref_std is not None and ref_std > 0 else None
        try:
            improvement[f"{a}_vs_{b}"] = m_imp.compute(scores_a=norm_p[a], scores_b=norm_p[b], raw_a=raw_p[a],
                                                       raw_b=raw_p[b], reference_std=std, **boot)
        except ValueError as e:  # one prompt, or every reference response scored the same: no SD unit
            logger.warning("reward improvement %s_vs_%s not reported: %s", a, b, e)

    samples = []
    for i, prompt in enumerate(prompts):
        # the first pass at the top level (what one-sample consumers read); every pass under `samples`
        passes = []
        for j in range(k_samples):
            r = j * n_prompts + i
            one = {"responses": {k: responses[k][r] for k in keys}, "scores": {k: float(norm[k][r]) for k in keys}}
            if gold is not None:
                one["gold"] = {k: float(gold[k][r]) for k in keys}
            passes.append(one)
        row = {"index": i, "prompt": prompt, **passes[0]}
        if k_samples > 1:
            row["samples"] = passes
        samples.append(row)

    reward_block = dict(reward_block)
    body = {
        "models": models_info, "reference": ref_key, "reward": reward_block, "metrics": metrics,
        "win_rates": win_rates, "reward_improvement": improvement,
        "findings": findings(metrics, rm_block or {}, gold_win_rates, curve, cfg.confidence, reward=reward_block,
                             monitor=ppo_monitor(specs)),
    }
    seconds = {p: policy_training_seconds(specs[p]) for p in policies_of(keys)}
    comparison = comparison_summary(metrics, seconds, ref_key, cfg.confidence, reward_block)
    if comparison:
        body["comparison"] = comparison
    if rm_block is not None:
        body["reward_model"] = rm_block
    if gold is not None:
        body["gold_win_rates"] = gold_win_rates
    if curve is not None:
        body["overoptimisation"] = curve
    if classifier_block is not None:
        body["classifier"] = classifier_block
    if reference_metrics:
        body["reference_metrics"] = reference_metrics
    if judges_block is not None:
        body["judges"] = judges_block
    return {"body": body, "samples": samples, "scores": {k: norm[k].tolist() for k in keys}}


# ----------------------------------------------------------------------------- entry points


def main(recipe, output_dir: Path, resume: bool = False) -> Path:
    """The `eval` stage: measures the run in `output_dir` and writes `output_dir/eval/`."""
    from . import plots
    from gpt2_rlhf.train.config import to_plain
    from gpt2_rlhf.train.config import stage_config
    from gpt2_rlhf.train.rundir import StageWriter, write_json, write_text

    t0 = time.time()
    run_dir = Path(output_dir)
    cfg: EvalConfig = recipe.eval
    seed = recipe.seed if cfg.seed is None else cfg.seed
    config = stage_config(recipe, "eval")
    logger.info("eval config (seed %d): %s", seed, json.dumps(to_plain(config)))

    # 1. every input, before anything is written
    specs, rm_spec, reward_spec = resolve_models(cfg, run_dir)
    prompts_cfg = getattr(recipe, "prompts", None)
    tokenizer = None
    if prompts_cfg is not None and prompts_cfg.enabled and prompts_cfg.cut_tokens:  # cut as the PPO stage did
        from gpt2_rlhf.train.modeling import load_tokenizer

        tokenizer = load_tokenizer(next(iter(specs.values())).path)
    prompts, pairs, dataset = load_prompts(recipe, cfg, tokenizer)
    logger.info("evaluating %s on %d prompts x %d samples (%d pairs) from %s", list(specs), len(prompts),
                cfg.samples_per_prompt, len(pairs), dataset["name"])

    # 2.-6. measure
    with torch.no_grad():  # a context, never a global switch: the caller may train next
        m = measure(recipe, cfg, run_dir, specs, rm_spec, prompts, pairs, dataset, seed, reward_spec)
    gs = cfg.generation
    decoding = {"mode": cfg.mode, "max_new_tokens": gs.max_new_tokens, "temperature": gs.temperature,
                "top_k": gs.top_k, "top_p": gs.top_p, "seed": seed, "batch_size": cfg.batch_size,
                "max_prompt_tokens": cfg.max_prompt_tokens, "samples_per_prompt": cfg.samples_per_prompt}
    dataset = {**dataset, "n_responses": dataset["n_prompts"] * cfg.samples_per_prompt}  # per model

    # 7. the eval directory, atomically
    with StageWriter(run_dir, "eval", resume=resume) as w:
        (w.path / "plots").mkdir(exist_ok=True)
        body = m["body"]
        plot_paths = {"reward_distribution": "plots/reward_distribution.png", "win_rates": "plots/win_rates.png"}
        axis = reward_axis(body["reward"])
        plots.reward_distribution(m["scores"], body["metrics"]["reward"], w.path / plot_paths["reward_distribution"],
                                  axis)
        plots.win_rates(body["win_rates"], w.path / plot_paths["win_rates"])
        if "overoptimisation" in body:
            plot_paths["overoptimisation"] = "plots/overoptimisation.png"
            plots.overoptimisation(body["overoptimisation"], w.path / plot_paths["overoptimisation"], axis)
        if len((body.get("comparison") or {}).get("policies", ())) > 1:  # two trained policies or more
            plot_paths["policies"] = "plots/policies.png"
            plots.policies(body["metrics"], list(body["models"]), w.path / plot_paths["policies"], axis)
        ppo_rows = run_dir / "ppo" / "metrics.jsonl"
        if ppo_rows.is_file() and plots.ppo_training(read_jsonl(ppo_rows), w.path / "plots/ppo_training.png"):
            plot_paths["ppo_training"] = "plots/ppo_training.png"
        write_text(w.path / "samples.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in m["samples"]))
        report = {
            "schema_version": SCHEMA_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_time_s": 0.0,
            "versions": versions(),
            "seed": seed,
            "dataset": dataset,
            "decoding": decoding,
            **{k: body[k] for k in ("models", "reference", "reward", "reward_model", "metrics", "win_rates",
                                     "reward_improvement", "findings", "comparison") if k in body},
            "training": _training(run_dir),
            "tolerance": {"default_rel": cfg.tolerance_rel, "default_abs": cfg.tolerance_abs},
            "plots": plot_paths,
            "samples": "samples.jsonl",
            "config": to_plain(config),
        }
        for optional in ("gold_win_rates", "overoptimisation", "classifier", "reference_metrics", "judges"):
            if optional in body:
                report[optional] = body[optional]
        report["wall_time_s"] = round(time.time() - t0, 3)
        validate_report(report)  # the shape the card, push and reproduce read (evaluation/schema.py)
        write_json(w.path / "report.json", report)
        summary = {"n_prompts": dataset["n_prompts"], "samples_per_prompt": cfg.samples_per_prompt,
                   "reward": {k: v["value"] for k, v in body["metrics"]["reward"].items()},
                   "win_rates": {p: v["win"] for p, v in body["win_rates"].items()},
                   "findings": {f["id"]: f["holds"] for f in body["findings"]}}
        if "judges" in body["metrics"]:
            summary["judges"] = {k: v["value"] for k, v in body["metrics"]["judges"].items()}
        out = w.finish(metrics=summary, config=config)
    print(table(report))
    logger.info("report: %s (%.1f s)", out / "report.json", report["wall_time_s"])
    return out
