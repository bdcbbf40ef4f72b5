"""Exceptions raised by ce_rerank_plugins.

The hierarchy is small on purpose; callers catch these where they need to tell our failures apart:

- ``CERerankError`` (base, a ``RuntimeError``)
  - ``ModelLoadError``: a model could not be found or loaded (wrong path, offline hub).
  - ``ScoringError``: the model produced unusable scores (NaN or infinite).
  - ``IndexFormatError``: a saved index is missing files, corrupt, or from another model / version.

Bad arguments raise the built-in ``ValueError`` / ``TypeError``.
"""

from __future__ import annotations

__all__ = ["CERerankError", "IndexFormatError", "ModelLoadError", "ScoringError"]


class CERerankError(RuntimeError):
    """Base class of the errors this package raises on its own."""


class ModelLoadError(CERerankError):
    """A model could not be found or loaded."""


class ScoringError(CERerankError):
    """The model returned scores that cannot be ranked (NaN or infinite)."""


class IndexFormatError(CERerankError):
    """A saved FAISS index directory is missing, corrupt, or does not match what was asked for."""
