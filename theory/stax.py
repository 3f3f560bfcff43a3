"""Infinite-width NNGP / NTK kernels in the neural-tangents ``stax`` vocabulary, on public JAX.

Every layer is a triple ``(init_fn, apply_fn, kernel_fn)``:

* ``init_fn(key, input_shape) -> (output_shape, params)`` (shapes include the batch axis),
* ``apply_fn(params, x)`` runs the finite network,
* ``kernel_fn(x1, x2=None, get=None)`` returns the infinite-width kernels of the output:
  ``get="nngp"`` or ``"ntk"`` -> an array ``(N1, N2)``; a tuple -> a namedtuple with those
  fields; ``None`` -> the full :class:`Kernel` (``nngp, ntk, cov1, cov2, shape1``).

Combinators ``serial``, ``parallel``, ``FanOut``, ``FanInSum``, ``FanInConcat`` compose all three
at once (Novak et al. 2020, "Neural Tangents: fast and easy infinite neural networks in
Python"). The kernel recursions are Lee et al. 2018 (NNGP), Jacot et al. 2018 (NTK),
Novak et al. 2019 / Garriga-Alonso et al. 2019 (CNN-GP) and Arora et al. 2019 (CNTK, GAP);
the closed-form activations live in :mod:`dynkit.theory.dual_activations`.

Conventions follow neural-tangents 0.6.5 so its numbers are reproduced: covariances are
channel averages, NTK parameterization by default, ``standard`` parameterization NTKs carry
the ``fan_in`` factors of the raw weights, ``Conv``/pool padding defaults to ``"VALID"``,
inputs are channels-last (``NWC``, ``NHWC``). ``kernel_fn`` is ``jax.jit``-compiled inside
(``get`` static) and itself traceable under an outer ``jax.jit``. Only the covariances that
are needed are tracked: per-sample diagonals plus the x1-x2 cross block, and for spatial
inputs only the pixel diagonal unless a pooling layer needs pixel pairs. A network whose
output is still spatial returns ``nngp`` of shape ``(N1, N2, H, H', W, W')`` (the
neural-tangents layout). Two exact shortcuts: ``kernel_fn(x, None)`` with 64 or more inputs
computes only the row-block tiles on and above the diagonal of the symmetric kernel
(:func:`dynkit.theory.stax_batching.symmetric_tiles`), and a first ``Conv`` reads its kernel
off the Gram matrix of input patches (:meth:`dynkit.theory.stax_layers.Conv.input_kernel`).

Example::

    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(512, W_std=1.5, b_std=0.05),
                                               stax.Relu(), stax.Dense(1))
    k = kernel_fn(x1, x2, ("nngp", "ntk"))      # k.nngp, k.ntk
"""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
from jax.scipy.special import erf as _erf

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.theory import dual_activations as duals
from dynkit.theory import stax_layers as L
from dynkit.theory.stax_batching import batch, symmetric_blocks, symmetric_tiles
from dynkit.theory.stax_layers import Kernel
from dynkit.theory.stax_spec import from_spec
from dynkit.validation import check_finite

__all__ = [
    "ABRelu",
    "Abs",
    "AvgPool",
    "Conv",
    "Cos",
    "Dense",
    "ElementwiseNumerical",
    "Erf",
    "FanInConcat",
    "FanInSum",
    "FanOut",
    "Flatten",
    "Gelu",
    "GlobalAvgPool",
    "GlobalSumPool",
    "Identity",
    "Kernel",
    "LayerNorm",
    "LeakyRelu",
    "Relu",
    "Sigmoid_like",
    "Sign",
    "Sin",
    "SumPool",
    "batch",
    "from_spec",
    "parallel",
    "serial",
]

_GETS = ("nngp", "ntk")


@functools.cache
def _namedtuple(fields: tuple):
    return collections.namedtuple("Kernels", fields)


def _parse_get(get):
    """``get`` -> (tuple of names, how to return): 'kernel' | 'single' | 'tuple'."""
    if get is None:
        return _GETS, "kernel"
    names = (get,) if isinstance(get, str) else tuple(get)
    bad = [g for g in names if g not in _GETS]
    if bad or not names or len(set(names)) != len(names):
        raise InvalidArgumentError(f"get must be 'nngp', 'ntk', a tuple of them or None, "
                                   f"got {get!r}")
    return names, ("single" if isinstance(get, str) else "tuple")


def _nt_layout(t, nb: int, d: int):
    """``(*batch, *S, *S')`` -> neural-tangents' interleaved ``(*batch, S0, S0', S1, S1', ...)``."""
    perm = list(range(nb)) + [a for i in range(d) for a in (nb + i, nb + d + i)]
    return jnp.transpose(t, perm)


def _float(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.zeros(()).dtype)


def _check_inputs(x1, x2):
    if x1.ndim < 2:
        raise ShapeMismatchError(f"kernel_fn: x1 must have a batch axis and features, "
                                 f"(N, ...), got shape {x1.shape}")
    if x2 is not None and x2.shape[1:] != x1.shape[1:]:
        raise ShapeMismatchError(f"kernel_fn: x1 and x2 must have the same per-sample shape, "
                                 f"got {x1.shape} and {x2.shape}")
    for name, x in (("x1", x1), ("x2", x2)):
        check_finite(f"kernel_fn: {name}", x)


class KernelFn:
    """Callable ``kernel_fn(x1, x2=None, get=None)`` of a layer (see the module docstring)."""

    def __init__(self, layer: L.Layer):
        self.layer = layer
        self._jitted = jax.jit(self._compute, static_argnames=("names",))

    def _compute(self, x1, x2, names):
        per = tuple(x1.shape[1:])
        out = self.layer.out_shape(per)
        if isinstance(out, list):
            raise ShapeMismatchError(f"{self.layer.describe()}: the network ends with "
                                     f"{len(out)} outputs; merge them with FanInSum/FanInConcat")
        out_full = len(out) > 1
        n_blocks = symmetric_blocks(x1.shape[0]) if x2 is None else 1
        if n_blocks == 1:
            return self._kernel(x1, x2, names, out_full)
        return symmetric_tiles(lambda a, b: self._kernel(a, b, names, out_full).replace(cov=None),
                               x1, n_blocks)

    def _kernel(self, x1, x2, names, out_full):
        in_full = self.layer.needs_full(out_full) and x1.ndim > 2
        first, rest = L.split_first(self.layer)
        if isinstance(first, L.Conv):  # reads the inputs: the patch Gram, see Conv.input_kernel
            k = first.input_kernel(x1, x2, in_full, "ntk" in names)
        else:
            rest = self.layer
            k = L.input_kernel(x1, x2, in_full, "ntk" in names)
        if rest is not None:
            k = L.kernel_of(rest, k, out_full)
        if k.full:
            d = len(k.spatial)
            k = k.replace(nngp=_nt_layout(k.nngp, 2, d),
                          ntk=None if k.ntk is None else _nt_layout(k.ntk, 2, d),
                          cov=None if k.cov is None else _nt_layout(k.cov, 1, d))
        if "ntk" not in names:
            k = k.replace(ntk=None)
        return k

    def __call__(self, x1, x2=None, get=None):
        names, mode = _parse_get(get)
        x1 = _float(x1)
        if x2 is not None:
            x2 = _float(x2)
            dtype = jnp.promote_types(x1.dtype, x2.dtype)
            x1, x2 = x1.astype(dtype), x2.astype(dtype)
        _check_inputs(x1, x2)
        k = self._jitted(x1, x2, names)
        if mode == "kernel":
            return k
        if mode == "single":
            return getattr(k, names[0])
        return _namedtuple(names)(*(getattr(k, g) for g in names))


def _per_sample(shape):
    if isinstance(shape, list):
        return [_per_sample(s) for s in shape]
    return tuple(shape[1:])


def _with_batch(batch_dim, shape):
    if isinstance(shape, list):
        return [_with_batch(batch_dim, s) for s in shape]
    return (batch_dim,) + tuple(shape)


def _batch_dim(shape):
    return _batch_dim(shape[0]) if isinstance(shape, list) else shape[0]


def _triple(layer: L.Layer):
    """Wrap an internal layer as ``(init_fn, apply_fn, kernel_fn)``."""

    def init_fn(key, input_shape):
        per = _per_sample(input_shape)
        out = layer.out_shape(per)
        return _with_batch(_batch_dim(input_shape), out), layer.init(key, per)

    def apply_fn(params, x, **kwargs):
        return layer.apply(params, x, **kwargs)

    init_fn.layer = apply_fn.layer = layer
    return init_fn, apply_fn, KernelFn(layer)


def _layer_of(triple) -> L.Layer:
    try:
        kernel_fn = triple[2]
    except (TypeError, IndexError, KeyError):
        kernel_fn = None
    if not isinstance(kernel_fn, KernelFn):
        raise InvalidArgumentError(f"expected a stax layer triple (init_fn, apply_fn, kernel_fn) "
                                   f"from dynkit.theory.stax, got {type(triple).__name__}")
    return kernel_fn.layer


# ----------------------------------------------------------------------------- combinators


def serial(*layers):
    """Compose layers: ``serial(a, b)(x) = b(a(x))``; kernels are composed the same way."""
    return _triple(L.Serial([_layer_of(t) for t in layers]))


def parallel(*layers):
    """Apply the i-th layer to the i-th input of a list (e.g. after ``FanOut``)."""
    return _triple(L.Parallel([_layer_of(t) for t in layers]))


def FanOut(num):
    """Copy the input into a list of ``num`` inputs."""
    return _triple(L.FanOut(num))


def FanInSum():
    """Sum a list of inputs; kernel = sum of kernels (independent branches)."""
    return _triple(L.FanInSum())


def FanInConcat(axis=-1):
    """Concatenate a list of inputs along channels; kernel = channel-weighted mean."""
    return _triple(L.FanInConcat(axis))


# ----------------------------------------------------------------------------- linear layers


def Dense(out_dim, W_std=1.0, b_std=None, parameterization="ntk"):
    """Fully connected layer (see :class:`dynkit.theory.stax_layers.Dense` for the maths)."""
    return _triple(L.Dense(out_dim, W_std, b_std, parameterization))


def Conv(out_chan, filter_shape, strides=None, padding="VALID", W_std=1.0, b_std=None,
         parameterization="ntk"):
    """Convolution over 1-3 spatial dims, channels last (CNN-GP / CNTK recursion)."""
    return _triple(L.Conv(out_chan, filter_shape, strides, padding, W_std, b_std,
                          parameterization))


def AvgPool(window_shape, strides=None, padding="VALID", normalize_edges=False):
    """Average pooling (``strides`` default 1); needs the full pixel-pixel covariance."""
    return _triple(L.Pool("avg", window_shape, strides, padding, normalize_edges))


def SumPool(window_shape, strides=None, padding="VALID"):
    """Sum pooling (``strides`` default 1)."""
    return _triple(L.Pool("sum", window_shape, strides, padding))


def GlobalAvgPool():
    """Mean over all spatial positions (Arora et al. 2019 CNTK-GAP)."""
    return _triple(L.GlobalPool("avg"))


def GlobalSumPool():
    """Sum over all spatial positions."""
    return _triple(L.GlobalPool("sum"))


def Flatten():
    """Flatten the non-batch axes; kernel = mean of the pixel diagonal."""
    return _triple(L.Flatten())


def Identity():
    """No-op."""
    return _triple(L.Identity())


def LayerNorm(axis=-1, eps=1e-12):
    """Layer normalization over channels; kernel = correlation ``nngp / sqrt(q11 q22)``."""
    return _triple(L.LayerNorm(axis, eps))


# ----------------------------------------------------------------------------- nonlinearities


def _act(name, fn, dual):
    return _triple(L.Elementwise(name, fn, dual))


def Relu():
    """``max(x, 0)``; arc-cosine kernel of order 1 (Cho & Saul 2009)."""
    return _act("Relu", jax.nn.relu, duals.relu_dual)


def ABRelu(a, b):
    """``a x`` for ``x < 0``, ``b x`` for ``x >= 0``."""
    return _act("ABRelu", lambda x: jnp.where(x < 0, a * x, b * x),
                lambda q11, q12, q22: duals.abrelu_dual(q11, q12, q22, a, b))


def LeakyRelu(alpha=0.01):
    """``max(x, alpha x)`` (= ``ABRelu(alpha, 1)``)."""
    return _act("LeakyRelu", lambda x: jnp.where(x < 0, alpha * x, x),
                lambda q11, q12, q22: duals.leaky_relu_dual(q11, q12, q22, alpha))


def Abs():
    """``|x|`` (= ``ABRelu(-1, 1)``)."""
    return _act("Abs", jnp.abs, duals.abs_dual)


def Erf(a=1.0, b=1.0, c=0.0):
    """``a erf(b x) + c`` (Williams 1997)."""
    return _act("Erf", lambda x: a * _erf(b * x) + c,
                lambda q11, q12, q22: duals.erf_dual(q11, q12, q22, a, b, c))


def Sigmoid_like():
    """``0.5 erf(x / 2.4020563531719796) + 0.5``, an erf-based sigmoid with a closed form."""
    s = duals.SIGMOID_LIKE_SCALE
    return _act("Sigmoid_like", lambda x: 0.5 * _erf(x / s) + 0.5, duals.sigmoid_like_dual)


def Gelu(approximate=False):
    """Exact GELU ``x Phi(x)`` (closed form); ``approximate=True`` (tanh form) falls back to
    Gauss-Hermite quadrature."""
    if approximate:
        return ElementwiseNumerical(lambda x: jax.nn.gelu(x, approximate=True), degree=25)
    return _act("Gelu", lambda x: jax.nn.gelu(x, approximate=False), duals.gelu_dual)


def Sin(a=1.0, b=1.0, c=0.0):
    """``a sin(b x + c)``."""
    return _act("Sin", lambda x: a * jnp.sin(b * x + c),
                lambda q11, q12, q22: duals.sin_dual(q11, q12, q22, a, b, c))


def Cos(a=1.0, b=1.0, c=0.0):
    """``a cos(b x + c)``."""
    return _act("Cos", lambda x: a * jnp.cos(b * x + c),
                lambda q11, q12, q22: duals.cos_dual(q11, q12, q22, a, b, c))


def Sign():
    """``sign(x)``; arc-cosine kernel of order 0, zero derivative (NTK term vanishes)."""
    return _act("Sign", jnp.sign, duals.sign_dual)


def ElementwiseNumerical(fn, degree=None, df=None, *, deg=None):
    """Any elementwise ``fn`` (tanh, swish, ...): kernels by ``degree``-point 2-D Gauss-Hermite
    quadrature (:func:`dynkit.theory.dual_activations.gauss_hermite_dual`), the NTK factor from
    ``df`` (default ``jax.grad(fn)``).

    Args:
        fn: the activation, an elementwise JAX function (neural-tangents' name).
        degree: Hermite nodes per dimension, >= 2 (default 25; second positional argument,
            as neural-tangents' ``deg``).
        df: its derivative, elementwise (default: ``jax.grad`` of ``fn``).
        deg: neural-tangents' name of ``degree``, accepted as a keyword for drop-in use (and
            in :func:`from_spec` specs); give one of the two.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2020, "Neural Tangents: fast and easy infinite neural networks in
        Python" (``stax.ElementwiseNumerical``).

    Example:
        >>> import jax.numpy as jnp
        >>> _, _, kernel_fn = serial(Dense(1), ElementwiseNumerical(jnp.sin, deg=30))
        >>> _, _, exact_fn = serial(Dense(1), Sin())
        >>> x = jnp.array([[1.0, 0.5], [0.2, -1.0]])
        >>> bool(jnp.allclose(kernel_fn(x, None, "nngp"), exact_fn(x, None, "nngp"), atol=1e-6))
        True
    """
    if degree is not None and deg is not None and degree != deg:
        raise InvalidArgumentError(f"ElementwiseNumerical: degree and its alias deg disagree "
                                   f"(degree={degree}, deg={deg}); give one")
    degree = 25 if degree is None and deg is None else (deg if degree is None else degree)
    if int(degree) < 2:
        raise InvalidArgumentError(f"ElementwiseNumerical: degree must be >= 2, got {degree}")
    dual = functools.partial(_numerical_dual, fn, int(degree), df)
    return _act("ElementwiseNumerical", fn, dual)


def _numerical_dual(fn, degree, df, q11, q12, q22):
    return duals.gauss_hermite_dual(fn, q11, q12, q22, degree=degree, df=df)
