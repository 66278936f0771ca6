"""The goodput model (simulator.cost.goodput): closed form vs Monte Carlo, the optimal
interval, limits, scaling, and the sourced defaults."""

import math

import numpy as np
import pytest

from hardware_profiles import load_profile
from meshcast.errors import MeshcastError
from simulator.cost.goodput import (
    RESTART_S,
    Goodput,
    checkpoint_bytes,
    failure_model,
    goodput,
    monte_carlo,
    mtbf_s,
    optimal_interval,
    segment_seconds,
    with_spread,
)
from simulator.specs.sharding import OptimizerSpec

H100 = load_profile("h100-sxm")
DAY = 86400.0


def _run(chips=4096, days=30.0, **kw):
    fm = failure_model(H100, **kw)
    return goodput(fm, days * DAY, chips, checkpoint_bytes(70e9, OptimizerSpec()))


@pytest.mark.parametrize("kw", [{}, {"restart_min": 30.0}, {"async_checkpoint": True},
                                {"every_min": 20.0, "rate": 3e-3}])
def test_closed_form_is_the_monte_carlo_mean(kw):
    g = _run(**kw)
    t = monte_carlo(g, draws=20000, seed=1)
    se = t.std(ddof=1) / math.sqrt(len(t))
    assert abs(t.mean() - g.expected_s) <= 4 * se
    assert g.expected_s > g.ideal_s


def test_exact_and_normal_summed_losses_agree():
    """Interruption counts above the exact-sum limit use the normal law with the sum's exact
    moments: on a run with hundreds of interruptions the mean still matches."""
    g = _run(chips=16384, days=50.0, rate=3e-3)
    assert g.interruptions > 500
    t = monte_carlo(g, draws=20000, seed=2)
    assert abs(t.mean() - g.expected_s) <= 4 * t.std(ddof=1) / math.sqrt(len(t))


def test_optimal_interval_is_the_minimum_of_the_expected_time():
    for delta, M in [(30.0, 3 * 3600.0), (300.0, 3600.0), (5.0, 1e6)]:
        tau = float(optimal_interval(delta, M))
        grid = tau * np.linspace(0.5, 1.5, 2001)
        curve = segment_seconds(grid + delta, 60.0, M) / grid
        assert grid[np.argmin(curve)] == pytest.approx(tau, rel=1e-3)
        # Young's first-order form sqrt(2 delta M) is close when delta << M
        if delta / M < 1e-3:
            assert tau == pytest.approx(math.sqrt(2 * delta * M), rel=0.02)


def test_zero_failure_rate_gives_the_ideal_time_exactly():
    g = _run(rate=0.0)
    assert g.expected_s == g.ideal_s and g.goodput == 1.0
    assert math.isinf(g.interval_s)
    assert (monte_carlo(g, draws=50) == g.ideal_s).all()


def test_goodput_falls_as_chips_grow():
    gs = [_run(chips=n).goodput for n in (512, 2048, 8192, 32768)]
    assert all(a > b for a, b in zip(gs, gs[1:]))
    assert 0 < gs[-1] < gs[0] < 1


def test_default_rate_reproduces_the_llama3_interruption_count():
    """16,384 H100s for 54 days of wall clock: 419 unexpected interruptions."""
    fm = failure_model(H100)
    assert fm.rate_per_chip_day.basis == "measured"
    assert 54 * DAY / float(mtbf_s(fm.rate_per_chip_day.value, 16384)) == pytest.approx(419)


def test_sources_and_assumed_defaults():
    fm = failure_model(load_profile("tpu-v5p"))
    assert fm.rate_per_chip_day.basis == "assumed" and "Llama 3" in fm.rate_per_chip_day.source
    assert fm.restart_s.value == RESTART_S[0] and "TrainMover" in fm.restart_s.source
    d = fm.as_dict()
    assert all("source" in v for v in d.values() if isinstance(v, dict))
    given = failure_model(H100, rate=1e-3, restart_min=5, checkpoint_gb_s=2.0)
    assert given.rate_per_chip_day.source.startswith("given")
    assert given.storage_bw_per_host.value == 2e9 and given.restart_s.value == 300


@pytest.mark.parametrize("kw", [{"rate": -1.0}, {"rate": float("nan")}, {"restart_min": 1e12},
                                {"checkpoint_gb_s": 0.0}, {"every_min": float("inf")}])
def test_bad_inputs_name_the_option(kw):
    with pytest.raises(MeshcastError) as e:
        failure_model(H100, **kw)
    flag = {"rate": "failure-rate", "restart_min": "restart-min", "checkpoint_gb_s":
            "checkpoint-bw", "every_min": "checkpoint-every"}[next(iter(kw))]
    assert str(e.value).startswith(flag + ":")


def test_asynchronous_checkpoint_pauses_for_the_copy_only():
    sync, asy = _run(), _run(async_checkpoint=True)
    assert asy.pause_s < sync.pause_s and asy.write_s == sync.write_s
    assert asy.restart_s == pytest.approx(sync.restart_s + sync.write_s)
    assert asy.goodput > sync.goodput


def test_spread_and_step_interval():
    g = with_spread(_run())
    assert g.p50_s <= g.p90_s and g.p90_s > g.ideal_s
    wide = with_spread(_run(), band=(0.8, 1.3, 0.8), step_s=1.0)
    assert wide.p90_s > g.p90_s
    d = g.as_dict()
    assert d["p90_days"] == pytest.approx(g.p90_s / DAY) and d["goodput"] == g.goodput
    assert isinstance(g, Goodput)


def test_a_profile_checkpoint_bandwidth_overrides_the_default():
    from hardware_profiles.schema import Sourced as ProfileSourced

    own = H100.model_copy(update={"checkpoint_write_bytes_per_s_per_host": ProfileSourced(
        value=5e9, source="test storage")})
    fm = failure_model(own)
    assert fm.storage_bw_per_host.value == 5e9 and "test storage" in fm.storage_bw_per_host.source
    assert failure_model(own, checkpoint_gb_s=1.0).storage_bw_per_host.value == 1e9
