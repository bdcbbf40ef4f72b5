"""One helper for optional imports, so every missing extra fails the same clear way."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str, *, purpose: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that names the extra to install.

    Args:
        module: Dotted module name, e.g. ``"faiss"``.
        extra: The ``ce-rerank-plugins`` extra that provides it, e.g. ``"faiss"``.
        purpose: What needs it, used in the message (e.g. ``"FaissIndex"``).

    Returns:
        The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = (
            f"{purpose} needs the optional dependency {module!r}, which is not installed. "
            f"Install it with: pip install 'ce-rerank-plugins[{extra}]'"
        )
        raise ImportError(message) from exc
