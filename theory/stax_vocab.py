"""Public constructors of the ``stax`` layers beyond dense/conv/pool: transposed and locally
connected convolutions, image resizing, dropout and global self-attention, re-exported by
:mod:`dynkit.theory.stax` (the maths is in :mod:`~dynkit.theory.stax_transpose`,
:mod:`~dynkit.theory.stax_local`, :mod:`~dynkit.theory.stax_resize`,
:mod:`~dynkit.theory.stax_dropout` and :mod:`~dynkit.theory.stax_attention`).

Each returns ``(init_fn, apply_fn, kernel_fn)`` with neural-tangents 0.6.5's names and
defaults (Novak et al. 2020).
"""

from __future__ import annotations

from dynkit.theory import stax_attention, stax_dropout, stax_local, stax_resize, stax_transpose
from dynkit.theory.stax_triple import triple

__all__ = ["ConvLocal", "ConvTranspose", "Dropout", "GlobalSelfAttention", "ImageResize"]


def ConvTranspose(out_chan, filter_shape, strides=None, padding="VALID", W_std=1.0, b_std=None,
                  parameterization="ntk"):
    """Transposed convolution (``lax.conv_transpose``), channels last, 1-3 spatial dims.

    Kernel: the CNN-GP recursion on the input kernel dilated by ``strides`` and padded as
    ``lax.conv_transpose`` pads, stride 1:
    ``K'[s, s'] = W_std² mean_o K_dil[s + o, s' + o] + b_std²``; ``Θ'`` as for ``Conv``.

    Args:
        out_chan: output channels; filter_shape: the window; strides: the upsampling
            factors (default 1); padding: ``"VALID"`` (default) or ``"SAME"``.
        W_std, b_std, parameterization: as for :func:`dynkit.theory.stax.Dense`.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Dumoulin & Visin 2016; Novak et al. 2019; Novak et al. 2020 (``stax.ConvTranspose``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> init_fn, apply_fn, kernel_fn = ConvTranspose(3, (2, 2), (2, 2), W_std=2.0)
        >>> init_fn(jax.random.PRNGKey(0), (1, 4, 4, 5))[0]
        (1, 8, 8, 3)
        >>> float(kernel_fn(jnp.ones((1, 4, 4, 5)), None, "nngp")[0, 0, 0, 0, 0, 0])  # 4 / 4
        1.0
    """
    return triple(stax_transpose.ConvTranspose(out_chan, filter_shape, strides, padding, W_std,
                                               b_std, parameterization))


def ConvLocal(out_chan, filter_shape, strides=None, padding="VALID", W_std=1.0, b_std=None,
              parameterization="ntk"):
    """Locally connected layer: a convolution with a separate filter and bias per position.

    Kernel: ``K'[s, s] = W_std² mean_o K[s + o, s + o] + b_std²`` and ``K'[s, s'] = 0`` for
    ``s != s'`` (independent weights per position); ``Θ'`` likewise.

    Args:
        out_chan, filter_shape, strides, padding, W_std, b_std, parameterization: as for
            :func:`dynkit.theory.stax.Conv`.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2019 (LCN-GP); Novak et al. 2020 (``stax.ConvLocal``).

    Example:
        >>> import jax.numpy as jnp
        >>> kernel_fn = ConvLocal(3, (2,), W_std=2.0, b_std=1.0)[2]
        >>> kernel_fn(jnp.ones((1, 3, 1)), None, "nngp")[0, 0].tolist()   # 4 + 1, 0 across
        [[5.0, 0.0], [0.0, 5.0]]
    """
    return triple(stax_local.ConvLocal(out_chan, filter_shape, strides, padding, W_std, b_std,
                                       parameterization))


def ImageResize(shape, method, antialias=True):
    """Resize images with ``jax.image.resize``; ``K' = R K R^T`` on every spatial axis.

    Args:
        shape: the output shape with batch and channels, ``-1`` keeping an axis, e.g.
            ``(-1, 16, 16, -1)``; batch and channels must be ``-1``.
        method: ``"nearest"`` or ``"linear"`` (as neural-tangents), or ``"cubic"``,
            ``"lanczos3"``, ``"lanczos5"``.
        antialias: widen the filter when downsampling (``jax.image.resize``'s default).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2020 (``stax.ImageResize``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[[1.0], [3.0]]])
        >>> ImageResize((-1, 4, -1), "linear")[2](x, None, "nngp")[0, 0].diagonal().tolist()
        [1.0, 2.25, 6.25, 9.0]
    """
    return triple(stax_resize.ImageResize(shape, method, antialias))


def Dropout(rate, mode="train"):
    """Inverted dropout with keep probability ``rate``; ``apply_fn(params, x, rng=key)``.

    Kernel (train mode): the self-covariances (same input, same position) are multiplied by
    ``1 / rate``, the rest unchanged; test mode: identity.

    Args:
        rate: the keep probability, in ``(0, 1]`` (neural-tangents' convention).
        mode: ``"train"`` (default) or ``"test"``.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Srivastava et al. 2014; Novak et al. 2020 (``stax.Dropout``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])
        >>> Dropout(0.5)[2](x, None, "nngp").tolist()
        [[2.0, 0.0], [0.0, 2.0]]
    """
    return triple(stax_dropout.Dropout(rate, mode))


def GlobalSelfAttention(n_chan_out, n_chan_key, n_chan_val, n_heads, linear_scaling=True,
                        W_key_std=1.0, W_value_std=1.0, W_query_std=1.0, W_out_std=1.0,
                        b_std=None, attention_mechanism="SOFTMAX"):
    """Multi-head self-attention over all positions of a sequence (or image).

    Kernel (``linear_scaling=True``): ``A = mech(QK K_self)`` per sample,
    ``K' = OV² A K A'^T + b²``, ``Θ' = OV² A Θ A'^T + b² + 2 (K' - b²)`` with
    ``QK = W_query_std W_key_std``, ``OV = W_out_std W_value_std``; with
    ``linear_scaling=False`` (identity mechanism only) ``K' = (QK OV)² <K, K> K + b²``.
    See :mod:`dynkit.theory.stax_attention`.

    Args:
        n_chan_out, n_chan_key, n_chan_val, n_heads: widths of the finite network.
        linear_scaling: scale logits by ``1/d_k`` with tied queries/keys (default) or by
            ``1/sqrt(d_k)``.
        W_key_std, W_value_std, W_query_std, W_out_std, b_std: scales.
        attention_mechanism: ``"SOFTMAX"`` (default), ``"IDENTITY"``, ``"ABS"``, ``"RELU"``.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; inputs ``(N, T, C)`` (or ``(N, *S, C)``).

    References:
        Vaswani et al. 2017; Hron et al. 2020, "Infinite attention: NNGP and NTK for deep
        attention networks"; Novak et al. 2020 (``stax.GlobalSelfAttention``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[[1.0, 0.0], [1.0, 0.0]]])     # two equal tokens: A = 1/2
        >>> GlobalSelfAttention(4, 4, 4, 2)[2](x, None, "nngp")[0, 0].tolist()
        [[0.5, 0.5], [0.5, 0.5]]
    """
    return triple(stax_attention.GlobalSelfAttention(
        n_chan_out, n_chan_key, n_chan_val, n_heads, linear_scaling, W_key_std, W_value_std,
        W_query_std, W_out_std, b_std, attention_mechanism))
