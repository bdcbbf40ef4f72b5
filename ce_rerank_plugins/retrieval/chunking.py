"""Token-window chunking with overlap, measured with the bi-encoder's own tokenizer.

Chunks sized in the bi-encoder's tokens fit what it reads (all-MiniLM-L6-v2 reads 256 tokens) and,
with a question added, the cross-encoder's ``max_length``; each chunk keeps its source and character
offsets so a citation can point back into the original text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Chunk:
    """A piece of a source text and where it came from (``source``, ``chunk_index``, ``start``, ``end``)."""

    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


class TokenChunker:
    """Split texts into windows of at most ``chunk_tokens`` tokens, consecutive windows sharing ``overlap``.

    Args:
        tokenizer: A Hugging Face fast tokenizer (offsets are needed), e.g. ``Embedder().tokenizer``.
        chunk_tokens: Tokens per chunk.
        overlap: Tokens repeated between consecutive chunks, so a sentence cut at a border survives whole.
    """

    def __init__(self, tokenizer: Any, *, chunk_tokens: int = 200, overlap: int = 40) -> None:
        if chunk_tokens < 1:
            msg = f"chunk_tokens must be >= 1, got {chunk_tokens}"
            raise ValueError(msg)
        if not 0 <= overlap < chunk_tokens:
            msg = f"overlap must be >= 0 and < chunk_tokens ({chunk_tokens}), got {overlap}"
            raise ValueError(msg)
        if not getattr(tokenizer, "is_fast", False):
            msg = "TokenChunker needs a fast (Rust) tokenizer that returns character offsets"
            raise TypeError(msg)
        self.tokenizer = tokenizer
        self.chunk_tokens = chunk_tokens
        self.overlap = overlap

    def split(self, text: str, *, source: str = "", metadata: Mapping[str, Any] | None = None) -> list[Chunk]:
        """Chunks of ``text``; an empty or blank text gives no chunks."""
        if not isinstance(text, str):
            msg = f"text must be a string, got {type(text).__name__}"
            raise TypeError(msg)
        if not text.strip():
            return []
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        base = dict(metadata or {})
        step = self.chunk_tokens - self.overlap
        chunks: list[Chunk] = []
        for start in range(0, len(offsets), step):
            stop = min(start + self.chunk_tokens, len(offsets))
            begin, end = offsets[start][0], offsets[stop - 1][1]
            meta = {**base, "source": source, "chunk_index": len(chunks), "start": begin, "end": end}
            chunks.append(Chunk(text[begin:end], meta))
            if stop == len(offsets):
                break
        return chunks
