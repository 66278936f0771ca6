"""Each published source read by its own rules.

A published table gives throughput and a parallel layout; how the run executed (which FLOP
formula its TFLOP/s use, how its layout maps onto meshcast's mesh, whether tensor-parallel or
expert all-to-all communication overlaps compute, whether the optimizer state is sharded over
data, whether attention is fused, whether the loss is fused in place on the bf16 logits, what it
recomputes when the row does not say) is its framework's documented default, which differs from
source to source. :data:`RULES` holds one
:class:`SourceRules` record per recognised source family, each setting cited in ``cites``;
:func:`rules_for` finds the record of a ``source_id``.

An unrecognised source is read by :data:`GENERIC`, an explicit default each of whose settings
is stated and argued below, and every such row's notes say so ("source X has no rules in
meshcast: read by the generic default ..."); the report's by-source line lists it under its own
``source_id``. A skip would be
safer for the validation figures, but a planner's table of runs from a framework meshcast does not
know yet would then forecast nothing at all; the default forecasts them and names itself, and a
source whose runs it misreads gets a record of its own here. A row of an unknown source that
gives only TFLOP/s or MFU is still skipped: no FLOP formula is known for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from simulator.published.rows import PublishedRow

#: Fields of a record that set ShardingSpec fields of the same name.
SWITCHES = ("tp_comm_overlap", "ep_comm_overlap", "distributed_optimizer", "flash_attention",
            "fused_loss", "overlap_param_gather")


@dataclass(frozen=True)
class SourceRules:
    """How rows of one source family are read and what their runs did.

    ``flops``: the FLOP formula of the source's TFLOP/s and MFU figures (a name
    :func:`simulator.published.measured.step_flops` knows; None: the source publishes none, so
    its rows must give step time or tokens/s). ``mesh``: how its layout columns map to meshcast
    axes (``megatron``, ``maxtext`` or ``axlearn``; :mod:`simulator.published.jobs`).
    ``tp_comm_overlap``, ``ep_comm_overlap``, ``distributed_optimizer``, ``flash_attention``,
    ``fused_loss``, ``overlap_param_gather``: the ShardingSpec switches of the same names.
    ``recompute``: the remat policy of a row that does not state one. ``grad_dtype``: the dtype
    of the gradient buffer the backward accumulates into and the data-parallel reduction sends
    (``OptimizerSpec.grad_dtype``; fp32 unless the source's recipes reduce in bf16). ``cites``:
    for each of those fields, where the source documents it.
    """

    name: str
    match: tuple[str, ...]  # source_id prefixes, or substrings when ``substring``
    flops: str | None
    mesh: str
    tp_comm_overlap: bool
    ep_comm_overlap: bool
    distributed_optimizer: bool
    flash_attention: bool
    fused_loss: bool
    recompute: str
    cites: dict[str, str] = field(default_factory=dict)
    substring: bool = False
    grad_dtype: str = "fp32"
    overlap_param_gather: bool = False

    def matches(self, source_id: str) -> bool:
        s = source_id.lower()
        return any((m in s) if self.substring else s.startswith(m) for m in self.match)

    def switches(self) -> dict[str, bool]:
        """The ShardingSpec switches this source's runs set."""
        return {k: getattr(self, k) for k in SWITCHES}


_MCORE_MESH = ("Megatron-Core parallel_state: TP fastest, then CP, EP, DP, PP; dp = n/(tp pp cp) "
               "when not published; EP carved out of DP x CP (expert data parallel); Megatron-FSDP "
               "shards over the data-parallel group")

#: Megatron-Core era recipes: NVIDIA Megatron-Bridge performance summaries (25.09-26.08), and
#: (:data:`NEMO_2407`, the same but for the loss) the NeMo performance summaries (24.07, the NeMo 2
#: / Megatron-Core container) that preceded them. Their tables publish layouts, not recompute or
#: overlap settings; these are the recipes'.
MEGATRON_CORE = SourceRules(
    name="megatron_core_recipes", match=("megatron_bridge",), flops="megatron",
    mesh="megatron", tp_comm_overlap=True, ep_comm_overlap=True, distributed_optimizer=True,
    flash_attention=True, fused_loss=True, recompute="none", grad_dtype="bf16",
    overlap_param_gather=True,
    cites={
        "overlap_param_gather": "Megatron-Bridge recipes set ddp.overlap_grad_reduce = True and "
                                "ddp.overlap_param_gather = True with use_distributed_optimizer "
                                "(src/megatron/bridge/recipes/llama/llama3.py, every pretrain "
                                "config; docs 'Communication Overlap': the DP communication is "
                                "chunked by Transformer layer and 'exposes only one DP "
                                "communication chunk'); NeMo 24.07: NeMo-Framework-Launcher "
                                "training configs run distributed_fused_adam with "
                                "overlap_param_sync: true",
        "flops": "the tables' 'model TFLOP/s/GPU' use Megatron-Core's num_floating_point_operations "
                 "(megatron/training/training.py); rows also give tokens/s, which comes first",
        "mesh": _MCORE_MESH,
        "tp_comm_overlap": "Megatron-Bridge scripts/performance presets set "
                           "CommOverlapConfig(tp_comm_overlap=True) (docs: 'Communication "
                           "Overlap'); NeMo 24.07 LLM recipes set ub_tp_comm_overlap",
        "ep_comm_overlap": "Megatron-Bridge MoE performance presets overlap the expert all-to-alls "
                           "(--overlap-moe-expert-parallel-comm; e.g. scripts/moe_model_zoo "
                           "qwen3 launch_qwen235b.sh: A2A_OVERLAP=1)",
        "distributed_optimizer": "the Bridge rows' fsdp_zero cell reads 'DDP/distributed "
                                 "optimizer' (OptimizerConfig.use_distributed_optimizer=True in "
                                 "the recipes); NeMo 24.07 recipes: distributed_fused_adam",
        "flash_attention": "Transformer Engine fused / flash attention, Megatron-Core's default "
                           "attention backend (attention_backend=auto)",
        "fused_loss": "every Megatron-Bridge performance preset sets cross_entropy_fusion_impl = "
                      "'te' (v0.1.0rc4 / 25.09: scripts/performance/configs/*/*_llm_pretrain.yaml "
                      "model.cross_entropy_fusion_impl: \"te\"; v0.2.0: scripts/performance/"
                      "utils/helpers.py set_common_perf_overrides, called by "
                      "get_model_recipe_with_user_overrides for every preset; from v0.3.0: "
                      "scripts/performance/utils/overrides.py _set_common_perf_overrides) and "
                      "the model providers keep cross_entropy_loss_fusion = True (src/megatron/"
                      "bridge/models/gpt_provider.py, mamba/mamba_provider.py, deepseek/"
                      "deepseek_provider.py), so Megatron-Core's compute_language_model_loss "
                      "calls Transformer Engine's parallel_cross_entropy on the bf16 logits, "
                      "which writes the gradient in place",
        "recompute": "Megatron-Core TransformerConfig.recompute_granularity defaults to None (no "
                     "recompute); the tables do not publish it ('not stated (see perf recipes)'). "
                     "Presets that turn selective recompute on for one model are not tabulated "
                     "here",
        "grad_dtype": "bf16 gradient buffers: every Megatron-Bridge performance recipe turns "
                      "grad_reduce_in_fp32 off (v0.1.0rc4 / 25.09: scripts/performance/configs/"
                      "*/*_llm_pretrain.yaml mixed_precision.grad_reduce_in_fp32: false, which "
                      "MixedPrecisionConfig.setup copies into the DDP config; from v0.2.0 / "
                      "25.11: set_<model>_common_configs in scripts/performance/configs/"
                      "{llama,deepseek,qwen,gpt_oss}/*_llm_pretrain.py and llama3_llm_finetune.py "
                      "set mixed_precision and ddp grad_reduce_in_fp32 = False); NeMo 24.07: "
                      "NeMo-Framework-Launcher@24.07 examples/training/{gpt,llama}/h100/*_fp8*.sh "
                      "pass +training.model.optim.grad_sync_dtype=bf16 and conf/training/"
                      "nemotron/nemotron_340b.yaml sets optim.grad_sync_dtype: bf16 (Apex "
                      "distributed_fused_adam's contiguous gradient buffer)",
    })

#: NeMo 24.07 performance summaries: Megatron-Core's recipes as above, but their container predates
#: the Transformer Engine loss, so the logits go to fp32.
NEMO_2407 = replace(
    MEGATRON_CORE, name="nemo_2407_recipes", match=("nemo_",), fused_loss=False,
    cites={**MEGATRON_CORE.cites,
           "fused_loss": "Megatron-Core's Transformer Engine loss (cross_entropy_fusion_impl 'te') "
                         "arrived in 2025 (core_v0.12.0, 'Added option for parallel cross "
                         "entropy'); before it both the unfused and the fused "
                         "(cross_entropy_loss_fusion) vocab-parallel losses cast the logits "
                         "to fp32 (core_r0.8.0 megatron/core/tensor_parallel/cross_entropy.py "
                         "VocabParallelCrossEntropy.calculate_logits_max: "
                         "vocab_parallel_logits.float(), which fusions/fused_cross_entropy.py "
                         "calls too)"})

#: The Megatron-LM README's H100 weak- and strong-scaling results (Megatron-Core r0.8, 2024).
MEGATRON_LM_README = SourceRules(
    name="megatron_lm_readme", match=("megatron_lm_readme_h100",), flops="megatron",
    mesh="megatron", tp_comm_overlap=True, ep_comm_overlap=False, distributed_optimizer=True,
    flash_attention=True, fused_loss=False, recompute="none", overlap_param_gather=True,
    cites={
        "overlap_param_gather": "README: 'We perform fine-grained overlapping of data-parallel "
                                "(--overlap-grad-reduce --overlap-param-gather) ...'",
        "flops": "README 'Performance Benchmarking': TFLOP/s by Megatron-LM's "
                 "num_floating_point_operations (r0.8)",
        "mesh": _MCORE_MESH,
        "tp_comm_overlap": "README: 'We perform fine-grained overlapping of data-parallel "
                           "(--overlap-grad-reduce --overlap-param-gather), tensor-parallel "
                           "(--tp-comm-overlap) and pipeline-parallel communication'",
        "ep_comm_overlap": "dense GPT table: no expert all-to-alls to overlap",
        "distributed_optimizer": "--overlap-param-gather, named in the README, requires "
                                 "--use-distributed-optimizer (megatron/training/arguments.py)",
        "flash_attention": "Megatron-Core r0.8 with Transformer Engine: TEDotProductAttention "
                           "(flash / cuDNN fused attention)",
        "fused_loss": "Megatron-Core r0.8 has no Transformer Engine loss: compute_language_model_"
                      "loss calls fused_vocab_parallel_cross_entropy (--cross-entropy-loss-fusion) "
                      "or vocab_parallel_cross_entropy, both casting the logits to fp32 "
                      "(core_r0.8.0 megatron/core/tensor_parallel/cross_entropy.py "
                      "calculate_logits_max: vocab_parallel_logits.float())",
        "recompute": "the README does not state it; --recompute-granularity defaults to None "
                     "(megatron/training/arguments.py)",
        "grad_dtype": "fp32: with --bf16 Megatron-LM forces accumulate_allreduce_grads_in_fp32 "
                      "(megatron/training/arguments.py); the README names no override",
    })

_PAPER_SWITCHES = {
    "tp_comm_overlap": "2021-22 Megatron-LM ran TP all-reduces blocking on the compute stream; "
                       "TP comm overlap (Transformer Engine userbuffers, --tp-comm-overlap) came "
                       "in 2023",
    "ep_comm_overlap": "dense GPT models",
    "distributed_optimizer": "Adam state replicated over data parallel ranks (the papers' memory "
                             "accounting; --use-distributed-optimizer postdates the runs)",
    "flash_attention": "Megatron-LM CoreAttention materialised the [b, a, s, s] scores (baddbmm, "
                       "fused scale-mask-softmax, attention dropout, bmm); Korthikanti et al. "
                       "2022 sec. 4.1 counts their 5 a s^2 b activation bytes; FlashAttention "
                       "(Dao et al., 2022) postdates both papers' runs",
    "overlap_param_gather": "no distributed optimizer, so no weight all-gather to overlap",
    "fused_loss": "Megatron-LM computed the loss on fp32 logits: "
                  "mpu.vocab_parallel_cross_entropy(output.float(), labels) unless "
                  "--fp16-lm-cross-entropy (megatron/model/gpt_model.py, v2.6, 2021)",
    "grad_dtype": "fp32 gradients (mixed-precision training as in the papers' memory accounting)",
    "mesh": "Table 1 gives t, p and d = n/(t p); meshcast models TP with sequence parallelism "
            "(Korthikanti 2022), which Narayanan 2021 predates: same TP bytes, norms and dropout "
            "split over t",
}

#: Narayanan et al. 2021 (SC'21, arXiv 2104.04473), "Efficient Large-Scale Language Model
#: Training on GPU Clusters Using Megatron-LM": Table 1 on A100.
MEGATRON_2021 = SourceRules(
    name="megatron_narayanan2021", match=("narayanan",), substring=True, flops="narayanan_eq3",
    mesh="megatron", tp_comm_overlap=False, ep_comm_overlap=False, distributed_optimizer=False,
    flash_attention=False, fused_loss=False, recompute="full",
    cites={
        **_PAPER_SWITCHES,
        "flops": "eq. (3): 96 B s l h^2 (1 + s/(6h) + V/(16 l h)), recompute FLOPs included",
        "recompute": "eq. (3) counts a recompute forward pass (96 = 4 x 24: forward, recompute, "
                     "backward twice the forward): full activation recomputation in every "
                     "Table 1 run",
    })

#: Korthikanti et al. 2022 (arXiv 2205.05198), "Reducing Activation Recomputation in Large
#: Transformer Models": sequence parallelism and selective recompute on A100; the same
#: Megatron-LM as :data:`MEGATRON_2021` but for its FLOP formula and recompute.
MEGATRON_2022 = replace(
    MEGATRON_2021, name="megatron_korthikanti2022", match=("korthikanti",), flops="megatron",
    recompute="selective",
    cites={
        **_PAPER_SWITCHES,
        "flops": "the paper's model FLOPs 72 B s l h^2 (1 + s/(6h) + V/(12 l h)) (recompute not "
                 "counted; its HFU adds it): Megatron-Core's formula for GPT",
        "recompute": "sec. 5: selective activation recomputation (the attention core: QK^T, "
                     "softmax, dropout, AV) with sequence parallelism, the configuration the "
                     "paper proposes and runs end to end",
    })

#: MaxText (AI-Hypercomputer/maxtext) TPU configs and their README MFU tables.
MAXTEXT = SourceRules(
    name="maxtext", match=("maxtext",), flops="maxtext", mesh="maxtext", tp_comm_overlap=True,
    ep_comm_overlap=False, distributed_optimizer=False, flash_attention=True, fused_loss=False,
    recompute="full",
    cites={
        "overlap_param_gather": "no distributed optimizer (state sharded like the weights, over "
                                "fsdp): XLA schedules the FSDP gathers itself",
        "flops": "calculate_tflops_training_per_device (src/maxtext/utils/maxtext_utils.py)",
        "mesh": "dcn_data_parallelism over slices, ici_fsdp / ici_tensor / ici_expert within "
                "one; per_device_batch_size sequences per JAX device per micro-step, global "
                "batch = per_device_batch_size x jax.device_count() x "
                "gradient_accumulation_steps (pyconfig; the data input's global_batch_size)",
        "tp_comm_overlap": "configs/tpu/v5e/*.sh LIBTPU_INIT_ARGS: async collective fusion and "
                           "--xla_tpu_overlap_compute_collective_tc; v4 scripts: "
                           "--xla_enable_async_all_gather",
        "ep_comm_overlap": "no expert all-to-all overlap flag in the scripts",
        "distributed_optimizer": "optimizer state sharded like the parameters (over fsdp); DCN "
                                 "data-parallel replicas keep whole copies",
        "flash_attention": "base.yml attention: autoselected -> the Pallas flash / splash kernel "
                           "for training on TPU",
        "fused_loss": "fp32 logits: base.yml logits_dot_in_fp32: True (2024: the LM-head dot "
                      "in fp32), then cast_logits_to_fp32: true (from late 2024: the decoder "
                      "casts the logits .astype(jnp.float32)), num_vocab_tiling: 1; the train "
                      "step forms one-hot "
                      "targets and calls max_utils.cross_entropy_with_logits, whose custom VJP "
                      "keeps the fp32 logits and exp(logits - max) over the whole vocabulary",
        "recompute": "base.yml remat_policy: 'full'",
        "grad_dtype": "fp32: base.yml weight_dtype float32, so the gradients of the fp32 weights "
                      "are fp32",
    })

#: AXLearn (apple/axlearn) runs, e.g. Du et al. 2024 (arXiv 2405.15052).
AXLEARN = SourceRules(
    name="axlearn", match=("axlearn",), flops=None, mesh="axlearn", tp_comm_overlap=True,
    ep_comm_overlap=False, distributed_optimizer=False, flash_attention=True, fused_loss=False,
    recompute="full",
    cites={
        "overlap_param_gather": "no distributed optimizer (state partitioned like the weights, "
                                "over fsdp): XLA schedules the FSDP gathers itself",
        "flops": "AXLearn reports step times (Du et al. 2024); no TFLOP/s formula is documented, "
                 "so rows must give step_time_s or tokens_per_s_per_accel",
        "mesh": "mesh_shape / mesh_rules with axes (pipeline, data, expert, fsdp, seq, model) as "
                "published: tp -> model, ep -> expert, dp -> data, cp -> seq, pp -> pipeline, "
                "fsdp as the row's fsdp cell gives it (else the rest of the chips); on TPU, data "
                "spans slices over DCN when one slice does not hold the job (HybridMeshShape)",
        "tp_comm_overlap": "axlearn/common/compiler_options.py default_xla_options: the "
                           "latency-hiding scheduler on every TPU, async all-gather / collective "
                           "permute on v4 (default from v5), collective fusion and "
                           "xla_tpu_overlap_compute_collective_tc on v6e",
        "ep_comm_overlap": "GShard-style einsum dispatch; no all-to-all overlap documented",
        "distributed_optimizer": "optimizer state partitioned like the parameters (fsdp); data "
                                 "replicas keep whole copies",
        "flash_attention": "the fuji configs use axlearn.common.flash_attention (TPU Pallas / GPU "
                           "kernels)",
        "fused_loss": "axlearn/common/loss.py cross_entropy casts bf16 / fp16 logits to fp32 "
                      "before the log-softmax (CrossEntropyLossMetrics in causal_lm.py calls it)",
        "recompute": "the repeated transformer layer is rematerialised (RematSpec over the "
                     "layer: full remat) unless a mesh rule or the row names a save policy",
        "grad_dtype": "fp32: the fuji configs keep fp32 parameters (bf16 only in the training "
                      "step's activations), so their gradients are fp32",
    })

#: The explicit default for a source with no record (module docstring): what a current
#: large-scale training stack does unless told otherwise.
GENERIC = SourceRules(
    name="generic", match=(), flops=None, mesh="megatron", tp_comm_overlap=False,
    ep_comm_overlap=False, distributed_optimizer=True, flash_attention=True, fused_loss=False,
    recompute="none",
    cites={
        "flops": "no FLOP formula is known for an unrecognised source: its rows must give "
                 "step_time_s or tokens_per_s_per_accel",
        "mesh": "tp/pp/dp/cp/ep columns as the CSV's README defines them (Megatron's convention, "
                "EP carved out of DP)",
        "tp_comm_overlap": "off: TP communication overlap is opt-in in Megatron-Core/Transformer "
                           "Engine (--tp-comm-overlap) and in PyTorch (async TP)",
        "ep_comm_overlap": "off: expert all-to-all overlap is opt-in (Megatron-Core "
                           "--overlap-moe-expert-parallel-comm)",
        "distributed_optimizer": "on: sharded optimizer state is the default of current "
                                 "large-scale stacks (Megatron-Core distributed optimizer, PyTorch "
                                 "FSDP2, DeepSpeed ZeRO-1 and up)",
        "overlap_param_gather": "off: Megatron-Core's DistributedDataParallelConfig defaults "
                                "overlap_param_gather to False",
        "flash_attention": "on: fused attention is every current framework's default (PyTorch "
                           "SDPA, Transformer Engine, XLA Pallas kernels)",
        "fused_loss": "off: the loss over fp32 logits, the cautious count of its memory",
        "recompute": "none: the row states none, and a framework recomputes only when told to",
        "grad_dtype": "fp32: gradients reduced in fp32, the default of Megatron-Core and FSDP "
                      "mixed precision",
    })

#: Every recognised source family, most specific first (a source_id matching several takes the
#: first: the papers' substrings before the prefixes).
RULES: tuple[SourceRules, ...] = (MEGATRON_2021, MEGATRON_2022, MEGATRON_LM_README,
                                  MEGATRON_CORE, NEMO_2407, MAXTEXT, AXLEARN)


def rules_for(source_id: str) -> SourceRules | None:
    """The rules of ``source_id``'s family, or None when meshcast has none."""
    return next((r for r in RULES if r.matches(source_id)), None)


def rules_of(row: PublishedRow) -> tuple[SourceRules, str | None]:
    """The rules of the row's source, and for an unrecognised one :data:`GENERIC` with the note
    that says so."""
    sid = row.text("source_id")
    rules = rules_for(sid)
    if rules is not None:
        return rules, None
    return GENERIC, (f"source {sid!r} has no rules in meshcast: read by the generic default "
                     "(flash attention, distributed optimizer, no TP/EP comm overlap, recompute "
                     "none unless stated); add its rules to simulator/published/sources.py")
