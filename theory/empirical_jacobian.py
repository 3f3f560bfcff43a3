"""The ``"jacobian"`` method of the empirical NTK (:mod:`dynkit.theory.empirical`), and the
contraction of per-tile factors shared with ``"structured"``.

Per-example Jacobians ``J(x)`` (``jax.jacrev``, ``vmap`` over examples) are contracted leaf by
leaf, ``Θ(x, x') = Σ_leaves J(x) J(x')ᵀ`` (Jacot, Gabriel & Hongler 2018); ``contract`` also
evaluates the Gram form ``Σ_{s,t} ⟨u_s, u'_t⟩ ⟨g_{a,s}, g'_{b,t}⟩`` of structured layer factors.
"""

from __future__ import annotations

import math
import string
from functools import partial

import jax
import jax.numpy as jnp

__all__ = ["contract", "jacobian_factors", "trace_block"]


def _jacobians(apply, vmap_axes, p, const, x):
    """Per-parameter-leaf Jacobians, each reshaped to ``(N, O, leaf size)``."""
    n = x.shape[0]
    if vmap_axes is None:
        jac = jax.jacrev(lambda q: apply(q, const, x))(p)
    else:
        jac = jax.vmap(lambda xi: jax.jacrev(lambda q: apply(q, const, xi[None])[0])(p))(x)
    leaves = jax.tree.leaves(jac)
    out_ndim = leaves[0].ndim - jax.tree.leaves(p)[0].ndim  # batch + output axes
    o = math.prod(leaves[0].shape[1:out_ndim])
    return [leaf.reshape(n, o, -1) for leaf in leaves]


def jacobian_factors(apply, vmap_axes, x, p, const):
    """Per-example Jacobians of ``x``, one ``{"j": (N, O, leaf size)}`` per parameter leaf;
    ``contract`` then gives ``Θ = Σ_leaves J(x1) J(x2)ᵀ``.

    Args:
        apply: ``apply(p, const, x)``, the network's outputs ``(N, ...)``.
        vmap_axes: None (one Jacobian of the whole batch) or 0 (``vmap`` over examples).
        x: the inputs; p: the parameters differentiated; const: the others (e.g. BN stats).

    Returns:
        A list of factor dicts for :func:`contract`.

    References:
        Jacot, Gabriel & Hongler 2018, "Neural tangent kernel".

    Example:
        >>> import jax.numpy as jnp
        >>> apply = lambda p, const, x: x @ p["w"]                  # Θ_ab = δ_ab x . x'
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])
        >>> f = jacobian_factors(apply, 0, x, {"w": jnp.ones((2, 3))}, None)
        >>> contract(f, f, traced=True).tolist()
        [[2.0, 0.0], [0.0, 2.0]]
    """
    return [{"j": j} for j in _jacobians(apply, vmap_axes, p, const, x)]


@partial(jax.jit, static_argnames=("traced",))
def contract(fa, fb, *, traced):
    """``Σ_terms ⟨A_a(x), B_b(x')⟩`` over the factors of two tiles (lists of dicts of
    ``(N, O, ...)`` arrays, contracted over their trailing axes), and the Gram form
    ``Σ_{s,t} ⟨u_s, u'_t⟩ ⟨g_{a,s}, g'_{b,t}⟩`` for entries holding ``u`` (N, S, K) and
    ``g`` (N, O, S, C). Traced: the mean over ``a = b``.

    Args:
        fa, fb: the factors of the two tiles (from :func:`jacobian_factors` or
            :func:`dynkit.theory.empirical_structured.structured_factors`).
        traced: return ``(N1, N2)`` (mean over logits) instead of ``(N1, N2, O, O)``.

    Returns:
        The kernel block.

    References:
        Jacot et al. 2018; Novak et al. 2022, "Fast finite width neural tangent kernel".

    Example:
        >>> import jax.numpy as jnp
        >>> f = [{"j": jnp.array([[[1.0, 2.0]], [[0.0, 1.0]]])}]         # (N, O, P) = (2, 1, 2)
        >>> contract(f, f, traced=False)[:, :, 0, 0].tolist()
        [[5.0, 2.0], [2.0, 1.0]]
    """
    total = 0.0
    for da, db in zip(fa, fb):
        for name, a in da.items():
            if name not in ("u", "g"):
                total = total + _pair(a, db[name], traced)
        if "u" in da:
            gram = jnp.einsum("nsk,mtk->nmst", da["u"], db["u"])
            if traced:
                gg = jnp.einsum("nosc,motc->nmst", da["g"], db["g"])
                total = total + jnp.sum(gram * gg, axis=(2, 3))
            else:
                gg = jnp.einsum("nasc,mbtc->nmabst", da["g"], db["g"])
                total = total + jnp.einsum("nmst,nmabst->nmab", gram, gg)
    if traced:
        return total / next(iter(fa[0].values())).shape[1]
    return total


def _pair(a, b, traced):
    """Contract per-example factors ``(N, O, ...)`` over their trailing (parameter) axes."""
    sub = string.ascii_lowercase[:a.ndim - 2]
    if traced:
        return jnp.einsum(f"No{sub},Mo{sub}->NM", a, b)
    return jnp.einsum(f"NA{sub},MB{sub}->NMAB", a, b)


@jax.jit
def trace_block(block):
    """``(N1, N2, O, O) -> (N1, N2)``: the mean of ``Θ_aa`` over logits.

    Args:
        block: an untraced kernel block.

    Returns:
        ``Σ_a block[:, :, a, a] / O``.

    Example:
        >>> import jax.numpy as jnp
        >>> trace_block(jnp.arange(16.0).reshape(2, 2, 2, 2))[0, 0].tolist()      # (0 + 3) / 2
        1.5
    """
    return jnp.einsum("nmaa->nm", block) / block.shape[-1]

