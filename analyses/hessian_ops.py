"""Hessian-vector products of a model's loss: the operator every curvature analysis uses (the
primitives of ``dynkit.analyses.hessian``).

``hessian_operator(model, params, x, y, ...)`` returns a ``HessianOperator``: the Hessian

    H = ∇²_θ L(θ),   L(θ) = (1/N) Σ_i ℓ(f(x_i; θ), y_i),

of the mean loss over ``N`` points with respect to a block ``θ`` of the trainable parameters
(all of them, one layer, or several layers), as a linear map on flat vectors of length
``P = dim θ``. Products are forward-over-reverse (``jax.jvp`` of ``jax.grad``; Pearlmutter
1994), jit-compiled, and accumulated over minibatches with weights ``n_b / N``, so ``N`` is not
bounded by memory. The Gauss–Newton variant (``ggn=True``) replaces ``H`` by

    G = Jᵀ H_out J,   J = ∂f(X; θ)/∂θ  (N·O × P),   H_out = ∇²_f L  (block diagonal),

Schraudolph (2002). ``J`` is the Jacobian whose Gram matrix ``J Jᵀ`` is the empirical NTK
(``dynkit.theory.empirical``): for the MSE loss ``H_out = I / N``, so ``G = JᵀJ / N`` has the
nonzero eigenvalues of ``Θ / N``, ``Θ`` the full (un-traced) empirical NTK on the ``N``
points. ``H − G`` is the term weighted by the residuals (``Σ_i ∂ℓ/∂f_i · ∇²f_i``), which
vanishes for a linear model and at an interpolating MSE minimum.

Two cheaper products for many probes: ``share_primal=True`` linearizes the gradient once per
minibatch (``jax.linearize``) and applies the stored linear map to each row of a block, so the
primal forward and backward passes run once per block instead of once per probe; and
``quadratic_forms`` gives ``zᵀ H z = d²/dε² L(θ + ε z)|₀`` by forward-over-forward
differentiation, with no backward pass at all (what Hutchinson's trace needs).

BatchNorm layers use their running statistics (evaluation mode; the Hessian of the
function the checkpoint computes, as PyHessian's ``model.eval()``); the statistics are held
fixed and are never part of ``θ``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.losses import LOSSES, cross_entropy, mse
from dynkit.models.graph import Model, split_params
from dynkit.validation import check_finite, check_integer

__all__ = ["HessianOperator", "hessian_operator", "resolve_loss", "select_layers"]

#: Points per minibatch of a product when ``batch_size`` is not given.
DEFAULT_BATCH = 1024


@dataclass(frozen=True, eq=False)
class HessianOperator:
    """The Hessian (or GGN) of a model's loss on fixed data, as a linear map on flat vectors.

    Build it with :func:`hessian_operator`. Flat vectors follow ``spec``: the blocks
    ``params[node][key]`` raveled in that order (``to_pytree`` / ``to_flat`` convert).

    Attributes:
        model: the ``Model``.
        params: the full parameters (in ``dtype``).
        x, y: the data, ``N`` points.
        loss: the loss name (``"cross_entropy"``, ``"mse"``) or ``"custom"``.
        layers: the nodes whose parameters make up ``θ``, in graph order.
        ggn: whether this is the generalized Gauss–Newton matrix instead of the Hessian.
        batch_size: points per minibatch of a product.
        spec: ``((node, key, shape), ...)`` of the blocks of ``θ``.
        dim: ``P``, the length of ``θ``.
        dtype: the floating dtype of every product.
        share_primal: whether ``matmat`` linearizes once per minibatch and block (conv nets).
    """

    model: Model
    params: dict
    x: jax.Array
    y: jax.Array
    loss: str
    layers: tuple[str, ...]
    ggn: bool
    batch_size: int
    spec: tuple
    dim: int
    dtype: np.dtype
    share_primal: bool
    _fns: tuple
    _rest: dict

    # ------------------------------------------------------------------ conversions
    def to_flat(self, tree) -> jax.Array:
        """The flat vector of a pytree ``{node: {key: array}}`` covering ``layers``."""
        return jnp.concatenate([jnp.ravel(jnp.asarray(tree[n][k], self.dtype))
                                for n, k, _ in self.spec])

    def to_pytree(self, flat) -> dict:
        """The pytree ``{node: {key: array}}`` of a flat vector of length ``dim``."""
        return _unflatten(self.spec, jnp.asarray(flat))

    @property
    def theta(self) -> jax.Array:
        """The flat parameters ``θ`` at which the Hessian is taken."""
        theta = self.__dict__.get("_theta")
        if theta is None:
            theta = self.to_flat(self.params)
            object.__setattr__(self, "_theta", theta)
        return theta

    # ------------------------------------------------------------------ products
    def _batches(self):
        n = len(self.x)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            yield self.x[start:stop], self.y[start:stop], (stop - start) / n

    def matvec(self, v) -> jax.Array:
        """``H v`` (or ``G v``) for a flat vector ``v`` of length ``dim``."""
        return self.matmat(jnp.asarray(v, self.dtype)[None])[0]

    def matmat(self, vs) -> jax.Array:
        """``H vᵢ`` for each row of ``vs`` ``(b, dim)``: the rows vmapped together (dense
        nets), or one product per row (conv nets; with ``share_primal``, one linearization
        per minibatch applied to every row)."""
        vs = jnp.asarray(vs, self.dtype)
        theta, fns = self.theta, self._fns
        product = fns.block if self.share_primal and len(vs) > 1 else fns.many
        out = None
        for xb, yb, w in self._batches():
            part = w * product(theta, self._rest, xb, yb, vs)
            out = part if out is None else out + part
        return out

    def quadratic_forms(self, vs) -> jax.Array:
        """``vᵢᵀ H vᵢ`` (or ``vᵢᵀ G vᵢ``) for each row of ``vs`` ``(b, dim)``.

        Forward-over-forward: ``vᵀ H v = d²/dε² L(θ + ε v)|_{ε=0}``, a ``jax.jvp`` of a
        ``jax.jvp``, accumulated over minibatches; for the GGN ``vᵀ G v = (J v)ᵀ H_out (J v)``,
        one jvp of the outputs and the loss's second derivative along ``J v``. No backward
        pass: on a ResNet-20 a form costs about a third of a Hessian-vector product
        (``benchmarks/RESULTS.md``). Equal to ``np.sum(vs * matmat(vs), axis=1)`` up to
        rounding (Griewank & Walther 2008, "Evaluating derivatives", ch. 13).
        """
        vs = jnp.asarray(vs, self.dtype)
        theta, quad = self.theta, self._fns.quadratic
        out = None
        for xb, yb, w in self._batches():
            part = w * quad(theta, self._rest, xb, yb, vs)
            out = part if out is None else out + part
        return out

    def value_and_gradient(self) -> tuple[float, jax.Array]:
        """``(L(θ), ∇_θ L)``, the gradient flat, accumulated over minibatches."""
        theta, value_grad = self.theta, self._fns.value_grad
        value, grad = 0.0, jnp.zeros(self.dim, self.dtype)
        for xb, yb, w in self._batches():
            v, g = value_grad(theta, self._rest, xb, yb)
            value, grad = value + w * float(v), grad + w * g
        return value, grad

    def dense(self) -> np.ndarray:
        """The full ``(dim, dim)`` matrix (``dim`` products; for small blocks and tests)."""
        eye, chunk = np.eye(self.dim, dtype=self.dtype), 1024
        return np.concatenate([np.asarray(self.matmat(eye[i:i + chunk]))
                               for i in range(0, self.dim, chunk)]).T


def resolve_loss(loss, model: Model, y, num_classes: int | None = None):
    """The loss ``ℓ(outputs, y) -> scalar`` (a mean over the batch) and its name, checked
    against the labels.

    Args:
        loss: ``None`` (cross-entropy for integer labels, else MSE), a name in
            ``dynkit.losses.LOSSES``, or a callable ``(outputs, y) -> mean loss``.
        model: the model (its output width decides one-hot MSE targets).
        y: the labels or targets.
        num_classes: classes of one-hot MSE targets (default: the output width).

    Returns:
        ``(name, fn)``; ``name`` is ``"custom"`` for a callable.

    Raises:
        InvalidArgumentError: an unknown loss name, or labels that do not fit the loss.
        ShapeMismatchError: MSE targets whose size does not fit the outputs.

    Example:
        >>> import dynkit as dk
        >>> resolve_loss(None, dk.models.mlp(3, [4], 2), np.array([0, 1]))[0]
        'cross_entropy'
    """
    out = int(np.prod(model.node_shapes()[model.output]))
    y = np.asarray(y)
    integer = np.issubdtype(y.dtype, np.integer)
    if callable(loss):
        return "custom", loss
    if loss is None:
        loss = "cross_entropy" if integer and y.ndim == 1 and out > 1 else "mse"
    if loss not in LOSSES:
        raise InvalidArgumentError(f"loss must be one of {LOSSES} or a callable "
                                   f"(outputs, y) -> mean loss, got {loss!r}")
    if loss == "cross_entropy":
        if not integer or y.ndim != 1:
            raise InvalidArgumentError(
                f"loss='cross_entropy' needs integer class labels of shape (n,), got "
                f"{y.dtype} labels of shape {y.shape}; use loss='mse' for real targets")
        if len(y) and (y.min() < 0 or y.max() >= out):
            raise InvalidArgumentError(
                f"loss='cross_entropy': labels must lie in [0, {out}) (the model's {out} "
                f"outputs), found [{y.min()}, {y.max()}]")
        return loss, cross_entropy
    classes = num_classes if num_classes is not None else out
    if integer and y.ndim == 1 and out > 1:
        if len(y) and (y.min() < 0 or y.max() >= classes):
            raise InvalidArgumentError(f"loss='mse' with integer labels: labels must lie in "
                                       f"[0, {classes}), found [{y.min()}, {y.max()}]")
        return loss, functools.partial(mse, num_classes=classes)
    if y.size != len(y) * out:
        raise ShapeMismatchError(f"loss='mse': targets of shape {y.shape} do not fit the "
                                 f"model's outputs ({out} per point)")
    return loss, mse


def select_layers(model: Model, params, layers) -> tuple[str, ...]:
    """The nodes whose trainable parameters make up ``θ``, in graph order.

    Args:
        model: the model.
        params: its parameters.
        layers: ``None`` (every node with trainable parameters), a node name, or a sequence
            of node names (a block).

    Returns:
        The node names.

    Raises:
        InvalidArgumentError: a name that is not a node with trainable parameters.

    Example:
        >>> import jax, dynkit as dk
        >>> model = dk.models.mlp(3, [4], 2)
        >>> select_layers(model, model.init(jax.random.PRNGKey(0)), None)
        ('fc0', 'head')
    """
    trainable, _ = split_params(params)
    known = [n.name for n in model.nodes if trainable.get(n.name)]
    if layers is None:
        return tuple(known)
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise InvalidArgumentError("layers must name at least one layer")
    bad = [n for n in names if n not in known]
    if bad:
        raise InvalidArgumentError(f"layers {bad} are not layers with trainable parameters of "
                                   f"model {model.arch!r}; known: {known}")
    return tuple(n for n in known if n in set(names))


def hessian_operator(model: Model, params, x, y, *, loss=None, layers=None, ggn: bool = False,
                     batch_size: int | None = None, dtype=None,
                     num_classes: int | None = None,
                     share_primal: bool = False) -> HessianOperator:
    """The Hessian (or GGN) of the mean loss of ``model`` on ``(x, y)`` as an operator.

        H = ∇²_θ (1/N) Σ_i ℓ(f(x_i; θ), y_i),   H v = Σ_b (n_b/N) ∇²_θ L_b(θ) v,

    each product forward-over-reverse, ``d/dε ∇L(θ + ε v)`` (Pearlmutter 1994), jit-compiled
    and accumulated over minibatches ``b`` of ``batch_size`` points. With ``ggn=True`` the
    product is ``Jᵀ (H_out (J v))`` (Schraudolph 2002): a jvp, the loss Hessian in output
    space, and a vjp; ``J`` is the Jacobian of the empirical NTK ``Θ = J Jᵀ``.

    Args:
        model: the ``Model`` (BatchNorm in evaluation mode).
        params: its parameters (finite).
        x: ``(N, *input_shape)`` inputs.
        y: labels or targets for ``loss``.
        loss: ``None`` (the model's training loss: cross-entropy for integer labels, else MSE;
            ``hessian_series`` takes it from the checkpoint), a ``dynkit.losses`` name, or a
            callable ``(outputs, y) -> mean loss``.
        layers: ``None`` (all trainable parameters), one node name, or a list of them (a block
            of the Hessian).
        ggn: the generalized Gauss–Newton matrix instead of the Hessian.
        batch_size: points per minibatch (default ``min(N, 1024)``).
        dtype: dtype of the products (default: the parameters'); float64 needs
            ``jax_enable_x64``.
        num_classes: classes of one-hot MSE targets (default: the output width).
        share_primal: for conv nets, ``matmat`` of ``b > 1`` rows linearizes the product
            once per minibatch (``jax.linearize``: the primal forward and backward passes and
            their residuals) and applies the linear map to each row, so a block of ``b``
            probes costs one primal pass plus ``b`` tangent passes instead of ``b`` full
            products (equal to rounding). The residuals are held in memory while a minibatch
            is processed: about 5 MB per point for a CIFAR ResNet-20 in float32, so choose
            ``batch_size`` accordingly. Dense nets already share the primal (vmapped rows).

    Returns:
        A ``HessianOperator`` (``matvec``, ``matmat``, ``quadratic_forms``,
        ``value_and_gradient``, ``dense``).

    Raises:
        InvalidArgumentError: non-finite params or inputs, an unknown layer, labels that do
            not fit the loss.
        ShapeMismatchError: inputs that do not fit the model.

    References:
        Pearlmutter 1994, "Fast exact multiplication by the Hessian" (Neural Computation);
        Schraudolph 2002, "Fast curvature matrix-vector products for second-order gradient
        descent" (Neural Computation).

    Example:
        >>> import jax, dynkit as dk
        >>> model = dk.models.mlp(1, [], 1, bias=False)       # f(x) = w x
        >>> params = {"head": {"w": jnp.array([[2.0]])}}
        >>> x = jnp.array([[1.0], [3.0]]); y = jnp.array([[0.0], [1.0]])
        >>> op = hessian_operator(model, params, x, y, loss="mse")
        >>> float(op.matvec(jnp.ones(1))[0])                  # XᵀX / N = (1 + 9) / 2
        5.0
    """
    if not isinstance(model, Model):
        raise InvalidArgumentError(f"model must be a dynkit Model, got {type(model).__name__}")
    model.check_params(params)
    check_finite("params", params, "; the Hessian of non-finite parameters is undefined")
    check_finite("x", x)
    x = jnp.asarray(x)
    if tuple(x.shape[1:]) != tuple(model.input_shape):
        raise ShapeMismatchError(f"model {model.arch!r} expects inputs of shape (N, "
                                 f"{', '.join(map(str, model.input_shape))}), got {x.shape}")
    if len(np.shape(y)) == 0 or len(y) != len(x):
        raise ShapeMismatchError(f"x has {len(x)} points but y has shape {np.shape(y)}")
    if len(x) == 0:
        raise InvalidArgumentError("x holds no points")
    name, loss_f = resolve_loss(loss, model, y, num_classes)
    if name != "cross_entropy":
        check_finite("y", y)
    layers = select_layers(model, params, layers)
    dtype = np.dtype(dtype or jnp.result_type(*jax.tree_util.tree_leaves(split_params(params)[0])))
    if not np.issubdtype(dtype, np.floating):
        raise InvalidArgumentError(f"dtype must be a floating dtype, got {dtype}")
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        raise InvalidArgumentError("dtype float64 needs jax.config.update('jax_enable_x64', True)")
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
    x = x.astype(dtype)
    y = jnp.asarray(y) if np.issubdtype(np.asarray(y).dtype, np.integer) else \
        jnp.asarray(y, dtype)
    batch = check_integer("batch_size", batch_size) if batch_size is not None else DEFAULT_BATCH
    batch = min(batch, len(x))
    spec = tuple((n, k, tuple(np.shape(params[n][k])))
                 for n in layers for k in params[n] if k not in ("mean", "var"))
    rest = {n: {k: v for k, v in p.items() if n not in layers or k in ("mean", "var")}
            for n, p in params.items()}
    fns = _compiled(model, spec, ggn, loss_f if name == "custom" else (name, num_classes))
    dim = sum(math.prod(s) for _, _, s in spec)
    return HessianOperator(model, params, x, y, name, layers, bool(ggn), batch, spec, dim,
                           dtype, bool(share_primal), fns, rest)


def _unflatten(spec, flat) -> dict:
    tree, offset = {}, 0
    for n, k, shape in spec:
        size = math.prod(shape)
        tree.setdefault(n, {})[k] = flat[offset:offset + size].reshape(shape)
        offset += size
    return tree


def _loss_callable(key) -> Callable:
    if callable(key):
        return key
    name, num_classes = key
    return cross_entropy if name == "cross_entropy" else (
        lambda out, y: mse(out, y, num_classes if num_classes is not None else out.shape[-1]))


class _Products(NamedTuple):
    """The compiled functions of one model, block and loss."""

    value_grad: Callable   # (theta, rest, xb, yb) -> (L_b, ∇L_b)
    many: Callable         # (theta, rest, xb, yb, vs) -> rows H_b vᵢ
    block: Callable        # the same, one linearization per call (share_primal)
    quadratic: Callable    # (theta, rest, xb, yb, vs) -> vᵢᵀ H_b vᵢ


@functools.lru_cache(maxsize=32)
def _compiled(model: Model, spec: tuple, ggn: bool, loss_key) -> _Products:
    """The products, jit-compiled for one model, block and loss; cached so the checkpoints
    of a run (equal models) compile once."""
    loss_f = _loss_callable(loss_key)

    def outputs(theta, rest, xb):
        sel = _unflatten(spec, theta)
        p = {n: {**rest.get(n, {}), **sel.get(n, {})} for n in set(rest) | set(sel)}
        return model.apply(p, xb)

    def objective(theta, rest, xb, yb):
        return loss_f(outputs(theta, rest, xb), yb)

    def hvp(theta, rest, xb, yb, v):
        grad = jax.grad(objective)
        return jax.jvp(lambda t: grad(t, rest, xb, yb), (theta,), (v,))[1]

    def gvp(theta, rest, xb, yb, v):
        out, jv = jax.jvp(lambda t: outputs(t, rest, xb), (theta,), (v,))
        g_out = jax.grad(lambda o: loss_f(o, yb))
        hjv = jax.jvp(g_out, (out,), (jv,))[1]
        _, pullback = jax.vjp(lambda t: outputs(t, rest, xb), theta)
        return pullback(hjv)[0]

    def hessian_form(theta, rest, xb, yb, v):       # d²/dε² L(θ + εv)
        def slope(t):
            return jax.jvp(lambda s: objective(s, rest, xb, yb), (t,), (v,))[1]
        return jax.jvp(slope, (theta,), (v,))[1]

    def ggn_form(theta, rest, xb, yb, v):           # (Jv)ᵀ H_out (Jv)
        out, jv = jax.jvp(lambda t: outputs(t, rest, xb), (theta,), (v,))

        def slope(o):
            return jax.jvp(lambda u: loss_f(u, yb), (o,), (jv,))[1]
        return jax.jvp(slope, (out,), (jv,))[1]

    product = gvp if ggn else hvp
    form = ggn_form if ggn else hessian_form
    one, one_form = jax.jit(product), jax.jit(form)
    if any(n.op in ("conv", "conv_transpose") for n in model.nodes):
        # vmapped (or lax.map-ped) tangents make convolutions grouped (or looped) and slow on
        # XLA:CPU: one compiled call per row
        def many(theta, rest, xb, yb, vs):
            return jnp.stack([one(theta, rest, xb, yb, v) for v in vs])

        def quadratic(theta, rest, xb, yb, vs):
            return jnp.stack([one_form(theta, rest, xb, yb, v) for v in vs])

        block = _linearized(product)
    else:
        vmapped = jax.jit(jax.vmap(product, in_axes=(None, None, None, None, 0)))
        quadratic = jax.jit(jax.vmap(form, in_axes=(None, None, None, None, 0)))

        def many(theta, rest, xb, yb, vs):
            return one(theta, rest, xb, yb, vs[0])[None] if len(vs) == 1 else \
                vmapped(theta, rest, xb, yb, vs)
        block = many   # the vmapped rows already share the primal computation
    return _Products(jax.jit(jax.value_and_grad(objective)), many, block, quadratic)


def _linearized(product) -> Callable:
    """``(theta, rest, xb, yb, vs) -> rows`` of the linear map ``v -> product(.., v)``, with
    its non-linear part (primal passes) computed once per call.

    ``jax.linearize`` runs in one compiled call that returns the linearization's residuals;
    a second compiled call applies the linear map to one row at a time (vmapping it would
    make XLA:CPU convolutions grouped). The linear map's structure is recorded when the
    first call is traced, once per minibatch shape.
    """
    structure: dict = {}

    def signature(*args):   # what the compiled call is specialized on
        leaves, tree = jax.tree_util.tree_flatten(args)
        return tree, tuple((jnp.shape(a), str(jnp.result_type(a))) for a in leaves)

    @jax.jit
    def linearize(theta, rest, xb, yb):
        zero = jnp.zeros_like(theta)
        _, linear = jax.linearize(lambda v: product(theta, rest, xb, yb, v), zero)
        leaves, tree = jax.tree_util.tree_flatten(linear)
        structure[signature(theta, rest, xb, yb)] = tree
        return leaves

    @functools.lru_cache(maxsize=8)
    def applier(tree):
        return jax.jit(lambda residuals, v: jax.tree_util.tree_unflatten(tree, residuals)(v))

    def rows(theta, rest, xb, yb, vs):
        residuals = linearize(theta, rest, xb, yb)
        apply = applier(structure[signature(theta, rest, xb, yb)])
        return jnp.stack([apply(residuals, v) for v in vs])
    return rows
