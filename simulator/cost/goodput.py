"""Goodput: the wall-clock time of a training run that is interrupted, checkpoints, and restarts.

A synchronous job stops whenever any chip fails. Interruptions arrive as a Poisson process with
rate ``lambda`` per chip-day, so the job's mean time between interruptions is
``M = 86400 / (lambda * chips)`` seconds. The run is cut into segments: ``tau`` seconds of work,
then a checkpoint that pauses training ``delta`` seconds. An interruption loses the segment in
progress; the job then restarts (``R`` seconds, which an interruption can also cut short) from
the last checkpoint. For exponential interruptions the expected time to get one segment
through is ``M e^(R/M) (e^((tau + delta)/M) - 1)`` (Daly 2006, "A higher order estimate of the
optimum checkpoint interval for restart dumps", FGCS 22(3), eq. 6), so a run of ``T`` seconds
of work takes in expectation

    E[T_wall] = (T / tau) * M * e^(R/M) * (e^((tau + delta)/M) - 1),   goodput = T / E[T_wall].

The interval that minimises it solves ``e^((tau + delta)/M) (1 - tau/M) = 1``:
``tau* = M (1 + W0(-e^(-1 - delta/M)))`` (Lambert W). Its first-order form is Young's
``tau* ~ sqrt(2 delta M)`` (Young 1974, CACM 17(9)); Daly's is the same curve. Without
interruptions (``lambda = 0``) no checkpoint is needed and ``E[T_wall] = T``.

The checkpoint holds every parameter's bf16 weight and its optimizer state
(:func:`checkpoint_bytes`), written by all hosts at once: ``delta = bytes / (hosts * bw)``.
An asynchronous checkpoint pauses only for the copy of each device's shard to host memory
(``delta = shard bytes / host link``); the write goes on in the background, and a checkpoint
still being written when an interruption comes is not there to restart from. To first order
that costs the write time once more per interruption, which the model adds to the restart
(``R + write``): the same formula, with ``delta`` the copy and ``R`` the restart plus the write.

:func:`monte_carlo` samples the same process (interruptions per segment and per restart,
the time lost to each), so its mean converges to the closed form; its quantiles give the
spread, and a step-time interval (an 80% band) widens it: each draw scales the work by a
log-normal factor whose 10th and 90th percentiles are the band's ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import lambertw

from meshcast.errors import MeshcastError

SECONDS_PER_DAY = 86400.0

#: Unexpected interruptions per chip-day by architecture: (rate, source, basis).
_LLAMA3 = (419 / (54 * 16384),
           "Dubey et al. 2024, The Llama 3 Herd of Models, sec. 3.3.4: 419 unexpected "
           "interruptions in 54 days on 16,384 H100 GPUs = 4.74e-4 per GPU-day")
_RSC = (24 / (7.9 * 1024),
        "Kokolis et al. 2024, Revisiting Reliability in Large-Scale ML Research Clusters "
        "(arXiv 2410.21680, HPCA 2025): mean time to failure 7.9 h for 1,024-GPU jobs on Meta's "
        "A100 clusters = 2.97e-3 per GPU-day")
FAILURE_RATES = {
    "nvidia-hopper": (*_LLAMA3, "measured"),
    "nvidia-ampere": (*_RSC, "measured"),
}
#: Architectures without a published per-chip rate use Llama 3's H100 rate, marked assumed.
ASSUMED_RATE = (_LLAMA3[0], "no public per-chip interruption rate for this architecture; "
                "assumed Llama 3's H100 rate (" + _LLAMA3[1] + ")", "assumed")

#: Restart after an interruption: reschedule, re-initialise, load the checkpoint.
RESTART_S = (6.47 * 60, "Lao et al. 2024, TrainMover (arXiv 2412.12636, OSDI '26): 6.47 min of "
             "downtime per interruption of an 8,192-GPU job with Llama 3's automated recovery")
#: Checkpoint write bandwidth per host.
STORAGE_BW_PER_HOST = (2.0e12 / 2048, "Dubey et al. 2024, sec. 3.3.1: Tectonic sustains 2 TB/s "
                       "for the 16K-GPU cluster's 2,048 hosts = 0.98 GB/s per host")
#: Device-to-host copy bandwidth per device (the pause of an asynchronous checkpoint).
HOST_COPY_BW = (64.0e9, "PCIe 5.0 x16: 64 GB/s per direction (PCI-SIG); assumed for devices on "
                "other host links")
#: Devices per host by chip, then by architecture (a host writes its devices' shards).
DEVICES_PER_HOST = {"google-tpu": (4, "Cloud TPU v4/v5p VMs: 4 chips per host (assumed for "
                                      "other TPU generations)"),
                    "gh200": (4, "quad-GH200 nodes (HPE Cray EX254n, CSCS Alps): 4 superchips "
                                 "per node")}
DEFAULT_DEVICES_PER_HOST = (8, "8-GPU servers (HGX/DGX baseboards, 8-OAM AMD platforms)")
#: Monte Carlo: draws, and the largest interruption count summed draw by draw (beyond it the
#: sum of the losses is drawn from the normal law with their exact mean and variance).
DRAWS = 4000
EXACT_SUM = 16


@dataclass(frozen=True)
class FailureInput:
    """One input of the model: its value, its source, and whether it is measured, given or
    assumed."""

    value: float
    source: str
    basis: str = "given"  # measured | assumed | given

    def as_dict(self) -> dict:
        return {"value": self.value, "source": self.source, "basis": self.basis}


@dataclass(frozen=True)
class FailureModel:
    """The inputs of the goodput model, each with its source. ``interval_s`` None: optimal."""

    rate_per_chip_day: FailureInput
    restart_s: FailureInput
    storage_bw_per_host: FailureInput
    devices_per_host: FailureInput
    host_copy_bw: FailureInput = field(default_factory=lambda: FailureInput(*HOST_COPY_BW, "assumed"))
    async_checkpoint: bool = False
    interval_s: float | None = None

    def as_dict(self) -> dict:
        return {"failure_rate_per_chip_day": self.rate_per_chip_day.as_dict(),
                "restart_s": self.restart_s.as_dict(),
                "checkpoint_bw_per_host_bytes_per_s": self.storage_bw_per_host.as_dict(),
                "devices_per_host": self.devices_per_host.as_dict(),
                "host_copy_bw_bytes_per_s": self.host_copy_bw.as_dict(),
                "async_checkpoint": self.async_checkpoint,
                "checkpoint_every_s": self.interval_s}


def failure_model(profile, *, rate: float | None = None, restart_min: float | None = None,
                  checkpoint_gb_s: float | None = None, async_checkpoint: bool = False,
                  every_min: float | None = None) -> FailureModel:
    """The model for ``profile``: each input given, else the profile's own (its
    ``checkpoint_write_bytes_per_s_per_host``), else its sourced default (by the profile's
    architecture). Bad values are a MeshcastError naming the option."""
    for name, v, lo in (("failure-rate", rate, 0.0), ("restart-min", restart_min, 0.0),
                        ("checkpoint-bw", checkpoint_gb_s, 1e-9), ("checkpoint-every", every_min,
                                                                   1e-9)):
        if v is not None and not (math.isfinite(v) and v >= lo and v < 1e9):
            raise MeshcastError(f"{name}: {v} must be a finite number >= {lo:g} and < 1e9")
    arch = profile.lineage.architecture if profile.lineage else ""
    r = (FailureInput(rate, "given with --failure-rate") if rate is not None
         else FailureInput(*FAILURE_RATES.get(arch, ASSUMED_RATE)))
    rs = (FailureInput(restart_min * 60, "given with --restart-min") if restart_min is not None
          else FailureInput(*RESTART_S, "measured"))
    own = getattr(profile, "checkpoint_write_bytes_per_s_per_host", None)
    bw = (FailureInput(checkpoint_gb_s * 1e9, "given with --checkpoint-bw") if checkpoint_gb_s
          is not None else FailureInput(own.value, f"the profile: {own.source}", "measured")
          if own is not None else FailureInput(*STORAGE_BW_PER_HOST, "measured"))
    chip = profile.lineage.chip if profile.lineage else ""
    dph = FailureInput(*DEVICES_PER_HOST.get(chip, DEVICES_PER_HOST.get(
        arch, DEFAULT_DEVICES_PER_HOST)), "assumed")
    return FailureModel(r, rs, bw, dph, async_checkpoint=async_checkpoint,
                        interval_s=None if every_min is None else every_min * 60)


def checkpoint_bytes(total_params, optimizer) -> float:
    """A checkpoint: per parameter its bf16 weight (2 B) and the optimizer state
    (:func:`simulator.cost.formulas.optimizer_state_bytes_per_param`: 12 B for Adam with fp32
    master weights and moments)."""
    from simulator.cost.formulas import optimizer_state_bytes_per_param

    return float(total_params) * (2 + optimizer_state_bytes_per_param(optimizer))


def mtbf_s(rate_per_chip_day, chips):
    """``M = 86400 / (rate * chips)``; ``inf`` at rate 0."""
    lam = np.asarray(rate_per_chip_day, dtype=float) * chips / SECONDS_PER_DAY
    with np.errstate(divide="ignore"):
        return np.where(lam > 0, 1.0 / np.maximum(lam, 1e-300), np.inf)


def optimal_interval(delta_s, mtbf):
    """The interval minimising :func:`expected_seconds`: ``M (1 + W0(-e^(-1 - delta/M)))``
    (module docstring); ``inf`` without interruptions."""
    delta, M = np.broadcast_arrays(np.asarray(delta_s, float), np.asarray(mtbf, float))
    out = np.full(delta.shape, np.inf)
    fin = np.isfinite(M)
    z = -np.exp(-1.0 - delta[fin] / M[fin])
    w = lambertw(z, 0).real
    # near z = -1/e the branch point loses digits: use the series sqrt(2 delta/M) - ... there
    tiny = delta[fin] / M[fin] < 1e-6
    x = np.sqrt(2 * delta[fin] / M[fin])
    w = np.where(tiny, -1.0 + x - x * x / 3.0, w)
    out[fin] = M[fin] * (1.0 + w)
    return out[()] if out.ndim == 0 else out


def segment_seconds(length_s, restart_s, mtbf):
    """Expected time to get ``length_s`` of uninterrupted time: ``M e^(R/M) (e^(L/M) - 1)``
    (Daly 2006); ``L`` without interruptions."""
    L, R, M = np.broadcast_arrays(*(np.asarray(a, float) for a in (length_s, restart_s, mtbf)))
    out = L.copy()
    fin = np.isfinite(M)
    out[fin] = M[fin] * np.exp(R[fin] / M[fin]) * np.expm1(L[fin] / M[fin])
    return out[()] if out.ndim == 0 else out


@dataclass(frozen=True)
class Goodput:
    """One run under interruptions (seconds): ``ideal_s`` of work, checkpoint pause
    ``pause_s`` every ``interval_s``, restart ``restart_s`` (plus the write when asynchronous),
    expected wall clock ``expected_s``; ``p50_s``/``p90_s`` from :func:`monte_carlo`."""

    ideal_s: float
    expected_s: float
    interval_s: float
    pause_s: float
    write_s: float
    restart_s: float
    mtbf_s: float
    checkpoint_bytes: float
    interruptions: float
    p50_s: float | None = None
    p90_s: float | None = None

    @property
    def goodput(self) -> float:
        return self.ideal_s / self.expected_s if self.expected_s > 0 else 1.0

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("ideal_s", "expected_s", "p50_s", "p90_s",
                                            "interval_s", "pause_s", "write_s", "restart_s",
                                            "mtbf_s", "checkpoint_bytes", "interruptions")}
        d = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in d.items()}
        day = SECONDS_PER_DAY
        d.update(goodput=self.goodput, ideal_days=self.ideal_s / day,
                 expected_days=self.expected_s / day,
                 p50_days=None if self.p50_s is None else self.p50_s / day,
                 p90_days=None if self.p90_s is None else self.p90_s / day)
        return d


def checkpoint_times(model: FailureModel, ckpt_bytes: float, chips: int
                     ) -> tuple[float, float, float]:
    """(pause, write, restart) seconds: the write over all hosts, ``ceil(chips / devices per
    host)``; the pause is the write, or with ``async_checkpoint`` the copy of one device's
    even share, ``ckpt_bytes / chips``, to host memory, whose restart then includes the write."""
    hosts = max(1, math.ceil(chips / model.devices_per_host.value))
    write = ckpt_bytes / (hosts * model.storage_bw_per_host.value)
    if model.async_checkpoint:
        return ckpt_bytes / chips / model.host_copy_bw.value, write, model.restart_s.value + write
    return write, write, model.restart_s.value


def goodput(model: FailureModel, ideal_s: float, chips: int, ckpt_bytes: float) -> Goodput:
    """The closed form (module docstring) for ``ideal_s`` seconds of work on ``chips``."""
    pause, write, restart = checkpoint_times(model, ckpt_bytes, chips)
    M = float(mtbf_s(model.rate_per_chip_day.value, chips))
    if not math.isfinite(M):
        return Goodput(ideal_s, ideal_s, math.inf, pause, write, restart, M, ckpt_bytes, 0.0)
    tau = model.interval_s if model.interval_s is not None else float(optimal_interval(pause, M))
    if model.async_checkpoint:  # the next checkpoint waits for the last one's write, so an
        tau = max(tau, write)   # interval (given or optimal) shorter than the write is raised
    expected = ideal_s / tau * float(segment_seconds(tau + pause, restart, M))
    return Goodput(ideal_s, expected, tau, pause, write, restart, M, ckpt_bytes,
                   expected / M)


def wall_factor(model: FailureModel, chips: int, ckpt_bytes: float) -> float:
    """Expected wall clock per second of work, ``E[T_wall] / T`` (independent of ``T``; the
    asynchronous pause from an even shard, ``ckpt_bytes / chips``)."""
    return goodput(model, 1.0, chips, ckpt_bytes).expected_s


def _lost_sums(counts: np.ndarray, length, M, rng) -> np.ndarray:
    """Per entry, the sum of ``counts`` draws of the time lost to an interruption within a
    span of ``length``: exponential(M) truncated to ``[0, length)``, by inverse CDF. Counts
    above :data:`EXACT_SUM` use the normal law with the sum's exact mean and variance."""
    length = np.broadcast_to(length, counts.shape)
    M = np.broadcast_to(M, counts.shape)
    a = -np.expm1(-length / M)  # P(interrupted within length)
    out = np.zeros(counts.shape)
    small = (counts > 0) & (counts <= EXACT_SUM)
    idx = np.repeat(np.flatnonzero(small), counts[small])
    if len(idx):
        u = rng.random(len(idx))
        x = -M.flat[idx] * np.log1p(-u * a.flat[idx])
        out.flat[:] += np.bincount(idx, weights=x, minlength=counts.size)
    big = counts > EXACT_SUM
    if big.any():
        Lb, Mb, ab, kb = length[big], M[big], a[big], counts[big]
        q = Lb * (1 - ab) / ab  # L e^(-L/M) / (1 - e^(-L/M))
        mean = Mb - q
        second = 2 * Mb * Mb - (Lb * Lb + 2 * Mb * Lb) * (1 - ab) / ab
        var = np.maximum(second - mean * mean, 0.0)
        out[big] = kb * mean + np.sqrt(kb * var) * rng.standard_normal(kb.shape)
    return out


def monte_carlo(g: Goodput, draws: int = DRAWS, seed: int = 0,
                band: tuple[float, float, float] | None = None, step_s: float | None = None
                ) -> np.ndarray:
    """Wall-clock seconds of ``draws`` runs of the process :func:`goodput` models (seeded).
    With ``band`` (the step time's interval ``(lo, hi, level)``, e.g. 80%) and the point
    ``step_s``, each draw's work is ``ideal_s`` times a log-normal factor whose
    ``(1 -+ level) / 2`` quantiles are ``lo / step_s`` and ``hi / step_s``."""
    from scipy.special import ndtri

    rng = np.random.default_rng(seed)
    work = np.full(draws, g.ideal_s)
    if band is not None and step_s:
        lo, hi = (math.log(b / step_s) for b in band[:2])
        z = float(ndtri((1 + band[2]) / 2))
        mu, sigma = (lo + hi) / 2, max(hi - lo, 0.0) / (2 * z)
        work = work * np.exp(mu + sigma * rng.standard_normal(draws))
    if not math.isfinite(g.mtbf_s):
        return work
    M, L, R = g.mtbf_s, g.interval_s + g.pause_s, g.restart_s
    segments = work / g.interval_s
    hits = rng.negative_binomial(segments, math.exp(-L / M))
    restart_hits = np.where(hits > 0, rng.negative_binomial(np.maximum(hits, 1),
                                                            math.exp(-R / M)), 0)
    return (segments * L + _lost_sums(hits, L, M, rng) + hits * R
            + _lost_sums(restart_hits, R, M, rng))


def with_spread(g: Goodput, **kw) -> Goodput:
    """``g`` with its p50 and p90 from :func:`monte_carlo`."""
    t = monte_carlo(g, **kw)
    p50, p90 = np.quantile(t, [0.5, 0.9])
    return Goodput(**{**g.__dict__, "p50_s": float(p50), "p90_s": float(p90)})
