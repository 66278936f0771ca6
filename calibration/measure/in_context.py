"""The in-context cases in jax: the reference model's dense layer, and its embedding + tied LM
head + loss, forward and backward on one device's arrays (:mod:`calibration.context` lays the
same work out as the step graph does)."""

from __future__ import annotations

from calibration.reference import reference_model


def jax_case(kind: str, b: int, s: int, dtype):
    """``(fn, per-device arrays)``: ``fn`` runs the case forward and backward on one device's
    arrays and returns the output and every input's gradient."""
    import jax
    import jax.numpy as jnp

    from calibration.measure.models import dense_block, head_loss, layer_shapes

    m = reference_model("dense", s)
    D, V = m.d_model, m.vocab_size
    x = jnp.ones((b, s, D), dtype) * 0.1
    if kind == "head":
        embed = jnp.ones((V, D), dtype) * 0.02
        tokens = (jnp.arange(b * s, dtype=jnp.int32) * 7 % V).reshape(b, s)

        def head(embed, x, tokens):
            loss, vjp = jax.vjp(lambda e, h: head_loss(e, e[tokens] + h, tokens), embed, x)
            return (loss.reshape(1), *vjp(jnp.ones_like(loss)))

        return head, (embed, x, tokens)
    shapes = layer_shapes(m, 0)  # the dense reference layer
    names = sorted(shapes)

    def block(x, *ws):
        f = lambda x, *ws: dense_block(dict(zip(names, ws)), x, m)  # noqa: E731
        y, vjp = jax.vjp(f, x, *ws)
        return (y, *vjp(y))

    return block, (x, *(jnp.ones(shapes[k], dtype) * 0.02 for k in names))
