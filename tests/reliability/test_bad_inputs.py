"""The bad-input matrix: every public entry point, each wrong input, the error type and message it gives."""

from __future__ import annotations

import pytest

from ce_rerank_plugins import CrossEncoderReranker, IndexFormatError
from ce_rerank_plugins.context import ContextChunk, assemble_context
from ce_rerank_plugins.retrieval import Document, FaissIndex

SURROGATE = "bad \ud800 text"


@pytest.fixture(scope="module")
def reranker(tiny_ce_path) -> CrossEncoderReranker:
    return CrossEncoderReranker(tiny_ce_path)


@pytest.fixture(scope="module")
def index(sample_index) -> FaissIndex:
    return sample_index


@pytest.fixture(scope="module")
def compressor(tiny_ce_path):
    from ce_rerank_plugins.integrations.langchain import CrossEncoderCompressor

    return CrossEncoderCompressor(model=str(tiny_ce_path))


@pytest.fixture(scope="module")
def postprocessor(tiny_ce_path):
    from ce_rerank_plugins.integrations.llamaindex import CrossEncoderNodePostprocessor

    return CrossEncoderNodePostprocessor(model=str(tiny_ce_path))


def _lc_docs(texts):
    from langchain_core.documents import Document as LCDocument

    return [LCDocument(page_content=t) for t in texts]


def _nodes(texts):
    from llama_index.core.schema import NodeWithScore, TextNode

    return [NodeWithScore(node=TextNode(text=t), score=0.0) for t in texts]


CORE = [
    ("rank: bare string", lambda r: r.rank("q", "abc"), TypeError, "documents must be a list of strings"),
    ("rank: None document", lambda r: r.rank("q", ["a", None]), TypeError, r"documents\[1\] must be a string"),
    ("rank: bytes query", lambda r: r.rank(b"q", ["a"]), TypeError, "query must be a string"),
    ("rank: empty query", lambda r: r.rank("", ["a"]), ValueError, r"query is empty \(''\)"),
    ("rank: blank query", lambda r: r.rank(" \n\t", []), ValueError, "query is empty"),
    ("rank: surrogate", lambda r: r.rank("q", ["a", SURROGATE]), ValueError, r"documents\[1\] is not valid Unicode"),
    ("rank: NaN threshold", lambda r: r.rank("q", ["a"], score_threshold=float("nan")), ValueError, "is NaN"),
    ("rank: str threshold", lambda r: r.rank("q", ["a"], score_threshold="0.5"), TypeError, "must be a number"),
    ("rank: top_n 0", lambda r: r.rank("q", ["a"], top_n=0), ValueError, "top_n must be >= 1"),
    ("rank: top_n True", lambda r: r.rank("q", ["a"], top_n=True), TypeError, "top_n must be an int"),
    ("rank: min_keep -1", lambda r: r.rank("q", ["a"], min_keep=-1), ValueError, "min_keep must be a non-negative"),
    ("predict: bare string", lambda r: r.predict("ab"), TypeError, "pairs must be a list"),
    ("predict: triple", lambda r: r.predict([("a", "b", "c")]), TypeError, r"pairs\[0\] must be a \(text_a, text_b\)"),
    ("predict: surrogate", lambda r: r.predict([(SURROGATE, "b")]), ValueError, r"pairs\[0\]\[0\] is not valid"),
    ("classify: reranker", lambda r: r.classify([("a", "b")]), ValueError, "needs a model with num_labels > 1"),
]


@pytest.mark.parametrize(("case", "call", "error", "match"), CORE, ids=[c[0] for c in CORE])
def test_core(reranker, case, call, error, match):
    with pytest.raises(error, match=match):
        call(reranker)


INDEX = [
    ("add: bare string", lambda ix: ix.add("hello"), TypeError, "texts must be a list, not a single str"),
    ("add: ids string", lambda ix: ix.add(["a", "b"], ids="ab"), TypeError, "ids must be a list"),
    ("add: int text", lambda ix: ix.add([1]), TypeError, r"texts\[0\] must be a string"),
    ("add: surrogate", lambda ix: ix.add([SURROGATE]), ValueError, r"texts\[0\] is not valid Unicode"),
    ("add: None metadata", lambda ix: ix.add(["a"], metadatas=[None]), TypeError, "must be a dict, got NoneType"),
    ("add: int key", lambda ix: ix.add(["a"], metadatas=[{1: "x"}]), TypeError, "metadata keys must be strings"),
    ("add: NaN value", lambda ix: ix.add(["a"], metadatas=[{"x": float("nan")}]), ValueError, "NaN or infinity"),
    ("add: length", lambda ix: ix.add(["a"], ids=["x", "y"]), ValueError, "got 2 ids for 1 texts"),
    ("add_documents: str", lambda ix: ix.add_documents(["a"]), TypeError, r"documents\[0\] must be a Document"),
    ("add_documents: dup", lambda ix: ix.add_documents([Document("x", "a")] * 2), ValueError, "duplicate document id"),
    ("delete: bare string", lambda ix: ix.delete("lyon-00"), TypeError, "ids must be a list"),
    ("delete: unknown", lambda ix: ix.delete(["nope"]), KeyError, "unknown document ids"),
    ("delete: a list as an id", lambda ix: ix.delete([["lyon-00"]]), TypeError, r"ids\[0\] must be a string"),
    ("search: k 0", lambda ix: ix.search("q", k=0), ValueError, "k must be a positive integer"),
    ("search: k 1.5", lambda ix: ix.search("q", k=1.5), ValueError, "k must be a positive integer"),
    ("search: where str", lambda ix: ix.search("q", where="a.md"), TypeError, "where must be a dict"),
    ("search: None query", lambda ix: ix.search(None), TypeError, "query must be a string"),
    ("search: empty query", lambda ix: ix.search("  "), ValueError, "query is empty"),
    ("search_many: empty", lambda ix: ix.search_many(["q", ""]), ValueError, r"queries\[1\] is empty"),
    ("search_many: str", lambda ix: ix.search_many("q"), TypeError, "use search\\(\\) for one query"),
    ("search: surrogate", lambda ix: ix.search(SURROGATE), ValueError, "query is not valid Unicode"),
]


@pytest.mark.parametrize(("case", "call", "error", "match"), INDEX, ids=[c[0] for c in INDEX])
def test_index(index, case, call, error, match):
    before = sorted(index.ids)
    with pytest.raises(error, match=match):
        call(index)
    assert sorted(index.ids) == before  # nothing changed


def test_index_save_and_load(index, tmp_path):
    (tmp_path / "notes.md").write_text("mine")
    with pytest.raises(IndexFormatError, match="refusing to save an index into"):
        index.save(tmp_path)
    with pytest.raises(IndexFormatError, match="is not a saved index"):
        FaissIndex.load(tmp_path)
    with pytest.raises(IndexFormatError, match="the directory does not exist"):
        FaissIndex.load(tmp_path / "missing")


CONTEXT = [
    ("budget 0", lambda: assemble_context([], max_tokens=0), ValueError, "max_tokens must be a positive integer"),
    ("strings", lambda: assemble_context(["x"], max_tokens=5), TypeError, "must be ContextChunk objects"),
    ("ordering", lambda: assemble_context([], max_tokens=5, ordering="x"), ValueError, "ordering must be"),
    (
        "duplicates",
        lambda: assemble_context([ContextChunk("a", "s", 1), ContextChunk("b", "s", 1)], max_tokens=50),
        ValueError,
        "citation labels must be unique",
    ),
]


@pytest.mark.parametrize(("case", "call", "error", "match"), CONTEXT, ids=[c[0] for c in CONTEXT])
def test_context(case, call, error, match):
    with pytest.raises(error, match=match):
        call()


ADAPTERS = [
    ("lc: surrogate", lambda c, p: c.compress_documents(_lc_docs(["a", SURROGATE]), "q"), ValueError, "not valid"),
    ("lc: surrogate query", lambda c, p: c.compress_documents(_lc_docs(["a"]), SURROGATE), ValueError, "query is"),
    ("lc: empty query", lambda c, p: c.compress_documents(_lc_docs(["a"]), ""), ValueError, "query is empty"),
    ("li: empty query", lambda c, p: p.postprocess_nodes(_nodes(["a"]), query_str=" "), ValueError, "query is empty"),
    ("li: surrogate", lambda c, p: p.postprocess_nodes(_nodes([SURROGATE]), query_str="q"), ValueError, "not valid"),
]


@pytest.mark.parametrize(("case", "call", "error", "match"), ADAPTERS, ids=[c[0] for c in ADAPTERS])
def test_adapters(compressor, postprocessor, case, call, error, match):
    with pytest.raises(error, match=match):
        call(compressor, postprocessor)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"score_threshold": float("nan")}, ValueError, "score_threshold is NaN"),
        ({"min_keep": -1}, ValueError, "min_keep must be a non-negative integer"),
        ({"top_n": 0}, ValueError, "top_n must be >= 1"),
        ({"topn": 3}, ValueError, "Extra inputs are not permitted"),
    ],
)
def test_adapter_settings(tiny_ce_path, kwargs, error, match):
    from ce_rerank_plugins.integrations.langchain import CrossEncoderCompressor
    from ce_rerank_plugins.integrations.llamaindex import CrossEncoderNodePostprocessor

    for adapter in (CrossEncoderCompressor, CrossEncoderNodePostprocessor):
        with pytest.raises(error, match=match):
            adapter(model=str(tiny_ce_path), **kwargs)
