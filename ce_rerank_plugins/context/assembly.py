"""Assembling the LLM's context from ranked chunks: a token budget, stable citations, nothing dropped silently."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Literal

from ce_rerank_plugins._validation import check_items, check_text

TokenCounter = Callable[[str], int]
"""Counts a text's tokens; pass your LLM's tokenizer for an exact budget."""
Ordering = Literal["relevance", "edges"]
"""Context order: ``relevance`` (best first) or ``edges`` (best at both ends)."""

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def approximate_token_count(text: str) -> int:
    """Words and punctuation marks: close to (and usually above) a WordPiece/BPE count for English.

    Pass the model's own counter (e.g. ``lambda t: len(tiktoken_enc.encode(t))``) for an exact budget.
    """
    return len(_TOKEN.findall(text))


@dataclass(frozen=True)
class ContextChunk:
    """A ranked chunk to place in the context.

    Attributes:
        text: The chunk's text.
        source: Where it came from (file name, URL, document id).
        position: Where in the source (chunk index, page, character offset); part of the citation.
        score: The rerank score (higher is better); used for the "edges" ordering.
        metadata: Anything else to carry through.
    """

    text: str
    source: str
    position: int | str | None = None
    score: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def citation(self) -> str:
        """A stable label: ``source#position`` (or the source alone)."""
        return f"{self.source}#{self.position}" if self.position is not None else self.source


#: The chunk metadata contract. Every chunk the package makes (``TokenChunker``, ``ce-rerank index``)
#: carries ``source`` (the path relative to the indexed root, or the record's own source) and
#: ``chunk_index`` (its citation position within that source); the pipeline and both adapters read
#: them back through :func:`chunk_from_metadata` only.
SOURCE_KEY = "source"
"""Metadata key of a chunk's source (a file path relative to the indexed folder, or a record's own source)."""
POSITION_KEY = "chunk_index"
"""Metadata key of a chunk's position within its source, used in its citation."""
#: Written by ce-rerank-plugins 0.1's ``ce-rerank index``; still read, never written.
_LEGACY_POSITION_KEY = "position"


def chunk_from_metadata(
    text: str,
    metadata: Mapping[str, Any],
    *,
    fallback_source: str,
    score: float | None = None,
    source_key: str = SOURCE_KEY,
    position_key: str = POSITION_KEY,
) -> ContextChunk:
    """A :class:`ContextChunk` from a chunk's text and metadata, per the chunk contract above.

    Args:
        text: The chunk's text.
        metadata: Its metadata (copied, never modified).
        fallback_source: The source to cite when the metadata has none (e.g. the document id).
        score: The rerank score, if any.
        source_key: Metadata key of the source.
        position_key: Metadata key of the position within the source.
    """
    source = metadata.get(source_key)
    position = metadata.get(position_key)
    if position is None and position_key == POSITION_KEY:
        position = metadata.get(_LEGACY_POSITION_KEY)
    if position is not None and not isinstance(position, (int, str)):
        position = str(position)
    return ContextChunk(
        text=text,
        source=str(source) if source not in (None, "") else fallback_source,
        position=position,
        score=score,
        metadata=dict(metadata),
    )


def with_unique_citations(chunks: Sequence[ContextChunk]) -> list[ContextChunk]:
    """The chunks, with a repeated citation made unique by a ``~2``, ``~3``... suffix, in the order given.

    Two chunks of one source without positions (or with equal ones) would otherwise share a label and
    an LLM could not tell which one it cites. The first keeps its label; nothing is dropped.
    """
    counts: dict[str, int] = {}
    out = []
    for chunk in chunks:
        n = counts[chunk.citation] = counts.get(chunk.citation, 0) + 1
        if n == 1:
            out.append(chunk)
            continue
        position = f"{chunk.position}~{n}" if chunk.position is not None else f"~{n}"
        renamed = ContextChunk(chunk.text, chunk.source, position, chunk.score, chunk.metadata)
        while renamed.citation in counts:  # a label like "a#~2" may exist already
            position = f"{position}~"
            renamed = ContextChunk(chunk.text, chunk.source, position, chunk.score, chunk.metadata)
        counts[renamed.citation] = 1
        out.append(renamed)
    return out


@dataclass(frozen=True)
class AssembledContext:
    """The context text and what went into it.

    Attributes:
        text: The context, one cited block per chunk.
        included: Chunks placed, in the order they appear.
        dropped: Chunks that did not fit the budget, best first (reported, never silently lost).
        tokens: Tokens used, as counted by the token counter.
        budget: The budget it was built for.
    """

    text: str
    included: tuple[ContextChunk, ...]
    dropped: tuple[ContextChunk, ...]
    tokens: int
    budget: int


def _count(token_counter: TokenCounter, text: str) -> int:
    """``token_counter(text)`` in whole tokens (an estimate like ``len(text) / 4`` rounds up, so the budget holds).

    Refused unless a finite, non-negative number: NaN would drop every chunk, a negative count overfill the budget.
    """
    count = token_counter(text)
    if isinstance(count, bool) or not isinstance(count, Real) or not math.isfinite(count) or count < 0:
        msg = f"token_counter must return a non-negative number, got {count!r} for {text[:40]!r}"
        raise ValueError(msg)
    return int(count) if isinstance(count, Integral) else math.ceil(count)


def _edges_order(chunks: Sequence[ContextChunk]) -> list[ContextChunk]:
    # Best at the start, second best at the end, and so on inwards: long-context models attend most to
    # the two ends ("lost in the middle").
    front: list[ContextChunk] = []
    back: list[ContextChunk] = []
    for i, chunk in enumerate(chunks):
        (front if i % 2 == 0 else back).append(chunk)
    return front + back[::-1]


def assemble_context(
    chunks: Iterable[ContextChunk],
    *,
    max_tokens: int,
    token_counter: TokenCounter = approximate_token_count,
    ordering: Ordering = "relevance",
    template: str = "[{citation}] {text}",
    separator: str = "\n\n",
) -> AssembledContext:
    """Fill a token budget with the best chunks, each labelled with its citation.

    Chunks are taken in the order given (most relevant first). A chunk that does not fit is reported
    in ``dropped`` and the next ones are still tried, so a long chunk does not block shorter ones.

    Args:
        chunks: Ranked chunks, best first.
        max_tokens: The budget for the whole context, separators included.
        token_counter: Counts tokens of a string (default: an approximation, see
            :func:`approximate_token_count`).
        ordering: ``"relevance"`` keeps best-first; ``"edges"`` puts the best at both ends.
        template: How one chunk is written; receives ``citation``, ``text``, ``source``, ``position``.
        separator: Between chunks.

    Raises:
        ValueError: ``max_tokens < 1``, an unknown ordering, repeated citations, a text UTF-8 cannot
            encode, or a token count that is not a non-negative number.
        TypeError: ``chunks`` is not a list of :class:`ContextChunk` with string texts.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        msg = f"max_tokens must be a positive integer, got {max_tokens!r}"
        raise ValueError(msg)
    if ordering not in ("relevance", "edges"):
        msg = f"ordering must be 'relevance' or 'edges', got {ordering!r}"
        raise ValueError(msg)
    chunks = check_items(chunks, "chunks", ContextChunk, "ContextChunk")  # read once, not once per pass
    seen: dict[str, int] = {}
    for chunk in chunks:
        check_text(chunk.text, f"the text of chunk {chunk.citation!r}")  # never "None" or "b'...'" in a prompt
        seen[chunk.citation] = seen.get(chunk.citation, 0) + 1
    duplicates = [c for c, n in seen.items() if n > 1]
    if duplicates:
        msg = f"citation labels must be unique, but these repeat: {duplicates[:5]}"
        raise ValueError(msg)
    separator_tokens = _count(token_counter, separator) if separator else 0
    included: list[ContextChunk] = []
    dropped: list[ContextChunk] = []
    used = 0
    for chunk in chunks:
        block = template.format(citation=chunk.citation, text=chunk.text, source=chunk.source, position=chunk.position)
        cost = _count(token_counter, block) + (separator_tokens if included else 0)
        if used + cost <= max_tokens:
            included.append(chunk)
            used += cost
        else:
            dropped.append(chunk)
    placed = _edges_order(included) if ordering == "edges" else included
    text = separator.join(
        template.format(citation=c.citation, text=c.text, source=c.source, position=c.position) for c in placed
    )
    return AssembledContext(text, tuple(placed), tuple(dropped), used, max_tokens)
