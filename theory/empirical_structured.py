"""The ``"structured"`` method of the empirical NTK (:mod:`dynkit.theory.empirical`) for dynkit
graph models.

One forward pass records each dense/conv layer's input ``a`` (conv: its patches) and ``O`` VJPs
with respect to zero *probes* added to every layer output give the output cotangents ``g`` of
each logit. A layer ``y = w_mult · (a @ w) + b_mult · b`` then contributes
``w_mult² Σ_{s,t} ⟨a_s, a'_t⟩ ⟨g_{a,s}, g'_{b,t}⟩ + b_mult² ⟨Σ_s g_{a,s}, Σ_t g'_{b,t}⟩``
(Gram form) or the same through its per-example Jacobian ``Σ_s a_s ⊗ g_{a,s}``, whichever costs
fewer flops; BatchNorm (eval mode), LayerNorm and GroupNorm add the terms of their ``scale``
and ``bias`` (with their normalized input x̂). Grouped convolutions and transposed
convolutions are not covered: ``structured_unsupported`` names them, and the driver then
uses ``"jacobian"`` or ``"ntvp"``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from dynkit.models.graph import PARAM_OPS, Model, merge_params
from dynkit.models.ops import normalized

__all__ = ["structured_factors", "structured_unsupported"]

#: Parameterized ops the structured factors cover (``conv`` with ``groups=1``).
STRUCTURED_OPS = ("dense", "conv", "batchnorm", "layernorm", "groupnorm")
_NORMS = ("batchnorm", "layernorm", "groupnorm")


def structured_unsupported(model: Model) -> str | None:
    """``None`` if the structured factors cover every parameterized node of ``model``, else
    a description of the first node they do not cover (e.g. ``"node 'up' (conv_transpose)"``).

    Example:
        >>> from dynkit.models.mlp import mlp
        >>> structured_unsupported(mlp(2, [3], 1)) is None
        True
    """
    for n in model.nodes:
        if n.op in PARAM_OPS and (n.op not in STRUCTURED_OPS
                                  or int(n.attrs.get("groups", 1)) != 1):
            return f"node {n.name!r} ({n.op}, groups={n.attrs.get('groups', 1)})"
    return None


def _layers(model: Model, params):
    return [n for n in model.nodes if n.op in STRUCTURED_OPS and n.name in params]


def _probe_forward(model: Model, params, x, probes):
    """Eval-mode forward pass of the graph that adds ``probes[name]`` to the output of every
    parameterized node. Returns ``(logits, record, outputs)``: ``record`` holds each such
    node's input (normalization layers: their normalized input x̂), ``outputs`` their
    outputs."""
    layers = _layers(model, params)
    keep = {n.inputs[0] for n in layers} | {n.name for n in layers}
    env = model.forward(params, x, keep=sorted(keep), perturb=probes)
    record: dict[str, Any] = {}
    for n in layers:
        h = env[n.inputs[0]]
        if n.op == "batchnorm":
            p = params[n.name]
            h = (h - p["mean"]) * jax.lax.rsqrt(p["var"] + n.attrs.get("eps", 1e-5))
        elif n.op in _NORMS:
            h = normalized(n.op, h, n.attrs)
        record[n.name] = h
    outputs = {n.name: env[n.name] for n in layers}
    return env[model.output], record, outputs


def _patches(node, a):
    """Inputs of a dense/conv layer as ``(N, S, K)``: ``S`` output positions, ``K`` fan-in."""
    n = a.shape[0]
    if node.op == "dense":
        return a.reshape(n, -1, a.shape[-1])
    attrs = node.attrs
    nd = len(attrs["kernel"])
    spatial = "HW"[:nd] if nd <= 2 else "DHW"
    pad = attrs.get("padding", "SAME")
    if not isinstance(pad, str):
        pad = [(p, p) for p in _tuple(pad, nd)]
    pt = jax.lax.conv_general_dilated_patches(
        a, tuple(attrs["kernel"]), _tuple(attrs.get("stride", 1), nd), pad,
        rhs_dilation=_tuple(attrs.get("dilation", 1), nd),
        dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"),
    )
    return pt.reshape(n, -1, pt.shape[-1])


def _tuple(v, nd) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * nd


def _layer_factors(model: Model, trainable, stats, x):
    """Per-layer factors: ``(node, P (N,S,K), g (N,O,S,C))`` for dense/conv and
    ``(node, x̂ (N,S,C), g)`` for normalization layers, ``g`` the cotangent of each logit."""
    params = merge_params(trainable, stats)
    shapes = jax.eval_shape(lambda: _probe_forward(model, params, x, None)[2])
    probes = {k: jnp.zeros(s.shape, s.dtype) for k, s in shapes.items()}
    logits, vjp_fn, record = jax.vjp(
        lambda pr: _probe_forward(model, params, x, pr)[:2], probes, has_aux=True
    )
    n = x.shape[0]
    o = math.prod(logits.shape[1:])
    cot = jnp.broadcast_to(jnp.eye(o, dtype=logits.dtype).reshape(o, 1, *logits.shape[1:]),
                           (o, *logits.shape))
    grads = jax.vmap(vjp_fn)(cot)[0]
    factors = []
    for name, g in grads.items():
        node = model.node(name)
        c = g.shape[-1]
        g = jnp.moveaxis(g.reshape(o, n, -1, c), 0, 1)  # (N, O, S, C)
        if node.op in _NORMS:
            factors.append((node, record[name].reshape(n, -1, c), g))
        else:
            factors.append((node, _patches(node, record[name]), g))
    return factors


def structured_factors(model, x, p, const, *, pair_sizes, traced):
    """Per-layer factors of a tile for ``contract`` (module docstring): a dense/conv layer
    gives its per-example Jacobian ``{"j": w_mult Σ_s a_s ⊗ g_{·,s}}`` (N, O, K, C) or, when
    the Gram form costs fewer flops for tiles of ``pair_sizes`` inputs, ``{"u": w_mult a,
    "g": g}``; its bias ``{"b": b_mult Σ_s g_s}``. A normalization layer (BatchNorm, layer or
    group norm) gives ``{"s": Σ_s x̂_s g_s, "b": Σ_s g_s}`` for its scale and bias.

    Args:
        model: the dynkit ``Model``; x: a tile of inputs.
        p, const: trainable parameters and BatchNorm statistics (``split_params``).
        pair_sizes: ``(Na, Nb)``, the tile sizes the factors will be contracted for.
        traced: whether the kernel is traced over logits (changes the cheaper form).

    Returns:
        A list of factor dicts, one per layer.

    References:
        Novak et al. 2022, "Fast finite width neural tangent kernel" (structured derivatives).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from dynkit.models.graph import split_params
        >>> from dynkit.models.mlp import mlp
        >>> from dynkit.theory.empirical import model_ntk_fn
        >>> from dynkit.theory.empirical_jacobian import contract
        >>> model = mlp(2, [4], 3)
        >>> params = model.init(jax.random.PRNGKey(0))
        >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
        >>> f = structured_factors(model, x, *split_params(params), pair_sizes=(2, 2), traced=True)
        >>> bool(jnp.allclose(contract(f, f, traced=True), model_ntk_fn(model)(x, None, params)))
        True
    """
    na, nb = pair_sizes
    out = []
    for node, u, g in _layer_factors(model, p, const, x):
        if node.op in _NORMS:
            out.append({"s": jnp.einsum("nsc,nosc->noc", u, g), "b": g.sum(2)})
            continue
        _, o, s, c = g.shape
        k = u.shape[-1]
        oc = o if traced else o * o
        cost_jac = (na + nb) * o * s * k * c + na * nb * oc * k * c
        cost_gram = na * nb * s * s * k + na * nb * oc * s * s * c
        w_mult = node.attrs["w_mult"]
        if cost_jac < cost_gram:
            d = {"j": w_mult * jnp.einsum("nsk,nosc->nokc", u, g)}
        else:
            d = {"u": w_mult * u, "g": g}
        if "b" in p[node.name]:
            d["b"] = node.attrs.get("b_mult", 1.0) * g.sum(2)
        out.append(d)
    return out

