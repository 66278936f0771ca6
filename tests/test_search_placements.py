"""Placement coefficients' bookkeeping: memoised factors per placement key."""

from simulator.search.placements import _factors
from simulator.specs.sharding import AXES


def test_factors_of_a_key_per_axis_and_level():
    key = (((0, 2), (1, 4)),) + (None,) * (len(AXES) - 1)
    f = _factors(key, 3)
    assert len(f) == 3 * len(AXES)
    assert f[:3] == (2, 4, 1) and set(f[3:]) == {1}
