"""JSON specs of ``stax`` networks: :func:`from_spec` builds ``(init_fn, apply_fn, kernel_fn)``
from a list of ``[LayerName, {kwargs}]`` pairs in the neural-tangents vocabulary (Novak et al.
2020), the format of the reference kernels in ``tests/data/neural_tangents``.

:mod:`dynkit.theory.stax` re-exports :func:`from_spec` and owns the layer constructors; this
module looks them up on it by name when a spec is built.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
from jax.scipy.special import erf as _erf

from dynkit.errors import InvalidArgumentError, UnsupportedLayerError

__all__ = ["from_spec"]

#: Layer names a spec may use, each the ``dynkit.theory.stax`` constructor of that name.
_CONSTRUCTORS = (
    "Dense", "Conv", "AvgPool", "SumPool", "GlobalAvgPool", "GlobalSumPool", "Flatten",
    "Identity", "LayerNorm", "Relu", "LeakyRelu", "ABRelu", "Abs", "Erf", "Gelu", "Sin", "Cos",
    "Sign", "Sigmoid_like", "ElementwiseNumerical", "FanOut", "FanInSum", "FanInConcat",
    "ConvTranspose", "ConvLocal", "ImageResize", "Dropout", "GlobalSelfAttention", "Exp",
    "Gaussian", "Rbf", "ExpNormalized", "Hermite", "Monomial", "RectifiedMonomial", "Polynomial",
)

_NUMERICAL_FNS = {
    "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "swish": jax.nn.silu, "silu": jax.nn.silu,
    "softplus": jax.nn.softplus, "elu": jax.nn.elu, "selu": jax.nn.selu, "erf": _erf,
    "relu": jax.nn.relu, "sin": jnp.sin, "cos": jnp.cos,
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}

_UNSUPPORTED = {
    "MaxPool": "the max of correlated Gaussians has no closed-form covariance; use AvgPool",
    "BatchNorm": "batch statistics couple the samples of a batch, so there is no per-pair "
                 "kernel; use LayerNorm",
    "Aggregate": "graph aggregation is not implemented",
    "DotGeneral": "constant dot_general layers are not implemented",
    "Elu": "no closed form here; use ['ElementwiseNumerical', {'fn': 'elu'}]",
    "Selu": "no closed form here; use ['ElementwiseNumerical', {'fn': 'selu'}]",
}


def _stax():
    """:mod:`dynkit.theory.stax`, imported on use: it imports this module to re-export
    :func:`from_spec`."""
    from dynkit.theory import stax

    return stax


def from_spec(spec):
    """Build ``(init_fn, apply_fn, kernel_fn)`` from a JSON spec: a list of
    ``[LayerName, {kwargs}]`` pairs in the neural-tangents vocabulary (see
    ``tests/data/neural_tangents/README.md``), plus the blocks ``["Residual", [spec]]``
    (= ``serial(FanOut(2), parallel(serial(*block), Identity()), FanInSum())``),
    ``["Serial", [spec]]`` and ``["Parallel", [spec, spec, ...]]``.
    ``ElementwiseNumerical`` takes ``{"fn": "tanh" | "sigmoid" | "swish" | ..., "deg": 25}``
    (``"degree"`` works too).

    Errors name the offending entry (``spec[i]``): ``InvalidArgumentError`` for an unknown
    layer or keyword, ``UnsupportedLayerError`` for a neural-tangents layer with no
    infinite-width kernel here; shape errors at ``init_fn``/``kernel_fn`` time name it too.

    Args:
        spec: the architecture, a list of ``[LayerName, {kwargs}]`` pairs (the kwargs of the
            :mod:`dynkit.theory.stax` constructor of that name; ``{}`` may be left out).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)`` of ``stax.serial`` over the layers; its kernel is
        the composition of the layers' kernel recursions.

    References:
        Novak et al. 2020, "Neural Tangents: fast and easy infinite neural networks in
        Python" (the layer names and keywords).

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory import stax
        >>> _, _, kernel_fn = from_spec([["Dense", {"out_dim": 8, "b_std": 0.5}], ["Relu"],
        ...                              ["Dense", {"out_dim": 1}]])
        >>> _, _, same_fn = stax.serial(stax.Dense(8, b_std=0.5), stax.Relu(), stax.Dense(1))
        >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8]])
        >>> bool(jnp.allclose(kernel_fn(x, None, "ntk"), same_fn(x, None, "ntk")))
        True
    """
    return _stax().serial(*_spec_layers(spec, "spec"))


def _spec_layers(spec, where):
    if not isinstance(spec, (list, tuple)):
        raise InvalidArgumentError(f"{where}: a spec is a list of [LayerName, {{kwargs}}] "
                                   f"pairs, got {type(spec).__name__}")
    return [_spec_layer(item, f"{where}[{i}]") for i, item in enumerate(spec)]


def _spec_layer(item, where):
    if (not isinstance(item, (list, tuple)) or not 1 <= len(item) <= 2
            or not isinstance(item[0], str)):
        raise InvalidArgumentError(f"{where}: expected [LayerName, {{kwargs}}], got {item!r}")
    stax = _stax()
    name, arg = item[0], (item[1] if len(item) == 2 else {})
    label = f"{where} {name}"
    if name == "Residual":
        block = stax.serial(*_spec_layers(arg, f"{where}.Residual"))
        triple = stax.serial(stax.FanOut(2), stax.parallel(block, stax.Identity()),
                             stax.FanInSum())
    elif name == "Serial":
        triple = stax.serial(*_spec_layers(arg, f"{where}.Serial"))
    elif name == "Parallel":
        if not isinstance(arg, (list, tuple)):
            raise InvalidArgumentError(f"{label}: expects a list of specs, got {arg!r}")
        triple = stax.parallel(*[stax.serial(*_spec_layers(b, f"{where}.Parallel[{j}]"))
                                 for j, b in enumerate(arg)])
    elif name in _UNSUPPORTED:
        raise UnsupportedLayerError(f"{label}: no infinite-width kernel: {_UNSUPPORTED[name]}")
    elif name not in _CONSTRUCTORS:
        raise InvalidArgumentError(f"{label}: unknown layer {name!r}; known layers: "
                                   f"{sorted(_CONSTRUCTORS) + ['Parallel', 'Residual', 'Serial']}")
    else:
        triple = _build(getattr(stax, name), name, arg, label)
    triple[2].layer.label = label
    return triple


def _build(constructor, name, kwargs, label):
    if not isinstance(kwargs, dict):
        raise InvalidArgumentError(f"{label}: keyword arguments must be a dict, got {kwargs!r}")
    kwargs = dict(kwargs)
    if name == "ElementwiseNumerical":
        fn = kwargs.get("fn")
        if fn not in _NUMERICAL_FNS:
            raise InvalidArgumentError(f"{label}: fn must be one of {sorted(_NUMERICAL_FNS)}, "
                                       f"got {fn!r}")
        kwargs["fn"] = _NUMERICAL_FNS[fn]
    allowed = set(inspect.signature(constructor).parameters)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise InvalidArgumentError(f"{label}: unknown keyword(s) {unknown}; {name} accepts "
                                   f"{sorted(allowed)}")
    try:
        return constructor(**kwargs)
    except TypeError as exc:
        raise InvalidArgumentError(f"{label}: {exc}") from exc
