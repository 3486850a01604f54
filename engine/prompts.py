"""Prompts as the user types them: one parser for the app's text box, the CLI and data set arguments."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

_SEPARATORS = re.compile(r"[\n,;]")


def parse_prompts(text: str | Sequence[str] | None, extra: Iterable[str] = ()) -> list[str]:
    """Prompts from free text (one per line, or separated by commas or semicolons) or a list, plus `extra`.

    Stripped, blanks dropped, repeats dropped (first order kept):
    "segment crack, segment taping area" -> ["segment crack", "segment taping area"].
    A list is taken item by item (an item is never split). Raises ValueError when nothing is left.
    """
    items = _SEPARATORS.split(text) if isinstance(text, str) else list(text or ())
    for item in [*items, *extra]:
        if not isinstance(item, str):
            raise ValueError(f"Prompts must be text, got {item!r}.")
    out = list(dict.fromkeys(p.strip() for p in [*items, *extra] if p.strip()))
    if not out:
        raise ValueError("No prompt given: type what to find (one per line or comma-separated), e.g. "
                         "'segment crack'.")
    return out


def as_prompt_list(prompts: str | Sequence[str]) -> list[str]:
    """Prompts given as one prompt or a list (never split at commas): distinct, stripped, non-empty."""
    return parse_prompts([prompts] if isinstance(prompts, str) else prompts)


def parse_data_arg(text: str) -> tuple[str, tuple[str, ...]]:
    """Parse the CLI form `PATH=prompt one,prompt two` into (path, prompts); `PATH` alone -> (path, ()).

    Splits at the first "="; quotes around the path or the prompt list are dropped, blank prompts ignored.
    """
    text = text.strip()
    path, equals, rest = text.partition("=")
    path = _unquote(path)
    if not path:
        raise ValueError(f"No data set path in {text!r}; write PATH or PATH=prompt1,prompt2.")
    if not equals:
        return path, ()
    prompts = tuple(p for p in (_unquote(part) for part in _unquote(rest).split(",")) if p)
    if not prompts:
        raise ValueError(f"No prompts after '=' in {text!r}; write PATH=prompt1,prompt2 or just PATH.")
    return path, prompts


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text
