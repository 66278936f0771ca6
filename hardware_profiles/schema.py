"""The hardware profile schema: one chip, its network levels, and a source on every number.

A profile is data (``hardware_profiles/<name>.yaml``); this module only says what is valid.
Units are in field names. Every number is a :class:`Sourced` value: ``{value, source}``, where the
source is a datasheet, a paper, or ``calibrated <date> from <raw rows sha256>``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from meshcast.frozen import Frozen

Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "fp4", "int8"]


#: The range of a :class:`Sourced` value (FLOP/s, bytes, bytes/s, seconds, dollars, members):
#: a value outside it (1e-320 B/s, 1e400 FLOP/s) is a typo, and would make times overflow.
SOURCED_MIN = 1e-12
SOURCED_MAX = 1e21
#: The largest member count of a network level or TPU slice dimension.
MAX_LEVEL_SIZE = 1 << 24


class Sourced(Frozen):
    """A positive number and where it comes from."""

    value: float = Field(gt=0, le=SOURCED_MAX)
    source: str = Field(min_length=3)

    @field_validator("value")
    @classmethod
    def _not_tiny(cls, v: float) -> float:
        if v < SOURCED_MIN:
            raise ValueError(f"{v:g} is below {SOURCED_MIN:g}: give the value in the field's "
                             "units (bytes, seconds, FLOP/s)")
        return v


#: The smallest fraction of a peak a profile may claim (below it, times are nonsense).
FRACTION_MIN = 1e-6


def _fraction_not_tiny(v: float) -> float:
    if v < FRACTION_MIN:
        raise ValueError(f"{v:g} is below {FRACTION_MIN:g}: give a fraction of peak in (0, 1]")
    return v


class Fraction(Frozen):
    """A fraction in (0, 1] and where it comes from."""

    value: float = Field(gt=0, le=1)
    source: str = Field(min_length=3)

    @field_validator("value")
    @classmethod
    def _not_tiny(cls, v: float) -> float:
        return _fraction_not_tiny(v)


class EfficiencyCurve(Frozen):
    """Achieved fraction of peak as a function of op size ``x`` (FLOPs or bytes).

    ``eff(x) = max_efficiency * x / (x + half_saturation)``: small ops are launch/latency bound,
    large ops approach ``max_efficiency``. Shape fixed here; calibration fits only these two numbers.

    The attention curve may also depend on the kernel's shape: fused (flash) attention reaches
    less of peak at short sequences and small head dims (the benchmarks of Dao 2023,
    FlashAttention-2, and Shah et al. 2024, FlashAttention-3: throughput rises with sequence
    length and with head dim 64 -> 128 -> 256). For attention ops

    ``eff = max_efficiency * x / (x + half_saturation) * s / (s + seq_half)
    * hd / (hd + head_dim_half)``

    with ``s`` the key/value sequence length the kernel sees (tokens) and ``hd`` the head dim;
    a half of 0 drops its factor, so both 0 (the default) is the size-only curve exactly. The
    shape factor is :func:`simulator.cost.compute.attention_shape_factor`; other curves ignore both.
    """

    max_efficiency: float = Field(gt=0, le=1)
    half_saturation: float = Field(ge=0, le=SOURCED_MAX)
    source: str = Field(min_length=3)
    calibrated_range: tuple[float, float] | None = Field(
        default=None, description="(smallest, largest) op size the fit saw; None if not fitted")
    seq_half: float = Field(
        default=0.0, ge=0, le=SOURCED_MAX, allow_inf_nan=False,
        description="attention only: key/value length (tokens) at which the sequence factor "
        "s / (s + seq_half) is 1/2; 0: no sequence dependence")
    head_dim_half: float = Field(
        default=0.0, ge=0, le=SOURCED_MAX, allow_inf_nan=False,
        description="attention only: head dim at which the factor hd / (hd + head_dim_half) is "
        "1/2; 0: no head-dim dependence")

    @field_validator("max_efficiency")
    @classmethod
    def _not_tiny(cls, v: float) -> float:
        return _fraction_not_tiny(v)

    def at(self, x: float | np.ndarray) -> float | np.ndarray:
        """``eff(x) = max_efficiency * x / (x + half_saturation)`` for ``x > 0``, and
        ``max_efficiency`` for ``x <= 0`` (no op: its time is 0 whatever the efficiency). ``x``
        is a number or a numpy array (elementwise, same values)."""
        if isinstance(x, np.ndarray):
            positive = x > 0
            return np.where(positive, self._size_curve(np.where(positive, x, 1.0)),
                            self.max_efficiency)
        return self._size_curve(x) if x > 0 else self.max_efficiency

    def _size_curve(self, x):
        return self.max_efficiency * x / (x + self.half_saturation)


class Efficiency(Frozen):
    """Compute efficiency curves: matmul and attention in FLOPs, memory-bound ops in bytes;
    ``gather`` for indexed reads and scatter-adds (embedding lookup and its gradient, gather
    dispatch), which run below streaming bandwidth: the ``memory`` curve when absent;
    ``matmul_fp8`` and ``matmul_fp4`` for GEMMs in those formats (a fraction of that format's
    peak). :meth:`curve` applies the fallbacks."""

    matmul: EfficiencyCurve
    attention: EfficiencyCurve
    memory: EfficiencyCurve
    gather: EfficiencyCurve | None = None
    matmul_fp8: EfficiencyCurve | None = Field(
        default=None, description="GEMMs in fp8 (of that format's peak, scaling and casts "
        "included): the matmul curve when absent")
    matmul_fp4: EfficiencyCurve | None = Field(
        default=None, description="GEMMs in fp4 (of the fp4 peak, scaling and casts included): "
        "the matmul_fp8 curve when absent")

    def curve(self, name: str) -> EfficiencyCurve:
        """The curve ``name`` as the compute model uses it: an absent one is the curve its field
        falls back to (``matmul_fp4`` -> ``matmul_fp8`` -> ``matmul``, ``gather`` -> ``memory``)."""
        return getattr(self, self.present(name))

    def present(self, name: str) -> str:
        """The field that holds curve ``name``: itself, or the one it falls back to."""
        while getattr(self, name) is None:
            name = _FALLBACK[name]
        return name


#: The curve an absent optional curve of :class:`Efficiency` falls back to.
_FALLBACK = {"matmul_fp8": "matmul", "matmul_fp4": "matmul_fp8", "gather": "memory"}


class Lineage(Frozen):
    """Where a chip sits in its family tree: vendor -> architecture -> chip. Fitted efficiencies
    pool along it (``simulator.published.hier``): a chip nobody measured borrows its
    architecture's values, an architecture nobody measured the global ones."""

    vendor: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    architecture: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$", description="e.g. nvidia-hopper")
    chip: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="e.g. h100 (the silicon; "
                      "two systems with one chip, e.g. b200 and gb200, may share it)")


Basis = Literal["own", "architecture", "global", "assumed"]


class FittedValue(Frozen):
    """One fitted value and where it came from: ``own`` (this chip's ``rows``), ``architecture``
    (borrowed from measured siblings, named in ``borrowed_from``), ``global`` (every chip, plus
    the stated physical rule) or ``assumed`` (no row informed it: the profile's value kept).
    ``log_sd`` is its posterior standard deviation in natural-log units (None: not estimated)."""

    term: str
    value: float = Field(gt=0, allow_inf_nan=False)
    basis: Basis
    rows: int = Field(ge=0)
    borrowed_from: str = ""
    log_sd: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class IntervalBand(Frozen):
    """A forecast interval as factors on the step time: ``[t * lo_factor, t * hi_factor]`` covers
    ``level`` of held-out runs at this transfer distance (quantiles of their cross-validated
    ``measured / forecast``, from ``residuals`` runs)."""

    level: float = Field(gt=0, lt=1)
    lo_factor: float = Field(gt=0, allow_inf_nan=False)
    hi_factor: float = Field(gt=0, allow_inf_nan=False)
    residuals: int = Field(ge=1)
    distance: Basis

    @model_validator(mode="after")
    def _ordered(self) -> IntervalBand:
        if self.lo_factor > self.hi_factor:
            raise ValueError(f"lo_factor {self.lo_factor} exceeds hi_factor {self.hi_factor}")
        return self


class FitRecord(Frozen):
    """How a profile's efficiencies were fitted to measured runs (``meshcast fit --published``):
    the basis of the profile as a whole (the farthest any of its compute values travelled), each
    value's provenance, the precisions its architecture was measured in, and the intervals
    (dense and MoE) at its transfer distance."""

    source: str = Field(min_length=3)
    basis: Basis
    basis_detail: str
    values: list[FittedValue]
    measured_precisions: list[str] = Field(default_factory=list)
    interval_dense: IntervalBand | None = None
    interval_moe: IntervalBand | None = None


class Chip(Frozen):
    name: str
    vendor: Literal["nvidia", "amd", "google", "other"]
    peak_flops_per_s: dict[Dtype, Sourced] = Field(
        description="Dense (no structured sparsity) peak per dtype."
    )
    hbm_capacity_bytes: Sourced
    hbm_bandwidth_bytes_per_s: Sourced
    launch_overhead_s: Sourced = Field(description="Fixed cost of issuing one kernel/op.")
    collectives_use_compute: bool = Field(
        default=False, description="Collectives are copies run by the compute cores (a CPU "
        "host), so they cannot overlap compute: the schedule runs them on the compute stream.")
    devices_per_chip: int = Field(
        default=1, ge=1, le=1024, description="JAX/framework devices one chip shows (peaks and HBM stay "
        "per chip): 2 on TPU7x (Ironwood), whose two TensorCores are each a device; 1 on "
        "megacore TPUs (v4, v5p: two TensorCores, one device) and on GPUs.")

    @model_validator(mode="after")
    def _needs_bf16(self) -> Chip:
        if "bf16" not in self.peak_flops_per_s:
            raise ValueError(
                f"peak_flops_per_s must include bf16 (has {sorted(self.peak_flops_per_s)})"
            )
        return self


CollectiveKind = Literal["all_gather", "reduce_scatter", "all_reduce", "all_to_all", "permute"]


class CollectiveOverride(Frozen):
    """What one collective kind achieves on a level when it differs from the level's defaults
    (e.g. all-to-all below ring all-reduce): its own bandwidth efficiency and step latency.
    Calibration writes these per kind; datasheet profiles leave them out."""

    efficiency: Fraction
    latency_s: Sourced


class NetworkLevel(Frozen):
    """One dimension of the network, innermost (fastest) first.

    kind: ``switch`` (NVSwitch/xGMI: every device one hop from every other), ``torus`` (one
    dimension of a TPU torus; ring with or without wraparound), ``fat_tree`` (InfiniBand/RoCE/DCN
    scale-out with full bisection). ``size`` is how many members this level joins: devices for
    the innermost level and torus dimensions, groups of the level below (nodes, racks, slices)
    for outer levels; for the outermost it is a modelling bound (the largest system considered).
    Bandwidth is per device, per direction: for a torus dimension, per link per direction (a
    device has two links along a dimension).
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Literal["switch", "torus", "fat_tree"]
    size: int = Field(ge=1, le=MAX_LEVEL_SIZE)
    link_bandwidth_bytes_per_s: Sourced
    latency_s: Sourced
    efficiency: Fraction = Field(description="Achieved fraction of link bandwidth, large messages.")
    wraparound: bool = False
    collectives: dict[CollectiveKind, CollectiveOverride] = Field(
        default_factory=dict, description="Per-kind efficiency and latency replacing the above.")
    placement_unit: Sourced | None = Field(
        default=None, description="The smallest share of one group of this level a scheduler "
        "hands a job that spans several groups, in members (e.g. a 4-GPU compute tray of a "
        "72-GPU NVL72 rack); a whole number dividing ``size``. Absent: whole groups only (an "
        "8-GPU server is one scheduling unit). See simulator.cost.topology.job_levels.")

    @model_validator(mode="after")
    def _unit_divides_size(self) -> NetworkLevel:
        u = self.placement_unit
        if u is not None and (u.value != int(u.value) or self.size % int(u.value)):
            raise ValueError(f"placement_unit {u.value:g} must be a whole number dividing size "
                             f"{self.size}")
        return self


class SliceShape(Frozen):
    """A TPU slice: chips along each torus level, and whether each dimension wraps around."""

    shape: list[Annotated[int, Field(le=MAX_LEVEL_SIZE)]] = Field(min_length=1)
    wraparound: list[bool]
    source: str = Field(min_length=3)

    @model_validator(mode="after")
    def _same_rank(self) -> SliceShape:
        if len(self.shape) != len(self.wraparound) or any(s < 1 for s in self.shape):
            raise ValueError(
                f"shape {self.shape} and wraparound {self.wraparound} need one positive entry "
                "per torus level"
            )
        return self

    @property
    def chips(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


class HardwareProfile(Frozen):
    """A system: chip + network levels (+ TPU slice shapes) + optional price."""

    schema_version: Literal[1] = 1
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    display_name: str
    aliases: list[str] = Field(default_factory=list)
    chip: Chip
    efficiency: Efficiency
    network: list[NetworkLevel] = Field(min_length=1)
    slices: list[SliceShape] = Field(default_factory=list)
    price_per_chip_hour_usd: Sourced | None = None
    checkpoint_write_bytes_per_s_per_host: Sourced | None = Field(
        default=None, description="Checkpoint write bandwidth to storage per host (bytes/s); "
        "absent: simulator.cost.goodput's sourced default (Llama 3's storage, 0.98 GB/s)")
    lineage: Lineage | None = None
    fit: FitRecord | None = None
    notes: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> HardwareProfile:
        names = [lvl.name for lvl in self.network]
        if len(set(names)) != len(names):
            raise ValueError(f"network level names must be unique (got {names})")
        torus = [lvl for lvl in self.network if lvl.kind == "torus"]
        if self.slices:
            if not torus:
                raise ValueError("slices are given but no network level has kind 'torus'")
            for s in self.slices:
                if len(s.shape) != len(torus):
                    raise ValueError(
                        f"slice {s.shape} has {len(s.shape)} dims but the profile has "
                        f"{len(torus)} torus levels {[t.name for t in torus]}"
                    )
                for dim, lvl in zip(s.shape, torus):
                    if dim > lvl.size:
                        raise ValueError(
                            f"slice {s.shape}: {dim} chips along {lvl.name} exceeds its size "
                            f"{lvl.size}"
                        )
        elif torus:
            raise ValueError("a profile with torus levels must list its slices (shape, wraparound)")
        return self

    def peak_flops(self, dtype: str) -> float:
        """Peak dense FLOP/s for ``dtype``; fp8/fp4 fall back to the next wider format."""
        order = {"fp4": ["fp4", "fp8", "bf16"], "fp8": ["fp8", "bf16"]}.get(dtype, [dtype])
        for d in order:
            if d in self.chip.peak_flops_per_s:
                return self.chip.peak_flops_per_s[d].value
        from meshcast.errors import MeshcastError

        raise MeshcastError(
            f"precision: {self.name} has no peak for {dtype!r}; it has "
            f"{sorted(self.chip.peak_flops_per_s)}"
        )
