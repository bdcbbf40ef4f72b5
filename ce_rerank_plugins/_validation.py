"""Input checks shared by the core, the index and the adapters, so every entry point names a problem the same way."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["check_items", "check_query", "check_seconds", "check_sequence", "check_text"]


def check_text(value: object, where: str) -> str:
    """``value`` if it is a string that UTF-8 can encode; else a TypeError/ValueError naming ``where``.

    A lone UTF-16 surrogate (from a bad JSON decode or a PDF extractor) cannot be tokenised; it is
    reported with its position instead of failing deep inside the tokenizer.
    """
    if not isinstance(value, str):
        msg = f"{where} must be a string, got {type(value).__name__} ({value!r:.60})"
        raise TypeError(msg)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        message = (
            f"{where} is not valid Unicode text: character {exc.start} is a lone surrogate "
            f"({value[exc.start]!r}); clean it first, e.g. text.encode('utf-8', 'replace').decode('utf-8')"
        )
        raise ValueError(message) from None
    return value


def check_query(value: object, where: str = "query") -> str:
    """``value`` if it is text (see :func:`check_text`) with something besides whitespace in it.

    An empty query (a missing form field, a template variable left unfilled) would still be scored,
    and every passage ranked by the model's prior alone, so it is refused instead of answered wrongly.
    """
    text = check_text(value, where)
    if not text.strip():
        msg = f"{where} is empty ({text!r}); pass the question to rank the passages for"
        raise ValueError(msg)
    return text


def check_sequence(value: object, name: str) -> list[Any]:
    """``value`` as a list, refusing a bare string (which would be split into characters) and non-sequences."""
    if isinstance(value, (str, bytes)):
        msg = f"{name} must be a list, not a single {type(value).__name__}; wrap it: [{value!r:.40}]"
        raise TypeError(msg)
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        msg = f"{name} must be a list, got {type(value).__name__}"
        raise TypeError(msg)
    return list(value)


def check_items(value: object, name: str, kind: type, kind_name: str) -> list[Any]:
    """``value`` as a list of ``kind`` objects, refusing a bare string and naming an item of another type.

    The list is read once, so a generator is not used up by a first look (an event, a check) and found
    empty by the ranking.
    """
    items = check_sequence(value, name)
    for i, item in enumerate(items):
        if not isinstance(item, kind):
            msg = f"{name} must be {kind_name} objects, but item {i} is a {type(item).__name__} ({item!r:.60})"
            raise TypeError(msg)
    return items


def check_seconds(value: object, name: str) -> float:
    """``value`` as a float if it is a positive, finite number of seconds; else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        msg = f"{name} must be a positive, finite number of seconds, got {value!r}"
        raise ValueError(msg)
    return float(value)
