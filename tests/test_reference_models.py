"""The JAX reference models train: dense and MoE on a (data, expert, model) mesh of 8 virtual
CPU devices, the MoE gating keeps capacity, the load-balance loss measures imbalance and
reaches the router, and the loss falls."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_reference_train_steps_learn_on_a_3d_mesh():
    code = textwrap.dedent("""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        os.environ["JAX_PLATFORMS"] = "cpu"
        import jax, jax.numpy as jnp
        from calibration.measure.mesh import make_jax_mesh
        from calibration.measure.models import (batch, init_opt, init_params, make_train_step,
                                        top_k_dispatch)
        from calibration.reference import reference_model
        from simulator.specs.sharding import ShardingSpec
        for kind, mesh in (("dense", {"data": 2, "fsdp": 2, "model": 2}),
                           ("moe", {"data": 2, "expert": 2, "model": 2})):
            m = reference_model(kind).model_copy(update={"seq_len": 64})
            jm = make_jax_mesh(ShardingSpec(mesh=mesh))
            params = init_params(m, jax.random.PRNGKey(0), jm)
            opt, step = init_opt(params), make_train_step(m, jm, lr=3e-3)
            toks = batch(m, 8, jm, jax.random.PRNGKey(1))
            losses = []
            for _ in range(4):
                params, opt, loss = step(params, opt, toks)
                losses.append(float(loss))
            assert losses[-1] < losses[0], (kind, losses)
            print(kind, losses[0], losses[-1])
        combine, dispatch = top_k_dispatch(jax.random.normal(jax.random.PRNGKey(2), (2, 16, 4)),
                                           2, 4)
        per_slot = dispatch.sum(axis=1)  # tokens per (group, expert, slot)
        assert float(per_slot.max()) <= 1.0  # one token per capacity slot
        assert float(dispatch.sum(axis=(2, 3)).max()) <= 2.0  # at most top-k experts per token
        from calibration.measure.models import load_balance_loss
        spread = jnp.tile(jnp.eye(4) * 5.0, (2, 4, 1))  # each expert first for a quarter
        skewed = jnp.zeros((2, 16, 4)).at[..., 0].set(5.0)  # every token prefers expert 0
        assert abs(float(load_balance_loss(spread)) - 1.0) < 0.05
        assert float(load_balance_loss(skewed)) > 3.0
        m = reference_model("moe").model_copy(update={"seq_len": 32})
        jm = make_jax_mesh(ShardingSpec(mesh={"data": 2, "expert": 2, "model": 2}))
        params = init_params(m, jax.random.PRNGKey(0), jm)
        toks = batch(m, 8, jm, jax.random.PRNGKey(1))
        from calibration.measure.models import loss_fn
        vg = jax.jit(jax.value_and_grad(loss_fn), static_argnums=(2, 3, 4))
        (with_aux, g), (plain, g0) = vg(params, toks, m, jm, 0.5), vg(params, toks, m, jm, 0.0)
        assert float(with_aux) > float(plain) + 0.4  # 0.5 x (aux >= 1)
        g, g0 = g["layers"][1]["router"], g0["layers"][1]["router"]
        assert float(jnp.abs(g - g0).max()) > 0  # the loss reaches the router
        print("gating ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "gating ok" in out.stdout
