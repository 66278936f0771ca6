"""Column-valued layer templates: a branch is answered only when every row agrees."""

from __future__ import annotations

import pytest

from simulator.search.columns import column


def test_a_column_answers_a_branch_only_when_every_row_agrees():
    t = column([2, 4, 8])
    assert bool(t > 1) and not bool(t > 8)
    with pytest.raises(ValueError, match="structure_key"):
        bool(t > 2)


def test_small_unique_is_numpy_unique():
    import numpy as np

    from simulator.search.timing import small_unique

    rng = np.random.default_rng(3)
    for values in (rng.integers(0, 50, 1000), rng.integers(0, 10**9, 300), np.array([7]),
                   np.array([], dtype=np.int64)):
        got = small_unique(values)
        want = np.unique(values, return_index=True, return_inverse=True)
        for g, w in zip(got, want):
            assert np.array_equal(np.ravel(g), np.ravel(w))
