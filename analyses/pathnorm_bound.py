"""Generalization bound from the L^1 path-norm (Gonon, Brisebarre, Riccietti & Gribonval,
ICLR 2024, Theorem 3.1) and the classic product of operator norms it is compared with
(Bartlett, Foster & Telgarsky 2017; Neyshabur, Bhojanapalli & Srebro 2018).

Theorem 3.1 (as evaluated in the authors' Table 2 script for ResNets on ImageNet): for a DAG
ReLU network with depth ``D``, ``P`` distinct kinds of *-max-pooling neurons of kernel size at
most ``K``, input dimension ``d_in``, output dimension ``d_out``, trained on ``n`` i.i.d.
samples with ``||x||_inf <= B``, the expected generalization gap of the cross-entropy loss is
at most::

    bound = 4 * C * B / sqrt(n) * ||Phi(theta)||_1,
    C     = sqrt( D log((3 + 2P) K) + log( (3 + 2P) / (1 + P) * (d_in + 1) * d_out ) ).

The sharpened constant of their Remark 3.1 (for plain max-pooling, ``P <= 1``, with ``M`` the
largest number of max-pooling neurons on one path) is::

    C_sharp = sqrt( D log 3 + M log K + log( (d_in + 1) * d_out ) ).

With ``D=18, P=1, K=9, d_in=224*224*3, d_out=1000, n=0.99*1281167, B=2.64`` these give the
published ``4 C B / sqrt(n) = 0.0881`` and ``0.0599`` (Table 2, ResNet-18); see the tests.

Conventions of this implementation (all explicit in ``PathNormBound``):

* ``B`` is ``max(input_bound, 1)``: the bias paths of ``Phi`` see the constant input 1, so an
  input bound below 1 is not used (this can only enlarge the bound).
* ``D`` defaults to the number of edge layers on the longest input-to-output path of the
  neuron DAG that ``path_norm`` evaluates: dense, conv, conv_transpose, stand-alone BatchNorm,
  pooling, upsample, add (the skip edge) and scale nodes count one each; relu, flatten, concat
  (a union of neurons, no edges) and BatchNorm folded into its convolution count zero (with
  ``fold_bn=False`` every BatchNorm is stand-alone). This gives 28 for ResNet-18 (18 weight
  layers, 2 pools, 8 adds); the authors' Table 2 uses the nominal depth (18). Pass ``depth=``
  to override.
* ``K = 1`` and ``P = 0`` when there is no max-pooling.
* The theorem bounds a supremum over a parameter set fixed before seeing the data; plugging
  in the trained ``theta`` is the usual heuristic reading, as in the paper's Sec. 4.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dynkit.analyses.pathnorm import bn_affine, folded_affine, linear_map, path_norm, plan
from dynkit.errors import InvalidArgumentError
from dynkit.registry import METRICS

__all__ = ["ArchitectureConstants", "OperatorNormProduct", "PathNormBound",
           "architecture_constants", "bound_factor", "operator_norm_product", "pathnorm_bound",
           "pathnorm_metric", "theorem_constants"]

#: Plan ops that are one layer of edges in the neuron DAG.
_EDGE_OPS = ("dense", "conv", "conv_transpose", "batchnorm", "maxpool", "avgpool",
             "global_avgpool", "upsample", "add", "scale")


@dataclass(frozen=True)
class ArchitectureConstants:
    """Architecture constants of Theorem 3.1 (conventions in the module docstring).

    Attributes:
        depth: ``D``, edge layers on the longest input-to-output path.
        pool_kinds: ``P``, kinds of max-pooling neurons (0 or 1 here).
        pool_kernel: ``K``, the largest pooling kernel size (1 without pooling).
        pools_on_path: ``M``, the most max-pooling neurons on one path (Remark 3.1).
        d_in, d_out: input and output dimensions.

    References:
        Gonon, Brisebarre, Riccietti & Gribonval 2024, "A path-norm toolkit for modern
        networks: consequences, promises and challenges" (ICLR), Theorem 3.1 and Remark 3.1.

    Example:
        >>> ArchitectureConstants(18, 1, 9, 1, 224 * 224 * 3, 1000).depth
        18
    """

    depth: int
    pool_kinds: int
    pool_kernel: int
    pools_on_path: int
    d_in: int
    d_out: int


@dataclass(frozen=True)
class PathNormBound:
    """Theorem 3.1 bound and its constituents.

    Attributes:
        value: ``factor · exp(log_pathnorm_l1)`` (inf when it overflows).
        log_value: its log (finite even when ``value`` overflows).
        factor: ``4 C B / sqrt(n_train)``.
        C: the constant of Theorem 3.1.
        sharpened_value, sharpened_factor, C_sharp: the same with ``C_sharp`` (Remark 3.1; NaN
            when ``P > 1``).
        log_pathnorm_l1: ``log ||Phi(theta)||_1``.
        B: ``max(input_bound, 1)``.
        n_train: the number of training samples.
        constants: the ``ArchitectureConstants``.

    References:
        Gonon, Brisebarre, Riccietti & Gribonval 2024, "A path-norm toolkit for modern
        networks: consequences, promises and challenges" (ICLR), Theorem 3.1 and Remark 3.1.

    Example:
        >>> import dynkit as dk
        >>> model = dk.models.mlp(2, [2], 1)
        >>> params = {"fc0": {"w": np.eye(2), "b": np.zeros(2)},
        ...           "head": {"w": np.ones((2, 1)), "b": np.zeros(1)}}
        >>> pathnorm_bound(model, params, n_train=100, input_bound=1.0).B
        1.0
    """

    value: float
    log_value: float
    factor: float
    C: float
    sharpened_value: float
    sharpened_factor: float
    C_sharp: float
    log_pathnorm_l1: float
    B: float
    n_train: int
    constants: ArchitectureConstants


def architecture_constants(model, depth: int | None = None, *, fold_bn: bool = True
                           ) -> ArchitectureConstants:
    """``D, P, K, M, d_in, d_out`` of ``model`` (conventions in the module docstring).

    Args:
        model: a ``dynkit.models.Model``.
        depth: overrides ``D`` (e.g. the nominal depth the authors' Table 2 uses).
        fold_bn: as in ``pathnorm.path_norm`` (it sets which BatchNorms are layers of their
            own).

    Returns:
        ``ArchitectureConstants``.

    References:
        Gonon, Brisebarre, Riccietti & Gribonval 2024, "A path-norm toolkit for modern
        networks: consequences, promises and challenges" (ICLR), Theorem 3.1 and Remark 3.1.

    Example:
        >>> import dynkit as dk
        >>> architecture_constants(dk.models.mlp(2, [3], 1))
        ArchitectureConstants(depth=2, pool_kinds=0, pool_kernel=1, pools_on_path=0, d_in=2,
                              d_out=1)
    """
    the_plan = plan(model, fold_bn)
    longest: dict[str, int] = {}
    pools: dict[str, int] = {}
    kernel = 1
    for node in the_plan:
        name, op, inputs = node.name, node.op, node.inputs
        longest[name] = max((longest[s] for s in inputs), default=0) + (op in _EDGE_OPS)
        pools[name] = max((pools[s] for s in inputs), default=0) + (op == "maxpool")
        if op == "maxpool":
            window = node.attrs["window"]
            kernel = max(kernel, math.prod(window if isinstance(window, list) else [window]))
    n_pools = max(pools.values())
    d_out = _output_dim(model)
    return ArchitectureConstants(
        depth=int(depth) if depth is not None else longest[model.output],
        pool_kinds=1 if n_pools else 0,
        pool_kernel=int(kernel),
        pools_on_path=int(n_pools),
        d_in=int(math.prod(model.input_shape)),
        d_out=int(d_out),
    )


def _output_dim(model) -> int:
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0)))
    x = jax.ShapeDtypeStruct((1, *model.input_shape), jnp.float32)
    out = jax.eval_shape(model.apply, params, x)
    return int(math.prod(out.shape[1:]))


def theorem_constants(c: ArchitectureConstants) -> tuple[float, float]:
    """``(C, C_sharp)`` of Theorem 3.1 and Remark 3.1:

        C       = sqrt(D log((3 + 2P) K) + log((3 + 2P)/(1 + P) (d_in + 1) d_out)),
        C_sharp = sqrt(D log 3 + M log K + log((d_in + 1) d_out))   (NaN when P > 1).

    Args:
        c: the ``ArchitectureConstants``.

    Returns:
        ``(C, C_sharp)``.

    References:
        Gonon, Brisebarre, Riccietti & Gribonval 2024, "A path-norm toolkit for modern
        networks: consequences, promises and challenges" (ICLR), Theorem 3.1 and Remark 3.1.

    Example:
        >>> c = ArchitectureConstants(18, 1, 9, 1, 224 * 224 * 3, 1000)   # ResNet-18, Table 2
        >>> C, C_sharp = theorem_constants(c)
        >>> n = int(0.99 * 1281167)
        >>> round(bound_factor(C, 2.64, n), 4), round(bound_factor(C_sharp, 2.64, n), 4)
        (0.0881, 0.0599)
    """
    P, K, D = c.pool_kinds, c.pool_kernel, c.depth
    C = math.sqrt(D * math.log((3 + 2 * P) * K)
                  + math.log((3 + 2 * P) / (1 + P) * (c.d_in + 1) * c.d_out))
    if P > 1:
        return C, math.nan
    C_sharp = math.sqrt(D * math.log(3) + c.pools_on_path * math.log(K)
                        + math.log((c.d_in + 1) * c.d_out))
    return C, C_sharp


def bound_factor(C: float, input_bound: float, n_train: int) -> float:
    """The factor multiplying ``||Phi(theta)||_1`` in Theorem 3.1:

        4 C max(B, 1) / sqrt(n).

    Args:
        C: the constant of :func:`theorem_constants`.
        input_bound: ``B``, the largest ``||x||_inf`` of the inputs.
        n_train: ``n``, the number of training samples.

    Returns:
        The factor, a float.

    References:
        Gonon, Brisebarre, Riccietti & Gribonval 2024, "A path-norm toolkit for modern
        networks: consequences, promises and challenges" (ICLR), Theorem 3.1 and Remark 3.1.

    Example:
        >>> bound_factor(2.0, 0.5, 16)    # B is raised to 1
        2.0
    """
    return 4.0 * C * max(float(input_bound), 1.0) / math.sqrt(n_train)


def pathnorm_bound(model, params, n_train: int, input_bound: float, *, depth: int | None = None,
                   log_pathnorm: float | None = None, fold_bn: bool = True) -> PathNormBound:
    """Generalization bound of Gonon et al. (ICLR 2024, Theorem 3.1) for ``(model, params)``:

        bound = 4 C max(B, 1) / sqrt(n_train) · ||Phi(theta)||_1,
        C = sqrt(D log((3+2P)K) + log((3+2P)/(1+P) (d_in+1) d_out)),

    ``D, P, K, d_in, d_out`` from the graph (:func:`architecture_constants`).

    Args:
        model: a ``dynkit.models.Model``.
        params: its parameters.
        n_train: number of training samples ``n >= 1``.
        input_bound: ``B``, the largest ``||x||_inf`` of the (preprocessed) inputs.
        depth: overrides ``D``.
        log_pathnorm: reuses an already computed ``log ||Phi(theta)||_1`` (of the same
            ``fold_bn`` convention).
        fold_bn: the BatchNorm convention of ``pathnorm.path_norm`` (it also sets the depth
            ``D``: module docstring of ``pathnorm``).

    Returns:
        ``PathNormBound``.

    Raises:
        InvalidArgumentError: ``n_train < 1`` or a negative or non-finite ``input_bound``.

    References:
        Gonon, Brisebarre, Riccietti & Gribonval 2024, "A path-norm toolkit for modern
        networks: consequences, promises and challenges" (ICLR), Theorem 3.1 and Remark 3.1.

    Example:
        >>> import dynkit as dk
        >>> model = dk.models.mlp(2, [2], 1)
        >>> params = {"fc0": {"w": np.eye(2), "b": np.zeros(2)},
        ...           "head": {"w": np.ones((2, 1)), "b": np.zeros(1)}}
        >>> b = pathnorm_bound(model, params, n_train=100, input_bound=1.0)
        >>> C = np.sqrt(2 * np.log(3) + np.log(3 * (2 + 1) * 1))   # D = 2, P = 0, K = 1
        >>> bool(np.isclose(b.value, 4 * C / 10 * 2.0))            # ||Phi||_1 = 2
        True
    """
    if int(n_train) < 1:
        raise InvalidArgumentError(f"pathnorm_bound: n_train must be >= 1, got {n_train}")
    if not (math.isfinite(float(input_bound)) and float(input_bound) >= 0):
        raise InvalidArgumentError(
            f"pathnorm_bound: input_bound (max ||x||_inf) must be finite and >= 0, got "
            f"{input_bound}")
    consts = architecture_constants(model, depth, fold_bn=fold_bn)
    C, C_sharp = theorem_constants(consts)
    if log_pathnorm is None:
        log_pathnorm = path_norm(model, params, 1, fold_bn=fold_bn).log_value
    B = max(float(input_bound), 1.0)
    factor = bound_factor(C, B, n_train)
    sharp_factor = bound_factor(C_sharp, B, n_train) if math.isfinite(C_sharp) else math.nan
    log_value = math.log(factor) + log_pathnorm
    return PathNormBound(
        value=_safe_exp(log_value), log_value=log_value, factor=factor, C=C,
        sharpened_value=_safe_exp(math.log(sharp_factor) + log_pathnorm)
        if math.isfinite(sharp_factor) else math.nan,
        sharpened_factor=sharp_factor, C_sharp=C_sharp, log_pathnorm_l1=float(log_pathnorm),
        B=B, n_train=int(n_train), constants=consts)


def _safe_exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else math.inf


# --------------------------------------------------------------------- operator norms
@dataclass(frozen=True)
class OperatorNormProduct:
    """Product of the spectral norms of the linear layers.

    Attributes:
        value: ``prod_l ||A_l||_2``.
        log_value: its log.
        layers: ``((name, ||A_l||_2), ...)`` in graph order.

    References:
        Bartlett, Foster & Telgarsky 2017, "Spectrally-normalized margin bounds for neural
        networks" (NeurIPS).

    Example:
        >>> OperatorNormProduct(2.0, float(np.log(2.0)), (("fc0", 2.0),)).layers
        (('fc0', 2.0),)
    """

    value: float
    log_value: float
    layers: tuple


def _input_shapes(model, names) -> dict:
    """Shapes (with batch 1) of the inputs of the named nodes."""
    shapes = model.node_shapes()
    return {n: (1, *shapes[model.node(n).inputs[0]]) for n in names}


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _conv_power_iteration(op, frozen, shape, n_iter, w, seed):
    """``||A||_2`` of the (transposed, ``op``) convolution ``A x = conv(x, w)`` on inputs of
    ``shape`` by power iteration on ``A^T A`` (float64; compiled once per conv signature).
    Converges from below: the result is a lower estimate of the exact norm."""
    linear = linear_map(op, dict(frozen))

    def op(x):
        return linear(x, w)

    v0 = jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float64)
    _, transpose = jax.vjp(op, v0)

    def step(_, v):
        u = transpose(op(v))[0]
        return u / jnp.linalg.norm(u)

    v = jax.lax.fori_loop(0, n_iter, step, v0 / jnp.linalg.norm(v0))
    return jnp.linalg.norm(op(v))


def operator_norm_product(model, params, *, n_iter: int = 100, seed: int = 0
                          ) -> OperatorNormProduct:
    """Product of the spectral norms of the linear layers, ``prod_l ||A_l||_2``, in log space.

    The classic capacity measure of Bartlett et al. 2017 / Neyshabur et al. 2018. ``A_l`` is:
    a dense layer's effective matrix ``w_mult W`` (exact, via SVD); a convolution or transposed
    convolution as the linear operator on its actual input shape (padding, stride, dilation,
    groups included), with a following BatchNorm folded in, its norm estimated by ``n_iter``
    power iterations on ``A^T A`` (an estimate from below, not a certified upper bound); a
    stand-alone BatchNorm ``max |a|``; a ``scale`` node ``|factor|``. Biases, pooling,
    upsampling (parameter-free, like pooling), concatenation and skip connections do not enter
    (so for residual networks and U-Nets this is the classic comparison, not a Lipschitz
    bound).

    Args:
        model: a ``dynkit.models.Model``.
        params: its parameters.
        n_iter: power iterations per convolution.
        seed: seed of the power iteration's start vector.

    Returns:
        ``OperatorNormProduct``.

    References:
        Bartlett, Foster & Telgarsky 2017, "Spectrally-normalized margin bounds for neural
        networks" (NeurIPS); Neyshabur, Bhojanapalli & Srebro 2018, "A PAC-Bayesian approach to
        spectrally-normalized margin bounds for neural networks" (ICLR).

    Example:
        >>> import dynkit as dk
        >>> model = dk.models.mlp(2, [2], 1)
        >>> params = {"fc0": {"w": np.eye(2), "b": np.zeros(2)},
        ...           "head": {"w": np.ones((2, 1)), "b": np.zeros(1)}}
        >>> [(n, round(v, 6)) for n, v in operator_norm_product(model, params).layers]
        [('fc0', 1.0), ('head', 1.414214)]
    """
    the_plan = plan(model)
    convs = [name for name, op, *_ in the_plan if op in ("conv", "conv_transpose")]
    shapes = _input_shapes(model, convs) if convs else {}
    layers = []
    with jax.enable_x64(True):
        for node in the_plan:
            name, op, frozen, fold, a = node.name, node.op, node.frozen, node.fold, node.attrs
            if op in ("dense", "conv", "conv_transpose"):
                bn = _np64(params[fold]) if fold else None
                bn_attrs = model.node(fold).attrs if fold else None
                w, _ = folded_affine(_np64(params[name]), a, bn, bn_attrs)
                if op == "dense":
                    norm = float(np.linalg.norm(w, 2))
                else:
                    norm = float(_conv_power_iteration(op, _conv_key(frozen),
                                                       tuple(shapes[name]), int(n_iter), w, seed))
            elif op == "batchnorm":
                norm = float(np.max(np.abs(bn_affine(_np64(params[name]), a)[0])))
            elif op == "scale":
                norm = abs(float(a["factor"]))
            else:
                continue
            layers.append((name, norm))
    logs = [math.log(v) if v > 0 else -math.inf for _, v in layers]
    log_value = float(sum(logs))
    return OperatorNormProduct(_safe_exp(log_value), log_value, tuple(layers))


def _np64(p) -> dict:
    return {k: np.asarray(v, np.float64) for k, v in p.items()}


def _conv_key(frozen) -> tuple:
    """The attributes that define a convolution operator (shared by identical layers)."""
    return tuple((k, v) for k, v in frozen if k in ("kernel", "stride", "padding", "dilation",
                                                    "groups", "output_padding"))


# --------------------------------------------------------------------- metric
def _q_name(q: float) -> str:
    return f"{q:g}".replace(".", "p")


@METRICS.register("pathnorm", "L^1, L^2, L^4 path-norms (Gonon et al. 2024) and the L^1 "
                  "path-norm generalization bound")
def pathnorm_metric(model, params, data: Any = None, qs: Sequence[float] = (1, 2, 4)):
    """Registry metric ``"pathnorm"``: path-norms and the Theorem 3.1 bound of one checkpoint.

    Rows ``pathnorm_l{q}`` and ``log_pathnorm_l{q}`` for each ``q`` and ``bound`` (the bound of
    :func:`pathnorm_bound`, with ``n_train`` and the input bound taken from ``data.x_train``;
    NaN without data). It lives here, above ``pathnorm``, because it needs both the path-norms
    and the bound.

    Args:
        model: a ``dynkit.models.Model``.
        params: its parameters.
        data: a ``dynkit.data.Dataset`` or ``None``.
        qs: the exponents.

    Returns:
        DataFrame with columns ``metric, value``.

    References:
        Gonon, Brisebarre, Riccietti & Gribonval 2024, "A path-norm toolkit for modern
        networks: consequences, promises and challenges" (ICLR), Theorem 3.1 and Remark 3.1.

    Example:
        >>> import numpy as np, dynkit as dk
        >>> model = dk.models.mlp(2, [2], 1, parameterization="standard")
        >>> params = {"fc0": {"w": np.eye(2), "b": np.zeros(2)},
        ...           "head": {"w": np.ones((2, 1)), "b": np.zeros(1)}}
        >>> float(pathnorm_metric(model, params, qs=(1,)).set_index("metric").value["pathnorm_l1"])
        2.0
    """
    rows = []
    log_l1 = None
    for q in qs:
        pn = path_norm(model, params, q)
        rows.append(("pathnorm_l" + _q_name(q), pn.value))
        rows.append(("log_pathnorm_l" + _q_name(q), pn.log_value))
        if float(q) == 1.0:
            log_l1 = pn.log_value
    bound = math.nan
    x = getattr(data, "x_train", None)
    if x is not None and len(x):
        b = pathnorm_bound(model, params, n_train=len(x), input_bound=float(np.max(np.abs(x))),
                           log_pathnorm=log_l1)
        bound = b.value
    rows.append(("bound", bound))
    return pd.DataFrame(rows, columns=["metric", "value"])
