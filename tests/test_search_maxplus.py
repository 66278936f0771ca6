"""simulator.search.maxplus: the product, ``apply`` (periodic regime or repeated squaring)
against the definition on random max-plus matrices, long transients and cyclic matrices."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.search.maxplus import STATE, apply, maxplus


def _random_maxplus(rng, rows, S, p_neg=0.3):
    M = rng.uniform(-1.0, 3.0, size=(rows, S, S))
    M[rng.random(M.shape) < p_neg] = -np.inf
    return M


def _product(a, b):
    """``(a b)_ij = max_k a_ik + b_kj`` by the definition."""
    return np.max(a[:, :, :, None] + b[:, None, :, :], axis=2)


def test_maxplus_is_the_max_plus_product():
    rng = np.random.default_rng(0)
    a, b, c = (_random_maxplus(rng, 3, 6) for _ in range(3))
    np.testing.assert_array_equal(maxplus(a, b), _product(a, b))
    np.testing.assert_allclose(maxplus(maxplus(a, b), c), maxplus(a, maxplus(b, c)), rtol=1e-12)
    eye = np.full((3, 6, 6), -np.inf)
    eye[:, np.arange(6), np.arange(6)] = 0.0
    np.testing.assert_array_equal(maxplus(a, eye), a)


def _repeat(pattern, x, n):
    """``x`` after ``n`` repeats of ``pattern`` (matrices applied in order), one product at a
    time: the definition ``apply`` must equal."""
    for _ in range(n):
        for M in pattern:
            x = np.max(M + x[:, None, :], axis=2)
    return x


def _assert_same(got, want):
    assert np.array_equal(np.isneginf(got), np.isneginf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-12, atol=0)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 12, 13, 40, 101, 1000])
@pytest.mark.parametrize("length", [1, 2, 3])
def test_apply_is_n_repeats_of_single_products(n, length):
    """``apply(pattern, x, n)`` equals ``n`` repeats of the pattern's products with the vector,
    however it gets there (periodic regime or repeated squaring), on random max-plus matrices
    with -inf entries and layer-like ones (every clock advances, diagonal >= 0)."""
    rng = np.random.default_rng(10 * n + length)
    S, rows = 6, 8
    pattern = []
    for _ in range(length):
        M = _random_maxplus(rng, rows, S)
        d = np.arange(S)
        M[: rows // 2, d, d] = np.maximum(M[: rows // 2, d, d], 0.0)  # layer-like rows
        pattern.append(M)
    x = rng.uniform(0.0, 2.0, size=(rows, S))
    x[0, 2] = -np.inf
    _assert_same(apply(pattern, x, n), _repeat(pattern, x, n))


def test_apply_waits_out_a_long_transient():
    """Two clocks: x1 advances 2 a step, x2 1 a step but is also driven by x1 and starts far
    ahead. For the first ~1000 steps both shift steadily (2 and 1), which looks periodic; then
    x1 catches x2 and x2 speeds up to 2. A shortcut that extrapolated the early shifts would be
    off by about 1000 at n = 3000."""
    NEG_ = -np.inf
    M = np.array([[[2.0, NEG_], [0.0, 1.0]]])  # x1' = x1 + 2; x2' = max(x1, x2 + 1)
    x = np.array([[0.0, 1000.0]])
    for n in (10, 999, 1001, 3000):
        want = _repeat([M], x, n)
        _assert_same(apply([M], x, n), want)
    assert want[0, 1] == pytest.approx(2 * 2999)  # x2 ends driven by x1


def test_apply_on_a_cycle_of_period_two():
    """A max-plus matrix whose powers alternate (cyclicity 2): shifts never repeat step to
    step, so the answer must come from the products themselves."""
    NEG_ = -np.inf
    M = np.array([[[NEG_, 3.0], [1.0, NEG_]]])  # swap the clocks, adding 3 or 1
    x = np.array([[0.0, 0.5]])
    for n in (5, 6, 51, 100):
        _assert_same(apply([M], x, n), _repeat([M], x, n))


def test_the_state_holds_every_stream_register_and_mark():
    from simulator.graph.ops import STREAMS
    from simulator.graph.plan import REGISTERS

    assert STATE == (*STREAMS, *REGISTERS, "t_fwd", "t_mb")
