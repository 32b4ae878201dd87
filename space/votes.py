"""Human votes from the Space: appended safely, then turned into reward-model training pairs.

A vote is one JSON object per line of a JSONL file (schema below). Appends hold a
lock (a thread lock, the CommitScheduler's lock when votes are pushed to the Hub,
and an `fcntl.flock` for other processes writing the same file), write the whole
line in one call, then flush and fsync, so a crash can lose at most the vote being
written and never leaves two votes on one line.

Record (`SCHEMA`):

    {"schema": "gpt2-rlhf/vote/v1", "id": uuid, "time": ISO-8601 UTC,
     "vote": "left" | "right" | "tie" | "both_bad",
     "prompt": "\\n\\nHuman: ...\\n\\nAssistant:",
     "chosen": response | null, "rejected": response | null,        # null for tie / both_bad
     "chosen_model": id | null, "rejected_model": id | null,
     "left":  {"role", "model", "response", "reward", "reward_normalised", "prompt", "tokens"},
     "right": {...},
     "reward_model": id, "decoding": {"max_new_tokens", "temperature", "top_p", "seed"},
     "anonymised": bool, "turn": int}

"left" is what the page calls Model A, "right" Model B. `anonymised` is true for a
blind vote (the default mode: names and scores hidden until the vote, sides in random
order), false for an anchored one (names and scores shown while voting). `turn` counts
the dialogue's turns (1: a single prompt); from turn 2 on, each side answered its own
dialogue so far, `left.prompt` and `right.prompt`, and `prompt` is the left side's.

`prompt + chosen` is an HH text, as in docs/DESIGN.md's preference rows.
`votes_to_preferences` keeps only blind votes unless asked for anchored ones too: a
voter who saw "PPO" beside a response, or its reward score, may have voted for the
name or the number, and such pairs would teach a reward model that bias. It keeps
only decisive votes ("left"/"right"): a tie or "both bad" says nothing about which
response is better, so it stays in the raw votes (for analysis) but makes no pair.
A pair needs one prompt, so a later turn whose two dialogues differ (each side saw
its own earlier answers) makes none either. It also drops (and counts) what
`gpt2_rlhf.train.data.load_preferences` would reject or misread: empty or identical
responses, responses that contain a "\n\nAssistant:" turn (HH text is split at
its last one, which would then fall inside the response), and a second vote on
the same comparison id. The
output is an HH JSONL file that `rlhf reward --dataset FILE` trains on.

Like inference.py, this module is uploaded with the Space and must not import
`train` or gradio.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Iterable, Iterator

try:
    import fcntl  # POSIX; the Hub's Spaces run Linux
except ImportError:  # pragma: no cover - Windows
    fcntl = None

logger = logging.getLogger(__name__)

SCHEMA = "gpt2-rlhf/vote/v1"
CHOICES = ("left", "right", "tie", "both_bad")
HH_HUMAN = "\n\nHuman:"
HH_ASSISTANT = "\n\nAssistant:"


class VotesError(ValueError):
    """A votes file that cannot be used; the message names the file, line and field."""


# ----------------------------------------------------------------------------- writing


def make_record(choice: str, comparison: dict[str, Any]) -> dict[str, Any]:
    """The vote record for `choice` on a finished comparison (as the app keeps it in its state)."""
    if choice not in CHOICES:
        raise ValueError(f"vote must be one of {CHOICES}, got {choice!r}")
    left, right = comparison["left"], comparison["right"]
    winner, loser = {"left": (left, right), "right": (right, left)}.get(choice, (None, None))
    return {
        "schema": SCHEMA,
        "id": comparison.get("id") or uuid.uuid4().hex,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "vote": choice,
        "prompt": comparison["prompt"],
        "chosen": winner["response"] if winner else None,
        "rejected": loser["response"] if loser else None,
        "chosen_model": winner["model"] if winner else None,
        "rejected_model": loser["model"] if loser else None,
        "left": dict(left),
        "right": dict(right),
        "reward_model": comparison.get("reward_model"),
        "decoding": dict(comparison["decoding"]),
        "anonymised": bool(comparison.get("anonymised", False)),
        "turn": int(comparison.get("turn", 1)),
    }


class VoteLog:
    """An append-only JSONL file of votes, optionally pushed to a Hub dataset by a CommitScheduler."""

    def __init__(self, path: str | Path, scheduler: Any = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.scheduler = scheduler
        # The scheduler reads the folder under its own lock; writing under the same
        # lock means it never uploads half a line (huggingface_hub's guide does this).
        self.lock = scheduler.lock if scheduler is not None else threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        append_vote(self.path, record, lock=self.lock)

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        with self.path.open("rb") as f:
            return sum(1 for line in f if line.strip())


class PendingComparisons:
    """Finished comparisons waiting for a vote, by id; bounded (oldest dropped), one vote each.

    The page (or an API client) gets the id with the comparison and sends it back
    with the vote, so the server records what it generated, not text a client
    claims it was shown.
    """

    def __init__(self, capacity: int = 4096):
        self.capacity = capacity
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._voted: OrderedDict[str, str] = OrderedDict()  # id -> choice
        self._lock = threading.Lock()

    def add(self, comparison: dict[str, Any]) -> str:
        cid = comparison.get("id") or uuid.uuid4().hex
        with self._lock:
            self._items[cid] = {**comparison, "id": cid}
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return cid

    def take(self, cid: str, choice: str) -> tuple[dict[str, Any] | None, str]:
        """(comparison, "ok") the first time an id is voted on; (None, "voted" | "unknown") after that."""
        with self._lock:
            if cid in self._voted:
                return None, "voted"
            comparison = self._items.pop(cid, None)
            if comparison is None:
                return None, "unknown"
            self._voted[cid] = choice
            while len(self._voted) > self.capacity:
                self._voted.popitem(last=False)
            return comparison, "ok"

    def __len__(self) -> int:
        return len(self._items)


_DEFAULT_LOCK = threading.Lock()


def append_vote(path: str | Path, record: dict[str, Any], lock: Any = None) -> None:
    """Appends one record as one line: under `lock` and an exclusive flock, one write, flush, fsync."""
    # ensure_ascii keeps the line pure ASCII: newlines and odd characters in texts are escaped.
    line = (json.dumps(record, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")
    with lock or _DEFAULT_LOCK:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(line)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the flock


def make_scheduler(repo_id: str, folder: str | Path, every_minutes: float = 5, token: str | None = None, hf_api: Any = None):
    """A huggingface_hub CommitScheduler pushing `folder` to the dataset repo `repo_id` under data/."""
    from huggingface_hub import CommitScheduler

    return CommitScheduler(repo_id=repo_id, repo_type="dataset", folder_path=folder, path_in_repo="data",
                           every=every_minutes, private=True, token=token, allow_patterns=["*.jsonl"], hf_api=hf_api)


def hub_vote_log(repo_id: str, local_dir: str | Path, token: str | None = None, hf_api: Any = None) -> VoteLog:
    """A VoteLog whose folder is pushed to `repo_id`; one file per process, so Space replicas never collide."""
    folder = Path(local_dir)
    scheduler = make_scheduler(repo_id, folder, token=token, hf_api=hf_api)
    return VoteLog(folder / f"votes-{uuid.uuid4().hex[:12]}.jsonl", scheduler=scheduler)


# ----------------------------------------------------------------------------- reading


def _vote_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.rglob("*.jsonl"))
        if not files:
            raise VotesError(f"{path}: folder holds no .jsonl votes files")
        return files
    if not path.exists():
        raise VotesError(f"{path}: no such votes file")
    return [path]


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise VotesError(f"{where}: {msg}")


def read_votes(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields ("file:line", record) for every vote in a file (or every .jsonl under a folder), validated."""
    for file in _vote_files(Path(path)):
        with file.open("rb") as f:
            for n, raw in enumerate(f, 1):
                where = f"{file}:{n}"
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise VotesError(f"{where}: not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
                _check(isinstance(rec, dict), where, "a vote must be a JSON object")
                _check(rec.get("vote") in CHOICES, where, f"field 'vote' must be one of {list(CHOICES)}, got {rec.get('vote')!r}")
                _check(isinstance(rec.get("prompt"), str), where, "field 'prompt' must be a string")
                if rec["vote"] in ("left", "right"):
                    for k in ("chosen", "rejected"):
                        _check(isinstance(rec.get(k), str), where, f"field '{k}' must be a string for a '{rec['vote']}' vote")
                yield where, rec


def votes_to_preferences(path: str | Path, blind_only: bool = True) -> tuple[list[dict[str, str]], Counter]:
    """HH-format rows {"chosen": prompt + chosen, "rejected": prompt + rejected} and counts of what was kept or dropped.

    blind_only (the default) keeps only votes cast with the model names and scores hidden
    (`anonymised`): a voter who saw "PPO" or a score beside a response may have voted for it.
    """
    rows: list[dict[str, str]] = []
    counts: Counter = Counter()
    seen: set[str] = set()
    for where, rec in read_votes(path):
        counts["votes"] += 1
        counts[f"vote_{rec['vote']}"] += 1
        if rec["vote"] not in ("left", "right"):
            counts["skipped_not_decisive"] += 1
            continue
        if blind_only and not rec.get("anonymised"):
            counts["skipped_not_blind"] += 1
            continue
        vid = rec.get("id")
        if vid is not None and vid in seen:
            counts["skipped_duplicate_id"] += 1
            continue
        seen.add(vid)
        prompt, chosen, rejected = rec["prompt"], rec["chosen"], rec["rejected"]
        contexts = [side.get("prompt") for side in (rec.get("left"), rec.get("right")) if isinstance(side, dict)]
        if len(contexts) == 2 and all(isinstance(c, str) for c in contexts) and contexts[0] != contexts[1]:
            counts["skipped_different_context"] += 1  # a later turn: each side answered its own dialogue
            continue
        if not prompt.endswith(HH_ASSISTANT):
            raise VotesError(f"{where}: field 'prompt' must end with {HH_ASSISTANT!r}")
        if not chosen.strip() or not rejected.strip():
            counts["skipped_empty"] += 1
            continue
        if chosen.strip() == rejected.strip():
            counts["skipped_identical"] += 1
            continue
        if HH_ASSISTANT in chosen or HH_ASSISTANT in rejected:
            # HH text is split at its LAST "\n\nAssistant:"; one inside a response would
            # move part of it into the prompt. (A "\n\nHuman:" turn inside is harmless.)
            counts["skipped_assistant_turn"] += 1
            continue
        rows.append({"chosen": prompt + chosen, "rejected": prompt + rejected})
        counts["pairs"] += 1
    return rows, counts


def write_jsonl(rows: Iterable[dict[str, Any]], out: str | Path) -> None:
    """Writes rows atomically (temp file + rename): a failure leaves any old file untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cli(args) -> int:
    """`rlhf votes VOTES --out FILE [--include-anchored]`: writes the HH preference file (blind votes only, unless
    --include-anchored) and prints the counts as JSON."""
    src, out = Path(args.votes), Path(args.out)
    if out.exists() and src.exists() and out.resolve() in {p.resolve() for p in _vote_files(src)}:
        raise VotesError(f"--out {out}: would overwrite the votes it reads")
    rows, counts = votes_to_preferences(src, blind_only=not getattr(args, "include_anchored", False))
    if not rows:
        hint = (f"; {counts['skipped_not_blind']} anchored votes were left out (--include-anchored keeps them)"
                if counts.get("skipped_not_blind") else "")
        raise VotesError(f"{src}: no decisive votes to turn into pairs ({dict(counts)}){hint}")
    write_jsonl(rows, out)
    print(json.dumps({"out": str(out), **dict(sorted(counts.items()))}), file=sys.stdout)
    return 0
