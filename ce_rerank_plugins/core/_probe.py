"""A small fixed probe set: a faster inference path is accepted only if it ranks these like fp32."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ce_rerank_plugins.core._scores import FloatArray

#: Minimum Spearman correlation with fp32 on the probe set for a faster path to be kept.
DEFAULT_MIN_PROBE_SPEARMAN = 0.99

_trying_paths: contextvars.ContextVar[bool] = contextvars.ContextVar("ce_rerank_trying_paths", default=False)


@contextlib.contextmanager
def trying_paths() -> Iterator[None]:
    """While ``precision="auto"`` tries paths nobody asked for, a path failing its probe is news, not a warning.

    The measurement records each refusal and its reason; only a path the user asked for warns.
    """
    token = _trying_paths.set(True)
    try:
        yield
    finally:
        _trying_paths.reset(token)


def trying_paths_now() -> bool:
    """True inside :func:`trying_paths`."""
    return _trying_paths.get()


PROBE_QUERIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "How many people live in Lyon?",
        (
            "Lyon had about 522,000 inhabitants in the city proper at the last census.",
            "The metropolitan area of Lyon counts roughly 2.3 million residents.",
            "Lyon is known for its traditional bouchons and silk-weaving history.",
            "The Rhône and the Saône rivers meet in the centre of Lyon.",
            "Population growth in French cities slowed during the 1970s.",
        ),
    ),
    (
        "What causes the seasons on Earth?",
        (
            "Earth's axis is tilted by about 23.4 degrees, so each hemisphere receives more direct sunlight "
            "for part of the year.",
            "The distance between Earth and the Sun changes slightly over the year, but this is not why seasons occur.",
            "Autumn leaves change colour as chlorophyll breaks down.",
            "A sidereal day lasts about 23 hours and 56 minutes.",
            "Monsoon seasons bring heavy rain to South Asia.",
        ),
    ),
    (
        "how do vaccines train the immune system",
        (
            "Vaccines expose the immune system to a harmless form of an antigen so that memory B and T cells form.",
            "Booster doses raise antibody levels that have waned over time.",
            "The first smallpox vaccine was developed by Edward Jenner in 1796.",
            "Cold chains keep many vaccines between 2 and 8 degrees Celsius.",
            "White blood cells circulate through the lymphatic system.",
        ),
    ),
    (
        "python list remove duplicates keep order",
        (
            "Use dict.fromkeys(items) and convert back to a list to drop duplicates while keeping the first "
            "occurrence order.",
            "A set removes duplicates but does not preserve insertion order.",
            "Lists in Python are mutable sequences that can hold mixed types.",
            "The sorted() built-in returns a new sorted list.",
            "Tuples are immutable and hashable when their items are hashable.",
        ),
    ),
)


@dataclass(frozen=True)
class ProbeAgreement:
    """How closely a candidate path's scores follow the fp32 reference on the probe set."""

    min_spearman: float
    top1_agree: bool
    max_abs_diff: float

    def acceptable(self, min_spearman: float) -> bool:
        """True when every probe query keeps its best passage and ranks at Spearman >= ``min_spearman``."""
        return self.top1_agree and self.min_spearman >= min_spearman


def probe_pairs() -> list[tuple[str, str]]:
    """All probe pairs, query by query, in a fixed order."""
    return [(query, passage) for query, passages in PROBE_QUERIES for passage in passages]


def compare_to_reference(reference: FloatArray, candidate: FloatArray) -> ProbeAgreement:
    """Compare per-query rankings of two ``(n, num_labels)`` score arrays over ``probe_pairs()``."""
    from scipy.stats import spearmanr  # on use: importing scipy.stats costs ~0.5 s

    ref = reference[:, 0] if reference.ndim == 2 else reference
    cand = candidate[:, 0] if candidate.ndim == 2 else candidate
    spearmans: list[float] = []
    top1 = True
    start = 0
    for _, passages in PROBE_QUERIES:
        stop = start + len(passages)
        r, c = ref[start:stop], cand[start:stop]
        rho = float(spearmanr(r, c).statistic) if np.ptp(r) > 0 and np.ptp(c) > 0 else 1.0
        spearmans.append(rho if np.isfinite(rho) else -1.0)
        top1 = top1 and int(np.argmax(r)) == int(np.argmax(c))
        start = stop
    return ProbeAgreement(min(spearmans), top1, float(np.max(np.abs(reference - candidate))))
