"""Input validation of the empirical NTK (:mod:`dynkit.theory.empirical`): options, output
axes, inputs, parameters (finite, and fitting the model or ``apply_fn``).
The finite check of the parameters is ``dynkit.validation.check_finite``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.models.graph import Model
from dynkit.validation import check_finite

__all__ = [
    "as_input",
    "as_model",
    "canonical_axes",
    "check_model_params",
    "generic_output_shape",
    "signature",
]


def as_model(apply_fn) -> Model | None:
    """The dynkit ``Model`` behind ``apply_fn`` (the model or its bound ``apply``), else None.

    Args:
        apply_fn: a ``Model``, its bound ``apply`` method, or any ``apply_fn(params, x)``.

    Returns:
        The ``Model``, or None for a generic function.

    Example:
        >>> from dynkit.models.mlp import mlp
        >>> model = mlp(2, [4], 3)
        >>> as_model(model.apply) is model, as_model(lambda p, x: x)
        (True, None)
    """
    if isinstance(apply_fn, Model):
        return apply_fn
    owner = getattr(apply_fn, "__self__", None)
    if isinstance(owner, Model) and getattr(apply_fn, "__name__", "") == "apply":
        return owner
    return None


def canonical_axes(trace_axes, diagonal_axes, r):
    """``trace_axes``, ``diagonal_axes`` of an ``r``-axis output as sorted non-negative tuples
    (in range, no repeats, disjoint).

    Args:
        trace_axes, diagonal_axes: axes of the output (batch axis included), negative allowed.
        r: the output's number of axes.

    Returns:
        ``(trace_axes, diagonal_axes)``.

    Raises:
        InvalidArgumentError: an axis out of range, repeated, or in both.

    Example:
        >>> canonical_axes((-1,), (), 2)
        ((1,), ())
    """
    def canon(axes, name):
        out = []
        for a in axes:
            if not -r <= int(a) < r:
                raise InvalidArgumentError(
                    f"{name} entry {a} is out of range for an output with {r} axes "
                    f"(batch axis included)"
                )
            out.append(int(a) % r)
        if len(set(out)) != len(out):
            raise InvalidArgumentError(f"{name} has repeated axes: {tuple(axes)}")
        return tuple(sorted(out))

    tr, dg = canon(trace_axes, "trace_axes"), canon(diagonal_axes, "diagonal_axes")
    if set(tr) & set(dg):
        raise InvalidArgumentError(
            f"trace_axes {tuple(trace_axes)} and diagonal_axes {tuple(diagonal_axes)} overlap"
        )
    return tr, dg


def as_input(x, name):
    """``x`` as a non-empty, finite batch array (``name`` in errors).

    Args:
        x: the inputs, array-like with a leading batch axis.
        name: the argument's name in errors.

    Returns:
        ``jnp.asarray(x)``.

    Raises:
        ShapeMismatchError: a scalar or an empty batch.
        InvalidArgumentError: NaN or inf entries (``dynkit.validation.check_finite``).

    Example:
        >>> as_input([[1.0, 2.0]], "x1").shape
        (1, 2)
    """
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ShapeMismatchError(f"{name} must be a batch of inputs (ndim >= 1), got a scalar")
    if x.shape[0] == 0:
        raise ShapeMismatchError(f"{name} is an empty batch (shape {tuple(x.shape)})")
    check_finite(name, x)
    return x


def signature(params, x1, x2):
    """Hashable shapes/dtypes of the arguments (caches the traced output shape).

    Args:
        params: the parameter pytree; x1, x2: the inputs (``x2`` may be None).

    Returns:
        A hashable tuple: tree structure, leaf shapes/dtypes, and those of ``x1``, ``x2``.

    Example:
        >>> import numpy as np
        >>> signature({"w": np.ones((2, 3))}, np.ones((4, 2)), None)[1:]
        ((((2, 3), 'float64'),), ((4, 2), 'float64'), None)
    """
    def sig(a):
        return (tuple(np.shape(a)), str(getattr(a, "dtype", type(a))))

    return (jax.tree.structure(params), tuple(sig(a) for a in jax.tree.leaves(params)),
            sig(x1), None if x2 is None else sig(x2))


def generic_output_shape(apply_fn, params, x):
    """Shape/dtype of ``apply_fn(params, x)``: a single array, else a clear error.

    Args:
        apply_fn: ``apply_fn(params, x)``; params: its parameters; x: the inputs.

    Returns:
        The ``jax.ShapeDtypeStruct`` of the output.

    Raises:
        ShapeMismatchError: ``apply_fn`` fails on these arguments or returns several arrays.

    Example:
        >>> import jax.numpy as jnp
        >>> generic_output_shape(lambda p, x: x @ p, jnp.ones((2, 3)), jnp.ones((4, 2))).shape
        (4, 3)
    """
    try:
        out = jax.eval_shape(apply_fn, params, x)
    except Exception as exc:  # any failure here means params/x do not fit apply_fn
        shapes = jax.tree.map(lambda leaf: tuple(np.shape(leaf)), params)
        raise ShapeMismatchError(
            f"apply_fn(params, x) failed for x of shape {tuple(x.shape)} and params of shapes "
            f"{shapes}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ShapeMismatchError(
            f"apply_fn must return a single array, got a {type(out).__name__}"
        )
    return out


def check_model_params(model: Model, params):
    """``params`` has exactly the layers, entries and shapes of ``model.param_shapes()``.

    Args:
        model: the dynkit ``Model``; params: ``{node: {param: array}}``.

    Raises:
        ShapeMismatchError: a missing or unexpected layer or entry, or a wrong shape.

    Example:
        >>> import jax
        >>> from dynkit.models.mlp import mlp
        >>> model = mlp(2, [4], 3)
        >>> check_model_params(model, model.init(jax.random.PRNGKey(0))) is None
        True
    """
    expected = model.param_shapes()
    if not isinstance(params, dict):
        raise ShapeMismatchError(
            f"params must be a dict {{node: {{param: array}}}} for model {model.arch!r}, "
            f"got {type(params).__name__}"
        )
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise ShapeMismatchError(
            f"params do not fit model {model.arch!r}: missing layers {missing}, "
            f"unexpected layers {extra}"
        )
    for node, shapes in expected.items():
        got = params[node]
        if set(got) != set(shapes):
            raise ShapeMismatchError(
                f"params[{node!r}] has entries {sorted(got)}, model {model.arch!r} expects "
                f"{sorted(shapes)}"
            )
        for k, shape in shapes.items():
            if tuple(np.shape(got[k])) != tuple(shape):
                raise ShapeMismatchError(
                    f"params[{node!r}][{k!r}] has shape {tuple(np.shape(got[k]))}, model "
                    f"{model.arch!r} expects {tuple(shape)}"
                )
