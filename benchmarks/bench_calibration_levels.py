"""Issue 16's end-to-end figures: two local processes x 4 CPU devices on JAX's distributed
runtime (gloo over loopback), a quick calibration, its fit (a host x cross_host profile) and
every multi-host validation step (``validate`` without ``--quick``: dense and MoE meshes with
data across the processes, expert across them, and data and fsdp over every device) measured vs
forecast. Target on a CPU host: median |error| <= 20% over the cross-process steps. Prints
figures; run with `make bench` (about 10 minutes on 2 cores)."""

from __future__ import annotations

import pytest

from tests.test_calibration_levels import print_figures, run_levels_end_to_end


@pytest.mark.benchmark
def test_two_processes_of_four_devices_calibrate_fit_validate(tmp_path):
    fig = run_levels_end_to_end(tmp_path / "run", devices=4, quick_validate=False)
    (_, _, bw_in, *_), (_, hosts, bw_out, *_) = fig["levels"]
    assert hosts == 2 and bw_in != bw_out
    print()
    print_figures(fig)
