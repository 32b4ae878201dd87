"""`rlhf push RUN_DIR --repo-id ID`: publish a run to the Hugging Face Hub.

What goes where (one commit per repository, through `huggingface_hub.HfApi`):

* ``--repo-id``: the PPO policy (weights, tokenizer) with its card (`README.md`),
  the evaluation (`eval/report.json`, `eval/samples.jsonl`, `eval/plots/`), the
  resolved configs (`configs/`, `recipe.yaml`), `card.json`, and PPO's training
  logs (`training/ppo/`). `rlhf reproduce ID` needs nothing else from it.
* ``--sft-repo-id`` / ``--reward-repo-id`` / hub ``base_repo_id``: those models,
  each with its own card (the reward model's carries `reward_stats.json`).
* ``--space SPACE_ID``: the `space/` folder as a Gradio Space, with the model ids
  set as Space variables (`SPACE_VARIABLES`).

1. Check the run (finished `ppo/` and `eval/`, and every stage asked for) and
   render the cards into a temporary folder with the target repo ids; nothing is
   ever written into the run directory, so a failed push leaves it as it was.
2. Plan the uploads: (repo, files, variables). `--dry-run` prints the plan and the
   card metadata and stops: no token needed, no request sent.
3. Find the token where huggingface_hub looks (`HF_TOKEN`, then the token saved by
   `hf auth login`); a clear error when there is none. The token is handed to
   `HfApi` and to nothing else: never printed, logged or written.
4. For each repo: `create_repo(exist_ok=True)`, `create_branch` for `--revision`,
   `create_commit` with every file, then `add_space_variable` for a Space. Each
   call is retried on transient errors (connection errors, 408/429/5xx) with
   exponential backoff; other errors (401, 403, 404) fail at once, in one line.

Deviation from `HfApi.upload_folder`: we build the list of `CommitOperationAdd`
ourselves, so the dry run shows exactly what would be sent and the run directory's
internal files (`COMPLETE`, checkpoints) never leave the machine.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from .metadata import hub_base_model
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
    "revision": "RLHF_REVISION",
    "prompt_format": "RLHF_PROMPT_FORMAT",
}
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
# Files of a stage directory that are bookkeeping of the run, not part of the model.
RUN_FILES = {"COMPLETE", "config.yaml", "metrics.json", "metrics.jsonl", "snapshots.json"}
# PPO's snapshots (whole policies along training, read by the evaluation's overoptimisation curve) stay
# home with the checkpoints: each is a full model, and the repo's model is the final policy. So does its
# critic (the next feedback round's value model, not part of the published policy).
SKIP_DIRS = {"checkpoints", "snapshots", "critic", "__pycache__", ".ipynb_checkpoints"}
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
    repo_type: str  # "model" or "space"
    what: str  # "policy", "sft", "reward", "base", "space"
    files: dict[str, Path] = field(default_factory=dict)  # path in repo -> local file
    variables: dict[str, str] = field(default_factory=dict)  # Space variables

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


def space_card_with_models(readme: Path, model_ids: list[str], out_dir: Path) -> Path:
    """A copy of the Space's README.md whose front matter `models:` names `model_ids`."""
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(readme)
    card.data.models = list(dict.fromkeys(model_ids))
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "README.md"
    card.save(out)
    return out


def bundle_files(folder: Path, exclude: tuple[str, ...] = ()) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.relative_to(folder).as_posix().startswith(exclude)}


def space_folder() -> Path:
    from gpt2_rlhf import space

    return Path(space.__file__).resolve().parent


def plan_push(run_dir: Path, repo_id: str, hub: HubConfig, staging: Path, *, sft_repo_id: str | None = None,
              reward_repo_id: str | None = None, base_repo_id: str | None = None, space_id: str | None = None,
              revision: str | None = None, space_dir: Path | None = None) -> list[Upload]:
    """Checks the run, renders the cards into `staging` and lists every upload. Sends nothing."""
    from gpt2_rlhf.train.rundir import require_stage

    for name, rid in (("--repo-id", repo_id), ("--sft-repo-id", sft_repo_id), ("--reward-repo-id", reward_repo_id),
                      ("hub.base_repo_id", base_repo_id), ("--space", space_id)):
        if rid is not None and not valid_repo_id(rid):
            raise PushError(f"{name}: {rid!r} is not a Hub repo id (namespace/name)")
    ppo_dir = require_stage(run_dir / "ppo", "PPO model")
    stage_dirs = {"sft": sft_repo_id, "reward": reward_repo_id, "base": base_repo_id}
    for stage, rid in stage_dirs.items():
        if rid:
            require_stage(run_dir / stage, f"{stage} model (asked for by its repo id)")
    src = CardSources.from_run_dir(run_dir)
    opts = CardOptions.from_hub_config(hub, repo_id=repo_id, sft_repo_id=sft_repo_id, reward_repo_id=reward_repo_id,
                                       base_repo_id=base_repo_id)
    write_bundle(src, opts, staging)

    policy = Upload(repo_id, "model", "policy")
    policy.files.update(model_files(ppo_dir, logs_prefix="training/ppo"))
    policy.files.update(bundle_files(staging, exclude=("reward/", "sft/")))
    uploads = [policy]
    for stage, rid in stage_dirs.items():
        if rid:
            up = Upload(rid, "model", stage, model_files(run_dir / stage, logs_prefix=f"training/{stage}"))
            card = staging / stage / "README.md"
            if card.is_file():
                up.files["README.md"] = card
            uploads.append(up)
    if space_id:
        folder = Path(space_dir) if space_dir else space_folder()
        files = {rel: p for rel, p in bundle_files(folder).items()
                 if "__pycache__" not in rel and not rel.endswith((".pyc", ".pyo")) and not Path(rel).name.startswith(".")}
        if "README.md" not in files or "app.py" not in files:
            raise PushError(f"--space: {folder} has no app.py and README.md (the Space front matter)")
        base_id = base_repo_id or hub_base_model(src, CardOptions())
        # The Space compares the policy with the base model and scores both with the reward model,
        # all loaded from the Hub: refuse a Space that could not start.
        scored_by_model = src.report.get("reward_model") is not None or "reward" not in src.report
        if not reward_repo_id and scored_by_model:
            raise PushError("--space: the Space scores responses with the reward model; push it too (--reward-repo-id)")
        if not base_id:
            raise PushError("--space: the base model was built locally, so the Space cannot load it; push it too "
                            "(--base-repo-id)")
        variables = {SPACE_VARIABLES["policy"]: repo_id}
        for key, rid in (("sft", sft_repo_id), ("reward", reward_repo_id), ("base", base_id)):
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
            and v != "none"],
                                                     staging / "space-card")
        uploads.append(Upload(space_id, "space", "space", files, variables))
    return uploads


def card_metadata(readme: Path) -> str:
    """The YAML front matter of a card, as the Hub will read it."""
    from huggingface_hub import ModelCard

    return ModelCard.load(readme).data.to_yaml()


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
        if "README.md" in up.files and up.repo_type == "model":
            lines.append("  card metadata:")
            lines += [f"    {ln}" for ln in card_metadata(up.files["README.md"]).splitlines()]
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
    logger.info("push %s -> %s (private: %s, revision: %s); hub config: %s", run_dir, repo_id, private,
                revision or "main", hub)
    with tempfile.TemporaryDirectory(prefix="rlhf-push-") as tmp:
        uploads = plan_push(run_dir, repo_id, hub, Path(tmp), sft_repo_id=sft_repo_id or hub.sft_repo_id,
                            reward_repo_id=reward_repo_id or hub.reward_repo_id,
                            base_repo_id=base_repo_id or hub.base_repo_id, space_id=space_id or hub.space_id,
                            revision=revision, space_dir=space_dir)
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
         base_repo_id=getattr(args, "base_repo_id", None), space_id=args.space)
    return 0
