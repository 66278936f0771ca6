"""ShardingSpec: the named mesh, its binding to network levels, batching and execution choices.

Mesh axes use the AXLearn/MaxText vocabulary. ``-1`` means "the rest of the chips" (at most once).
Batch axes are ``data``, ``fsdp`` and ``expert`` (the expert axis also splits tokens, as in
Du et al. 2024 / AXLearn, and as Megatron carves EP out of DP); ``seq`` splits the sequence;
``model`` splits heads and FFN; ``pipeline`` splits layers.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from meshcast.frozen import Frozen

AXES: tuple[str, ...] = ("data", "fsdp", "expert", "model", "pipeline", "seq")
AxisName = Literal["data", "fsdp", "expert", "model", "pipeline", "seq"]
BATCH_AXES: tuple[str, ...] = ("data", "fsdp", "expert")
#: Default placement order, innermost (fastest network level) first, as Megatron orders ranks
#: (TP fastest, then CP, EP, DP, PP) and MaxText puts tensor/FSDP on ICI and data on DCN.
DEFAULT_AXIS_ORDER: tuple[str, ...] = ("model", "seq", "expert", "fsdp", "data", "pipeline")
#: Upper bounds of the sizes (a typo of 10^24 is an error, not an overflow or a hang): chips on
#: one mesh axis, sequences per micro-batch or step, tokens per step, tokens per sequence.
MAX_AXIS = 1 << 24
MAX_SEQUENCES = 1 << 32
MAX_TOKENS_PER_STEP = 1 << 40
MAX_SEQ_LEN = 1 << 24


#: Activation recompute policies: none, the attention core and elementwise ops (Megatron's
#: selective recompute), or every op of the layer.
Remat = Literal["none", "selective", "full"]
REMAT_POLICIES: tuple[str, ...] = get_args(Remat)


class OptimizerSpec(Frozen):
    """Adam(W) with fp32 master weights; state and gradient dtypes are choices."""

    kind: Literal["adam"] = "adam"
    state_dtype: Literal["fp32", "bf16"] = "fp32"
    grad_dtype: Literal["fp32", "bf16"] = "fp32"
    master_weights: bool = True


class ShardingSpec(Frozen):
    """How one step is laid over the chips.

    ``mesh``: axis -> size (missing axes are 1, one axis may be -1). ``bindings``: axis -> the
    network level names it must occupy (e.g. ``model: [nvlink]``, ``fsdp: [ici_x, ici_y]``);
    unbound axes fill the remaining levels innermost-first in ``axis_order``.
    ``micro_batch``: sequences per batch shard per micro-step; ``global_batch`` in sequences or
    ``global_batch_tokens`` in tokens (one of them; default one micro-batch per shard).
    """

    mesh: dict[AxisName, int] = Field(default_factory=lambda: {"data": -1})
    bindings: dict[AxisName, list[str]] = Field(default_factory=dict)
    axis_order: list[AxisName] = Field(default_factory=lambda: list(DEFAULT_AXIS_ORDER))
    micro_batch: int = Field(default=1, ge=1, le=MAX_SEQ_LEN)
    global_batch: int | None = Field(default=None, ge=1, le=MAX_SEQUENCES)
    global_batch_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_PER_STEP)
    seq_len: int | None = Field(default=None, ge=1, le=MAX_SEQ_LEN)
    remat: Remat = "selective"
    precision: Literal["bf16", "fp8", "fp4", "fp32"] = Field(
        default="bf16", description="matmul precision; fp32 also makes activations 4 bytes "
        "(as a CPU calibration host runs)")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    distributed_optimizer: bool = Field(
        default=False,
        description="ZeRO-1: optimizer state sharded over data (Megatron --use-distributed-optimizer)",
    )
    tp_comm_overlap: bool = Field(
        default=False,
        description="tensor-parallel all-gather / reduce-scatter pipelined with the attention and "
        "dense-MLP GEMMs they feed or follow (Megatron --tp-comm-overlap, TE userbuffers)")
    ep_comm_overlap: bool = Field(
        default=False,
        description="MoE all-to-alls overlapped with another micro-batch's compute (Megatron "
        "--overlap-moe-expert-parallel-comm); they still occupy the expert links")
    overlap_param_gather: bool = Field(
        default=False,
        description="the distributed optimizer's all-gather of updated weights runs layer by "
        "layer under the next step's first forward (Megatron --overlap-param-gather; "
        "simulator.cost.formulas.param_gather_hidden); needs distributed_optimizer")
    moe_host_issue_s: float = Field(
        default=0.0, ge=0.0, le=10.0,
        description="seconds the host takes to issue one op of a dropless MoE layer's "
        "data-dependent part (dispatch to combine) when it runs eagerly: PyTorch dropless "
        "dispatchers sync token counts to the host and cannot be captured in CUDA graphs, so that "
        "part takes at least (its ops x this). 0 (default): launches never bind (XLA/JAX, "
        "token-drop with full CUDA graphs)")
    moe_dispatcher: Literal["alltoall", "deepep"] = Field(
        default="alltoall",
        description="how MoE tokens reach their experts: 'alltoall' sends one copy per (token, "
        "expert) (Megatron's alltoall dispatcher, GShard/XLA); 'deepep' sends a token once per "
        "destination device within a node and once per destination node across the fabric "
        "(DeepEP / HybridEP, Megatron's flex dispatcher)")
    flash_attention: bool = Field(
        default=True,
        description="fused (flash) attention: the score matrices never reach HBM. False: the "
        "attention core of Megatron-LM before flash attention (Narayanan et al. 2021, Korthikanti "
        "et al. 2022): the [b, N/t, s, s] scores are written, soft-maxed, dropped out and read "
        "back in HBM, and stored for the backward unless recomputed "
        "(simulator.graph.layers.unfused_score_bytes)")
    fused_loss: bool = Field(
        default=False,
        description="how the loss is formed on the last pipeline rank's logits "
        "(simulator.graph.memory.logits_bytes). False: the logits are cast to fp32 and the cross "
        "entropy keeps fp32 logits and their fp32 gradient (Megatron-LM, Megatron-Core's "
        "unfused and 'native' losses, MaxText, AXLearn). True: a fused loss computed in place on "
        "the matmul-dtype (bf16) logits, its backward writing the gradient into their buffer "
        "(Megatron-Core cross_entropy_loss_fusion with cross_entropy_fusion_impl='te', "
        "Transformer Engine's parallel_cross_entropy)")
    pipeline_schedule: Literal["1f1b", "interleaved"] = "1f1b"
    virtual_stages: int = Field(default=1, ge=1, le=1 << 14, description="model chunks per pipeline rank")
    slice_shape: list[Annotated[int, Field(ge=1, le=MAX_AXIS)]] | None = Field(
        default=None, description="TPU slice shape override")

    @field_validator("mesh")
    @classmethod
    def _sizes(cls, mesh: dict[str, int]) -> dict[str, int]:
        for axis, size in mesh.items():
            if size == 0 or size < -1:
                raise ValueError(f"mesh axis {axis}={size}: sizes must be positive, or -1 for the rest")
            if size > MAX_AXIS:
                raise ValueError(f"mesh axis {axis}={size}: sizes must be at most {MAX_AXIS}")
        if sum(1 for s in mesh.values() if s == -1) > 1:
            raise ValueError(f"mesh {mesh}: at most one axis may be -1")
        return mesh

    @field_validator("axis_order")
    @classmethod
    def _order(cls, order: list[str]) -> list[str]:
        if sorted(order) != sorted(AXES):
            raise ValueError(f"axis_order {order} must list each of {list(AXES)} exactly once")
        return order

    @model_validator(mode="after")
    def _batch_once(self) -> ShardingSpec:
        if self.global_batch is not None and self.global_batch_tokens is not None:
            raise ValueError(
                f"give global_batch ({self.global_batch}) or global_batch_tokens "
                f"({self.global_batch_tokens}), not both"
            )
        if self.virtual_stages > 1 and self.pipeline_schedule != "interleaved":
            raise ValueError(
                f"virtual_stages={self.virtual_stages} needs pipeline_schedule='interleaved'"
            )
        if self.overlap_param_gather and not self.distributed_optimizer:
            raise ValueError("overlap_param_gather=True needs distributed_optimizer=True (the "
                             "all-gather it overlaps is the distributed optimizer's); set both")
        return self


def make_sharding(**fields) -> ShardingSpec:
    """A ShardingSpec from keyword fields; a bad field raises MeshcastError naming it."""
    from pydantic import ValidationError

    from meshcast.errors import from_validation_error

    try:
        return ShardingSpec(**fields)
    except ValidationError as e:
        raise from_validation_error(e, "sharding") from None


def parse_mesh(text: str) -> dict[str, int]:
    """Parse ``data=-1,fsdp=8`` into ``{"data": -1, "fsdp": 8}``; errors name the bad part."""
    from meshcast.errors import MeshcastError

    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or name not in AXES:
            raise MeshcastError(
                f"mesh: {part!r} is not AXIS=SIZE with AXIS one of {', '.join(AXES)} "
                "(example: data=-1,fsdp=8)"
            )
        if name in out:
            raise MeshcastError(f"mesh: axis {name} is given twice in {text!r}; name each axis once")
        try:
            out[name] = int(value)
        except ValueError:
            raise MeshcastError(f"mesh: size {value!r} of axis {name} is not an integer") from None
    return out


def parse_bindings(text: str) -> dict[str, list[str]]:
    """Parse ``model=nvlink,data=ib`` or ``fsdp=ici_x+ici_y`` into axis -> level names."""
    from meshcast.errors import MeshcastError

    out: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, levels = part.partition("=")
        if not eq or name.strip() not in AXES or not levels.strip():
            raise MeshcastError(
                f"bind: {part!r} is not AXIS=LEVEL[+LEVEL] with AXIS one of {', '.join(AXES)} "
                "(example: model=nvlink,data=ib)"
            )
        if name.strip() in out:
            raise MeshcastError(f"bind: axis {name.strip()} is bound twice in {text!r}")
        out[name.strip()] = [lv.strip() for lv in levels.split("+")]
    return out
