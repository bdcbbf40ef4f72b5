"""Context assembly: token budget, citations, ordering, and nothing dropped silently."""

from __future__ import annotations

import pytest

from ce_rerank_plugins.context import ContextChunk, approximate_token_count, assemble_context


def chunks(n: int, words: int = 10) -> list[ContextChunk]:
    return [
        ContextChunk(" ".join([f"w{i}"] * words), source=f"doc{i}.txt", position=i, score=float(n - i))
        for i in range(n)
    ]


def words(text: str) -> int:
    return len(text.split())


def test_budget_respected_and_overflow_reported():
    ranked = chunks(5, words=10)
    ctx = assemble_context(ranked, max_tokens=25, token_counter=words, separator="\n\n")
    # Each block is "[docN.txt#N]" + 10 words = 11 "words"; two fit in 25, the rest are reported.
    assert [c.source for c in ctx.included] == ["doc0.txt", "doc1.txt"]
    assert [c.source for c in ctx.dropped] == ["doc2.txt", "doc3.txt", "doc4.txt"]
    assert ctx.tokens == 22 <= ctx.budget == 25
    assert len(ctx.included) + len(ctx.dropped) == len(ranked)
    assert words(ctx.text) == ctx.tokens


def test_citations_are_stable_and_in_the_text():
    ctx = assemble_context(chunks(3), max_tokens=1000)
    assert ctx.text.startswith("[doc0.txt#0] w0")
    assert "[doc2.txt#2]" in ctx.text
    assert ContextChunk("t", source="a.pdf").citation == "a.pdf"
    assert ContextChunk("t", source="a.pdf", position="p3").citation == "a.pdf#p3"


def test_a_long_chunk_does_not_block_shorter_ones():
    ranked = [ContextChunk("x " * 100, "big", 0), ContextChunk("small text", "small", 0)]
    ctx = assemble_context(ranked, max_tokens=20, token_counter=words)
    assert [c.source for c in ctx.included] == ["small"]
    assert [c.source for c in ctx.dropped] == ["big"]


def test_edges_ordering_puts_the_best_at_both_ends():
    ctx = assemble_context(chunks(5), max_tokens=1000, ordering="edges")
    assert [c.position for c in ctx.included] == [0, 2, 4, 3, 1]
    relevance = assemble_context(chunks(5), max_tokens=1000)
    assert [c.position for c in relevance.included] == [0, 1, 2, 3, 4]


def test_pluggable_counter_changes_what_fits():
    ranked = chunks(4, words=5)
    by_chars = assemble_context(ranked, max_tokens=60, token_counter=len)
    by_words = assemble_context(ranked, max_tokens=60, token_counter=words)
    assert len(by_chars.included) < len(by_words.included)


def test_bad_input():
    with pytest.raises(ValueError, match="max_tokens must be a positive integer"):
        assemble_context(chunks(1), max_tokens=0)
    with pytest.raises(ValueError, match="ordering must be"):
        assemble_context(chunks(1), max_tokens=10, ordering="random")  # type: ignore[arg-type]
    dup = [ContextChunk("a", "s", 1), ContextChunk("b", "s", 1)]
    with pytest.raises(ValueError, match="citation labels must be unique"):
        assemble_context(dup, max_tokens=10)
    with pytest.raises(TypeError, match="must be ContextChunk objects"):
        assemble_context(["text"], max_tokens=10)  # type: ignore[list-item]
    assert assemble_context([], max_tokens=10).text == ""


def test_chunks_given_as_a_generator_are_all_placed():
    # The chunks are read twice (citations, then the budget); a generator must not come back empty.
    ctx = assemble_context((c for c in chunks(3)), max_tokens=1000)
    assert [c.position for c in ctx.included] == [0, 1, 2]
    assert ctx.text.startswith("[doc0.txt#0] w0")


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        (None, TypeError, "the text of chunk 'a#0' must be a string, got NoneType"),
        (b"raw bytes", TypeError, "the text of chunk 'a#0' must be a string, got bytes"),
        ("bad \udc80 text", ValueError, "the text of chunk 'a#0' is not valid Unicode text: character 4"),
    ],
)
def test_a_chunk_text_an_llm_cannot_take_is_named(text, error, message):
    with pytest.raises(error, match=message):
        assemble_context([*chunks(1), ContextChunk(text, "a", 0)], max_tokens=100)


@pytest.mark.parametrize("count", [float("nan"), -1, float("inf"), "3", True])
def test_a_token_counter_that_does_not_count_is_refused(count):
    # NaN would drop every chunk (as over budget); a negative count would overfill the budget.
    with pytest.raises(ValueError, match="token_counter must return a non-negative number"):
        assemble_context(chunks(2), max_tokens=100, token_counter=lambda _: count)


def test_a_fractional_token_estimate_rounds_up_so_the_budget_holds():
    quarter = assemble_context(chunks(3, words=1), max_tokens=13, token_counter=lambda t: len(t) / 4)
    # A block "[docN.txt#N] wN" is 15 characters: 3.75 -> 4 tokens, the separator 0.5 -> 1: 4 + 5 fit in 13,
    # a third block would not (unrounded, 3.75 + 4.25 + 4.25 = 12.25 would let it in).
    assert quarter.tokens == 9 and len(quarter.included) == 2 and isinstance(quarter.tokens, int)


def test_approximate_token_count():
    assert approximate_token_count("Lyon has 522,000 inhabitants.") == 7


def test_chunk_contract_reads_source_and_position_once_for_every_caller():
    from ce_rerank_plugins.context import POSITION_KEY, SOURCE_KEY, chunk_from_metadata

    meta = {SOURCE_KEY: "docs/lyon.md", POSITION_KEY: 2, "other": 1}
    chunk = chunk_from_metadata("t", meta, fallback_source="id-1", score=0.5)
    assert (chunk.citation, chunk.score, dict(chunk.metadata)) == ("docs/lyon.md#2", 0.5, meta)
    assert chunk_from_metadata("t", {}, fallback_source="id-1").citation == "id-1"
    assert chunk_from_metadata("t", {"source": "a.md", "position": "3.1"}, fallback_source="x").citation == "a.md#3.1"
    meta["other"] = 2
    assert chunk.metadata["other"] == 1  # copied, not shared


def test_repeated_citations_are_made_unique_and_nothing_is_dropped():
    from ce_rerank_plugins.context import with_unique_citations

    chunks_in = [
        ContextChunk("a", "lyon.md"),
        ContextChunk("b", "lyon.md"),
        ContextChunk("c", "lyon.md", "~2"),
        ContextChunk("d", "paris.md", 1),
        ContextChunk("e", "paris.md", 1),
    ]
    out = with_unique_citations(chunks_in)
    labels = [c.citation for c in out]
    assert [c.text for c in out] == ["a", "b", "c", "d", "e"]
    assert len(set(labels)) == 5
    assert labels[0] == "lyon.md" and labels[3] == "paris.md#1" and labels[4] == "paris.md#1~2"
    context = assemble_context(out, max_tokens=500)
    assert len(context.included) == 5
