"""Integer codes for the rows of a candidate table: distinct values by counting
(:func:`small_unique`) and rows alike in several integer columns (:func:`row_codes`), the
search's bookkeeping without sorting half a million keys."""

from __future__ import annotations

import numpy as np


def small_unique(values: np.ndarray):
    """``np.unique(values, return_index=True, return_inverse=True)`` for non-negative integers
    of a modest range, by counting instead of sorting (the table's columns: a sort of half a
    million keys per call was a third of the search's bookkeeping)."""
    values = np.asarray(values, dtype=np.int64).ravel()
    top = int(values.max(initial=-1)) + 1
    if top > 8 * len(values) + 1024:
        return np.unique(values, return_index=True, return_inverse=True)
    first = np.full(top, len(values), dtype=np.int64)
    first[values[::-1]] = np.arange(len(values) - 1, -1, -1)  # the last write: the first index
    present = first < len(values)
    uniq = np.nonzero(present)[0]
    rank = np.cumsum(present) - 1
    return uniq, first[uniq], rank[values]


def row_codes(*columns: np.ndarray) -> np.ndarray:
    """Per row, an integer code (below the number of rows) of its values in ``columns``
    (non-negative integers): rows alike in every column share one, others differ."""
    n = len(columns[0])
    code, size = np.zeros(n, dtype=np.int64), 1
    for col in columns:
        top = int(col.max(initial=-1)) + 1
        if size * top > 8 * n + 1024:  # keep the mixed radix in small_unique's counting range
            uniq, _, code = small_unique(code)
            code, size = code.ravel(), len(uniq)
        code, size = code * top + col, size * top
    return small_unique(code)[2].ravel()


def unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(a, axis=0, return_inverse=True)`` (up to the order of the distinct rows)
    for a matrix of non-negative integers, by :func:`row_codes`."""
    _, first, inv = small_unique(row_codes(*np.asarray(a).T))
    return a[first], inv.ravel()


__all__ = ["row_codes", "small_unique", "unique_rows"]
