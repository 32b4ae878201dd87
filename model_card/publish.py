"""`rlhf push RUN_DIR --repo-id ID`: publish a run to the Hugging Face Hub.

What goes where (one commit per repository, through `huggingface_hub.HfApi`):

* ``--repo-id``: the run's policy, the one its card is about (`context.policy_of`:
  PPO, else DPO, else RLOO, as the evaluation compared them), weights and tokenizer,
  with its card (`README.md`), the evaluation (`eval/report.json`, `eval/samples.jsonl`,
  `eval/plots/`), the resolved configs (`configs/`, `recipe.yaml`), `card.json`, and
  the stage's training logs (`training/<stage>/`; PPO's `monitor.json`, which the
  evaluation reads, stays at the root). `rlhf reproduce ID` needs nothing else from it.
* ``--sft-repo-id`` / ``--reward-repo-id`` / hub ``base_repo_id``: those models,
  each with its own card (the reward model's carries `reward_stats.json`, and its
  held-out judges under `judges/<name>/` when the reward stage trained them: each a
  whole reward model, so the repo grows by one reward model per judge).
* ``--samples-repo-id`` (default `<repo id>-eval-samples`; ``--no-samples``: none): a
  dataset repo with the run's `eval/samples.jsonl` and `eval/report.json` as the
  evaluation wrote them, and a dataset card (`samples_card`) whose `configs:` map the
  `test` split to the samples, so the Hub's viewer and `datasets.load_dataset(ID)` read
  them. The cards' `model-index` sources point to it. It is pushed first (the cards
  link it) and to `main` whatever `--revision` says (the viewer reads `main`).
* ``--space SPACE_ID``: the `space/` folder as a Gradio Space, with the model ids
  set as Space variables (`SPACE_VARIABLES`), `run_info.json` (the card's headline
  result, the card's URL and held-out example prompts: `space_info`), and its hardware
  (`--space-hardware`, else the front matter's `suggested_hardware`: ZeroGPU, the free
  hardware a new Gradio Space can run on). A Space needs its models on the Hub, so
  with ``--space`` the ids left out are derived from ``--repo-id``: the reward model
  `<id>-reward`, SFT `<id>-sft` (the card's policy is `<id>` itself, under its own role's
  variable); the base is its Hub id (gpt2) or ``--base-repo-id``, and a locally built
  base without one is left out of the Space. What cannot be derived is asked for in
  one message. Every pushed model repo gets a card.
* Every other policy the report evaluates (DPO, RLOO besides the card's own) is always
  pushed, to `<id>-dpo` and `<id>-rloo`, and recorded in `card.json`
  (`options.policy_repo_ids`): the card reports their numbers, so `rlhf reproduce <id>`
  downloads and reruns them too.

1. Check the run (a finished policy stage, `ppo/`, `dpo/` or `rloo/`, the one the
   report's card is about; `eval/`; every stage asked for) and render the cards
   into a temporary folder with the target repo ids; nothing is ever written into
   the run directory, so a failed push leaves it as it was.
2. Plan the uploads: (repo, files, variables). `--dry-run` prints the plan and the
   card metadata and stops: no token needed, no request sent.
3. Find the token where huggingface_hub looks (`HF_TOKEN`, then the token saved by
   `hf auth login`); a clear error when there is none. The token is handed to
   `HfApi` and to nothing else: never printed, logged or written.
4. For each repo: `create_repo(exist_ok=True)`, `create_branch` for `--revision`,
   `create_commit` with every file, then for a Space `add_space_variable` and
   `request_space_hardware` (create_repo's hardware only applies to a new Space). Each
   call is retried on transient errors (connection errors, 408/429/5xx) with
   exponential backoff; other errors (401, 403, 404) fail at once, in one line.

Deviation from `HfApi.upload_folder`: we build the list of `CommitOperationAdd`
ourselves, so the dry run shows exactly what would be sent and the run directory's
internal files (`COMPLETE`, checkpoints) never leave the machine.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from gpt2_rlhf.evaluation.policies import NAMES, POLICY_KEYS

from .metadata import hub_base_model, hub_url
from .options import CardOptions, HubConfig, hub_config_of, valid_repo_id
from .render import write_bundle
from .sources import CardSources, get_path

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Space variables the Space reads (space/inference.py): model repo ids on the Hub.
SPACE_VARIABLES = {
    "policy": "RLHF_POLICY_ID",
    "sft": "RLHF_SFT_ID",
    "reward": "RLHF_REWARD_ID",
    "base": "RLHF_BASE_ID",
    "dpo": "RLHF_DPO_ID",
    "rloo": "RLHF_RLOO_ID",
    "revision": "RLHF_REVISION",
    "prompt_format": "RLHF_PROMPT_FORMAT",
}
# Policy stages besides PPO that a Space can show (written by `rlhf dpo`, `rlhf rloo`, laid out like ppo/).
EXTRA_POLICIES = ("dpo", "rloo")
SPACE_INFO = "run_info.json"  # read by space/app.py (RUN_INFO)
DEFAULT_HARDWARE = "cpu-basic"  # when neither --space-hardware nor the front matter says
# The card's headline sentences the Space shows, best first (the evaluation's findings, by id).
HEADLINE_FINDINGS = ("{p}_beats_sft_gold", "{p}_gold_win_rate", "{p}_beats_sft_reward", "{p}_beats_base_reward")
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
# Files of a stage directory that are bookkeeping of the run, not part of the model.
RUN_FILES = {"COMPLETE", "config.yaml", "metrics.json", "metrics.jsonl", "snapshots.json"}
# PPO's snapshots (whole policies along training, read by the evaluation's overoptimisation curve) stay
# home with the checkpoints: each is a full model, and the repo's model is the final policy. So does its
# critic (the next feedback round's value model, not part of the published policy).
SKIP_DIRS = {"checkpoints", "snapshots", "critic", "__pycache__", ".ipynb_checkpoints"}
# The samples dataset: its default id (<repo id> + the suffix), its tags, and its one config's split.
SAMPLES_SUFFIX = "-eval-samples"
SAMPLES_TAGS = ["gpt2-rlhf", "rlhf", "evaluation"]
SAMPLES_SPLIT = "test"
# Pickles (e.g. Trainer's training_args.bin) stay home: unpickling runs code, the Hub flags them, and our
# weights are safetensors.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle")


class PushError(OSError):
    """A push that cannot start or did not finish; one line, never containing the token."""


# ----------------------------------------------------------------------------- plan


@dataclass
class Upload:
    """One repository to create (if needed) and commit to."""

    repo_id: str
    repo_type: str  # "model", "dataset" or "space"
    what: str  # "policy", "sft", "reward", "base", "dpo", "rloo", "samples", "space"
    files: dict[str, Path] = field(default_factory=dict)  # path in repo -> local file
    variables: dict[str, str] = field(default_factory=dict)  # Space variables
    hardware: str | None = None  # a Space's hardware flavor (huggingface_hub.SpaceHardware values)

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files.values())


def model_files(stage_dir: Path, logs_prefix: str | None = None) -> dict[str, Path]:
    """A stage directory's files for the Hub: model and tokenizer at the root, training logs under
    `logs_prefix` (or left out), run bookkeeping (COMPLETE, checkpoints) never."""
    out = {}
    for p in sorted(stage_dir.rglob("*")):
        rel = p.relative_to(stage_dir)
        if not p.is_file() or any(part in SKIP_DIRS or part.endswith(".partial") for part in rel.parts[:-1]):
            continue
        if p.name.startswith(".") or p.suffix == ".tmp":
            continue
        if p.suffix in PICKLE_SUFFIXES:
            logger.info("not uploading %s: a pickle (the weights are in safetensors)", p)
            continue
        if len(rel.parts) == 1 and p.name in RUN_FILES:
            if logs_prefix and p.name in ("metrics.json", "metrics.jsonl"):
                out[f"{logs_prefix}/{p.name}"] = p
            continue
        out[rel.as_posix()] = p
    return out


def space_card_with_models(readme: Path, model_ids: list[str], out_dir: Path, hardware: str | None = None) -> Path:
    """A copy of the Space's README.md whose front matter `models:` names `model_ids` (and `suggested_hardware`
    is `hardware`, when given)."""
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(readme)
    card.data.models = list(dict.fromkeys(model_ids))
    if hardware:
        card.data.suggested_hardware = hardware
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "README.md"
    card.save(out)
    return out


def bundle_files(folder: Path, exclude: tuple[str, ...] = ()) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.relative_to(folder).as_posix().startswith(exclude)}


def suggested_hardware(readme: Path) -> str | None:
    """The Space front matter's `suggested_hardware`, if any."""
    from huggingface_hub import SpaceCard

    value = getattr(SpaceCard.load(readme).data, "suggested_hardware", None)
    return str(value) if value else None


def check_hardware(flavor: str) -> str:
    from huggingface_hub import SpaceHardware

    known = [h.value for h in SpaceHardware]
    if flavor not in known:
        raise PushError(f"--space-hardware: {flavor!r} is not a Space hardware flavor (one of {', '.join(known)})")
    return flavor


def headline(report: dict) -> list[str]:
    """The card's headline result as the evaluation wrote it: the first finding of HEADLINE_FINDINGS present."""
    from .context import policy_of

    by_id = {f.get("id"): f for f in report.get("findings") or [] if isinstance(f, dict) and f.get("text")}
    policy = policy_of(report)
    for pattern in HEADLINE_FINDINGS:
        if pattern.format(p=policy) in by_id:
            return [str(by_id[pattern.format(p=policy)]["text"])]
    return [str(f["text"]) for f in list(by_id.values())[:1]]


def example_prompts(samples: list[dict], n: int = 5, max_chars: int = 300, plain: bool = False) -> list[str]:
    """Up to n single-turn prompts of the evaluation's samples (the held-out split), as a user would type them;
    `plain`: the prompts as they are (a run trained to continue plain text)."""
    from gpt2_rlhf.space.inference import HH_ASSISTANT, HH_HUMAN

    found: list[str] = []
    for row in samples:
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if not isinstance(prompt, str) or (not plain and prompt.count(HH_HUMAN) != 1):
            continue
        text = prompt.strip() if plain else prompt.replace(HH_HUMAN, "").replace(HH_ASSISTANT, "").strip()
        if text and len(text) <= max_chars and text not in found:
            found.append(text)
        if len(found) >= n:
            break
    return found


def space_info(run_dir: Path, card_url: str | None = None) -> dict:
    """What the Space page says about the run, from its eval/ (report and samples): `headline`, `examples`,
    `card_url` (the pushed card, or locally the rendered card's path). {} parts when the run has no evaluation."""
    from .sources import read_samples

    run_dir = Path(run_dir)
    info: dict = {"headline": [], "examples": [], "card_url": card_url}
    report_path = run_dir / "eval" / "report.json"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        samples = read_samples(run_dir / "eval" / str(report.get("samples", "samples.jsonl")))
    except (OSError, ValueError) as e:  # the page works without them; say why they are missing
        logger.warning("the Space shows no headline result or held-out examples: %s: %s", report_path.parent, e)
        return info
    info["headline"] = headline(report)
    info["examples"] = example_prompts(samples, plain=get_path(report, "dataset", "template") == "plain")
    if card_url is None and (run_dir / "card" / "README.md").is_file():
        info["card_url"] = str(run_dir / "card" / "README.md")
    return info


def stand_in_card(what: str, repo_id: str, policy_repo_id: str, base_model: str | None, out: Path) -> Path:
    """A card for a pushed model that the run renders none for (base, DPO, RLOO): what it is and where its
    results are (the policy's card, which reports every model of the run). No numbers: they live in that card."""
    from huggingface_hub import ModelCard, ModelCardData

    names = {"base": "base language model", "dpo": "DPO policy", "rloo": "RLOO policy", "sft": "SFT policy"}
    data = ModelCardData(library_name="transformers", pipeline_tag="text-generation", tags=["gpt2-rlhf", what],
                         base_model=base_model)
    text = (f"---\n{data.to_yaml()}\n---\n\n# {repo_id}\n\nThe {names.get(what, what)} of a "
            f"[gpt2-rlhf](https://github.com/gpt2-rlhf/gpt2-rlhf) run. Its evaluation, next to the run's other "
            f"models on the same held-out prompts, is in the card of [{policy_repo_id}]"
            f"(https://huggingface.co/{policy_repo_id}).\n")
    out.mkdir(parents=True, exist_ok=True)
    ModelCard(text).save(out / "README.md")
    return out / "README.md"


def samples_summary(rows: list[dict]) -> dict:
    """What a samples file holds, counted from its rows: rows, distinct prompts, the models (in order of first
    appearance), the sampled responses per prompt (each distinct count) and per model, and the fields of a row
    and of one pass (`samples`)."""
    per_row = [len(r["samples"]) if isinstance(r.get("samples"), list) else 1 for r in rows]
    return {"rows": len(rows), "prompts": len({r["prompt"] for r in rows}),
            "models": list(dict.fromkeys(m for r in rows for m in r["responses"])),
            "per_prompt": sorted(set(per_row)), "responses": sum(per_row),
            "fields": list(dict.fromkeys(k for r in rows for k in r)),
            "pass_fields": list(dict.fromkeys(k for r in rows for one in r.get("samples") or []
                                              if isinstance(one, dict) for k in one))}


def _field_texts(report: dict) -> dict[str, str]:
    """What each field of a samples row holds (evaluation/run.py writes them), in the report's terms."""
    from .context import reward_context

    rc = reward_context(report)
    if rc["kind"] == "function":
        score = f"the reward function `{rc['function']}`'s reward of that response, as it is (not normalised)"
    elif rc["kind"] == "classifier":
        of_label = f" of label '{rc['label']}'" if rc["label"] else ""
        score = f"the classifier `{rc['classifier']}`'s {rc['score'] or 'score'}{of_label} on {rc['reads']}"
    else:
        score = ("the reward model's normalised score of that response (the raw score less the mean, over the "
                 "standard deviation, of the reward model's `reward_stats.json`)")
    prompt = ("the prompt: plain text, which the models continue" if rc["continuation"] else
              "the prompt: the dialogue so far in the HH format, ending with `\\n\\nAssistant:`, which the models answer")
    return {
        "index": "the prompt's position in the evaluation's prompts",
        "prompt": prompt,
        "responses": "each model's response (its first sample), by model key",
        "scores": f"for each model, {score}",
        "gold": ("for each model, the gold judge's score of that response: the hidden rule of the embedded synthetic "
                 "data that made its preferences"),
        "samples": "every sampled response: one object per sampling pass over the prompts, the first being the "
                   "row's own `responses`, `scores` (and `gold`)",
    }


def samples_card(report: dict, rows: list[dict], samples_path: str, repo_id: str, policy_repo_id: str,
                 hub: HubConfig, out: Path) -> Path:
    """The samples dataset's README.md: front matter (`configs:` maps the test split to `samples_path`, license,
    tags, pretty_name) and what the dataset is. Every number in it is counted from `rows` or read from `report`."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from .context import label, policy_of
    from .markdown import md_cell

    n = samples_summary(rows)
    texts = _field_texts(report)
    data = DatasetCardData(license=hub.license, language=list(hub.language) or None, tags=list(SAMPLES_TAGS),
                           pretty_name=f"{policy_repo_id} evaluation samples",
                           configs=[{"config_name": "default",
                                     "data_files": [{"split": SAMPLES_SPLIT, "path": samples_path}]}])
    ds = report.get("dataset") or {}
    where = f" of `{md_cell(ds['name'])}`" if ds.get("name") else ""
    where += f" (split `{md_cell(ds['split'])}`)" if ds.get("split") else ""
    version = get_path(report, "versions", "gpt2_rlhf")
    per = n["per_prompt"]
    k = (f"{per[0]} sampled response{'' if per[0] == 1 else 's'}" if len(per) == 1
         else f"between {per[0]} and {per[-1]} sampled responses")
    models = ", ".join(f"`{m}` for {label(m)}" for m in n["models"])
    table = "\n".join(f"| `{f}` | {texts.get(f, 'a field this card does not describe')} |" for f in n["fields"])
    passes = f"A pass holds {', '.join(f'`{f}`' for f in n['pass_fields'])}." if n["pass_fields"] else ""
    own_rm = ("The scores are this run's own reward model's: they compare the run's models with each other, not with "
              "models scored by another judge." if report.get("reward_model") is not None or "reward" not in report
              else "")
    policy = policy_of(report)
    model = policy if policy in n["models"] else (n["models"] or [policy])[-1]
    paragraphs = [
        f"# {policy_repo_id}: evaluation samples",
        f"The evaluation of [{policy_repo_id}]({hub_url(policy_repo_id)}), a "
        f"[gpt2-rlhf](https://github.com/gpt2-rlhf/gpt2-rlhf) run: the held-out prompts{where}, each model's sampled "
        f"responses and their scores, as `rlhf evaluate`{f' (gpt2-rlhf {version})' if version else ''} wrote them "
        f"(`{samples_path}`), and the evaluation report that the model card's numbers are read from "
        f"(`eval/report.json`). `rlhf reproduce {policy_repo_id}` reruns that evaluation.",
        f"{n['rows']} rows, one per prompt ({n['prompts']} distinct prompts). {len(n['models'])} models, by key: "
        f"{models}; {k} per prompt and model ({n['responses']} per model).",
        "## A row",
        f"| field | what it holds |\n|---|---|\n{table}",
        passes, own_rm,
        "## Load it",
        f"```python\nfrom datasets import load_dataset\n\nsamples = load_dataset(\"{repo_id}\", "
        f"split=\"{SAMPLES_SPLIT}\")\nrow = next(iter(samples))\n"
        f"print(row[\"prompt\"], row[\"responses\"][\"{model}\"], row[\"scores\"][\"{model}\"])\n```",
        f"The report: `huggingface_hub.hf_hub_download(\"{repo_id}\", \"eval/report.json\", repo_type=\"dataset\")`.",
    ]
    text = f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(p for p in paragraphs if p) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    DatasetCard(text).save(out / "README.md")
    return out / "README.md"


def space_folder() -> Path:
    from gpt2_rlhf import space

    return Path(space.__file__).resolve().parent


def require_a_policy(run_dir: Path) -> None:
    """A one-line error, before the evaluation is read, when the run has no trained policy at all (no ppo/,
    dpo/ or rloo/), or only unfinished ones (naming the first)."""
    from gpt2_rlhf.train.rundir import is_complete, require_stage

    if any(is_complete(run_dir / key) for key in POLICY_KEYS):
        return
    for key in POLICY_KEYS:
        if (run_dir / key).exists():
            require_stage(run_dir / key, f"{NAMES[key]} model")
    names = [f"{key}/" for key in POLICY_KEYS]
    raise PushError(f"no trained policy to push: {run_dir} has no {', '.join(names[:-1])} or {names[-1]} (train one "
                    f"with {', '.join(f'`rlhf {k}`' for k in POLICY_KEYS[:-1])} or `rlhf {POLICY_KEYS[-1]}`, then "
                    f"`rlhf evaluate`)")


def policy_stage(run_dir: Path, report: dict) -> tuple[str, Path]:
    """(key, finished stage directory) of the policy the card is about (`context.policy_of`: PPO, else DPO,
    else RLOO, as the report evaluated them): what `--repo-id` holds."""
    from gpt2_rlhf.train.rundir import require_stage

    from .context import policy_of

    key = policy_of(report)
    if key not in POLICY_KEYS:
        raise PushError(f"{run_dir / 'eval' / 'report.json'}: the evaluation has no trained policy "
                        f"({', '.join(POLICY_KEYS)}), only {', '.join(report.get('models') or {})}: rerun "
                        f"`rlhf evaluate` with the policy to push")
    return key, require_stage(run_dir / key, f"{NAMES[key]} model")


def plan_push(run_dir: Path, repo_id: str, hub: HubConfig, staging: Path, *, sft_repo_id: str | None = None,
              reward_repo_id: str | None = None, base_repo_id: str | None = None, space_id: str | None = None,
              revision: str | None = None, space_dir: Path | None = None,
              space_hardware: str | None = None, samples: bool = True,
              samples_repo_id: str | None = None) -> list[Upload]:
    """Checks the run, renders the cards into `staging` and lists every upload. Sends nothing. `samples`: also
    push the samples dataset, to `samples_repo_id` (default: the repo id + SAMPLES_SUFFIX)."""
    from gpt2_rlhf.train.rundir import is_complete, require_stage

    for name, rid in (("--repo-id", repo_id), ("--sft-repo-id", sft_repo_id), ("--reward-repo-id", reward_repo_id),
                      ("hub.base_repo_id", base_repo_id), ("--space", space_id),
                      ("--samples-repo-id", samples_repo_id if samples else None)):
        if rid is not None and not valid_repo_id(rid):
            raise PushError(f"{name}: {rid!r} is not a Hub repo id (namespace/name)")
    if not samples:
        samples_repo_id = None
    elif not samples_repo_id:
        samples_repo_id = f"{repo_id}{SAMPLES_SUFFIX}"
        if not valid_repo_id(samples_repo_id):
            raise PushError(f"--repo-id: the derived samples dataset id {samples_repo_id!r} is not a Hub repo id; "
                            f"pass --samples-repo-id (or --no-samples)")
    require_a_policy(run_dir)
    src = CardSources.from_run_dir(run_dir)
    policy_key, policy_dir = policy_stage(run_dir, src.report)
    scored_by_model = src.report.get("reward_model") is not None or "reward" not in src.report
    finished = {stage: is_complete(run_dir / stage) for stage in ("base", "sft", "reward", *EXTRA_POLICIES)}
    # The other policies the report evaluates (dpo/rloo besides the card's own) go to <id>-<stage>: the card
    # reports their numbers, so `rlhf reproduce REPO` needs them, and the Space shows them.
    extra = {stage: f"{repo_id}-{stage}" for stage in EXTRA_POLICIES
             if stage != policy_key and stage in src.report["models"] and finished[stage]}
    for stage, rid in extra.items():
        if not valid_repo_id(rid):
            raise PushError(f"--repo-id: the derived {stage.upper()} id {rid!r} is not a Hub repo id; "
                            "pass a shorter --repo-id")
    if space_id:
        # The Space loads every model it shows from the Hub: derive the ids left out, ask for the rest at once.
        if scored_by_model and not reward_repo_id and finished["reward"]:
            reward_repo_id = f"{repo_id}-reward"
        if not sft_repo_id and finished["sft"]:
            sft_repo_id = f"{repo_id}-sft"
        for name, rid in (("the derived reward model id", reward_repo_id), ("the derived SFT id", sft_repo_id)):
            if rid is not None and not valid_repo_id(rid):
                raise PushError(f"--space: {name} {rid!r} is not a Hub repo id; pass a shorter --repo-id")
        hub_base = base_repo_id or hub_base_model(src, CardOptions())
        problems = []
        if scored_by_model and not reward_repo_id:
            problems.append("the reward model that scores the responses (reward/ is unfinished; pass --reward-repo-id)")
        shown = 1 + bool(sft_repo_id) + bool(hub_base) + len(extra)
        if shown < 2:
            problems.append(f"a second model to compare {NAMES[policy_key]} with (the base was built locally: pass "
                            "--base-repo-id, or finish sft/)")
        if problems:
            raise PushError(f"--space {space_id}: the Space needs {'; and '.join(problems)}")
    stage_dirs = {"sft": sft_repo_id, "reward": reward_repo_id, "base": base_repo_id, **extra}
    for stage, rid in stage_dirs.items():
        if rid:
            require_stage(run_dir / stage, f"{stage} model (asked for by its repo id)")
    opts = CardOptions.from_hub_config(hub, repo_id=repo_id, sft_repo_id=sft_repo_id, reward_repo_id=reward_repo_id,
                                       base_repo_id=base_repo_id)
    # samples: None with --no-samples, whatever hub says
    opts = dataclasses.replace(opts, samples_repo_id=samples_repo_id, policy_repo_ids=dict(extra))
    cards = staging / "cards"
    cards.mkdir()
    write_bundle(src, opts, cards)

    uploads = []
    if samples_repo_id:  # first: the cards link it
        if not src.samples:
            raise PushError(f"{run_dir / 'eval'}: the evaluation wrote no samples to push as a dataset "
                            f"(rerun `rlhf evaluate`, or pass --no-samples)")
        # the run's own files, byte for byte as the evaluation wrote them (the cards' bundle re-serialises them)
        name = Path(str(src.report.get("samples", "samples.jsonl"))).as_posix()
        files = {f"eval/{name}": run_dir / "eval" / name, "eval/report.json": run_dir / "eval" / "report.json"}
        files["README.md"] = samples_card(src.report, src.samples, f"eval/{name}", samples_repo_id, repo_id, hub,
                                          staging / "samples-card")
        uploads.append(Upload(samples_repo_id, "dataset", "samples", files))
    policy = Upload(repo_id, "model", "policy")
    policy.files.update(model_files(policy_dir, logs_prefix=f"training/{policy_key}"))
    policy.files.update(bundle_files(cards, exclude=("reward/", "sft/")))
    uploads.append(policy)
    base_model = hub_base_model(src, opts)
    for stage, rid in stage_dirs.items():
        if rid:
            up = Upload(rid, "model", stage, model_files(run_dir / stage, logs_prefix=f"training/{stage}"))
            card = cards / stage / "README.md"
            # Every pushed model gets a card: the run renders the SFT and reward models' own; the others point
            # to the policy card, which evaluates them all.
            up.files["README.md"] = card if card.is_file() else stand_in_card(
                stage, rid, repo_id, None if stage == "base" else (sft_repo_id or base_model),
                staging / "stand-in-cards" / stage)
            uploads.append(up)
    if space_id:
        folder = Path(space_dir) if space_dir else space_folder()
        files = {rel: p for rel, p in bundle_files(folder).items()
                 if "__pycache__" not in rel and not rel.endswith((".pyc", ".pyo")) and not Path(rel).name.startswith(".")}
        if "README.md" not in files or "app.py" not in files:
            raise PushError(f"--space: {folder} has no app.py and README.md (the Space front matter)")
        hardware = check_hardware(space_hardware or suggested_hardware(files["README.md"]) or DEFAULT_HARDWARE)
        # the card's policy under its own role: PPO is the Space's "policy", DPO and RLOO have theirs
        variables = {SPACE_VARIABLES["policy" if policy_key == "ppo" else policy_key]: repo_id}
        for key, rid in (("sft", sft_repo_id), ("reward", reward_repo_id), ("base", base_repo_id or base_model),
                         *extra.items()):
            if rid:
                variables[SPACE_VARIABLES[key]] = rid
        if not scored_by_model:  # trained with a reward function: the Space shows no scores
            variables[SPACE_VARIABLES["reward"]] = "none"
        if get_path(src.report, "dataset", "template") == "plain":  # the models continue plain text
            variables[SPACE_VARIABLES["prompt_format"]] = "plain"
        if revision:
            variables[SPACE_VARIABLES["revision"]] = revision
        # The Space card's `models:` lists what the Space really loads, so the Hub links them.
        files["README.md"] = space_card_with_models(files["README.md"], [
            v for k, v in variables.items() if k not in (SPACE_VARIABLES["revision"], SPACE_VARIABLES["prompt_format"])
            and v != "none"], staging / "space-card", hardware)
        info_path = staging / "space-info" / SPACE_INFO
        info_path.parent.mkdir(parents=True, exist_ok=True)
        info_path.write_text(json.dumps(space_info(run_dir, card_url=f"https://huggingface.co/{repo_id}"), indent=1)
                             + "\n", encoding="utf-8")
        files[SPACE_INFO] = info_path
        uploads.append(Upload(space_id, "space", "space", files, variables, hardware))
    return uploads


def card_metadata(readme: Path, repo_type: str = "model") -> str:
    """The YAML front matter of a card, as the Hub will read it."""
    from huggingface_hub import DatasetCard, ModelCard

    return (DatasetCard if repo_type == "dataset" else ModelCard).load(readme).data.to_yaml()


def describe(uploads: list[Upload], private: bool, revision: str | None) -> str:
    lines = []
    for up in uploads:
        lines.append(f"{up.repo_type} repo {up.repo_id} ({up.what}; private: {'yes' if private else 'no'}; "
                     f"revision: {revision if revision and up.repo_type == 'model' else 'main'}): "
                     f"{len(up.files)} files, {up.size / 1e6:.2f} MB")
        width = max((len(k) for k in up.files), default=0)
        for rel, p in sorted(up.files.items()):
            lines.append(f"  {rel:<{width}}  {p.stat().st_size:>12,d} B")
        for k, v in up.variables.items():
            lines.append(f"  variable {k}={v}")
        if up.hardware:
            lines.append(f"  hardware {up.hardware}")
        if "README.md" in up.files and up.repo_type in ("model", "dataset"):
            lines.append("  card metadata:")
            lines += [f"    {ln}" for ln in card_metadata(up.files["README.md"], up.repo_type).splitlines()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- send


def is_transient(err: BaseException) -> bool:
    """Worth retrying: the connection failed or the server was busy, not "you may not" or "not found"."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, HfHubHTTPError):
        response = getattr(err, "response", None)
        return response is not None and response.status_code in TRANSIENT_STATUS
    return isinstance(err, (httpx2.TransportError, ConnectionError, TimeoutError))


def with_retries(fn: Callable[[], T], what: str, retries: int, backoff_s: float,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Calls fn, retrying transient errors `retries` times with exponential backoff."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified below
            if attempt == retries or not is_transient(e):
                raise PushError(f"{what}: {_short(e)}") from e
            wait = backoff_s * 2 ** attempt
            logger.warning("%s: transient error (%s); retry %d/%d in %.1f s", what, _short(e), attempt + 1, retries, wait)
            sleep(wait)
    raise AssertionError("unreachable")


def _short(err: BaseException) -> str:
    """One line from a Hub error: status and the server's message, never request headers."""
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if status == 401:
        return "401 Unauthorized: the Hub rejected the token (check HF_TOKEN or run `hf auth login` again)"
    if status == 403:
        return f"403 Forbidden: the token may not write to this repo ({first})"
    return f"{type(err).__name__}: {first}"


def resolve_token(token: str | None = None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login` with a token that can write")
    return token


def send(api, up: Upload, *, private: bool, revision: str | None, message: str, hub: HubConfig,
         sleep: Callable[[float], None] = time.sleep) -> str:
    """Creates the repo (and branch), commits every file, sets Space variables; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd

    def retry(fn, what):
        return with_retries(fn, f"{up.repo_id}: {what}", hub.max_retries, hub.retry_backoff_s, sleep)

    kwargs: dict[str, Any] = {"space_sdk": "gradio"} if up.repo_type == "space" else {}
    if up.repo_type == "space" and up.hardware:
        kwargs["space_hardware"] = up.hardware  # a new Space starts on it
    retry(lambda: api.create_repo(up.repo_id, repo_type=up.repo_type, private=private, exist_ok=True, **kwargs),
          "create_repo")
    branch = revision if up.repo_type == "model" and revision and revision != "main" else None
    if branch:
        retry(lambda: api.create_branch(up.repo_id, branch=branch, repo_type=up.repo_type, exist_ok=True),
              f"create_branch {branch}")

    def commit():  # operations are consumed by a commit: build fresh ones for each attempt
        ops = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(p)) for rel, p in sorted(up.files.items())]
        return api.create_commit(up.repo_id, operations=ops, commit_message=message, repo_type=up.repo_type,
                                 revision=branch)

    info = retry(commit, f"commit of {len(up.files)} files")
    for key, value in up.variables.items():
        retry(lambda k=key, v=value: api.add_space_variable(up.repo_id, k, v), f"Space variable {key}")
    if up.repo_type == "space" and up.hardware:  # an existing Space keeps its hardware through create_repo
        retry(lambda: api.request_space_hardware(up.repo_id, up.hardware), f"Space hardware {up.hardware}")
    url = getattr(info, "commit_url", None) or str(info)
    logger.info("%s: pushed %d files (%s)", up.repo_id, len(up.files), url)
    return url


@dataclass
class PushResult:
    """What was (or, for a dry run, would be) pushed. The local paths of `uploads` lie in a staging
    folder that is deleted when `push` returns: use the paths in the repos, not the files."""

    uploads: list[Upload]
    commits: list[str] = field(default_factory=list)
    dry_run: bool = False


def push(run_dir: str | Path, repo_id: str | None = None, *, dry_run: bool = False, private: bool | None = None,
         revision: str | None = None, sft_repo_id: str | None = None, reward_repo_id: str | None = None,
         base_repo_id: str | None = None, space_id: str | None = None, hub: HubConfig | None = None,
         space_dir: Path | None = None, endpoint: str | None = None, token: str | None = None,
         space_hardware: str | None = None, samples: bool = True, samples_repo_id: str | None = None,
         out: Callable[[str], None] = print,
         sleep: Callable[[float], None] = time.sleep) -> PushResult:
    """Publishes a run; arguments left None come from `hub` (default: the run's recipe.yaml `hub` section)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PushError(f"run directory {run_dir} does not exist")
    hub = hub or hub_config_of(run_dir)
    repo_id = repo_id or hub.repo_id
    if not repo_id:
        raise PushError("no repo id: pass --repo-id or set hub.repo_id in the recipe")
    private = hub.private if private is None else private
    message = f"{hub.commit_message} (gpt2-rlhf {_version()})"
    logger.info("push %s -> %s (private: %s, revision: %s)", run_dir, repo_id, private, revision or "main")
    logger.debug("hub config: %s", hub)
    with tempfile.TemporaryDirectory(prefix="rlhf-push-") as tmp:
        uploads = plan_push(run_dir, repo_id, hub, Path(tmp), sft_repo_id=sft_repo_id or hub.sft_repo_id,
                            reward_repo_id=reward_repo_id or hub.reward_repo_id,
                            base_repo_id=base_repo_id or hub.base_repo_id, space_id=space_id or hub.space_id,
                            revision=revision, space_dir=space_dir, space_hardware=space_hardware, samples=samples,
                            samples_repo_id=samples_repo_id or hub.samples_repo_id)
        if dry_run:
            out(describe(uploads, private, revision))
            out("dry run: nothing was sent")
            return PushResult(uploads, dry_run=True)
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint, token=resolve_token(token))
        result = PushResult(uploads)
        for up in uploads:
            result.commits.append(send(api, up, private=private, revision=revision, message=message, hub=hub,
                                       sleep=sleep))
            out(f"pushed {up.what} to {up.repo_type} repo {up.repo_id}: {len(up.files)} files")
        return result


def _version() -> str:
    from gpt2_rlhf.train.rundir import package_version

    return package_version()


def cli(args) -> int:
    # huggingface_hub's HTTP client logs every request at INFO; the user wants our summary lines.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    push(Path(args.run_dir), args.repo_id, dry_run=args.dry_run, private=True if args.private else None,
         revision=args.revision, sft_repo_id=args.sft_repo_id, reward_repo_id=args.reward_repo_id,
         base_repo_id=getattr(args, "base_repo_id", None), space_id=args.space,
         space_hardware=getattr(args, "space_hardware", None), samples=not getattr(args, "no_samples", False),
         samples_repo_id=getattr(args, "samples_repo_id", None))
    return 0
