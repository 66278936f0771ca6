"""Placement coefficients' bookkeeping: distinct factor rows found by an integer code, and
memoised factors per placement key."""

import numpy as np

from simulator.search.placements import _factors, _unique_rows
from simulator.specs.sharding import AXES


def test_unique_rows_is_numpys_unique_over_rows():
    rng = np.random.default_rng(0)
    for high, width in ((3, 4), (1025, 4), (2**40, 3)):  # the last falls back to np.unique
        a = rng.integers(1, high, size=(500, width), dtype=np.int64)
        a[250:] = a[:250]
        uniq, inv = _unique_rows(a)
        np.testing.assert_array_equal(uniq[inv], a)
        assert len(np.unique(uniq, axis=0)) == len(uniq) == len(np.unique(a, axis=0))


def test_factors_of_a_key_per_axis_and_level():
    key = (((0, 2), (1, 4)),) + (None,) * (len(AXES) - 1)
    f = _factors(key, 3)
    assert len(f) == 3 * len(AXES)
    assert f[:3] == (2, 4, 1) and set(f[3:]) == {1}
