"""L^q path-norms of DAG ReLU networks in one forward pass (Gonon, Brisebarre, Riccietti &
Gribonval, ICLR 2024, "A path-norm toolkit for modern networks: consequences, promises and
challenges", arXiv:2310.01225).

Definition (their Sec. 2). View the network as a DAG of neurons: an edge ``u -> v`` carries
the effective weight ``w_{u->v}`` (``w_mult * w``), every non-input neuron ``v`` has a bias
``b_v``. The path-lifting ``Phi(theta)`` has one coordinate per path ``p = (v_0 -> ... -> v_L)``
that ends at an output neuron and starts either at an input neuron or at any neuron carrying
a bias (a path may be a single neuron)::

    Phi_p(theta) = prod_{edges of p} w_e              if v_0 is an input neuron,
    Phi_p(theta) = b_{v_0} * prod_{edges of p} w_e    otherwise,

and ``||Phi(theta)||_q = (sum_p |Phi_p(theta)|^q)^(1/q)``. ReLU neurons and *-max-pooling
neurons (max over their antecedents) both have this path set; a max-pooling neuron's incoming
edges have weight 1.

Computation (their Theorem A.1): ``||Phi(theta)||_q^q`` is the sum of the outputs of the
*rewritten* network evaluated on the all-ones input, where every weight and bias ``t`` is
replaced by ``|t|^q``, every ReLU by the identity, and every max-pooling neuron by the *sum*
over its window (its edges, of weight ``1^q = 1``). Layer by layer in ``dynkit``:

=================  ======================================================================
node op            rewritten as
=================  ======================================================================
dense / conv /     ``|w_mult w|^q`` and ``|b_mult b|^q`` (a grouped or dilated conv, a transposed
conv_transpose     conv: each weight is the edge of one (input, output) neuron pair, so the
                   rewritten layer is the same op with ``|w|^q``); with ``fold_bn=True`` (default) a
                   BatchNorm that directly follows it (and is its only consumer) is folded
                   in *before* ``|.|^q``: ``W' = a W``, ``b' = a b + c`` (eval-mode BN is
                   ``y = a x + c`` with ``a = scale / sqrt(var + eps)``, ``c = bias - a mean``)
batchnorm (other,  a layer of neurons with one edge each: ``|a|^q x + |c|^q``
or fold_bn=False)
relu               identity (``act`` with ``fn="identity"`` too)
maxpool            sum over the window (padding positions are not neurons: they add 0)
avgpool            sum over the window times ``(1/k)^q``, ``k`` the divisor of that window
global_avgpool     sum over positions times ``(1/(H W))^q``
flatten            reshape
concat             concatenation (the union of the input neurons: no edges)
upsample           nearest: each output neuron copies one input neuron (an edge of weight 1);
                   bilinear: a linear neuron whose edges are the interpolation coefficients
                   ``m`` (all >= 0), rewritten as ``m^q`` (coefficients of a repeated source
                   index are summed first: they are one edge)
add                sum: a skip is an edge of weight 1 (identity) or a projection branch
                   whose own (folded) biases start paths, exactly like the authors' code
scale              ``|factor|^q``
anything else      ``UnsupportedLayerError`` (non-ReLU activations, layer/group norm: outside
                   the model of positively homogeneous DAG networks)
=================  ======================================================================

BatchNorm convention (``fold_bn``). The path-norm is a function of the parameterization, and
a convolution with its own bias ``b`` followed by BatchNorm has two: folded, one neuron per
channel with weight ``a W`` and the single bias ``a b + c`` (one path per bias, coefficient
``|a b + c|^q``); not folded (``fold_bn=False``), the BatchNorm is a layer of neurons of its own,
so the conv bias is one path through the BN edge (``|a|^q |b|^q``) and the BN shift ``c`` a
separate path starting after it (``|c|^q``). The two agree when the conv has no bias (ResNets)
and differ otherwise (VGG-BN); ``fold_bn=False`` is the convention of the authors'
``pathnorm-pytorch`` code, which rewrites BatchNorm as its own affine layer. The default stays
``fold_bn=True``: it is the path-norm of the eval-mode network written with the fewest neurons,
and it does not depend on how a bias is split between ``b`` and ``c`` (``b + δ`` with BN mean
``mean + δ`` is the same network and the same folded path-norm).

Numerics: float64 throughout, and each tensor is kept as ``h * exp(s)`` with ``max h = 1``
(renormalized after every dense/conv/BatchNorm node, ``s`` accumulated in log space; weights
enter as ``(|w| / max|w|)^q`` with ``q log max|w|`` added to ``s``), so ResNet-50's L^1
path-norm (about 1e69 on ImageNet weights) or any L^q with large ``q`` never overflows;
``log_value`` is exact to rounding. The pass is compiled once per architecture (``q`` is
traced, so other exponents reuse the compilation).

Input size: the path-norm is a property of the network *on its input domain*
``model.input_shape``. For convolutional networks it depends on that size: with zero padding
border neurons have fewer antecedents, and a global average pool contributes
``(1/(H W))^q`` per edge, so for ``q != 1`` the sum ``||Phi||_q^q`` scales like
``(H W)^(1 - q)`` (exactly so for 1x1 convolutions). Compare path-norms only at equal input
size.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dynkit.checkpoints.run import iterate
from dynkit.errors import InvalidArgumentError, UnsupportedLayerError
from dynkit.models.graph import LINEAR_OPS, conv_linear
from dynkit.models.ops import apply_upsample, conv_transpose_linear, upsample_maps
from dynkit.schema import step_epoch, tidy
from dynkit.validation import check_finite

__all__ = ["SUPPORTED_OPS", "PathNorm", "PlanNode", "bn_affine", "folded_affine",
           "linear_map", "log_pathnorm_qq", "path_norm", "path_norm_series", "plan"]

#: Ops the rewritten forward pass understands.
SUPPORTED_OPS = ("input", "dense", "conv", "conv_transpose", "batchnorm", "relu", "act",
                 "maxpool", "avgpool", "global_avgpool", "flatten", "add", "scale", "concat",
                 "upsample")

_LOG_FLOAT64_MAX = math.log(np.finfo(np.float64).max)
_BN_KEYS = ("scale", "bias", "mean", "var")


@dataclass(frozen=True)
class PathNorm:
    """An L^q path-norm: ``value = ||Phi(theta)||_q`` and ``log_value = log ||Phi(theta)||_q``.

    ``value`` is ``inf`` (with a warning) only when it exceeds the float64 range; ``log_value``
    is then still finite. A network whose every path vanishes has ``value = 0`` and
    ``log_value = -inf``.

    Attributes:
        value: the path-norm.
        log_value: its natural log.
        q: the exponent.

    References:
        Gonon, Brisebarre, Riccietti & Gribonval 2024, "A path-norm toolkit for modern
        networks: consequences, promises and challenges" (ICLR).

    Example:
        >>> PathNorm(2.0, float(np.log(2.0)), 1.0).value
        2.0
    """

    value: float
    log_value: float
    q: float


# --------------------------------------------------------------------- the rewriting plan
def _freeze(v):
    """Hashable, order-independent copy of JSON-like attributes."""
    if isinstance(v, Mapping):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


def _ancestors(model) -> list:
    """Nodes the output depends on, in graph order."""
    by_name = {n.name: n for n in model.nodes}
    need, stack = set(), [model.output]
    while stack:
        name = stack.pop()
        if name not in need:
            need.add(name)
            stack.extend(by_name[name].inputs)
    return [n for n in model.nodes if n.name in need]


def _check_supported(node) -> None:
    if node.op not in SUPPORTED_OPS:
        raise UnsupportedLayerError(
            f"path-norm: node {node.name!r} has op {node.op!r}, which the path-norm toolkit of "
            f"Gonon et al. (2024) does not cover; supported ops: {', '.join(SUPPORTED_OPS)}")
    if node.op == "act" and node.attrs.get("fn") != "identity":
        raise UnsupportedLayerError(
            f"path-norm: node {node.name!r} applies the activation {node.attrs.get('fn')!r}; "
            "path-norms are defined for ReLU (and identity / max-pooling) neurons only, whose "
            "positive homogeneity makes the network output <Phi(theta), A(theta, x)>")


class PlanNode(NamedTuple):
    """One node of the rewritten network (hashable: plans are static arguments of ``jit``).

    Attributes:
        name, op, inputs: as in the model's ``Node`` (``op="bn_folded"`` for a folded
            BatchNorm).
        frozen: the node's attributes as a hashable, order-independent tuple.
        fold: the BatchNorm folded into this dense/conv node, or ``None``.
        attrs: ``frozen`` as a plain dict (a property).

    Example:
        >>> PlanNode("fc", "dense", ("input",), (("w_mult", 1.0),), None).attrs
        {'w_mult': 1.0}
    """

    name: str
    op: str
    inputs: tuple
    frozen: tuple
    fold: str | None

    @property
    def attrs(self) -> dict:
        """The node's attributes as a plain dict."""
        return _attrs(self.frozen)


def plan(model, fold_bn: bool = True) -> tuple:
    """The rewritten network as hashable data: one ``PlanNode(name, op, inputs, frozen, fold)``
    per node the output depends on, where ``fold`` names the BatchNorm folded into a dense/conv
    node (``None`` otherwise); folded BatchNorm nodes become ``op="bn_folded"``. With
    ``fold_bn=False`` nothing is folded: every BatchNorm is a layer of its own.

    Args:
        model: a ``dynkit.models.Model``.
        fold_bn: fold a BatchNorm into the dense/conv node it directly follows (default).

    Returns:
        A tuple of ``PlanNode`` in graph order.

    Raises:
        UnsupportedLayerError: naming the first node outside the toolkit.

    References:
        Gonon, Brisebarre, Riccietti & Gribonval 2024, "A path-norm toolkit for modern
        networks: consequences, promises and challenges" (ICLR), Theorem A.1.

    Example:
        >>> import dynkit as dk
        >>> [n.op for n in plan(dk.models.mlp(3, [4], 2))]
        ['input', 'dense', 'relu', 'dense']
    """
    nodes = _ancestors(model)
    consumers: dict[str, list[str]] = {n.name: [] for n in nodes}
    for n in nodes:
        for s in n.inputs:
            consumers[s].append(n.name)
    by_name = {n.name: n for n in nodes}
    folded_into: dict[str, str] = {}
    for n in nodes:
        _check_supported(n)
        if fold_bn and n.op == "batchnorm":
            src = by_name[n.inputs[0]]
            if src.op in LINEAR_OPS and consumers[src.name] == [n.name]:
                folded_into[src.name] = n.name
    folded = set(folded_into.values())
    return tuple(
        PlanNode(n.name, "bn_folded" if n.name in folded else n.op, tuple(n.inputs),
                 _freeze(n.attrs), folded_into.get(n.name))
        for n in nodes)


def _attrs(frozen) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in frozen}


def _needed_params(model, params, the_plan) -> dict:
    """The parameter arrays the rewritten pass reads, checked for presence."""
    wanted: dict[str, tuple[str, ...]] = {}
    for name, op, _, _, fold in the_plan:
        if op in LINEAR_OPS:
            wanted[name] = ("w",)
            if fold:
                wanted[fold] = _BN_KEYS
        elif op == "batchnorm":
            wanted[name] = _BN_KEYS
    needed = {}
    for name, keys in wanted.items():
        if name not in params:
            raise InvalidArgumentError(
                f"path-norm: params have no entry for node {name!r} of model {model.arch!r}")
        missing = [k for k in keys if k not in params[name]]
        if missing:
            raise InvalidArgumentError(
                f"path-norm: params[{name!r}] lacks {missing} (found {sorted(params[name])})")
        needed[name] = dict(params[name])
    return needed


# --------------------------------------------------------------------- scaled arithmetic
def _log_abs_pow(t, q):
    """``(|t|^q / M, log M)`` with ``M = max |t|^q`` (``log M = 0`` when ``t == 0``)."""
    a = jnp.abs(t)
    m = jnp.max(a)
    ok = m > 0
    a = a / jnp.where(ok, m, 1.0)
    aq = jax.lax.cond(q == 1.0, lambda: a, lambda: a**q)
    return aq, jnp.where(ok, q * jnp.log(jnp.where(ok, m, 1.0)), 0.0)


def _renorm(h, s):
    m = jnp.max(h)
    ok = m > 0
    return jnp.where(ok, h / jnp.where(ok, m, 1.0), h), s + jnp.where(ok, jnp.log(m), 0.0)


def _add_scaled(terms):
    """``sum_i h_i exp(s_i)`` as ``(h, s)``."""
    t = jnp.max(jnp.stack([s for _, s in terms]))
    return sum(h * jnp.exp(s - t) for h, s in terms), t


def bn_affine(p, attrs):
    """Eval-mode BatchNorm as an affine map ``y = a x + c``:

        a = scale / sqrt(var + eps),   c = bias − a · mean.

    Args:
        p: BatchNorm parameters ``scale, bias, mean, var`` (numpy or jax arrays).
        attrs: node attributes; ``eps`` (default 1e-5).

    Returns:
        ``(a, c)``.

    References:
        Gonon, Brisebarre, Riccietti & Gribonval 2024, "A path-norm toolkit for modern
        networks: consequences, promises and challenges" (ICLR).

    Example:
        >>> import numpy as np
        >>> p = {"scale": np.array([2.0]), "bias": np.array([1.0]), "mean": np.array([0.5]),
        ...      "var": np.array([4.0])}
        >>> bn_affine(p, {"eps": 0.0})
        (array([1.]), array([0.5]))
    """
    a = p["scale"] / (p["var"] + attrs.get("eps", 1e-5)) ** 0.5
    return a, p["bias"] - a * p["mean"]


def _tuple(v, nd):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


def _pool_padding(pad, nd):
    if isinstance(pad, int):
        return [(0, 0)] + [(pad, pad)] * nd + [(0, 0)]
    return pad


def _sum_pool(x, attrs):
    nd = x.ndim - 2
    win = (1, *_tuple(attrs["window"], nd), 1)
    strides = (1, *_tuple(attrs.get("stride", attrs["window"]), nd), 1)
    pad = _pool_padding(attrs.get("padding", "VALID"), nd)
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, win, strides, pad), win, strides, pad


def _affine(h, s, w, b, q, linear):
    """``linear(h, |w|^q) + |b|^q`` in scaled form (``b`` may be ``None``)."""
    wq, lw = _log_abs_pow(w, q)
    y, sy = linear(h, wq), s + lw
    if b is None:
        return y, sy
    bq, lb = _log_abs_pow(b, q)
    return _add_scaled([(y, sy), (jnp.broadcast_to(bq, y.shape), lb)])


def folded_affine(p, attrs, bn=None, bn_attrs=None):
    """Effective ``(W, b)`` of a dense/conv node, with an optional BatchNorm folded in.

    As ``Model.effective_affine`` (``W = w_mult · w``, ``b = b_mult · b``, ``None`` without a
    bias), here from the node's attributes in a path-norm plan; given ``bn``,
    ``(a W, a b + c)`` with ``(a, c) = bn_affine(bn, bn_attrs)`` (scaled along the output axis).

    Args:
        p: the node's parameters (``w`` and optionally ``b``).
        attrs: its attributes (``w_mult``, ``b_mult``, default 1).
        bn: parameters of the BatchNorm that follows, or ``None``.
        bn_attrs: that BatchNorm's attributes.

    Returns:
        ``(W, b)``.

    References:
        Gonon, Brisebarre, Riccietti & Gribonval 2024, "A path-norm toolkit for modern
        networks: consequences, promises and challenges" (ICLR).

    Example:
        >>> import numpy as np
        >>> folded_affine({"w": np.ones((2, 1))}, {"w_mult": 0.5})
        (array([[0.5],
               [0.5]]), None)
    """
    w = attrs["w_mult"] * p["w"]
    b = attrs.get("b_mult", 1.0) * p["b"] if "b" in p else None
    if bn is not None:
        a, c = bn_affine(bn, bn_attrs)
        w = w * a
        b = c if b is None else a * b + c
    return w, b


def linear_map(op: str, attrs) -> Callable:
    """The linear map ``(x, w) -> y`` of a dense, conv or conv_transpose node (no multiplier,
    no bias); applied to ``|w|^q`` it is the node's rewritten layer.

    Example:
        >>> import numpy as np
        >>> linear_map("dense", {})(np.ones((1, 2)), np.full((2, 3), 0.5))
        array([[1., 1., 1.]])
    """
    if op == "dense":
        return lambda x, w: x @ w
    return conv_linear(attrs) if op == "conv" else conv_transpose_linear(attrs)


def _as64(tree):
    return jax.tree_util.tree_map(lambda t: jnp.asarray(t, jnp.float64), tree)


def _step(op, frozen, fold_frozen, q, ins, p, bn):
    """One node of the rewritten network on scaled inputs ``ins = [(h, s), ...]``."""
    a = _attrs(frozen)
    if op in LINEAR_OPS:
        w, b = folded_affine(_as64(p), a, _as64(bn) if bn is not None else None,
                        _attrs(fold_frozen) if fold_frozen is not None else None)
        return _renorm(*_affine(*ins[0], w, b, q, linear_map(op, a)))
    if op == "batchnorm":
        scale, shift = bn_affine(_as64(p), a)
        return _renorm(*_affine(*ins[0], scale, shift, q, lambda x, ww: x * ww))
    if op == "add":
        return _add_scaled(ins)
    if op == "concat":
        t = jnp.max(jnp.stack([s for _, s in ins]))
        return jnp.concatenate([h * jnp.exp(s - t) for h, s in ins], axis=-1), t
    x, s = ins[0]
    if op == "upsample":
        mode = a.get("mode", "nearest")
        maps = upsample_maps(x.shape[1:-1], a)
        if mode != "nearest":
            maps = [jnp.asarray(m, jnp.float64) ** q for m in maps]
        return apply_upsample(x, maps, mode), s
    if op == "maxpool":
        return _sum_pool(x, a)[0], s
    if op == "avgpool":
        summed, win, strides, pad = _sum_pool(x, a)
        if a.get("count_include_pad", True) or pad == "VALID":
            weight = jnp.float64(1.0 / math.prod(win))
        else:
            ones = jnp.ones((1, *x.shape[1:-1], 1), jnp.float64)
            weight = 1.0 / jax.lax.reduce_window(ones, 0.0, jax.lax.add, win, strides, pad)
        return summed * weight**q, s
    if op == "global_avgpool":
        n = math.prod(x.shape[1:-1])
        return jnp.sum(x, axis=tuple(range(1, x.ndim - 1))), s - q * math.log(n)
    if op == "scale":
        f = abs(float(a["factor"]))
        return (x, s + q * math.log(f)) if f > 0 else (jnp.zeros_like(x), s)
    raise UnsupportedLayerError(f"path-norm: op {op!r} is not supported")  # pragma: no cover


@partial(jax.jit, static_argnums=(0, 2, 3))
def _log_pathnorm_qq(the_plan, q, input_shape, output, params):
    """``log ||Phi(theta)||_q^q``: the rewritten forward pass on the all-ones input, compiled
    once per architecture (``q`` is traced: no recompilation per ``q``)."""
    frozen_of = {name: frozen for name, _, _, frozen, _ in the_plan}
    q = jnp.float64(q)
    env: dict[str, tuple] = {}
    for name, op, inputs, frozen, fold in the_plan:
        ins = [env[s] for s in inputs]
        if op == "input":
            env[name] = (jnp.ones((1, *input_shape), jnp.float64), jnp.float64(0.0))
        elif op in ("relu", "act", "bn_folded"):
            env[name] = ins[0]
        elif op == "flatten":
            env[name] = (ins[0][0].reshape(1, -1), ins[0][1])
        else:
            env[name] = _step(op, frozen, frozen_of[fold] if fold else None, q, ins,
                              params.get(name), params.get(fold) if fold else None)
    h, s = env[output]
    return jnp.log(jnp.sum(h)) + s


def _check_q(q) -> float:
    try:
        q = float(q)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"path-norm: q must be a positive number, got {q!r}") from exc
    if not (math.isfinite(q) and q > 0):
        raise InvalidArgumentError(f"path-norm: q must be a finite number > 0, got {q}")
    return q


def log_pathnorm_qq(model, params, q: float = 1.0, *, fold_bn: bool = True) -> float:
    """Log of the ``q``-th power of the L^q path-norm:

        log Σ_p |Phi_p(theta)|^q = q log ||Phi(theta)||_q,

    computed in log space (module docstring), so it stays finite when the path-norm overflows.

    Args:
        model: a ``dynkit.models.Model``.
        params: its parameters.
        q: the exponent, ``q > 0``.
        fold_bn: as in :func:`path_norm`.

    Returns:
        The log, a float (``-inf`` when every path vanishes).

    References:
        Gonon, Brisebarre, Riccietti & Gribonval 2024, "A path-norm toolkit for modern
        networks: consequences, promises and challenges" (ICLR).

    Example:
        >>> import dynkit as dk
        >>> model = dk.models.mlp(2, [2], 1)
        >>> params = {"fc0": {"w": np.eye(2), "b": np.zeros(2)},
        ...           "head": {"w": np.ones((2, 1)), "b": np.zeros(1)}}
        >>> round(log_pathnorm_qq(model, params, 2), 6)   # log(1² + 1²)
        0.693147
    """
    q = _check_q(q)
    the_plan = plan(model, fold_bn)
    needed = _needed_params(model, params, the_plan)
    with jax.enable_x64(True):
        out = float(_log_pathnorm_qq(the_plan, q, tuple(model.input_shape), model.output,
                                     needed))
    if math.isnan(out):
        check_finite("path-norm: params", needed, "; the path-norm is undefined")
        raise InvalidArgumentError("path-norm: NaN although every parameter is finite")
    return out


def path_norm(model, params, q: float = 1, *, fold_bn: bool = True) -> PathNorm:
    """L^q path-norm ``||Phi(theta)||_q`` of a ReLU DAG network (Gonon et al., ICLR 2024).

    ``||Phi(theta)||_q^q = sum_p |Phi_p(theta)|^q`` over all paths ending at an output neuron
    and starting at an input neuron (coefficient: the product of the effective weights
    ``w_mult * w`` along the path) or at a neuron with a bias (coefficient: that bias times the
    product of the weights downstream). Computed by one float64 forward pass of the
    rewritten network on the all-ones input (their Theorem A.1; rules in the module
    docstring), in log space.

    Args:
        model: a ``dynkit.models.Model``.
        params: its parameters (e.g. ``ckpt.model, ckpt.params``); BatchNorm uses its running
            statistics (eval mode).
        q: the exponent, ``q > 0``.
        fold_bn: ``True`` (default) folds a BatchNorm into the dense/conv it directly follows,
            so that layer has one bias ``a b + c``; ``False`` keeps the layer's own bias ``b``
            (a path through the BN edge, ``|a b|^q``) and the BN shift ``c`` (a path of its
            own, ``|c|^q``) apart, as the authors' ``pathnorm-pytorch`` code does. Equal when
            the layer has no bias. Why folding is the default: module docstring.

    Returns:
        ``PathNorm(value, log_value, q)``.

    Raises:
        UnsupportedLayerError: layers outside the toolkit (non-ReLU activations, unknown ops).
        InvalidArgumentError: missing or non-finite parameters, ``q <= 0``.

    References:
        Gonon, Brisebarre, Riccietti & Gribonval (ICLR 2024), Def. 2.2 and Theorem A.1.

    Example:
        >>> import numpy as np, dynkit as dk
        >>> model = dk.models.mlp(2, [2], 1, parameterization="standard")
        >>> params = {"fc0": {"w": np.eye(2), "b": np.zeros(2)},
        ...           "head": {"w": np.ones((2, 1)), "b": np.zeros(1)}}
        >>> path_norm(model, params, q=1).value  # two paths of weight 1 * 1
        2.0
    """
    lq = log_pathnorm_qq(model, params, q, fold_bn=fold_bn)
    q = float(q)
    log_value = lq / q
    if log_value > _LOG_FLOAT64_MAX:
        warnings.warn(f"path-norm L^{q:g} of {model.arch!r} is exp({log_value:.6g}), beyond "
                      "the float64 range: value=inf, use log_value", RuntimeWarning, stacklevel=2)
        value = math.inf
    else:
        value = math.exp(log_value)
    return PathNorm(value, log_value, q)


# --------------------------------------------------------------------- series and metric
def path_norm_series(run, qs: Sequence[float] = (1, 2, 4), *, every: int = 1,
                     include_last: bool = True) -> pd.DataFrame:
    """Path-norms along a training run, in the tidy series schema (``dynkit.schema``).

    For each checkpoint and ``q``: one row of metric ``pathnorm`` (``||Phi(theta)||_q``) and one
    of ``log_pathnorm`` (its log, finite where the value overflows).

    Args:
        run: a run folder (read with ``dynkit.load_run``), a ``Run``, or any iterable of
            checkpoints (objects with ``model``, ``params``, ``step``).
        qs: the exponents.
        every, include_last: select checkpoints as ``dynkit.checkpoints.iterate`` does.

    Returns:
        DataFrame with columns ``step, epoch, metric, value, q``.

    References:
        Gonon, Brisebarre, Riccietti & Gribonval 2024, "A path-norm toolkit for modern
        networks: consequences, promises and challenges" (ICLR).

    Example:
        >>> from types import SimpleNamespace
        >>> import dynkit as dk
        >>> model = dk.models.mlp(2, [2], 1)
        >>> params = {"fc0": {"w": np.eye(2), "b": np.zeros(2)},
        ...           "head": {"w": np.ones((2, 1)), "b": np.zeros(1)}}
        >>> run = [SimpleNamespace(model=model, params=params, step=0, meta=None)]
        >>> path_norm_series(run, qs=[1])[["metric", "value"]].round(6).to_numpy().tolist()
        [['pathnorm', 2.0], ['log_pathnorm', 0.693147]]
    """
    qs = [_check_q(q) for q in qs]
    rows = []
    for i, ckpt in iterate(run, every, include_last, indexed=True):
        keys = step_epoch(ckpt, i)
        for q in qs:
            pn = path_norm(ckpt.model, ckpt.params, q)
            rows.append({**keys, "metric": "pathnorm", "value": pn.value, "q": q})
            rows.append({**keys, "metric": "log_pathnorm", "value": pn.log_value, "q": q})
    if not rows:
        raise InvalidArgumentError("path_norm_series: the run holds no checkpoints")
    return tidy(rows)
