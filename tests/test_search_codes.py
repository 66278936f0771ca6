"""simulator.search.codes: counting uniques and row codes equal numpy's sorting ones."""

from __future__ import annotations

import numpy as np

from simulator.search.codes import small_unique, unique_rows


def test_small_unique_is_numpy_unique():
    rng = np.random.default_rng(3)
    for values in (rng.integers(0, 50, 1000), rng.integers(0, 10**9, 300), np.array([7]),
                   np.array([], dtype=np.int64)):
        got = small_unique(values)
        want = np.unique(values, return_index=True, return_inverse=True)
        for g, w in zip(got, want):
            assert np.array_equal(np.ravel(g), np.ravel(w))


def test_unique_rows_is_numpys_unique_over_rows():
    rng = np.random.default_rng(0)
    for high, width in ((3, 4), (1025, 4), (2**40, 3)):  # the last: too wide to count
        a = rng.integers(1, high, size=(500, width), dtype=np.int64)
        a[250:] = a[:250]
        uniq, inv = unique_rows(a)
        np.testing.assert_array_equal(uniq[inv], a)
        assert len(np.unique(uniq, axis=0)) == len(uniq) == len(np.unique(a, axis=0))
