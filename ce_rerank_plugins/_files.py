"""File helpers shared by the on-disk formats (the FAISS index directory, the ONNX cache) and Ray."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["portable_model_name", "sha256_file"]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def portable_model_name(model: str | os.PathLike[str]) -> str:
    """``model`` as other processes and nodes should see it.

    An existing local path is made absolute (they do not share this process's working directory);
    anything else (a Hub id) is unchanged.
    """
    return str(Path(model).resolve()) if Path(model).exists() else os.fspath(model)
