"""The hierarchical estimator (simulator.published.hier) on synthetic linear rows: it recovers
known per-chip and per-architecture values, pools a chip with few rows toward its siblings, and
gives a chip with no rows its architecture's value with a wider uncertainty."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.published import hier

Q = tuple(hier.PATHS)
TRUE = {"a1": 0.70, "a2": 0.60, "b1": 0.45, "b2": 0.50}  # matmul efficiency per chip
ARCH = {"a1": "arch-a", "a2": "arch-a", "a3": "arch-a", "b1": "arch-b", "b2": "arch-b",
        "c1": "arch-c"}


def _design(rows: dict[str, int], noise: float = 0.0, seed: int = 0) -> hier.Design:
    """Rows whose log step time is ``log(work) - share * log(matmul eff)``: the matmul share of
    the step varies by row (elasticity ``-share``), linearised at an assumed 0.8."""
    rng = np.random.default_rng(seed)
    chips, y, J, theta = [], [], [], []
    k = Q.index("matmul")
    for chip, n in rows.items():
        for _ in range(n):
            share = rng.uniform(0.5, 0.9)
            j = np.zeros(len(Q))
            j[k] = -share
            th = np.zeros(len(Q))
            th[k] = np.log(0.8)
            chips.append(chip)
            J.append(j)
            theta.append(th)
            y.append(-share * np.log(TRUE[chip]) + rng.normal(0, noise))
    f0 = np.array([j[k] * np.log(0.8) for j in J])  # the forecast at the assumed value
    return hier.Design(Q, np.array(y), f0, np.array(J), np.array(theta), chips)


def _lineage() -> hier.Lineage:
    return hier.Lineage(tuple(sorted(ARCH)), ARCH, {c: 0.0 for c in ARCH})


def _eff(post: hier.Posterior, chip: str) -> float:
    return float(np.exp(post.mean[(chip, "matmul")]))


def test_recovers_each_chips_value_when_every_chip_has_many_rows():
    post = hier.fit(_design({c: 40 for c in TRUE}, noise=0.01), _lineage(), {"matmul": np.log(0.8)})
    for chip, v in TRUE.items():
        assert _eff(post, chip) == pytest.approx(v, rel=0.02), chip
    assert post.informed == {"matmul"}


def test_an_unmeasured_chip_takes_its_architectures_value_with_a_wider_interval():
    post = hier.fit(_design({c: 40 for c in TRUE}, noise=0.01), _lineage(), {"matmul": np.log(0.8)})
    # a3 has no row: its architecture's two chips (0.70, 0.60) -> about their geometric mean
    assert _eff(post, "a3") == pytest.approx(np.sqrt(0.70 * 0.60), rel=0.04)
    assert post.sd[("a3", "matmul")] > 3 * post.sd[("a1", "matmul")]
    # c1's architecture has none: the global level, wider still
    assert post.sd[("c1", "matmul")] > post.sd[("a3", "matmul")]
    lo, hi = min(TRUE.values()), max(TRUE.values())
    assert lo < _eff(post, "c1") < hi


def test_a_chip_with_few_rows_is_pulled_toward_its_siblings():
    """a2 (true 0.60) with two noisy rows sits between its own value and its sibling a1's."""
    d = _design({"a1": 40, "a2": 2, "b1": 40, "b2": 40}, noise=0.05, seed=3)
    post = hier.fit(d, _lineage(), {"matmul": np.log(0.8)})
    own = np.exp(np.mean(d.y[40:42] / d.J[40:42, Q.index("matmul")]))  # its two rows alone
    assert post.sd[("a2", "matmul")] > post.sd[("a1", "matmul")]
    # shrunk: strictly between its two rows' own value and its sibling's fitted value
    a1, a2 = _eff(post, "a1"), _eff(post, "a2")
    assert min(own, a1) < a2 < max(own, a1)
    assert abs(a2 - own) > 0.002  # moved, not left at its own rows' value


def test_a_quantity_no_row_informs_is_left_out():
    post = hier.fit(_design({"a1": 5}), _lineage(), {"matmul": np.log(0.8)})
    assert "attention" not in post.informed
    assert ("a1", "attention") not in post.mean
