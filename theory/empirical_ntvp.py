"""The ``"ntvp"`` method of the empirical NTK (:mod:`dynkit.theory.empirical`): NTK-vector
products, and the activation footprint that sizes them.

For every basis cotangent ``e_{m,b}`` of ``f(x2)`` the VJP ``v = J(x2)ᵀ e`` followed by the JVP
``J(x1) v`` gives one kernel column. Columns are computed ``chunk`` at a time and each JVP runs
over ``rows`` inputs of ``x1`` at a time, both sized by
:func:`dynkit.theory.empirical.ntvp_plan` from the ``activation_footprint`` of one example
(Novak et al. 2022, "Fast Finite Width Neural Tangent Kernel", for the method).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.extend.core
import jax.numpy as jnp

__all__ = ["activation_footprint", "ntvp_block"]


def activation_footprint(fn: Callable, *args) -> int:
    """Total number of elements of every intermediate value of ``fn(*args)``: the outputs of
    all equations of its jaxpr, nested jaxprs (``jit``, ``custom_jvp``, ...) included. It
    bounds what a forward pass, and so a JVP or a VJP, holds at once (per tangent).

    Args:
        fn: a JAX-traceable function.
        *args: example arguments (arrays or shape structs).

    Returns:
        The number of elements, an int.

    References:
        Novak et al. 2022, "Fast finite width neural tangent kernel" (memory of NTK-vector
        products).

    Example:
        >>> import jax.numpy as jnp
        >>> activation_footprint(lambda x: jnp.tanh(x) * 2, jnp.ones(3))   # two values of 3
        6
    """
    return _jaxpr_size(jax.make_jaxpr(fn)(*args).jaxpr)


def _jaxpr_size(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += sum(math.prod(getattr(v.aval, "shape", ())) for v in eqn.outvars)
        total += sum(_jaxpr_size(sub) for sub in jax.extend.core.jaxprs_in_params(eqn.params))
    return total


def ntvp_block(apply, vmap_axes, xa, xb, p, const, *, chunk, rows):
    """Θ block column by column: ``Θ[:, m, :, b] = J(xa) (J(xb)ᵀ e_{m,b})`` (VJP then JVP),
    ``chunk`` columns at a time, each JVP over ``rows`` inputs of ``xa`` at a time.

    Args:
        apply: ``apply(p, const, x)``; vmap_axes: None or 0 (one VJP per example of ``xb``).
        xa, xb: the two inputs (``xb=None``: ``xa``); p, const: differentiated and other params.
        chunk: columns per ``lax.map`` batch; rows: inputs of ``xa`` per JVP.

    Returns:
        The block ``(Na, Nb, O, O)``.

    References:
        Novak et al. 2022, "Fast finite width neural tangent kernel" (NTK-vector products).

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.empirical_jacobian import trace_block
        >>> apply = lambda p, const, x: x @ p["w"]                  # Θ_ab = δ_ab x . x'
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])
        >>> k = ntvp_block(apply, None, x, None, {"w": jnp.ones((2, 3))}, None, chunk=2, rows=1)
        >>> k.shape, trace_block(k).tolist()
        ((2, 2, 3, 3), [[2.0, 0.0], [0.0, 2.0]])
    """
    xb = xa if xb is None else xb
    na, nb = xa.shape[0], xb.shape[0]
    out = jax.eval_shape(lambda q: apply(q, const, xb), p)
    o = math.prod(out.shape[1:])
    eye = jnp.eye(o, dtype=out.dtype)
    tiles = -(-na // rows)
    # xa as (tiles, rows, ...), the last tile padded by repeating the last input
    xt = jnp.concatenate([xa, jnp.repeat(xa[-1:], tiles * rows - na, axis=0)])
    xt = xt.reshape(tiles, rows, *xa.shape[1:])

    def jvp_a(v):
        def jvp_rows(x):
            return jax.jvp(lambda q: apply(q, const, x), (p,), (v,))[1].reshape(rows, o)

        if tiles == 1:
            return jvp_rows(xt[0])
        return jax.lax.map(jvp_rows, xt).reshape(tiles * rows, o)[:na]

    if vmap_axes is None:
        _, vjp_b = jax.vjp(lambda q: apply(q, const, xb).reshape(nb * o), p)

        def column(e):
            return jvp_a(vjp_b(e)[0])

        basis = jnp.eye(nb * o, dtype=eye.dtype)
    else:
        def column(args):
            xm, e = args
            _, vjp_m = jax.vjp(lambda q: apply(q, const, xm[None]).reshape(o), p)
            return jvp_a(vjp_m(e)[0])

        basis = (jnp.repeat(xb, o, axis=0), jnp.tile(eye, (nb, 1)))
    cols = jax.lax.map(column, basis, batch_size=chunk)  # (nb * o, na, o)
    return cols.reshape(nb, o, na, o).transpose(2, 0, 3, 1)

