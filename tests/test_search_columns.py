"""Column-valued layer templates: a branch is answered only when every row agrees."""

from __future__ import annotations

import pytest

from simulator.search.columns import column


def test_a_column_answers_a_branch_only_when_every_row_agrees():
    t = column([2, 4, 8])
    assert bool(t > 1) and not bool(t > 8)
    with pytest.raises(ValueError, match="structure_key"):
        bool(t > 2)
