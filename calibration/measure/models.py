"""Reference dense and MoE transformers in JAX, sharded from the simulator's own ModelSpec and
ShardingSpec, and a real train step (forward, backward, Adam update).

Shardings follow meshcast's model: weights ``[D, F]`` over (fsdp, model), attention heads over
``model``, the batch over (data, fsdp, expert). The MoE layer is GShard/AXLearn style (Du et al.
2024): tokens in groups ``[G, S_g, D]`` with G over (data, fsdp, expert); top-k gating with
capacity ``C = cf * S_g / E`` and token dropping; an optional load-balance loss; einsum
dispatch; a sharding change that moves the expert dimension onto ``expert`` (XLA lowers it to
an all-to-all) before the expert FFN
``wi[E, Fe, D]`` sharded (expert, model, fsdp), and back after ``wo[E, Fe, D]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from simulator.specs.model import ModelSpec

BATCH = ("data", "fsdp", "expert")


def param_specs(m: ModelSpec) -> dict:
    """PartitionSpec of every parameter (per layer lists). The SwiGLU gate and up weights are
    stored ``[F, D]`` (``[E, Fe, D]`` for experts): their gradients then come out of the
    backward GEMM in the weight's own layout. Stored ``[D, F]``, XLA:CPU transposes them
    inside the optimizer update and the activation backward, about 10% of a CPU step that no
    GEMM library on an accelerator pays and the simulator does not model."""
    layers = []
    for i in range(m.n_layers):
        layer = {"wq": P("fsdp", "model"), "wk": P("fsdp", "model"), "wv": P("fsdp", "model"),
                 "wo": P("model", "fsdp")}
        if m.is_moe_layer(i):
            layer.update(router=P(None, None), wi=P("expert", "model", "fsdp"),
                         wg=P("expert", "model", "fsdp"), wout=P("expert", "model", "fsdp"))
        else:
            layer.update(w1=P("model", "fsdp"), w3=P("model", "fsdp"), w2=P("model", "fsdp"))
        layers.append(layer)
    return {"embed": P("model", "fsdp"), "layers": layers}


def layer_shapes(m: ModelSpec, i: int) -> dict[str, tuple[int, ...]]:
    """Weight name -> shape of layer ``i`` (attention, then the dense MLP or the MoE's)."""
    D, hd = m.d_model, m.hd
    s = {"wq": (D, m.n_heads * hd), "wk": (D, m.kv_heads * hd), "wv": (D, m.kv_heads * hd),
         "wo": (m.n_heads * hd, D)}
    if m.is_moe_layer(i):
        E, fe = m.moe.n_experts, m.moe.expert_ffn_hidden
        s.update(router=(D, E), wi=(E, fe, D), wg=(E, fe, D), wout=(E, fe, D))
    else:
        s.update(w1=(m.ffn_hidden, D), w3=(m.ffn_hidden, D), w2=(m.ffn_hidden, D))
    return s


def init_params(m: ModelSpec, key, mesh, dtype=jnp.float32) -> dict:
    """Random ``dtype`` parameters placed on ``mesh`` with :func:`param_specs`."""
    D = m.d_model
    shapes = [layer_shapes(m, i) for i in range(m.n_layers)]
    specs = param_specs(m)
    keys = iter(jax.random.split(key, 1 + sum(len(s) for s in shapes)))

    def make(shape, spec, fan_in):
        w = (jax.random.normal(next(keys), shape, jnp.float32) / math.sqrt(fan_in)).astype(dtype)
        return jax.device_put(w, NamedSharding(mesh, spec))

    out_major = ("w1", "w3", "wi", "wg")  # stored [..., out, in]
    return {"embed": make((m.vocab_size, D), specs["embed"], D),
            "layers": [{k: make(v, specs["layers"][i][k], v[-1] if k in out_major else v[-2])
                        for k, v in s.items()} for i, s in enumerate(shapes)]}


def _c(x, mesh, spec):
    """Constrain ``x`` to ``spec`` on ``mesh``; a no-op without a mesh (inside ``shard_map``,
    where the calibration times a layer per device)."""
    return x if mesh is None else jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def _norm(x):
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6)


def attention(p, x, m: ModelSpec, mesh):
    B, S, _ = x.shape
    q = (x @ p["wq"]).reshape(B, S, m.n_heads, m.hd)
    k = (x @ p["wk"]).reshape(B, S, m.kv_heads, m.hd)
    v = (x @ p["wv"]).reshape(B, S, m.kv_heads, m.hd)
    rep = m.n_heads // m.kv_heads
    k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
    q = _c(q, mesh, P(BATCH, None, "model", None))
    return attention_core(q, k, v).reshape(B, S, -1) @ p["wo"]


def attention_core(q, k, v):
    """Causal softmax attention on ``[B, S, H, hd]``; the scores ``[B, H, S, S]`` are materialised
    (the calibration's attention benchmark times this very function)."""
    S, hd = q.shape[1], q.shape[-1]
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
    s = jnp.where(jnp.tril(jnp.ones((S, S), bool)), s, -1e9)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)


def dense_mlp(p, x):
    """SwiGLU; the gate and up weights are stored ``[F, D]`` (see :func:`param_specs`)."""
    up = jnp.einsum("bsd,fd->bsf", x, p["w1"]), jnp.einsum("bsd,fd->bsf", x, p["w3"])
    return (jax.nn.silu(up[0]) * up[1]) @ p["w2"]


def top_k_dispatch(logits, k: int, capacity: int):
    """GShard top-k gating with capacity: (combine [G,S,E,C] weights, dispatch mask).

    Choice j of each token takes the next free slot of its expert after all tokens' earlier
    choices; a token past capacity is dropped for that expert."""
    G, S, E = logits.shape
    probs = jax.nn.softmax(logits, axis=-1)
    remaining = probs
    used = jnp.zeros((G, 1, E), jnp.int32)
    combine = jnp.zeros((G, S, E, capacity), probs.dtype)
    for _ in range(k):
        idx = jnp.argmax(remaining, axis=-1)
        onehot = jax.nn.one_hot(idx, E, dtype=jnp.int32)
        pos = jnp.cumsum(onehot, axis=1) - onehot + used
        keep = onehot * (pos < capacity)
        slot = jax.nn.one_hot(jnp.sum(pos * keep, axis=-1), capacity, dtype=probs.dtype)
        gate = jnp.sum(probs * keep, axis=-1, keepdims=True)
        combine = combine + (gate * keep)[..., None] * slot[:, :, None, :]
        used = used + jnp.sum(keep, axis=1, keepdims=True)
        remaining = remaining * (1 - onehot)
    return combine, (combine > 0).astype(probs.dtype)


def load_balance_loss(logits):
    """Switch Transformer auxiliary loss (Fedus et al. 2021, eq. 4): ``E * sum_e f_e * P_e`` with
    ``f_e`` the share of tokens whose first choice is expert ``e`` and ``P_e`` the mean router
    probability of ``e``; 1.0 when routing is uniform, larger when it is not."""
    E = logits.shape[-1]
    probs = jax.nn.softmax(logits, axis=-1)
    first = jax.nn.one_hot(jnp.argmax(logits, axis=-1), E, dtype=probs.dtype)
    f = jnp.mean(first.reshape(-1, E), axis=0)
    return E * jnp.sum(f * jnp.mean(probs.reshape(-1, E), axis=0))


def moe_mlp(p, x, m: ModelSpec, mesh):
    """The MoE layer: ``(output, load-balance loss)``."""
    B, S, D = x.shape
    moe = m.moe
    sg = min(moe.group_size_tokens, S)
    g = x.reshape(B * S // sg, sg, D)
    g = _c(g, mesh, P(BATCH, None, None))
    capacity = max(1, int(moe.capacity_factor * sg / moe.n_experts))
    logits = g @ p["router"]
    combine, dispatch = top_k_dispatch(logits, moe.top_k, capacity)
    xe = jnp.einsum("gsec,gsd->egcd", dispatch, g)
    xe = _c(xe, mesh, P("expert", ("data", "fsdp"), None, None))  # all-to-all over expert
    h = jax.nn.silu(jnp.einsum("egcd,efd->egcf", xe, p["wi"])) * \
        jnp.einsum("egcd,efd->egcf", xe, p["wg"])
    # keep the expert FFN where its weights are (else XLA gathers wout over expert instead)
    h = _c(h, mesh, P("expert", ("data", "fsdp"), None, "model"))
    ye = _c(jnp.einsum("egcf,efd->egcd", h, p["wout"]), mesh,
            P("expert", ("data", "fsdp"), None, None))
    ye = _c(ye, mesh, P(None, BATCH, None, None))  # and back
    y = jnp.einsum("gsec,egcd->gsd", combine, ye).reshape(B, S, D)
    return y, load_balance_loss(logits)


def dense_block(p, x, m: ModelSpec, mesh=None):
    """One pre-norm decoder layer with a dense SwiGLU MLP: ``x + attn(norm x)``, then
    ``+ mlp(norm x)``."""
    x = x + attention(p, _norm(x), m, mesh)
    return x + dense_mlp(p, _norm(x))


def head_loss(embed, x, tokens):
    """Final norm, the tied LM head ``norm(x) @ embed^T`` and the next-token cross-entropy."""
    logits = _norm(x) @ embed.T
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))


def loss_fn(params, tokens, m: ModelSpec, mesh, aux_weight: float = 0.0):
    """Next-token cross-entropy, plus ``aux_weight`` times the mean load-balance loss of the
    MoE layers (0 turns it off)."""
    # FSDP: gather the table over fsdp before the lookup (as any FSDP weight before its use);
    # left to itself, SPMD replicates the looked-up rows and partitions them again
    x = _c(params["embed"], mesh, P("model", None))[tokens]
    x = _c(x, mesh, P(BATCH, None, None))
    aux = []
    for i, p in enumerate(params["layers"]):
        if not m.is_moe_layer(i):
            x = dense_block(p, x, m, mesh)
            continue
        x = x + attention(p, _norm(x), m, mesh)
        y, a = moe_mlp(p, _norm(x), m, mesh)
        aux.append(a)
        x = x + y
    loss = head_loss(params["embed"], x, tokens)
    if aux and aux_weight:
        loss = loss + aux_weight * sum(aux) / len(aux)
    return loss


def make_train_step(m: ModelSpec, mesh, lr: float = 1e-3, aux_weight: float = 0.01):
    """``step(params, opt, tokens) -> (params, opt, loss)``: Adam (b1 .9, b2 .95), jitted; MoE
    models add the load-balance loss with ``aux_weight`` (Switch Transformer uses 0.01)."""
    def step(params, opt, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens, m, mesh, aux_weight)
        t = opt["t"] + 1
        mu = jax.tree.map(lambda a, g: 0.9 * a + 0.1 * g, opt["mu"], grads)
        nu = jax.tree.map(lambda a, g: 0.95 * a + 0.05 * g * g, opt["nu"], grads)
        c1, c2 = 1 - 0.9 ** t, 1 - 0.95 ** t
        params = jax.tree.map(  # in the weights' own dtype (bf16 on accelerators)
            lambda w, a, b: (w - lr * (a / c1) / (jnp.sqrt(b / c2) + 1e-8)).astype(w.dtype),
            params, mu, nu)
        return params, {"t": t, "mu": mu, "nu": nu}, loss

    return jax.jit(step, donate_argnums=(0, 1))


def init_opt(params) -> dict:
    zeros = jax.tree.map(jnp.zeros_like, params)
    return {"t": jnp.zeros((), jnp.int32), "mu": zeros, "nu": jax.tree.map(jnp.zeros_like, params)}


def batch(m: ModelSpec, global_batch: int, mesh, key):
    tokens = jax.random.randint(key, (global_batch, m.seq_len), 0, m.vocab_size)
    return jax.device_put(tokens, NamedSharding(mesh, P(BATCH, None)))
