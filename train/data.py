"""Preference data: load HH-format pairs from anywhere, check every row, say what was wrong.

Sources (``DataConfig.dataset``):

* ``"embedded"``: the shipped synthetic world (``gpt2_rlhf.train.synthetic.generator.EMBEDDED_DATA_DIR``).
* a local file (``.jsonl``, ``.json`` = a JSON array of objects, ``.parquet``). A file
  has no splits of its own: its last ``file_test_fraction`` of rows (by position, so
  deterministic) is the test split and the rest the train split, so held-out numbers
  stay held out. With ``file_test_fraction: 0`` the whole file is both splits and a
  warning says that "held-out" numbers are then measured on training rows. Use a
  folder to have separate splits.
* a local folder holding ``<split>.jsonl``, ``<split>.json`` or ``<split>.parquet``.
* anything else is a Hugging Face Hub dataset id (``Anthropic/hh-rlhf``), loaded with
  ``datasets.load_dataset(id, data_dir=..., split=...)``. Strings that look like
  paths (a file extension, ``./``, ``/``, ``~`` or more than one ``/``) but do not
  exist are reported as missing files instead.

Rows come in either as HH pairs (``chosen``/``rejected`` hold whole dialogues; the
prompt is everything up to and including the last ``"\\n\\nAssistant:"``) or, when
``prompt_column`` is set, already split. They come out as
``{"prompt", "chosen", "rejected"}`` (see docs/DESIGN.md).

Prompt-only data (``PromptsConfig``, the recipe's ``prompts`` section; ``load_prompts``) is
what PPO and the evaluation read instead when a recipe has no preference pairs for them:
a ``.txt`` file (one prompt per line), ``.jsonl``/``.json``/``.parquet`` with a ``prompt``
column, a folder of ``<split>`` files, a Hub dataset id, or the shipped ``stories``; a
text dataset is cut to its first words or tokens. Its problems are ``PROMPT_PROBLEM_KINDS``,
handled as below.

Every row is checked; a problem is one of ``PROBLEM_KINDS``. With
``on_bad_rows="error"`` the first problem raises ``DataError`` with a one-line
message naming the file, the line (JSONL: 1-based line number; JSON, Parquet and
Hub: 0-based row index) and the reason. With ``"skip"`` every problem is counted
in the ``DataReport`` and logged as a warning summary; nothing is dropped
silently. Blank JSONL lines are skipped and counted (``DataReport.blank_lines``),
not treated as problems.
"""

from __future__ import annotations

import json
import math
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "ASSISTANT_TAG",
    "PROBLEM_KINDS",
    "DataConfig",
    "DataError",
    "DataReport",
    "NoAssistantTurnError",
    "PROMPT_PROBLEM_KINDS",
    "PromptsConfig",
    "load_preferences",
    "load_prompts",
    "split_prompt_response",
    "validate_command",
]

ASSISTANT_TAG = "\n\nAssistant:"
HUMAN_TAG = "\n\nHuman:"
PROBLEM_KINDS: tuple[str, ...] = (
    "undecodable_line",
    "missing_field",
    "not_a_string",
    "empty_response",
    "no_assistant_turn",
    "prompt_mismatch",
    "identical_responses",
    "too_long",
)
ON_BAD_ROWS = ("error", "skip")
SPLIT_SUFFIXES = (".jsonl", ".json", ".parquet")
EXAMPLES_PER_KIND = 3
# Rows are checked (and tokenized, for too_long) in chunks: batching the tokenizer
# is far faster than one call per row on 160k HH rows.
_CHUNK = 512


class DataError(ValueError):
    """A data problem with a one-line message naming where (file/split, line or row) and why."""

    def __init__(self, message: str, *, location: str | None = None, kind: str | None = None,
                 report: DataReport | None = None) -> None:
        super().__init__(_one_line(message))
        self.location = location
        self.kind = kind
        self.report = report  # what was counted before the error, when there was a split to count


class _MissingSplit(DataError):
    """The source exists but has no such split (a folder without the file, a Hub split name)."""


class NoAssistantTurnError(ValueError):
    """The text has no ``"\\n\\nAssistant:"`` turn, so there is no response to split off."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split("\n")).strip()


@dataclass
class DataConfig:
    """Where the preference pairs come from and what to do with bad rows."""

    dataset: str = field(default="embedded", metadata={"help": (
        "'embedded' (the shipped synthetic world), a local .jsonl/.json/.parquet file, a folder with "
        "<split>.jsonl|.json|.parquet, or a Hugging Face Hub dataset id such as Anthropic/hh-rlhf.")})
    data_dir: str | None = field(default=None, metadata={"help": (
        "Hub dataset data_dir, e.g. 'harmless-base' or 'helpful-base' for Anthropic/hh-rlhf.")})
    train_split: str = field(default="train", metadata={"help": "Split name used for training."})
    test_split: str = field(default="test", metadata={"help": "Split name used for evaluation."})
    max_train_pairs: int | None = field(default=None, metadata={"help": (
        "Keep only the first N valid training pairs (None: all).")})
    max_test_pairs: int | None = field(default=None, metadata={"help": (
        "Keep only the first N valid test pairs (None: all).")})
    file_test_fraction: float = field(default=0.1, metadata={"help": (
        "A single data file has no splits: its last fraction of rows (by position) is the test split, the rest "
        "the train split. 0: the whole file is both (held-out numbers are then measured on training rows).")})
    on_bad_rows: str = field(default="skip", metadata={"help": (
        "'error': stop at the first bad row with file, line and reason; 'skip': count, report and drop bad rows.")})
    prompt_column: str | None = field(default=None, metadata={"help": (
        "Column holding the prompt when the data is already split into prompt/chosen/rejected; "
        "None: chosen/rejected hold whole HH dialogues. A prompt without any Human:/Assistant: "
        "markers is wrapped as '\\n\\nHuman: <prompt>\\n\\nAssistant:'.")})
    chosen_column: str | None = field(default=None, metadata={"help": "Column of the chosen text (None: 'chosen')."})
    rejected_column: str | None = field(default=None, metadata={"help": (
        "Column of the rejected text (None: 'rejected').")})

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ValueError(f"dataset: must be a non-empty string, got {self.dataset!r}")
        if self.on_bad_rows not in ON_BAD_ROWS:
            raise ValueError(f"on_bad_rows: must be one of {', '.join(ON_BAD_ROWS)}, got {self.on_bad_rows!r}")
        for name in ("max_train_pairs", "max_test_pairs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: must be a positive integer or None, got {value!r}")
        if not 0.0 <= self.file_test_fraction < 1.0:
            raise ValueError(f"file_test_fraction: must be in [0, 1), got {self.file_test_fraction!r}")
        for name in ("train_split", "test_split"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name}: must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("data_dir", "prompt_column", "chosen_column", "rejected_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name}: must be a non-empty string or None, got {value!r}")
        columns = [c for c in self.columns() if c is not None]
        if len(set(columns)) != len(columns):
            raise ValueError(f"chosen_column: prompt/chosen/rejected columns must differ, got {columns}")

    def columns(self) -> tuple[str | None, str, str]:
        """(prompt column or None, chosen column, rejected column)."""
        return self.prompt_column, self.chosen_column or "chosen", self.rejected_column or "rejected"

    def max_pairs(self, split: str) -> int | None:
        """The row cap that applies to `split` (None: no cap)."""
        if split == self.train_split:
            return self.max_train_pairs
        if split == self.test_split:
            return self.max_test_pairs
        return None


@dataclass
class DataReport:
    """What loading one split found: counts per problem kind and the first examples of each."""

    source: str
    split: str
    rows_read: int = 0
    rows_kept: int = 0
    blank_lines: int = 0
    problems: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBLEM_KINDS, 0))
    examples: dict[str, list[str]] = field(default_factory=dict)  # kind -> ["<location>: <reason>", ...]
    stopped_early: bool = False  # the max_*_pairs cap was reached; the rest was not read

    @property
    def n_problems(self) -> int:
        return sum(self.problems.values())

    def first_problem(self) -> str | None:
        """``"<location>: <kind>: <reason>"`` of the first problem met (None when clean)."""
        return self._first

    def summary(self) -> str:
        """``kind=count`` for every kind that occurred, or ``no problems``."""
        found = [f"{k}={n}" for k, n in self.problems.items() if n]
        return ", ".join(found) if found else "no problems"

    def as_dict(self) -> dict[str, Any]:
        """Plain data for metrics files."""
        return asdict(self)

    def format(self) -> str:
        """The multi-line text `rlhf data` prints for this split."""
        lines = [f"{self.split}: {self.source}",
                 f"  rows read            {self.rows_read}",
                 f"  rows kept            {self.rows_kept}"]
        if self.blank_lines:
            lines.append(f"  blank lines skipped  {self.blank_lines}")
        if self.stopped_early:
            lines.append("  (stopped at the max_*_pairs cap)")
        for kind in self.problems:  # every kind of this report's data (preference or prompt rows)
            lines.append(f"  {kind:<20} {self.problems.get(kind, 0)}")
            for example in self.examples.get(kind, []):
                lines.append(f"      e.g. {example}")
        return "\n".join(lines)

    def _record(self, location: str, kind: str, reason: str) -> None:
        self.problems[kind] = self.problems.get(kind, 0) + 1
        kept = self.examples.setdefault(kind, [])
        if len(kept) < EXAMPLES_PER_KIND:
            kept.append(f"{location}: {reason}")
        if self._first is None:
            self._first = f"{location}: {kind}: {reason}"

    def __post_init__(self) -> None:
        self._first: str | None = None  # not a field: as_dict() stays plain counts and examples


# ------------------------------------------------------------------ splitting


def split_prompt_response(text: str) -> tuple[str, str]:
    """(prompt, response): the prompt ends with the LAST ``"\\n\\nAssistant:"``; ``prompt + response == text``.

    Raises NoAssistantTurnError when the text has no Assistant turn.
    """
    cut = text.rfind(ASSISTANT_TAG)
    if cut < 0:
        raise NoAssistantTurnError("no '\\n\\nAssistant:' turn in the text")
    cut += len(ASSISTANT_TAG)
    return text[:cut], text[cut:]


# -------------------------------------------------------------------- sources


@dataclass
class _Raw:
    """One raw row from a reader: its location and either the decoded object or a problem."""

    location: str
    obj: Any = None
    problem: tuple[str, str] | None = None


def _looks_like_path(dataset: str) -> bool:
    return (
        dataset.endswith(SPLIT_SUFFIXES)
        or dataset.startswith((".", "/", "~"))
        or dataset.count("/") > 1
        or (os.sep != "/" and os.sep in dataset)
    )


def _resolve(cfg: DataConfig) -> tuple[str, Path | None]:
    """("embedded" | "file" | "dir" | "hub", local path or None)."""
    if cfg.dataset == "embedded":
        from .synthetic.generator import EMBEDDED_DATA_DIR

        return "dir", EMBEDDED_DATA_DIR
    path = Path(cfg.dataset).expanduser()
    if path.is_dir():
        return "dir", path
    if path.exists():
        return "file", path
    if _looks_like_path(cfg.dataset):
        raise DataError(f"{cfg.dataset}: no such file or folder")
    return "hub", None


def _split_file(folder: Path, split: str) -> Path:
    found = [folder / f"{split}{suffix}" for suffix in SPLIT_SUFFIXES if (folder / f"{split}{suffix}").is_file()]
    if not found:
        names = ", ".join(f"{split}{s}" for s in SPLIT_SUFFIXES)
        raise _MissingSplit(f"{folder}: split {split!r} not found (looked for {names})")
    if len(found) > 1:
        logger.warning("%s: several files for split %r; using %s", folder, split, found[0].name)
    return found[0]


def _text_lines(path: Path, report: DataReport) -> Iterator[_Raw]:
    """The file's non-blank lines as text (_Raw.obj), or an undecodable-line problem; blank lines counted.

    Bytes, decoded per line: a bad line is then a counted problem with its line
    number instead of a crash that names no line.
    """
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            location = f"{path} line {lineno}"
            if not raw.strip():
                report.blank_lines += 1
                continue
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield _Raw(location, problem=("undecodable_line",
                                              f"not valid UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1})"))
                continue
            yield _Raw(location, text)


def _read_jsonl(path: Path, report: DataReport) -> Iterator[_Raw]:
    for line in _text_lines(path, report):
        if line.problem:
            yield line
            continue
        try:
            obj = json.loads(line.obj)
        except json.JSONDecodeError as exc:
            yield _Raw(line.location, problem=("undecodable_line", f"bad JSON: {exc.msg} at column {exc.colno}"))
            continue
        yield _Raw(line.location, obj)


def _read_json(path: Path, report: DataReport) -> Iterator[_Raw]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 (byte offset {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg.startswith("Extra data"):  # JSON Lines saved as .json: read it line by line
            yield from _read_jsonl(path, report)
            return
        raise DataError(f"{path} line {exc.lineno}: bad JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of objects, got a JSON {type(data).__name__}")
    for index, obj in enumerate(data):
        yield _Raw(f"{path} row {index}", obj)


def _read_parquet(path: Path, report: DataReport) -> Iterator[_Raw]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: cannot read Parquet: {type(exc).__name__}: {exc}") from None
    index = 0
    for batch in parquet.iter_batches(batch_size=_CHUNK):
        for obj in batch.to_pylist():
            yield _Raw(f"{path} row {index}", obj)
            index += 1


_OFFLINE_TYPES = {"OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectError", "ConnectTimeout",
                  "ConnectionError", "ReadTimeout", "Timeout", "NameResolutionError", "MaxRetryError"}


def _looks_offline(exc: BaseException) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return True
    seen: BaseException | None = exc
    for _ in range(10):  # walk the cause chain (bounded: chains can loop)
        if seen is None:
            return False
        if isinstance(seen, ConnectionError) or type(seen).__name__ in _OFFLINE_TYPES:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _read_hub(name: str, data_dir: str | None, split: str) -> Iterator[_Raw]:
    where = f"{name}" + (f" (data_dir {data_dir})" if data_dir else "") + f" split {split!r}"
    try:
        import datasets

        dataset = datasets.load_dataset(name, data_dir=data_dir, split=split)
    except Exception as exc:  # datasets surfaces network, auth and naming failures with many types
        detail = _one_line(f"{type(exc).__name__}: {exc}")[:300]
        if "Unknown split" in str(exc) or "Bad split" in str(exc):
            raise _MissingSplit(f"Hub dataset {where}: no such split ({detail})") from None
        if _looks_offline(exc):
            raise DataError(
                f"could not fetch Hub dataset {where}: the Hub is unreachable - no network, or HF_HUB_OFFLINE=1 "
                f"is set and the dataset is not cached ({detail})"
            ) from None
        raise DataError(f"could not load Hub dataset {where}: {detail}") from None
    for index, obj in enumerate(dataset):
        yield _Raw(f"{name}[{split}] row {index}", obj)


def _open_split(cfg: DataConfig, split: str, report: DataReport) -> Iterator[_Raw]:
    kind, path = _resolve(cfg)
    if kind == "hub":
        report.source = cfg.dataset + (f" (data_dir {cfg.data_dir})" if cfg.data_dir else "") + f" [{split}]"
        return _read_hub(cfg.dataset, cfg.data_dir, split)
    assert path is not None
    if kind == "dir":
        path = _split_file(path, split)
    report.source = str(path)
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .jsonl, .json or .parquet)")
    if kind == "file":
        return _file_split(reader(path, report), cfg.file_test_fraction, split == cfg.test_split, report,
                           "file_test_fraction")
    return reader(path, report)


def _file_split(raw_rows: Iterator[_Raw], fraction: float, test: bool, report: DataReport,
                setting: str) -> Iterator[_Raw]:
    """A single file's train or test part: the last `fraction` of its rows are the test split.

    Without this, `--dataset pairs.jsonl` would train the reward model on the very
    rows its "held-out" accuracy is measured on. `setting` names the recipe field in the warning.
    """
    if fraction == 0.0:
        if test:
            logger.warning("%s: one file is both the train and the test split (%s 0): held-out "
                           "numbers are measured on training rows", report.source, setting)
        return raw_rows
    rows = list(raw_rows)
    n_test = math.ceil(len(rows) * fraction) if len(rows) > 1 else 0
    cut = len(rows) - n_test
    report.source = f"{report.source} [{'last' if test else 'first'} {n_test if test else cut} of {len(rows)} rows]"
    return iter(rows[cut:] if test else rows[:cut])


# ----------------------------------------------------------------- row checks


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check(obj: Any, cfg: DataConfig) -> dict[str, str] | tuple[str, str]:
    """The output row, or (problem kind, reason). Length is checked later, in batches."""
    prompt_col, chosen_col, rejected_col = cfg.columns()
    wanted = [c for c in (prompt_col, chosen_col, rejected_col) if c is not None]
    if not isinstance(obj, dict):
        return "missing_field", f"expected an object with fields {', '.join(wanted)}, got {_type_name(obj)}"
    for column in wanted:
        if column not in obj:
            have = ", ".join(map(str, list(obj)[:8])) or "none"
            return "missing_field", f"no {column!r} field (fields: {have})"
    for column in wanted:
        if not isinstance(obj[column], str):
            return "not_a_string", f"{column!r} is {_type_name(obj[column])}, not a string"

    if prompt_col is not None:
        prompt, chosen, rejected = obj[prompt_col], obj[chosen_col], obj[rejected_col]
        if ASSISTANT_TAG not in prompt and "Human:" not in prompt and "Assistant:" not in prompt:
            # A bare question: give it the HH frame, and the responses their usual leading space.
            prompt = f"{HUMAN_TAG} {prompt.strip()}{ASSISTANT_TAG}"
            chosen = chosen if chosen[:1].isspace() or not chosen else " " + chosen
            rejected = rejected if rejected[:1].isspace() or not rejected else " " + rejected
        elif not prompt.endswith(ASSISTANT_TAG):
            return "no_assistant_turn", f"{prompt_col!r} does not end with '\\n\\nAssistant:'"
    else:
        try:
            prompt, chosen = split_prompt_response(obj[chosen_col])
        except NoAssistantTurnError:
            return "no_assistant_turn", f"{chosen_col!r} has no '\\n\\nAssistant:' turn"
        try:
            rejected_prompt, rejected = split_prompt_response(obj[rejected_col])
        except NoAssistantTurnError:
            return "no_assistant_turn", f"{rejected_col!r} has no '\\n\\nAssistant:' turn"
        if rejected_prompt != prompt:
            return "prompt_mismatch", "chosen and rejected have different prompts"

    for name, response in (("chosen", chosen), ("rejected", rejected)):
        if not response.strip():
            return "empty_response", f"{name} response is empty"
    if chosen.strip() == rejected.strip():
        return "identical_responses", "chosen and rejected responses are identical"
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _token_lengths(tokenizer: Any, rows: list[dict[str, str]]) -> list[int]:
    """Tokens of prompt + the longer response, per row (special tokens not counted)."""
    texts = [r["prompt"] + r["chosen"] for r in rows] + [r["prompt"] + r["rejected"] for r in rows]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    n = len(rows)
    return [max(len(ids[i]), len(ids[n + i])) for i in range(n)]


# ---------------------------------------------------------------------- loading


def load_preferences(
    cfg: DataConfig,
    split: str,
    tokenizer: Any = None,
    max_length: int | None = None,
) -> tuple[list[dict[str, str]], DataReport]:
    """Rows ``{"prompt", "chosen", "rejected"}`` of `split`, and the report of what was found.

    `tokenizer` + `max_length` enable the ``too_long`` check: prompt plus the longer
    response, tokenized without special tokens, must fit in `max_length` (callers
    that append EOS should pass their context length minus one). Raises DataError
    for a missing source or split, an unreachable Hub, an empty result, and (policy
    ``error``) the first bad row.
    """
    report = DataReport(source=cfg.dataset, split=split)
    raw_rows = _open_split(cfg, split, report)
    check_length = tokenizer is not None and max_length is not None
    limit = cfg.max_pairs(split)
    rows: list[dict[str, str]] = []

    def problem(location: str, kind: str, reason: str) -> None:
        if cfg.on_bad_rows == "error":
            raise DataError(f"{location}: {kind}: {reason}", location=location, kind=kind)
        report._record(location, kind, reason)

    chunk: list[_Raw] = []
    exhausted = False
    while not exhausted and (limit is None or len(rows) < limit):
        chunk.clear()
        for raw in raw_rows:
            chunk.append(raw)
            if len(chunk) == _CHUNK:
                break
        else:
            exhausted = True
        checked = [raw.problem if raw.problem else _check(raw.obj, cfg) for raw in chunk]
        good = [c for c in checked if isinstance(c, dict)]
        lengths = iter(_token_lengths(tokenizer, good) if check_length and good else [])
        for raw, result in zip(chunk, checked):
            if limit is not None and len(rows) >= limit:
                report.stopped_early = True
                break
            report.rows_read += 1
            if isinstance(result, tuple):
                problem(raw.location, *result)
                continue
            if check_length:
                n_tokens = next(lengths)
                if n_tokens > max_length:  # type: ignore[operator]
                    problem(raw.location, "too_long",
                            f"{n_tokens} tokens (prompt + longer response) > max_length {max_length}")
                    continue
            rows.append(result)
    if limit is not None and len(rows) >= limit and not exhausted:
        report.stopped_early = True
    report.rows_kept = len(rows)

    if not rows:
        if report.rows_read == 0:
            raise DataError(f"{report.source}: split {split!r} is empty")
        first = report.first_problem()
        raise DataError(f"{report.source}: no usable rows in split {split!r}: all {report.rows_read} rows had "
                        f"problems ({report.summary()}; first: {first})", report=report)
    if report.n_problems:
        logger.warning("%s: skipped %d of %d rows (%s); first: %s", report.source, report.n_problems,
                       report.rows_read, report.summary(), report.first_problem())
    logger.info("%s: %d pairs", report.source, len(rows))
    return rows, report


# ------------------------------------------------------------ prompt-only data

PROMPT_PROBLEM_KINDS: tuple[str, ...] = (
    "undecodable_line",
    "missing_field",
    "not_a_string",
    "empty_prompt",
    "too_long",
)
PROMPT_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
PROMPT_TEMPLATES = ("plain", "dialogue")


def shipped_prompt_sets() -> dict[str, Path]:
    """Prompt sets shipped with the package, by the name a recipe's `prompts.source` gives them."""
    from importlib import resources

    return {"stories": Path(str(resources.files("gpt2_rlhf.train") / "embedded" / "stories" / "openings.txt"))}


@dataclass
class PromptsConfig:
    """Prompt-only data for PPO and the evaluation (section ``prompts``): no preference pairs needed.

    With ``source`` set, PPO samples its episodes from these prompts' train split, and its
    held-out before/after comparison and the evaluation use their test split; the
    ``data`` section still feeds the stages that need pairs (base pretraining on the
    embedded world, SFT, the reward model). Rows are checked like preference rows: a
    bad one is counted and dropped (``on_bad_rows: skip``) or stops the run with its
    file, line and reason (``error``).
    """

    source: str | None = field(default=None, metadata={"help": (
        "None: PPO and the evaluation take the preference data's prompts. Otherwise 'stories' (the shipped story "
        "openings), a .txt file (one prompt per line), a .jsonl/.json/.parquet file, a folder with "
        "<split>.txt|.jsonl|.json|.parquet, or a Hugging Face Hub dataset id.")})
    column: str | None = field(default=None, metadata={"help": (
        "Column holding the prompt (JSONL, JSON, Parquet, Hub); None: 'prompt', or 'text' when cut_words or "
        "cut_tokens is set (a text dataset cut into prompts). Not used for .txt files.")})
    cut_words: int = field(default=0, metadata={"help": (
        "Keep the first N whitespace-separated words of each row as its prompt (0 = the whole text).")})
    cut_tokens: int = field(default=0, metadata={"help": (
        "Keep the first N tokens (the policy's tokenizer) of each row as its prompt (0 = the whole text).")})
    template: str = field(default="plain", metadata={"help": (
        "'plain': prompts are used as they are and the model continues them (text continuation); 'dialogue': "
        "each prompt is wrapped as '\\n\\nHuman: <prompt>\\n\\nAssistant:' (one already holding an Assistant "
        "turn is kept).")})
    data_dir: str | None = field(default=None, metadata={"help": "Hub dataset data_dir (Hub sources only)."})
    train_split: str = field(default="train", metadata={"help": (
        "Split PPO trains on (folder: <split>.<ext>; Hub: any split expression, e.g. 'train[:90%]').")})
    test_split: str = field(default="test", metadata={"help": (
        "Held-out split of the before/after comparison and the evaluation (Hub, e.g. 'train[90%:]').")})
    test_fraction: float = field(default=0.1, metadata={"help": (
        "A single file has no splits: its last fraction of prompts (by position) is the test split. 0: the whole "
        "file is both (held-out numbers are then measured on training prompts).")})
    max_train_prompts: int | None = field(default=None, metadata={"help": (
        "Keep only the first N valid training prompts (None: all).")})
    max_test_prompts: int | None = field(default=None, metadata={"help": (
        "Keep only the first N valid held-out prompts (None: all).")})
    on_bad_rows: str = field(default="skip", metadata={"help": (
        "'error': stop at the first bad prompt with file, line and reason; 'skip': count, report and drop it.")})

    def __post_init__(self) -> None:
        if self.source is not None and (not isinstance(self.source, str) or not self.source.strip()):
            raise ValueError(f"source: must be a non-empty string or None, got {self.source!r}")
        if self.template not in PROMPT_TEMPLATES:
            raise ValueError(f"template: must be one of {', '.join(PROMPT_TEMPLATES)}, got {self.template!r}")
        if self.on_bad_rows not in ON_BAD_ROWS:
            raise ValueError(f"on_bad_rows: must be one of {', '.join(ON_BAD_ROWS)}, got {self.on_bad_rows!r}")
        for name in ("cut_words", "cut_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: must be an integer >= 0, got {value!r}")
        if self.cut_words and self.cut_tokens:
            raise ValueError(f"cut_tokens: set cut_words or cut_tokens, not both (got {self.cut_words} and "
                             f"{self.cut_tokens})")
        for name in ("max_train_prompts", "max_test_prompts"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: must be a positive integer or None, got {value!r}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction: must be in [0, 1), got {self.test_fraction!r}")
        for name in ("train_split", "test_split"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name}: must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("column", "data_dir"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name}: must be a non-empty string or None, got {value!r}")

    @property
    def enabled(self) -> bool:
        """Whether PPO and the evaluation read these prompts (else the preference data's)."""
        return self.source is not None

    @property
    def continuation(self) -> bool:
        """Prompts are plain text the model continues (no Human/Assistant template)."""
        return self.enabled and self.template == "plain"

    @property
    def prompt_column(self) -> str:
        return self.column or ("text" if self.cut_words or self.cut_tokens else "prompt")

    def max_prompts(self, split: str) -> int | None:
        if split == self.train_split:
            return self.max_train_prompts
        if split == self.test_split:
            return self.max_test_prompts
        return None


def _read_text_lines(path: Path, report: DataReport) -> Iterator[_Raw]:
    """A .txt file: one prompt per line (bytes decoded per line, so a bad line is named, not a crash)."""
    for line in _text_lines(path, report):
        yield line if line.problem else _Raw(line.location, line.obj.rstrip("\r\n"))


def _prompt_split_file(folder: Path, split: str) -> Path:
    found = [folder / f"{split}{s}" for s in PROMPT_SUFFIXES if (folder / f"{split}{s}").is_file()]
    if not found:
        raise _MissingSplit(f"{folder}: prompt split {split!r} not found (looked for "
                            f"{', '.join(split + s for s in PROMPT_SUFFIXES)})")
    if len(found) > 1:
        logger.warning("%s: several files for prompt split %r; using %s", folder, split, found[0].name)
    return found[0]


def _open_prompt_split(cfg: PromptsConfig, split: str, report: DataReport) -> Iterator[_Raw]:
    assert cfg.source is not None
    shipped = shipped_prompt_sets()
    path = shipped.get(cfg.source) or Path(cfg.source).expanduser()
    if not path.exists():
        if cfg.source.endswith(PROMPT_SUFFIXES) or _looks_like_path(cfg.source):
            raise DataError(f"prompts.source {cfg.source}: no such file or folder")
        report.source = cfg.source + (f" (data_dir {cfg.data_dir})" if cfg.data_dir else "") + f" [{split}]"
        return _read_hub(cfg.source, cfg.data_dir, split)
    single = not path.is_dir()
    if not single:
        path = _prompt_split_file(path, split)
    report.source = str(path)
    readers = {".txt": _read_text_lines, ".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported prompt file type {path.suffix!r} (use .txt, .jsonl, .json or .parquet)")
    rows = reader(path, report)
    return _file_split(rows, cfg.test_fraction, split == cfg.test_split, report, "prompts.test_fraction") \
        if single else rows


def _check_prompt(raw: _Raw, cfg: PromptsConfig) -> str | tuple[str, str]:
    """The prompt text (before cutting and the template), or (problem kind, reason)."""
    if raw.problem:
        return raw.problem
    if isinstance(raw.obj, str):  # a .txt line
        text = raw.obj
    else:
        column = cfg.prompt_column
        if not isinstance(raw.obj, dict):
            return "missing_field", f"expected an object with a {column!r} field, got {_type_name(raw.obj)}"
        if column not in raw.obj:
            have = ", ".join(map(str, list(raw.obj)[:8])) or "none"
            return "missing_field", f"no {column!r} field (fields: {have})"
        text = raw.obj[column]
        if not isinstance(text, str):
            return "not_a_string", f"{column!r} is {_type_name(text)}, not a string"
    if not text.strip():
        return "empty_prompt", "the prompt is empty"
    return text


def _shape_prompt(text: str, cfg: PromptsConfig, tokenizer: Any) -> str:
    """Cut to the first words/tokens, then the template."""
    if cfg.cut_words:
        text = " ".join(text.split()[:cfg.cut_words])
    elif cfg.cut_tokens:
        text = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:cfg.cut_tokens]).strip()
    if cfg.template == "dialogue" and ASSISTANT_TAG not in text:
        text = f"{HUMAN_TAG} {text.strip()}{ASSISTANT_TAG}"
    return text


def load_prompts(cfg: PromptsConfig, split: str, tokenizer: Any = None,
                 max_tokens: int | None = None) -> tuple[list[str], DataReport]:
    """The prompts of `split` (cut and templated as the config says), and the report of what was found.

    `tokenizer` is needed for ``cut_tokens``, and with `max_tokens` it enables the
    ``too_long`` check (a prompt of more tokens than the consumer's prompt budget).
    Raises DataError for a missing source or split, an empty result, and (policy
    ``error``) the first bad prompt, naming its file and line (or row).
    """
    if not cfg.enabled:
        raise ValueError("prompts.source is not set: the prompts come from the preference data (data.dataset)")
    if cfg.cut_tokens and tokenizer is None:
        raise ValueError("prompts.cut_tokens: cutting by tokens needs the policy's tokenizer")
    report = DataReport(source=str(cfg.source), split=split, problems=dict.fromkeys(PROMPT_PROBLEM_KINDS, 0))
    raw_rows = _open_prompt_split(cfg, split, report)
    limit = cfg.max_prompts(split)
    prompts: list[str] = []

    def problem(location: str, kind: str, reason: str) -> None:
        if cfg.on_bad_rows == "error":
            raise DataError(f"{location}: {kind}: {reason}", location=location, kind=kind)
        report._record(location, kind, reason)

    for raw in raw_rows:
        if limit is not None and len(prompts) >= limit:
            report.stopped_early = True
            break
        report.rows_read += 1
        checked = _check_prompt(raw, cfg)
        if isinstance(checked, tuple):
            problem(raw.location, *checked)
            continue
        prompt = _shape_prompt(checked, cfg, tokenizer)
        if not prompt.strip():
            problem(raw.location, "empty_prompt", "the prompt is empty after cutting")
            continue
        if tokenizer is not None and max_tokens is not None:
            n_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            if n_tokens > max_tokens:
                problem(raw.location, "too_long", f"{n_tokens} tokens > the prompt budget of {max_tokens} tokens")
                continue
        prompts.append(prompt)
    report.rows_kept = len(prompts)
    if not prompts:
        if report.rows_read == 0:
            raise DataError(f"{report.source}: prompt split {split!r} is empty")
        raise DataError(f"{report.source}: no usable prompts in split {split!r}: all {report.rows_read} rows had "
                        f"problems ({report.summary()}; first: {report.first_problem()})", report=report)
    if report.n_problems:
        logger.warning("%s: skipped %d of %d prompts (%s); first: %s", report.source, report.n_problems,
                       report.rows_read, report.summary(), report.first_problem())
    logger.info("%s: %d prompts", report.source, len(prompts))
    return prompts, report


def check_prompts(cfg: PromptsConfig, splits: Sequence[str]) -> None:
    """Reads `splits` of the prompt-only data with its bad-row policy (DataError on bad data); rows are
    checked without the policy's tokenizer, so a `cut_tokens` cut and the too_long check wait for the stage."""
    import dataclasses

    plain = dataclasses.replace(cfg, cut_tokens=0, column=cfg.prompt_column)  # the column cut_tokens implies
    for split in dict.fromkeys(splits):
        load_prompts(plain, split)


# ------------------------------------------------------------------------- CLI


def _columns_config(columns: tuple[str | None, ...] | list[str | None] | None) -> dict[str, str | None]:
    if not columns:
        return {}
    names = [c.strip() if isinstance(c, str) and c.strip() else None for c in columns]
    if len(names) == 2:
        return {"chosen_column": names[0], "rejected_column": names[1]}
    if len(names) == 3:
        return {"prompt_column": names[0], "chosen_column": names[1], "rejected_column": names[2]}
    raise ValueError(f"columns: expected PROMPT,CHOSEN,REJECTED or CHOSEN,REJECTED, got {list(columns)}")


def _splits_to_check(cfg: DataConfig) -> list[str]:
    kind, path = _resolve(cfg)
    if kind == "file":
        return [cfg.train_split]  # validated whole (validate_command sets file_test_fraction 0)
    if kind == "dir":
        assert path is not None
        present = []
        for split in (cfg.train_split, cfg.test_split):
            try:
                _split_file(path, split)
                present.append(split)
            except _MissingSplit:
                pass
        if not present:
            raise DataError(f"{path}: no {cfg.train_split} or {cfg.test_split} split "
                            f"(looked for <split>{', <split>'.join(SPLIT_SUFFIXES)})")
        return present
    return [cfg.train_split, cfg.test_split]


def validate_command(
    dataset: str,
    on_bad_rows: str = "error",
    split: str | None = None,
    data_dir: str | None = None,
    columns: tuple[str | None, ...] | None = None,
    tokenizer: str | None = None,
    max_length: int | None = None,
) -> int:
    """``rlhf data PATH_OR_HUB_ID``: check the split(s) and print counts per problem kind.

    Every row is read (problems are collected as with ``skip``) so the counts are
    complete; with ``on_bad_rows="error"`` any problem then fails the command and the
    first one is printed to stderr as a one-line DataError message. `columns` is
    (prompt, chosen, rejected) or (chosen, rejected). Returns the exit code: 0 when
    the data is usable under the policy, 1 otherwise.
    """
    try:
        if on_bad_rows not in ON_BAD_ROWS:
            raise ValueError(f"on_bad_rows: must be one of {', '.join(ON_BAD_ROWS)}, got {on_bad_rows!r}")
        # A single file is validated whole: the train/test cut is a training-time matter.
        cfg = DataConfig(dataset=dataset, data_dir=data_dir, on_bad_rows="skip", file_test_fraction=0.0,
                         **_columns_config(columns))
        if max_length is not None and tokenizer is None:
            raise ValueError("max_length: the too_long check needs a tokenizer too")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length: must be positive, got {max_length}")
    except ValueError as exc:
        print(_one_line(str(exc)), file=sys.stderr)
        return 1
    tok = None
    if tokenizer is not None:
        try:
            from transformers import AutoTokenizer

            # Explicitly off: left out, transformers asks on stdin whether to run a folder's custom code.
            tok = AutoTokenizer.from_pretrained(tokenizer, trust_remote_code=False)
        except Exception as exc:  # any load failure is a usage problem here
            print(_one_line(f"could not load tokenizer {tokenizer!r}: {type(exc).__name__}: {exc}")[:400],
                  file=sys.stderr)
            return 1

    status = 0
    try:
        splits = [split] if split else _splits_to_check(cfg)
    except DataError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    for name in splits:
        try:
            _, report = load_preferences(cfg, name, tok, max_length if tok is not None else None)
        except _MissingSplit as exc:
            if split is None and name == cfg.test_split:  # an absent test split is fine when not asked for
                print(f"{name}: not present ({exc})")
                continue
            print(str(exc), file=sys.stderr)
            status = 1
            continue
        except DataError as exc:
            if exc.report is not None:
                print(exc.report.format())
            print(str(exc), file=sys.stderr)
            status = 1
            continue
        print(report.format())
        if on_bad_rows == "error" and report.n_problems:
            print(report.first_problem(), file=sys.stderr)
            status = 1
    return status


def validate_prompts_command(source: str, on_bad_rows: str = "error", split: str | None = None,
                             column: str | None = None, data_dir: str | None = None) -> int:
    """``rlhf data SOURCE --prompts``: check prompt-only data and print counts per problem kind.

    A single file is checked whole; a folder or Hub dataset split by split (train and test unless
    `split` is given). Every row is read; with ``on_bad_rows="error"`` any problem fails the command
    and the first one is printed to stderr. Returns the exit code (0: usable, 1: not)."""
    try:
        if on_bad_rows not in ON_BAD_ROWS:
            raise ValueError(f"on_bad_rows: must be one of {', '.join(ON_BAD_ROWS)}, got {on_bad_rows!r}")
        cfg = PromptsConfig(source=source, column=column, data_dir=data_dir, on_bad_rows="skip", test_fraction=0.0)
    except ValueError as exc:
        print(_one_line(str(exc)), file=sys.stderr)
        return 1
    path = shipped_prompt_sets().get(source) or Path(source).expanduser()
    splits = [split] if split else ([cfg.train_split] if path.is_file() else [cfg.train_split, cfg.test_split])
    status = 0
    for name in splits:
        try:
            _, report = load_prompts(cfg, name)
        except DataError as exc:
            if exc.report is not None:
                print(exc.report.format())
            print(str(exc), file=sys.stderr)
            status = 1
            continue
        print(report.format())
        if on_bad_rows == "error" and report.n_problems:
            print(report.first_problem(), file=sys.stderr)
            status = 1
    return status
