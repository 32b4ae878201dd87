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
