"""`rlhf reproduce RUN_DIR_OR_REPO [--tolerance REL]`: check every number a card states.

1. Find the card and its report: `RUN_DIR/card/README.md` with `RUN_DIR/eval/report.json`,
   or a Hub repo (downloaded with `snapshot_download`) holding `README.md`,
   `eval/report.json` and the configs that `rlhf push` uploads.
2. Card against report, offline, exact and first (a second, not minutes):
   a. every `model-index` value equals the report's value (to float precision), and
      every headline metric of the report has one;
   b. the numbers written in each card's text equal, in order, those of the card
      re-rendered from the report: an edited table cell, sentence or example is a
      mismatch. Each mismatch says "card says X, report says Y" and names the line of
      the card file (front matter included). A card that disagrees with its report
      fails here, without a rerun: re-measuring cannot make it right.
3. Report against a rerun: the evaluation runs again (`gpt2_rlhf.evaluation.run.main` in a
   temporary folder, on the same model files, with the recorded config and seed),
   and every reported number is compared with its recomputed value:
   `|new - old| <= abs_tol + rel_tol * |old|` (the report's `tolerance`, or
   `--tolerance` for the relative part); counts, model revisions (sha256 of the
   weights) and findings must be equal.
4. Print each claim beside what it was checked against with PASS/FAIL per check (a card
   check: the card's number and the report's; a rerun check: the report's and the rerun's);
   exit 0 when everything passes, 1 on any mismatch (2 for an input error, as every command).

Not compared, on purpose: `created`, `wall_time_s` (non-deterministic), `versions`
(printed when they differ: a different torch can change sampled text), the
`training` block and `reward_model.on_policy` (copied from the stages' files, not
measured by the evaluation), the overoptimisation curve when the rerun could
not measure the same points (a Hub repo holds no PPO snapshots; a note says so), and
the held-out judges (`metrics.judges`, `<policy>_judge_hacking`) of a Hub repo whose
reward model repo holds no `judges/` (`rlhf push` uploads them with the reward model; a
note says so). A reward model repo with its `judges/` is staged as a finished reward stage
by the rerun (`stage_repos`), so the judges are rerun and compared like the rest.

Several samples per prompt (`decoding.samples_per_prompt`, `eval.samples_per_prompt`)
need nothing of their own: the rerun gets the recorded config, so it samples the same
k passes with the same seeds, and every field they add (`dataset.n_responses`, the
win rates' `win_rate_ties_half` and its CI) is compared like the others. A report
from before these fields is rerun as what it was, one sample per prompt: the rerun's
new fields at their defaults are dropped before the settings are compared, and the
`ppo_gold_win_rate` finding, which such a report judged on `win` rather than on
`win_rate_ties_half`, is not compared (a note says so).
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gpt2_rlhf.evaluation.policies import MODEL_KEYS, POLICY_KEYS
from gpt2_rlhf.evaluation.report import judges_aggregate

from .context import headline_values, policy_of
from .markdown import numbers_in
from .options import CardOptions, load_options, valid_repo_id
from .render import render_texts
from .sources import CardError, CardSources, get_path, is_number

logger = logging.getLogger(__name__)

CARDS = ("README.md", "reward/README.md", "sft/README.md")
# Findings read from the overoptimisation curve: compared only when the rerun measured the same curve.
CURVE_FINDINGS = ("ppo_overoptimisation",)
# Config fields that name where the models were, not how they were measured.
LOCATION_FIELDS = (*(f"{k}_model" for k in MODEL_KEYS), "reward_model", "device")
# Eval fields a rerun sets from the report's `reward` block (what scored, resolved at evaluation time: a
# run without a reward model is scored with PPO's reward); the block itself is compared instead.
REWARD_FIELDS = ("reward_function", "reward_classifier", "reward_classifier_label", "reward_classifier_score",
                 "reward_classifier_text")
# `decoding` fields added after schema 1 was first written, at the value a report without them was made with.
DECODING_DEFAULTS = {"samples_per_prompt": 1}


CARD_LABELS = ("card says", "report says")  # a card check: the card's number against its report's
RERUN_LABELS = ("reported", "reproduced")  # a rerun check: the report's number against the rerun's


@dataclass
class Check:
    """One comparison: what, the claimed value and the value it is checked against, and whether they agree.

    A card check claims the card's number and checks it against the report (`CARD_LABELS`); a rerun check
    claims the report's number and checks it against the rerun (`RERUN_LABELS`)."""

    section: str
    name: str
    reported: Any  # the claim: the card's number (card checks) or the report's (rerun checks)
    reproduced: Any  # what it is checked against: the report's number, or the rerun's
    ok: bool
    allowed: str = ""
    detail: str = ""
    labels: tuple[str, str] = RERUN_LABELS


@dataclass
class Outcome:
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and not self.failed


# ----------------------------------------------------------------------------- pure comparisons


def within(old: float, new: float, rel: float, abs_: float) -> bool:
    """`|new - old| <= abs + rel * |old|` (the report's tolerance rule)."""
    if not (math.isfinite(old) and math.isfinite(new)):
        return old == new
    return abs(new - old) <= abs_ + rel * abs(old)


def _leaf_checks(section: str, name: str, old: Any, new: Any, rel: float, abs_: float) -> list[Check]:
    """Compares two dicts of numbers key by key: floats within tolerance, ints (`n`) exactly."""
    out = []
    for key, a in (old or {}).items():
        b = (new or {}).get(key) if isinstance(new, dict) else None
        label = f"{name}.{key}"
        if a is None:
            out.append(Check(section, label, None, b, b is None, "both absent"))
        elif isinstance(a, bool) or isinstance(a, str):
            out.append(Check(section, label, a, b, a == b, "equal"))
        elif isinstance(a, int) and key in ("n", "n_pairs", "n_prompts", "n_responses"):
            out.append(Check(section, label, a, b, a == b, "equal"))
        elif is_number(a):
            ok = is_number(b) and within(float(a), float(b), rel, abs_)
            out.append(Check(section, label, a, b, ok, f"±{abs_ + rel * abs(a):.3g}"))
    return out


def compare_reports(old: dict, new: dict, rel: float, abs_: float) -> list[Check]:
    """Every reported number against its recomputed value (step 3)."""
    checks: list[Check] = []
    for key in ("n_prompts", "n_pairs", "n_responses"):
        if key in (old.get("dataset") or {}):
            a, b = old["dataset"][key], get_path(new, "dataset", key)
            checks.append(Check("dataset", key, a, b, a == b, "equal"))
    for model, info in (old.get("models") or {}).items():
        a, b = info.get("revision"), get_path(new, "models", model, "revision")
        checks.append(Check("models", f"{model}.revision", a, b, a == b, "equal", "the weights evaluated"))
        if "parameters" in info:
            a, b = info["parameters"], get_path(new, "models", model, "parameters")
            checks.append(Check("models", f"{model}.parameters", a, b, a == b, "equal"))
    rm_old, rm_new = old.get("reward_model") or {}, new.get("reward_model") or {}
    if rm_old.get("revision"):
        checks.append(Check("models", "reward.revision", rm_old["revision"], rm_new.get("revision"),
                            rm_old["revision"] == rm_new.get("revision"), "equal"))
    # untrained_accuracy and on_policy are copied from the reward stage's metrics.json, not measured here
    rm_fields = {k: v for k, v in rm_old.items()
                 if k not in ("path", "revision", "source", "stats", "untrained_accuracy", "on_policy")}
    checks += _leaf_checks("reward_model", "reward_model", rm_fields, rm_new, rel, abs_)
    checks += _leaf_checks("reward_model", "reward_model.stats", {k: v for k, v in (rm_old.get("stats") or {}).items()
                                                                  if k != "source"}, rm_new.get("stats"), rel, abs_)
    for metric, per_model in (old.get("metrics") or {}).items():
        for model, v in per_model.items():
            checks += _leaf_checks("metrics", f"{metric}.{model}", v, get_path(new, "metrics", metric, model), rel, abs_)
    for section in ("win_rates", "gold_win_rates", "reward_improvement"):
        for pair, v in (old.get(section) or {}).items():
            checks += _leaf_checks(section, pair, v, get_path(new, section, pair), rel, abs_)
    curve_rerun = curve_reproducible(old, new)
    if curve_rerun:
        curve_old, curve_new = old["overoptimisation"], new["overoptimisation"]
        checks.append(Check("overoptimisation", "prompts", curve_old["prompts"], curve_new.get("prompts"),
                            curve_old["prompts"] == curve_new.get("prompts"), "equal"))
        for p, q in zip(curve_old["points"], curve_new["points"]):
            for key in ("kl", "reward", "gold"):
                if key in p:
                    checks += _leaf_checks("overoptimisation", f"{p['label']}.{key}", p[key], q.get(key), rel, abs_)
            checks += _leaf_checks("overoptimisation", p["label"], {k: p[k] for k in ("round", "episodes", "sqrt_kl")
                                                                    if k in p}, q, rel, abs_)
        for key in ("proxy_rises_past_gold_peak", "gold_falls_after_peak"):
            if key in curve_old:
                checks.append(Check("overoptimisation", key, curve_old[key], curve_new.get(key),
                                    curve_old[key] == curve_new.get(key), "equal"))
        if "gold_peak" in curve_old:
            a, b = curve_old["gold_peak"].get("label"), get_path(curve_new, "gold_peak", "label")
            checks.append(Check("overoptimisation", "gold_peak.label", a, b, a == b, "equal"))
    checks += _comparison_checks(old.get("comparison"), new.get("comparison"), rel, abs_)
    for metric, per_model in (old.get("reference_metrics") or {}).items():
        for model, v in (per_model or {}).items():
            checks += _leaf_checks("reference_metrics", f"{metric}.{model}", v,
                                   get_path(new, "reference_metrics", metric, model), rel, abs_)
    new_findings = {f.get("id"): f for f in new.get("findings") or []}
    redefined = redefined_findings(old)
    for f in old.get("findings") or []:
        if f.get("id") in CURVE_FINDINGS and not curve_rerun:
            continue  # reproduce() notes that the curve was not rerun
        if f.get("id") in redefined:
            continue  # judged by an older rule; reproduce() notes it
        g = new_findings.get(f.get("id"))
        checks.append(Check("findings", str(f.get("id")), f.get("holds"), None if g is None else g.get("holds"),
                            g is not None and g.get("holds") == f.get("holds"), "equal"))
        if "good" in f:
            checks.append(Check("findings", f"{f.get('id')}.good", f["good"], None if g is None else g.get("good"),
                                g is not None and g.get("good") == f["good"], "equal"))
    return checks


def _comparison_checks(old: Any, new: Any, rel: float, abs_: float) -> list[Check]:
    """The comparison of the policies (`comparison`): each ranking's and rate's best policy exactly, every
    number within tolerance, every "unknown" as "unknown"."""
    checks: list[Check] = []
    if not isinstance(old, dict):
        return checks
    new = new if isinstance(new, dict) else {}
    for key in ("gold", "reward", "per_kl", "per_second"):
        part = old.get(key)
        if not isinstance(part, dict):
            continue
        b = get_path(new, key, "best")
        checks.append(Check("comparison", f"{key}.best", part.get("best"), b, part.get("best") == b, "equal"))
        if "separated" in part:
            b = get_path(new, key, "separated")
            checks.append(Check("comparison", f"{key}.separated", part["separated"], b, part["separated"] == b, "equal"))
        for policy, v in (part.get("values") or {}).items():
            checks += _leaf_checks("comparison", f"{key}.{policy}", v if isinstance(v, dict) else {"value": v},
                                   get_path(new, key, "values", policy) if isinstance(v, dict)
                                   else {"value": get_path(new, key, "values", policy)}, rel, abs_)
    return checks


def redefined_findings(report: dict) -> set[str]:
    """Findings of `report` judged by a rule that has changed since, so a rerun cannot confirm them:
    `ppo_gold_win_rate` of a report whose gold win rates have no `win_rate_ties_half` was judged on the
    plain win fraction (it is now judged with ties counted half)."""
    w = get_path(report, "gold_win_rates", "ppo_vs_sft")
    return {"ppo_gold_win_rate"} if isinstance(w, dict) and "win_rate_ties_half" not in w else set()


def curve_reproducible(old: dict, new: dict) -> bool:
    """Whether the rerun measured the recorded overoptimisation curve: the same points, by label.

    The curve's PPO snapshots live in the run directory only (`rlhf push` uploads the final policy), so
    a rerun from a Hub repo measures SFT and the final policy alone; its curve is then not comparable."""
    a, b = old.get("overoptimisation"), new.get("overoptimisation")
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    return [p.get("label") for p in a.get("points") or []] == [p.get("label") for p in b.get("points") or []]


def compare_settings(old: dict, new: dict) -> list[Check]:
    """The rerun must have used the recorded settings (decoding, seed, config), or its numbers mean nothing."""
    def strip(cfg: Any) -> Any:
        cfg = copy.deepcopy(cfg) or {}
        for k in LOCATION_FIELDS + REWARD_FIELDS:
            (cfg.get("eval") or {}).pop(k, None)
        return cfg

    checks = [Check("settings", "seed", old.get("seed"), new.get("seed"), old.get("seed") == new.get("seed"), "equal")]
    if "reward" in old:  # what scored the responses (reports before the block: the reward model)
        a, b = old["reward"], new.get("reward")
        same = a == b
        checks.append(Check("settings", "reward", a.get("kind"), (b or {}).get("kind"), same, "equal"))
    dec_old, dec_new = old.get("decoding"), copy.deepcopy(new.get("decoding"))
    if isinstance(dec_old, dict) and isinstance(dec_new, dict):
        for key, default in DECODING_DEFAULTS.items():  # a report from before the field: made at its default
            if key not in dec_old and dec_new.get(key) == default:
                del dec_new[key]
    checks.append(Check("settings", "decoding", dec_old, dec_new, dec_old == dec_new, "equal"))
    a, b = strip(old.get("config")), strip(new.get("config"))
    b = _drop_new_defaults(a, b)
    checks.append(Check("settings", "config", "recorded", "rerun" if a == b else b, a == b, "equal",
                        "" if a == b else _dict_diff(a, b)))
    return checks


def _drop_new_defaults(recorded: dict, rerun: dict) -> dict:
    """Drops rerun settings the recorded config lacks when they hold their default.

    A field added to a section in a later gpt2-rlhf version, at its default, cannot
    have changed how the recorded run was made; any other difference still fails.
    """
    import dataclasses

    from gpt2_rlhf.evaluation.config import EvalConfig
    from gpt2_rlhf.train.config import TRAIN_SECTIONS, section_class

    out = copy.deepcopy(rerun)
    for name, section in (out or {}).items():
        if name not in (*TRAIN_SECTIONS, "eval") or not isinstance(section, dict) or not isinstance(recorded.get(name), dict):
            continue
        cls = EvalConfig if name == "eval" else section_class(name)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)
                    if f.default is not dataclasses.MISSING}
        for key in [k for k in section if k not in recorded[name] and k in defaults]:
            if section[key] == defaults[key]:
                del section[key]
    return out


def _dict_diff(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _dict_diff(a.get(k), b.get(k), f"{prefix}{k}.")
    return f"{prefix.rstrip('.')}: {a!r} != {b!r}"


def compare_model_index(card_data, report: dict, card_text: str = "", which: str = "README.md") -> list[Check]:
    """Step 2a: the card's metadata values are the report's values, and every headline metric has one.

    `card_text` (the card file) lets a mismatch name the metadata line of its value."""
    checks = []
    found = {}
    for r in getattr(card_data, "eval_results", None) or []:
        found[(r.metric_type, r.metric_name)] = r.metric_value
    where = lambda name: (f"{which} line {n}: {path}" if (n := _metadata_line(card_text, name)) else path)
    for mtype, name, path_, value in headline_values(report, policy_of(report)):
        got = found.pop((mtype, name), None)
        ok = is_number(got) and within(value, float(got), 1e-9, 0.0)
        path = ".".join(path_)
        checks.append(Check("card", f"model-index {name}", got, value, ok, "equal", where(name) if not ok else path,
                            CARD_LABELS))
    for (mtype, name), got in found.items():
        checks.append(Check("card", f"model-index {name}", got, None, False, "",
                            f"{where('not a number of the report')}", CARD_LABELS))
    return checks


def _metadata_line(card: str, name: str) -> int | None:
    """The 1-based line of the `value:` of the model-index metric called `name` in a card's front matter."""
    lines = card.split("\n")
    for i, line in enumerate(lines):
        if line.strip() in (f"name: {name}", f"- name: {name}") and i > 0:
            for j in range(i - 1, max(i - 4, -1), -1):  # the metric's keys: type, value, name
                if lines[j].strip().lstrip("- ").startswith("value:"):
                    return j + 1
        if line.strip() == "---" and i > 0:
            break
    return None


def compare_card_text(card: str, expected: str, which: str) -> list[Check]:
    """Step 2b: the numbers written in the card, in order, against those of the card re-rendered from the report.

    A mismatch says what the card says and what the report says, and names the line of the card file
    (counted from the top of the file, its front matter included)."""
    body, expected_body = _body(card), _body(expected)
    got, want = numbers_in(body), numbers_in(expected_body)
    if got == want:
        return [Check("card", f"{which}: {len(want)} numbers in the text", "card", "report", True, "equal",
                      labels=CARD_LABELS)]
    checks = []
    offset = card[:len(card) - len(body)].count("\n")  # lines of the front matter above the body
    lines = body.splitlines()
    positions = _number_lines(body)
    sm = difflib.SequenceMatcher(a=want, b=got, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            continue
        at = positions[j1] if j1 < len(positions) else (positions[j1 - 1] if positions and j1 else None)
        line = lines[at].strip() if at is not None and at < len(lines) else ""
        checks.append(Check("card", f"{which}: text", " ".join(got[j1:j2]) or "(nothing)",
                            " ".join(want[i1:i2]) or "(nothing)", False, "equal",
                            f"{which} line {at + offset + 1}: {line[:120]}" if line else "removed from the card",
                            CARD_LABELS))
    return checks


def _body(text: str) -> str:
    """The card without its YAML front matter (compared separately, as model-index)."""
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end != -1:
            return text[end + 4:]
    return text


def _number_lines(text: str) -> list[int]:
    """Line index of each number of numbers_in(text), in order."""
    out = []
    for i, line in enumerate(text.splitlines()):
        out += [i] * len(numbers_in(line))
    return out


# ----------------------------------------------------------------------------- inputs


@dataclass
class Target:
    """What is being reproduced: cards, the sources they claim to render, and where each model is."""

    name: str
    cards: dict[str, str]  # bundle-relative path -> card text
    sources: CardSources
    options: CardOptions
    model_paths: dict[str, str]  # model key (base/sft/ppo/reward) -> local dir or Hub id
    hub: bool = False  # downloaded from the Hub: the model folders are repo snapshots, not stage directories


def local_target(run_dir: Path) -> Target:
    sources = CardSources.from_run_dir(run_dir)
    card_dir = run_dir / "card"
    if not (card_dir / "README.md").is_file():
        raise CardError(f"{card_dir / 'README.md'} does not exist: render it with `rlhf card {run_dir}` first")
    cards = {rel: (card_dir / rel).read_text() for rel in CARDS if (card_dir / rel).is_file()}
    paths = {}
    for key, info in sources.report["models"].items():
        paths[key] = str(run_dir / key) if info.get("source", "local") == "local" else str(info["path"])
    rm = sources.report.get("reward_model")
    if rm is not None or "reward" not in sources.report:  # no reward model: a function or classifier scored
        rm = rm or {}
        paths["reward"] = str(run_dir / "reward") if rm.get("source", "local") == "local" else str(rm.get("path"))
    return Target(str(run_dir), cards, sources, load_options(card_dir), paths)


def download(repo_id: str, what: str, endpoint: str | None = None, token: str | None = None) -> Path:
    """A Hub repo snapshot, or a one-line error (offline, missing, private)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, endpoint=endpoint, token=token))
    except Exception as e:  # noqa: BLE001 - every failure becomes one line naming the repo
        kind = type(e).__name__
        if "Offline" in kind or "LocalEntryNotFound" in kind or "Connect" in kind:
            raise CardError(f"{what} {repo_id}: cannot download it, the Hugging Face Hub is unreachable "
                            f"(offline or HF_HUB_OFFLINE=1?): {kind}") from e
        raise CardError(f"{what} {repo_id}: cannot download it: {kind}: {str(e).splitlines()[0] if str(e) else ''}") from e


def hub_target(repo_id: str, endpoint: str | None = None, token: str | None = None) -> Target:
    folder = download(repo_id, "model repo", endpoint, token)
    if not (folder / "README.md").is_file() or not (folder / "eval" / "report.json").is_file():
        raise CardError(f"{repo_id}: no README.md and eval/report.json: not a repo pushed by `rlhf push`")
    sources = CardSources.from_bundle(folder)
    options = load_options(folder)
    report = sources.report
    policy = policy_of(report)  # the repo holds the card's policy; the other models live elsewhere
    paths = {policy: str(folder)}
    wanted = {"sft": options.sft_repo_id, "reward": options.reward_repo_id, "base": options.base_repo_id,
              **options.policy_repo_ids}
    scored_by_model = report.get("reward_model") is not None or "reward" not in report
    for key in [k for k in report["models"] if k != policy] + ["reward"] * scored_by_model:
        info = report["models"].get(key) if key != "reward" else report.get("reward_model") or {}
        if wanted.get(key):
            paths[key] = str(download(wanted[key], f"{key} model", endpoint, token))
        elif info.get("source") == "hub":
            paths[key] = str(info["path"])
        else:
            how = ("push the run again: `rlhf push` sends every evaluated policy to `<repo-id>-<stage>`"
                   if key in POLICY_KEYS else
                   f"push it with `rlhf push --{key}-repo-id` (hub.base_repo_id for the base)")
            raise CardError(f"{repo_id}: the {key} model was a local directory at evaluation time and is not on "
                            f"the Hub; {how} or reproduce from the run directory")
    cards = {"README.md": (folder / "README.md").read_text()}
    return Target(repo_id, cards, sources, options, paths, hub=True)


def find_target(arg: str, endpoint: str | None = None, token: str | None = None) -> Target:
    p = Path(arg)
    if p.exists():
        if not p.is_dir():
            raise CardError(f"{p} is not a run directory")
        return local_target(p)

    if arg.startswith((".", "/", "~")) or not valid_repo_id(arg):
        raise CardError(f"{arg}: no such run directory, and not a Hub repo id (namespace/name)")
    return hub_target(arg, endpoint, token)


# ----------------------------------------------------------------------------- rerun


def judge_finding_ids(report: dict) -> list[str]:
    """The report's findings read from the held-out judges (`<policy>_judge_hacking`)."""
    return [str(f.get("id")) for f in report.get("findings") or []
            if isinstance(f, dict) and str(f.get("id", "")).endswith("_judge_hacking")]


def without_judges(report: dict) -> dict:
    """The report less what the held-out judges measured: `metrics.judges`, the `judges` block and the judge
    findings (what a rerun without the judges cannot compare)."""
    out = copy.deepcopy(report)
    out.pop("judges", None)
    (out.get("metrics") or {}).pop("judges", None)
    ids = set(judge_finding_ids(report))
    out["findings"] = [f for f in out.get("findings") or [] if not (isinstance(f, dict) and f.get("id") in ids)]
    return out


def _link(src: Path, dest: Path) -> None:
    """`dest` a link to `src` (a copy where links cannot be made)."""
    import shutil

    try:
        dest.symlink_to(src.resolve(), target_is_directory=src.is_dir())
    except OSError:  # no symbolic links here
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dest)


def _link_tree(folder: Path, staged: Path) -> None:
    """`staged/` with a link to each entry of `folder`."""
    staged.mkdir(parents=True)
    for child in sorted(folder.iterdir()):
        if not child.name.startswith("."):
            _link(child, staged / child.name)


def judges_note(target: Target) -> str | None:
    """Why the held-out judges of a Hub repo's report cannot be rerun (its reward model repo holds no
    `judges/`, which `rlhf push` uploads with the reward model: a repo trimmed or pushed otherwise), or None
    when they can (or there are none)."""
    from gpt2_rlhf.train.reward import JUDGES

    report = target.sources.report
    reward = target.model_paths.get("reward")
    if not target.hub or "judges" not in (report.get("metrics") or {}) or reward is None:
        return None
    if (Path(reward) / JUDGES).is_dir():
        return None
    ids = judge_finding_ids(report)
    return (f"held-out judges not rerun: the reward model repo {target.options.reward_repo_id or reward} holds no "
            f"{JUDGES}/ folder (push the run's reward model again to add them): metrics.judges"
            f"{' and the finding ' + ', '.join(ids) if ids else ''} not compared")


def stage_repos(model_paths: dict[str, str], staging: Path) -> dict[str, str]:
    """The model paths with each pushed policy or reward repo unpacked into a stage directory `staging/<key>/`.

    A Hub repo is a stage directory as `rlhf push` packed it (`publish.model_files`): no COMPLETE marker, and
    its `metrics.json` moved to `training/<stage>/`. The rerun reads the files the evaluation read the first
    time: a downloaded policy repo gets its `metrics.json` back at the root (the policy's training seconds,
    the comparison's `per_second`), and a reward model repo holding the held-out judges (`judges/<name>/`) a
    COMPLETE marker naming the folder it came from (the evaluation scores with the judges of a finished reward
    stage only, and a pushed repo is one, committed at once). Links to the repo's files, nothing copied where
    links can be made; a stage directory of a run (with COMPLETE) is used as it is, and nothing is written
    into the download cache."""
    from gpt2_rlhf.evaluation.policies import POLICY_KEYS
    from gpt2_rlhf.train.reward import JUDGES
    from gpt2_rlhf.train.rundir import COMPLETE, write_json

    paths = dict(model_paths)
    for key in (*POLICY_KEYS, "reward"):
        folder = Path(paths[key]) if key in paths else None
        if folder is None or not folder.is_dir() or (folder / COMPLETE).exists():
            continue  # not evaluated, a Hub id the evaluation loads itself, or a run's stage directory
        logs = folder / "training" / key / "metrics.json"
        if key == "reward":
            if not (folder / JUDGES).is_dir():
                continue  # the evaluation reads a reward repo's training/reward/ itself
        elif not logs.is_file() or (folder / "metrics.json").exists():
            continue
        staged = staging / key
        _link_tree(folder, staged)
        if logs.is_file() and not (staged / "metrics.json").exists():
            _link(logs, staged / "metrics.json")
        if key == "reward":
            write_json(staged / COMPLETE, {"stage": key, "source": str(folder),
                                           "staged_by": "rlhf reproduce: a pushed reward model repo with its "
                                                        "held-out judges"})
        paths[key] = str(staged)
    return paths


def rerun_evaluation(report: dict, model_paths: dict[str, str]) -> dict:
    """Runs the evaluation again with the report's recorded config and seed on `model_paths`; returns its report.

    It works in a temporary run directory, so the run's own eval/ is never touched; pushed repos among
    `model_paths` are read as the stage directories they were (`stage_repos`).
    """
    import json

    from gpt2_rlhf.evaluation.config import EvalConfig
    from gpt2_rlhf.evaluation.run import main as evaluate
    from gpt2_rlhf.train.config import Recipe, build, section_class

    cfg = report.get("config") or {}
    if not isinstance(cfg.get("eval"), dict) or "seed" not in cfg:
        raise CardError("report: no recorded `config` (seed, data, eval): cannot rerun the evaluation")
    with tempfile.TemporaryDirectory(prefix="rlhf-reproduce-") as tmp, \
            tempfile.TemporaryDirectory(prefix="rlhf-reproduce-stages-") as staging:
        paths = stage_repos(model_paths, Path(staging))
        eval_cfg = dict(cfg["eval"])
        eval_cfg.update({f"{k}_model": paths[k] for k in MODEL_KEYS if k in paths})
        eval_cfg.setdefault("judge_aggregate", judges_aggregate(report))  # older reports: the mean they used
        reward = report.get("reward") or {"kind": "reward_model"}
        if reward.get("kind") == "function":
            eval_cfg["reward_function"] = reward["function"]
        elif reward.get("kind") == "classifier":
            eval_cfg.update(reward_function=None, reward_classifier=reward["classifier"],
                            reward_classifier_label=reward.get("label"),
                            reward_classifier_score=reward.get("score", "log_odds"),
                            reward_classifier_text=reward.get("text", "full"))
        else:
            eval_cfg["reward_model"] = paths["reward"]
        recipe = Recipe(seed=int(cfg["seed"]), source="<recorded in the report>")
        recipe.sections["data"] = build(section_class("data"), dict(cfg.get("data") or {}), "report config.data")
        if isinstance(cfg.get("prompts"), dict):  # prompt-only data: the same held-out prompts
            recipe.sections["prompts"] = build(section_class("prompts"), dict(cfg["prompts"]),
                                               "report config.prompts")
        recipe.sections["eval"] = build(EvalConfig, eval_cfg, "report config.eval")
        out = evaluate(recipe, Path(tmp))
        return json.loads((Path(out) / "report.json").read_text())


# ----------------------------------------------------------------------------- the command


def reproduce(arg: str, tolerance: float | None = None, *, evaluate: Callable[[dict, dict], dict] | None = None,
              endpoint: str | None = None, token: str | None = None, rerun: bool = True) -> Outcome:
    """Steps 1-3; `evaluate(report, model_paths) -> report` is the rerun (tests inject their own)."""
    target = find_target(arg, endpoint, token)
    report = target.sources.report
    outcome = Outcome()

    # 2. card against report
    from huggingface_hub import ModelCard

    expected = render_texts(target.sources, target.options)
    for rel, text in target.cards.items():
        card = ModelCard(text, ignore_metadata_errors=True)
        if rel == "README.md":
            outcome.checks += compare_model_index(card.data, report, text, rel)
        if rel not in expected:
            outcome.checks.append(Check("card", rel, "present", "no such card", False, "",
                                        "the report has no data for it", CARD_LABELS))
            continue
        outcome.checks += compare_card_text(text, expected[rel], rel)
    if outcome.failed:  # the card already disagrees with its report: re-measuring cannot make it right
        outcome.notes.append("the card does not match its report: the evaluation was not rerun (fix or re-render "
                             "the card with `rlhf card`, then reproduce again)")
        return outcome

    # 3. report against a rerun
    if rerun:
        tol = report.get("tolerance") or {}
        rel_tol = float(tolerance if tolerance is not None else tol.get("default_rel", 0.0))
        abs_tol = float(tol.get("default_abs", 0.0))
        outcome.notes.append(f"tolerance: |new - old| <= {abs_tol:g} + {rel_tol:g} * |old|"
                             + (" (--tolerance)" if tolerance is not None else " (recorded in the report)"))
        logger.info("rerunning the evaluation of %s on %s", target.name, target.model_paths)
        new = (evaluate or rerun_evaluation)(report, target.model_paths)
        note = judges_note(target)
        if note:
            outcome.notes.append(note)
        compared = without_judges(report) if note else report
        outcome.checks += compare_settings(report, new)
        outcome.checks += compare_reports(compared, new, rel_tol, abs_tol)
        for fid in sorted(redefined_findings(report)):
            outcome.notes.append(f"finding {fid} not compared: the report judged it on the plain win rate, the "
                                 "evaluation now judges it with ties counted half (win_rate_ties_half)")
        if "overoptimisation" in report and not curve_reproducible(report, new):
            outcome.notes.append("overoptimisation curve not rerun: its PPO snapshots are not available here "
                                 "(they stay in the run directory); its points and finding are not compared")
        for k, v in (report.get("versions") or {}).items():
            w = get_path(new, "versions", k)
            if w != v:
                outcome.notes.append(f"version differs: {k} {v} (reported) vs {w} (now)")
    return outcome


def _cell(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    if isinstance(x, (dict, list)):
        return "(recorded)" if x else "(none)"
    text = "absent" if x is None else str(x)
    return text if len(text) <= 20 else text[:19] + "…"


def format_outcome(name: str, outcome: Outcome) -> str:
    """The side-by-side table: one row per check, then each failure with its context."""
    rows = [("section", "check", "claimed", "checked against", "allowed", "")]
    rows += [(c.section, c.name, _cell(c.reported), _cell(c.reproduced), c.allowed, "PASS" if c.ok else "FAIL")
             for c in outcome.checks]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    widths[1] = min(widths[1], 48)
    lines = [f"rlhf reproduce {name}", *outcome.notes]
    for i, r in enumerate(rows):
        lines.append("  ".join((v if len(v) <= w else v[:w - 1] + "…").ljust(w) for v, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for c in outcome.failed:
        lines.append(f"FAIL {c.section} {c.name}: {c.labels[0]} {_cell(c.reported)}, {c.labels[1]} "
                     f"{_cell(c.reproduced)}" + (f" ({c.detail})" if c.detail else ""))
    n, bad = len(outcome.checks), len(outcome.failed)
    lines.append(f"{n - bad}/{n} checks pass: " + ("REPRODUCED" if outcome.passed else f"{bad} MISMATCH(ES)"))
    return "\n".join(lines)


def cli(args) -> int:
    outcome = reproduce(args.run_dir_or_repo, args.tolerance)
    print(format_outcome(args.run_dir_or_repo, outcome))
    return 0 if outcome.passed else 1
