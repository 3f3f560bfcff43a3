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

The parts live in modules by idea: :mod:`~dynkit.theory.stax_triple` (the triple and
``kernel_fn``), :mod:`~dynkit.theory.stax_activations` (the nonlinearities),
:mod:`~dynkit.theory.stax_spec` (:func:`from_spec`), :mod:`~dynkit.theory.stax_batching`
(:func:`batch`) and :mod:`~dynkit.theory.stax_layers` (the layers' recursions); this module
gathers the public vocabulary.

In the layer docstrings ``K, Θ`` are the NNGP kernel and NTK of a layer's input, ``K', Θ'``
those of its output and ``q11, q22`` the variances of x1 and x2. The examples mostly use
``x = [[1, 1], [1, -1]]``, whose input kernel is the identity (``K = x1 . x2 / 2``).

Example::

    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(512, W_std=1.5, b_std=0.05),
                                               stax.Relu(), stax.Dense(1))
    k = kernel_fn(x1, x2, ("nngp", "ntk"))      # k.nngp, k.ntk
"""

from __future__ import annotations

from dynkit.theory import stax_layers as L
from dynkit.theory.stax_activations import (
    ABRelu,
    Abs,
    Cos,
    ElementwiseNumerical,
    Erf,
    Gelu,
    LeakyRelu,
    Relu,
    Sigmoid_like,
    Sign,
    Sin,
)
from dynkit.theory.stax_activations_extra import (
    Exp,
    ExpNormalized,
    Gaussian,
    Hermite,
    Monomial,
    Polynomial,
    Rbf,
    RectifiedMonomial,
)
from dynkit.theory.stax_batching import batch
from dynkit.theory.stax_layers import Kernel
from dynkit.theory.stax_spec import from_spec
from dynkit.theory.stax_triple import layer_of, triple
from dynkit.theory.stax_vocab import (
    ConvLocal,
    ConvTranspose,
    Dropout,
    GlobalSelfAttention,
    ImageResize,
)

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
# the rest of the neural-tangents vocabulary (issue 14)
__all__ += [
    "ConvLocal",
    "ConvTranspose",
    "Dropout",
    "Exp",
    "ExpNormalized",
    "Gaussian",
    "GlobalSelfAttention",
    "Hermite",
    "ImageResize",
    "Monomial",
    "Polynomial",
    "Rbf",
    "RectifiedMonomial",
]


# ----------------------------------------------------------------------------- combinators


def serial(*layers):
    """Compose layers: ``serial(a, b)(x) = b(a(x))``; kernels are composed the same way.

    Kernel: the layers' recursions in turn, ``(K, Θ) -> a -> b -> (K', Θ')``; each layer is
    given only the spatial covariances that the layers after it need.

    Args:
        *layers: ``(init_fn, apply_fn, kernel_fn)`` triples of this module.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)`` of the composition.

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.serial``); Lee et al. 2018; Jacot et al. 2018.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])
        >>> k = serial(Dense(4, W_std=2.0), Dense(1, W_std=2.0))[2](x, None, ("nngp", "ntk"))
        >>> float(k.nngp[0, 0]), float(k.ntk[0, 0])      # K' = 16 K, Θ' = 16 K + 4 (4 K)
        (16.0, 32.0)
    """
    return triple(L.Serial([layer_of(t) for t in layers]))


def parallel(*layers):
    """Apply the i-th layer to the i-th input of a list (e.g. after ``FanOut``).

    Kernel: ``[(K_i', Θ_i')] = [layer_i(K_i, Θ_i)]``, one kernel per branch.

    Args:
        *layers: ``(init_fn, apply_fn, kernel_fn)`` triples, one per input.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)`` mapping a list of inputs to a list of outputs.

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.parallel``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])
        >>> net = serial(FanOut(2), parallel(Dense(2, W_std=2.0), Identity()), FanInSum())
        >>> float(net[2](x, None, "nngp")[0, 0])          # 4 K + K
        5.0
    """
    return triple(L.Parallel([layer_of(t) for t in layers]))


def FanOut(num):
    """Copy the input into a list of ``num`` inputs.

    Kernel: ``[K] * num`` (every branch sees the same input kernel).

    Args:
        num: the number of copies.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; merge the branches with ``FanInSum``/``FanInConcat``.

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.FanOut``).

    Example:
        >>> import jax
        >>> out_shape, _ = FanOut(3)[0](jax.random.PRNGKey(0), (2, 5))
        >>> out_shape
        [(2, 5), (2, 5), (2, 5)]
    """
    return triple(L.FanOut(num))


def FanInSum():
    """Sum a list of inputs; kernel = sum of kernels (independent branches).

    Kernel: ``K' = sum_i K_i``, ``Θ' = sum_i Θ_i``: branches are independent Gaussian
    processes at infinite width (e.g. a residual block ending in ``Dense``/``Conv``).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.FanInSum``); He et al. 2016 (residuals).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])
        >>> net = serial(FanOut(2), parallel(Dense(1, b_std=1.0), Dense(1)), FanInSum())
        >>> net[2](x, None, "nngp").tolist()             # (K + 1) + K
        [[3.0, 1.0], [1.0, 3.0]]
    """
    return triple(L.FanInSum())


def FanInConcat(axis=-1):
    """Concatenate a list of inputs along channels; the kernel keeps one block per input.

    Kernel: block-structured (:mod:`dynkit.theory.stax_blocks`): elementwise layers, pooling
    and ``LayerNorm`` act on each block ``K_i``; ``Dense``/``Conv`` (and the network output)
    see the channel-weighted mean ``K' = sum_i C_i K_i / sum_i C_i`` (same for ``Θ``), ``C_i``
    the channels of input ``i``. Exact with all ``C_i -> ∞`` in fixed proportions, also when a
    nonlinearity follows (DenseNet layers).

    Args:
        axis: the concatenation axis; only ``-1`` (channels) is supported.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.FanInConcat``); Huang et al. 2017
        (DenseNet).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])
        >>> net = serial(FanOut(2), parallel(Dense(1, W_std=2.0), Dense(3)), FanInConcat())
        >>> float(net[2](x, None, "nngp")[0, 0])          # (1 * 4 K + 3 * K) / 4
        1.75
    """
    return triple(L.FanInConcat(axis))


# ----------------------------------------------------------------------------- linear layers


def Dense(out_dim, W_std=1.0, b_std=None, parameterization="ntk"):
    """Fully connected layer (see :class:`dynkit.theory.stax_layers.Dense` for the maths).

    NTK parameterization ``y = (W_std / sqrt(n)) x W + b_std b`` with ``W, b ~ N(0, 1)``;
    standard ``y = x W + b`` with ``W ~ N(0, W_std²/n)``, ``b ~ N(0, b_std²)``. Kernel:
    ``K' = W_std² K + b_std²``; NTK param ``Θ' = K' + W_std² Θ``; standard
    ``Θ' = n K + W_std² Θ (+ 1 with a bias)`` (the raw weights' ``fan_in`` factor).

    Args:
        out_dim: output features (the finite width; the kernel does not depend on it).
        W_std, b_std: weight and bias standard deviations (``b_std=None``: no bias).
        parameterization: ``"ntk"`` or ``"standard"``.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Neal 1996; Lee et al. 2018 (NNGP); Jacot et al. 2018 (NTK); Sohl-Dickstein et al. 2020
        (standard parameterization).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])
        >>> serial(Dense(4, W_std=2.0, b_std=0.5), Dense(1, b_std=1.0))[2](x, None, "ntk").tolist()
        [[9.5, 1.5], [1.5, 9.5]]
        >>> Dense(1, parameterization="standard")[2](x, None, "ntk").tolist()   # n K, n = 2
        [[2.0, 0.0], [0.0, 2.0]]
    """
    return triple(L.Dense(out_dim, W_std, b_std, parameterization))


def Conv(out_chan, filter_shape, strides=None, padding="VALID", W_std=1.0, b_std=None,
         parameterization="ntk"):
    """Convolution over 1-3 spatial dims, channels last (CNN-GP / CNTK recursion).

    Kernel: ``K'[s, s'] = W_std² mean_o K[s + o, s' + o] + b_std²`` over the filter offsets
    ``o`` (zero padding counts as zeros); ``Θ'`` as for :func:`Dense` with ``mean_o`` applied
    (standard parameterization: ``fan_in = C_in prod(filter_shape)``).

    Args:
        out_chan: output channels.
        filter_shape: the window, e.g. ``(3, 3)``.
        strides: per spatial dim (default 1); padding: ``"VALID"`` (default) or ``"SAME"``.
        W_std, b_std, parameterization: as for :func:`Dense`.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; a spatial output kernel is laid out
        ``(N1, N2, H, H', W, W')``.

    References:
        Novak et al. 2019; Garriga-Alonso et al. 2019 (CNN-GP); Arora et al. 2019 (CNTK).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.ones((2, 3, 3, 1))                     # NHWC
        >>> Conv(1, (2, 2))[2](x, None, "nngp").shape
        (2, 2, 2, 2, 2, 2)
        >>> float(serial(Conv(1, (2, 2), W_std=2.0, b_std=0.5), Flatten())[2](x, None, "nngp")[0, 0])
        4.25
    """
    return triple(L.Conv(out_chan, filter_shape, strides, padding, W_std, b_std,
                          parameterization))


def AvgPool(window_shape, strides=None, padding="VALID", normalize_edges=False):
    """Average pooling (``strides`` default 1); needs the full pixel-pixel covariance.

    Kernel: ``K'[p, p'] = sum_{w, w'} K[p s + w, p' s + w'] / (Z_p Z_p')`` (same for ``Θ``),
    ``Z`` the window size, or the count of non-padded pixels with ``normalize_edges``.

    Args:
        window_shape: the window per spatial dim; strides: per dim (default 1).
        padding: ``"VALID"`` or ``"SAME"``; normalize_edges: see above.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2019; Arora et al. 2019.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[[1.0], [3.0], [-1.0], [1.0]]])     # (N, W, C): window means 2, 0
        >>> AvgPool((2,), strides=(2,))[2](x, None, "nngp")[0, 0].tolist()
        [[4.0, 0.0], [0.0, 0.0]]
    """
    return triple(L.Pool("avg", window_shape, strides, padding, normalize_edges))


def SumPool(window_shape, strides=None, padding="VALID"):
    """Sum pooling (``strides`` default 1).

    Kernel: ``K'[p, p'] = sum_{w, w'} K[p s + w, p' s + w']`` (same for ``Θ``).

    Args:
        window_shape, strides, padding: as for :func:`AvgPool`.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2019; Novak et al. 2020 (``stax.SumPool``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[[1.0], [3.0], [-1.0], [1.0]]])     # window sums 4, 0
        >>> SumPool((2,), strides=(2,))[2](x, None, "nngp")[0, 0].tolist()
        [[16.0, 0.0], [0.0, 0.0]]
    """
    return triple(L.Pool("sum", window_shape, strides, padding))


def GlobalAvgPool():
    """Mean over all spatial positions (Arora et al. 2019 CNTK-GAP).

    Kernel: ``K' = mean_{s, s'} K[s, s']`` (same for ``Θ``): every pixel pair counts.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Arora et al. 2019, "On exact computation with an infinitely wide neural net"; Novak et
        al. 2019.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[[1.0], [3.0], [-1.0], [1.0]]])     # mean 1
        >>> float(GlobalAvgPool()[2](x, None, "nngp")[0, 0])
        1.0
    """
    return triple(L.GlobalPool("avg"))


def GlobalSumPool():
    """Sum over all spatial positions.

    Kernel: ``K' = sum_{s, s'} K[s, s']`` (same for ``Θ``).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2020 (``stax.GlobalSumPool``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[[1.0], [3.0], [-1.0], [1.0]]])     # sum 4
        >>> float(GlobalSumPool()[2](x, None, "nngp")[0, 0])
        16.0
    """
    return triple(L.GlobalPool("sum"))


def Flatten():
    """Flatten the non-batch axes; kernel = mean of the pixel diagonal.

    Kernel: ``K' = mean_s K[s, s]`` (same for ``Θ``): only the diagonal is needed.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2019 (CNN-GP with a flattening readout).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[[1.0], [3.0], [-1.0], [1.0]]])     # (1 + 9 + 1 + 1) / 4
        >>> float(Flatten()[2](x, None, "nngp")[0, 0])
        3.0
    """
    return triple(L.Flatten())


def Identity():
    """No-op.

    Kernel: ``K' = K``, ``Θ' = Θ``.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2020 (``stax.Identity``).

    Example:
        >>> import jax.numpy as jnp
        >>> Identity()[2](jnp.array([[1.0, 1.0], [1.0, -1.0]]), None, "nngp").tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    return triple(L.Identity())


def LayerNorm(axis=-1, eps=1e-12):
    """Layer normalization over channels; kernel = correlation ``nngp / sqrt(q11 q22)``.

    At infinite width the channel mean vanishes and the variance is ``q``, so
    ``K' = K / sqrt(q11 q22)``, ``Θ' = Θ / sqrt(q11 q22)``.

    Args:
        axis: the normalized axis; only ``-1`` (channels) is supported.
        eps: added to the variance in the finite network.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Ba et al. 2016 (layer normalization); Novak et al. 2020 (``stax.LayerNorm``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [2.0, 0.0]])     # K = [[1, 1], [1, 2]]
        >>> [round(float(v), 6) for v in serial(Dense(8), LayerNorm())[2](x, None, "nngp")[0]]
        [1.0, 0.707107]
    """
    return triple(L.LayerNorm(axis, eps))


# ----------------------------------------------------------------------------- recipes
# Seed architectures (DenseNet, U-Net, residual) in dynkit.theory.stax_recipes; they build on
# this module, so they load on first use.
_RECIPES = ("stax_densenet", "stax_resnet", "stax_unet")
__all__ += list(_RECIPES)


def __getattr__(name):
    if name in _RECIPES:
        from dynkit.theory import stax_recipes

        return getattr(stax_recipes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
