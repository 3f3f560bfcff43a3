"""Image resizing in the ``stax`` vocabulary (neural-tangents' ``ImageResize``).

``jax.image.resize`` is linear and separable: along each spatial axis the output is ``R x``
with a fixed ``(n_out, n_in)`` matrix ``R`` (a 0/1 selection for ``"nearest"``, a triangle
filter for ``"linear"``, Keys' cubic or Lanczos windows otherwise). A linear map of a
Gaussian process is a Gaussian process with kernel ``K' = R K R^T`` on each axis of both
pixel sets, and the NTK transforms the same way (no parameters). ``nearest`` keeps the
diagonal form (``K'[s, s] = K[p(s), p(s)]``); the others need pixel pairs. The output of a
resize of Gaussian pre-activations is Gaussian, so an activation may follow it (the dual is
applied per output pixel pair).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from dynkit.errors import InvalidArgumentError, UnsupportedLayerError
from dynkit.theory.stax_kernel import Kernel, Layer, check_single_input
from dynkit.theory.stax_spatial import joint_linear

__all__ = ["ImageResize", "resize_matrix"]

_METHODS = {"nearest": "nearest", "linear": "linear", "bilinear": "linear",
            "trilinear": "linear", "triangle": "linear", "cubic": "cubic",
            "bicubic": "cubic", "tricubic": "cubic", "lanczos3": "lanczos3",
            "lanczos5": "lanczos5"}


def resize_matrix(n_in: int, n_out: int, method: str, antialias: bool = True, dtype=None):
    """The ``(n_out, n_in)`` matrix of ``jax.image.resize`` along one axis.

    Args:
        n_in, n_out: input and output sizes; method: a ``jax.image.resize`` method;
        antialias: as for ``jax.image.resize`` (only affects downsampling); dtype: of ``R``.

    Returns:
        ``R`` with ``resize(x)[i] = sum_j R[i, j] x[j]``, computed at trace time.

    References:
        ``jax.image.resize`` (Keys 1981 cubic; Lanczos windows).

    Example:
        >>> resize_matrix(2, 4, "nearest").tolist()
        [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    """
    with jax.ensure_compile_time_eval():
        eye = jnp.eye(n_in, dtype=dtype or jnp.zeros(()).dtype)
        return jax.image.resize(eye, (n_out, n_in), method, antialias=antialias,
                                precision=lax.Precision.HIGHEST)


class ImageResize(Layer):
    """Resize the spatial axes with ``jax.image.resize``; kernel ``K' = R K R^T`` per axis.

    Args:
        shape: the full output shape ``(batch, *spatial, channels)``, ``-1`` keeping an axis
            (batch and channels must stay ``-1``, as in neural-tangents).
        method: ``"nearest"``, ``"linear"`` (aliases ``bilinear``/``trilinear``/``triangle``),
            and, beyond neural-tangents' kernel, ``"cubic"``, ``"lanczos3"``, ``"lanczos5"``.
        antialias: triangle/cubic/Lanczos filter widened when downsampling (as ``jax``).

    References:
        Novak et al. 2020 (``stax.ImageResize``); Odena et al. 2016 (resize-convolution).

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> x = jnp.array([[[1.0], [3.0]]])               # (N, W, C)
        >>> ImageResize((-1, 4, -1), "nearest").kernel(
        ...     input_kernel(x, None, False, False)).nngp.tolist()
        [[[1.0, 1.0, 9.0, 9.0]]]
    """

    name = "ImageResize"
    per_block = True  # linear per channel: after a concat, acts on each block

    def __init__(self, shape, method, antialias=True):
        key = str(method).lower()
        if key not in _METHODS:
            raise InvalidArgumentError(f"ImageResize: method must be one of "
                                       f"{sorted(_METHODS)}, got {method!r}")
        self.method, self.antialias = _METHODS[key], bool(antialias)
        shape = tuple(shape)
        bad = [s for s in shape if isinstance(s, bool) or not float(s).is_integer()
               or (s < 1 and s != -1)]
        if bad:
            raise InvalidArgumentError(f"ImageResize: shape entries must be positive integers "
                                       f"or -1 (keep), got {shape!r}; a resize to a "
                                       f"fractional size is not defined")
        if len(shape) < 3:
            raise InvalidArgumentError(f"ImageResize: shape is the full output shape (batch, "
                                       f"*spatial, channels), got {shape!r}")
        if shape[0] != -1 or shape[-1] != -1:
            raise UnsupportedLayerError(f"ImageResize: resizing the batch or channel axis has "
                                        f"no infinite-width kernel; set them to -1, got "
                                        f"{shape!r}")
        self.shape = tuple(int(s) for s in shape)

    def _sizes(self, spatial):
        return tuple(n if s == -1 else s for n, s in zip(spatial, self.shape[1:-1]))

    def out_shape(self, in_shape):
        check_single_input(self, in_shape)
        if len(in_shape) != len(self.shape) - 1:
            raise self.shape_error(f"shape {self.shape} needs inputs with "
                                   f"{len(self.shape) - 2} spatial axes, got per-sample shape "
                                   f"{tuple(in_shape)}")
        return self._sizes(tuple(in_shape[:-1])) + (in_shape[-1],)

    def apply(self, params, x, **kwargs):
        out = (x.shape[0],) + self.out_shape(tuple(x.shape[1:]))
        return jax.image.resize(x, out, self.method, antialias=self.antialias,
                                precision=lax.Precision.HIGHEST)

    def needs_full(self, out_full):
        return out_full or self.method != "nearest"

    def kernel(self, k: Kernel) -> Kernel:
        spatial = k.spatial
        out = self._sizes(spatial)
        d = len(spatial)
        n_sets = 2 if k.full else 1

        def resize(t, nb):
            for j in range(n_sets):
                for i, (n, m) in enumerate(zip(spatial, out)):
                    if n == m:
                        continue
                    r = resize_matrix(n, m, self.method, self.antialias, t.dtype)
                    ax = nb + j * d + i
                    t = jnp.moveaxis(jnp.tensordot(r, t, axes=([1], [ax]),
                                                   precision=lax.Precision.HIGHEST), 0, ax)
            return t

        nngp, ntk, cov = joint_linear(k, resize)
        return k.replace(nngp=nngp, ntk=ntk, cov=cov, shape1=out + (k.shape1[-1],))
