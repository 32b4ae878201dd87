"""How a card writes a value: `fmt` (the one way a number is printed), `numbers_in`
(the numbers a card states, as `rlhf reproduce` compares them), and Markdown-safe
table cells and code blocks."""

from __future__ import annotations

import math
import re
from typing import Any


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


def fmt_count(n: int) -> str:
    """A count the way model sizes are written: three significant digits and K, M or B (1,113,856 ->
    "1.11M", 124,439,808 -> "124M"); below 1,000 as it is."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def ci_decimals(lo: Any, hi: Any) -> int | None:
    """The decimals that show an interval's precision: two significant digits of its half-width (a value
    0.8312 in [0.7954, 0.8671] prints as 0.831; in [0.53, 1.13] as 0.83). None without a usable interval."""
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (lo, hi)):
        return None
    half = (hi - lo) / 2
    if not half > 0:
        return None
    return min(max(1 - math.floor(math.log10(half)), 0), 6)


def fmt_at(x: float, decimals: int | None) -> str:
    """`x` with `decimals` decimals (`fmt` when None); never "-0.00"."""
    if decimals is None:
        return fmt(x)
    text = f"{x:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def fmt_ci(value: float, lo: Any, hi: Any) -> str:
    """`value [lo, hi]` rounded to the interval's precision (`ci_decimals`); `value` alone without one."""
    d = ci_decimals(lo, hi)
    if d is None:
        return fmt(value) if lo is None or hi is None else f"{fmt(value)} [{fmt(lo)}, {fmt(hi)}]"
    return f"{fmt_at(value, d)} [{fmt_at(lo, d)}, {fmt_at(hi, d)}]"


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
