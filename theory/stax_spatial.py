"""Spatial layers of the ``stax`` vocabulary: convolution, pooling (windowed and global) and
flattening, with the CNN-GP / CNTK recursions (Novak et al. 2019; Garriga-Alonso et al. 2019;
Arora et al. 2019). Channels last, 1-3 spatial dimensions, ``"SAME"``/``"VALID"`` padding."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dynkit.errors import InvalidArgumentError, UnsupportedLayerError
from dynkit.theory.stax_dense import check_parameterization
from dynkit.theory.stax_kernel import (
    Array,
    Kernel,
    Layer,
    check_single_input,
    input_kernel,
    map_optional,
    to_diag,
)

__all__ = ["Conv", "Flatten", "GlobalPool", "Pool", "joint_linear"]


def _pads(in_spatial, window, strides, padding):
    return [tuple(p) for p in lax.padtype_to_pads(in_spatial, window, strides, padding)]


def _out_spatial(in_spatial, window, strides, pads):
    return tuple((n + lo + hi - w) // s + 1
                 for n, w, s, (lo, hi) in zip(in_spatial, window, strides, pads))


def _windowed_mean(x, nb, n_sets, window, strides, pads, out_spatial):
    """``out[.., s, (s')] = mean_o x_pad[.., s*stride + o, (s'*stride + o)]`` (same offset
    ``o`` in each of the ``n_sets`` spatial sets): the conv recursion of the CNN-GP."""
    xp = jnp.pad(x, [(0, 0)] * nb + list(pads) * n_sets)
    total = 0.0
    for off in itertools.product(*[range(w) for w in window]):
        idx = [slice(None)] * nb
        for _ in range(n_sets):
            idx += [slice(o, o + (n - 1) * s + 1, s)
                    for o, n, s in zip(off, out_spatial, strides)]
        total = total + xp[tuple(idx)]
    return total / math.prod(window)


def joint_linear(k: Kernel, fn):
    """Apply one spatial linear map ``fn(t, nb=1)`` to ``nngp``, ``ntk`` and ``cov`` at once
    (their batch axes flattened and concatenated: one XLA op instead of three, which keeps
    compile times of convolutional kernels down). Returns the three images (None kept).

    Args:
        k: a spatial :class:`~dynkit.theory.stax_kernel.Kernel`.
        fn: a linear map of the spatial axes, ``fn(t, nb)`` with ``nb`` leading batch axes.

    Returns:
        ``[fn(nngp), fn(ntk), fn(cov)]``, each with its own batch axes (None stays None).

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k = input_kernel(jnp.ones((2, 3, 1)), jnp.ones((1, 3, 1)), False, False)
        >>> [None if t is None else t.shape for t in joint_linear(k, lambda t, nb: t[:, :2])]
        [(2, 1, 2), None, (3, 2)]
    """
    parts = [k.nngp, k.ntk, k.cov]
    nbs = [2, 2, 1]
    flat = [p.reshape((-1,) + p.shape[nb:]) for p, nb in zip(parts, nbs) if p is not None]
    sizes = np.cumsum([f.shape[0] for f in flat])[:-1]
    outs = iter(jnp.split(fn(jnp.concatenate(flat), 1), sizes))
    return [None if p is None else next(outs).reshape(p.shape[:nb] + (-1,)).reshape(
        p.shape[:nb] + _img_shape(fn, p, nb)) for p, nb in zip(parts, nbs)]


def _img_shape(fn, p, nb):
    return jax.eval_shape(lambda t: fn(t, 1), jax.ShapeDtypeStruct((1,) + p.shape[nb:],
                                                                   p.dtype)).shape[1:]


_CONV_SPECS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"),
               3: ("NDHWC", "DHWIO", "NDHWC")}


def _check_padding(layer, padding):
    if padding == "CIRCULAR":
        raise UnsupportedLayerError(f"{layer}: padding 'CIRCULAR' is not supported; use 'SAME' "
                                    "or 'VALID'")
    if padding not in ("SAME", "VALID"):
        raise InvalidArgumentError(f"{layer}: padding must be 'SAME' or 'VALID', got "
                                   f"{padding!r}")


class Conv(Layer):
    """Convolution (1-3 spatial dims, channels last, weights ``(*filter, C_in, C_out)``).

    CNN-GP / CNTK recursion (Novak et al. 2019; Garriga-Alonso et al. 2019; Arora et al.
    2019): ``nngp'[s, s'] = W_std^2 mean_o nngp[s + o, s' + o] + b_std^2`` over the filter
    offsets ``o`` (zero padding counts as zeros), NTK param ``ntk' = nngp' + W_std^2 mean_o
    ntk[...]``, standard ``ntk' = fan_in mean_o nngp[...] + W_std^2 mean_o ntk[...] (+1)``
    with ``fan_in = C_in * prod(filter)``.

    Args:
        out_chan, filter_shape, strides, padding (``"SAME"``/``"VALID"``), W_std, b_std,
            parameterization: as for :func:`dynkit.theory.stax.Conv`.

    References:
        Novak et al. 2019; Garriga-Alonso et al. 2019; Arora et al. 2019.

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k = Conv(4, (2,), W_std=2.0, b_std=0.5).kernel(
        ...     input_kernel(jnp.ones((1, 3, 1)), None, False, True))
        >>> k.nngp.tolist(), k.shape1
        ([[[4.25, 4.25]]], (2, 4))
    """

    name = "Conv"

    def __init__(self, out_chan, filter_shape, strides=None, padding="VALID", W_std=1.0,
                 b_std=None, parameterization="ntk"):
        check_parameterization("Conv", parameterization)
        _check_padding("Conv", padding)
        self.out_chan = int(out_chan)
        self.filter_shape = tuple(int(f) for f in filter_shape)
        self.strides = tuple(strides) if strides is not None else (1,) * len(self.filter_shape)
        self.padding, self.W_std, self.b_std = padding, float(W_std), b_std
        self.parameterization = parameterization

    def _geometry(self, spatial):
        pads = _pads(spatial, self.filter_shape, self.strides, self.padding)
        return pads, _out_spatial(spatial, self.filter_shape, self.strides, pads)

    def out_shape(self, in_shape):
        check_single_input(self, in_shape)
        d = len(self.filter_shape)
        if len(in_shape) != d + 1 or d not in _CONV_SPECS:
            raise self.shape_error(
                f"filter_shape {self.filter_shape} needs inputs of shape (batch, {d} spatial "
                f"dims, channels), got per-sample shape {tuple(in_shape)}")
        _, out = self._geometry(tuple(in_shape[:-1]))
        if min(out) < 1:
            raise self.shape_error(f"filter {self.filter_shape} does not fit the spatial "
                                   f"shape {tuple(in_shape[:-1])} with padding {self.padding}")
        return out + (self.out_chan,)

    def init(self, key, in_shape):
        k1, k2 = jax.random.split(key)
        fan_in = in_shape[-1] * math.prod(self.filter_shape)
        w = jax.random.normal(k1, self.filter_shape + (in_shape[-1], self.out_chan))
        b = None if self.b_std is None else jax.random.normal(k2, (self.out_chan,))
        if self.parameterization == "standard":
            w = w * (self.W_std / math.sqrt(fan_in))
            b = None if b is None else b * self.b_std
        return (w, b)

    def linear_map(self, x, w):
        """The layer's map without scaling or bias (subclasses change only this)."""
        return lax.conv_general_dilated(x, w, self.strides, self.padding,
                                        dimension_numbers=_CONV_SPECS[len(self.filter_shape)])

    def apply(self, params, x, **kwargs):
        w, b = params
        y = self.linear_map(x, w.astype(x.dtype))
        if self.parameterization == "ntk":
            fan_in = x.shape[-1] * math.prod(self.filter_shape)
            y = (self.W_std / math.sqrt(fan_in)) * y
            return y if b is None else y + self.b_std * b
        return y if b is None else y + b

    def windowed(self, k):
        """``(nngp_u, ntk_u, cov_u, out_spatial)``: the filter-window means
        ``mean_o t[s + o, s' + o]`` of the input kernel (before weights and bias)."""
        pads, out = self._geometry(k.spatial)
        n_sets = 2 if k.full else 1

        def conv(t, nb):
            return _windowed_mean(t, nb, n_sets, self.filter_shape, self.strides, pads, out)

        return (*joint_linear(k, conv), out)

    def kernel(self, k):
        nngp_u, ntk_u, cov_u, out = self.windowed(k)
        return self._affine(k.shape1[-1], nngp_u, ntk_u, cov_u, k.ntk is not None,
                            out, k.full)

    def input_kernel(self, x1: Array, x2: Array | None, full: bool,
                     compute_ntk: bool) -> Kernel:
        """The kernel of this layer's output when it reads the network inputs directly.

        The windowed mean of the input kernel is the Gram matrix of the input patches,
        ``mean_o x1[s + o] . x2[s' + o] / C = P1[s] . P2[s'] / (C |window|)`` with
        ``P[s] = (x_pad[s * stride + o])_o``, so one contraction over ``C |window|`` features
        replaces building the pixel-pair input kernel and shifting it ``|window|`` times (the
        input NTK is zero)."""
        def patches(x):
            return lax.conv_general_dilated_patches(
                x, self.filter_shape, self.strides, self.padding,
                dimension_numbers=_CONV_SPECS[len(self.filter_shape)])

        pk = input_kernel(patches(x1), map_optional(patches, x2), full, False)
        return self._affine(x1.shape[-1], pk.nngp, None, pk.cov, compute_ntk,
                            pk.shape1[:-1], pk.full)

    def _affine(self, c_in, nngp_u, ntk_u, cov_u, compute_ntk, out, full) -> Kernel:
        """``nngp' = W_std^2 nngp_u + b_std^2`` and the NTK update of the class docstring,
        from the windowed means ``*_u`` of the input kernel (``ntk_u`` None: zero)."""
        w2 = self.W_std ** 2
        b2 = 0.0 if self.b_std is None else float(self.b_std) ** 2
        nngp = w2 * nngp_u + b2
        ntk = None
        if compute_ntk:
            fan_in = c_in * math.prod(self.filter_shape)
            ntk = nngp if self.parameterization == "ntk" else (
                fan_in * nngp_u + (0.0 if self.b_std is None else 1.0))
            if ntk_u is not None:
                ntk = ntk + w2 * ntk_u
        cov = map_optional(lambda c: w2 * c + b2, cov_u)
        return Kernel(nngp, ntk, cov, out + (self.out_chan,), full)



class Pool(Layer):
    """Average (``kind='avg'``) or sum pooling over spatial windows. Needs the full
    pixel-pixel covariance: ``nngp'[p, p'] = sum_{w, w'} nngp[p s + w, p' s + w'] / Z_p Z_p'``
    with ``Z = window size`` (avg), the count of non-padded pixels (avg with
    ``normalize_edges``) or 1 (sum).

    Args:
        kind: ``"avg"`` or ``"sum"``; window_shape, strides, padding, normalize_edges: as for
            :func:`dynkit.theory.stax.AvgPool`.

    References:
        Novak et al. 2019; Arora et al. 2019.

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> x = jnp.array([[[1.0], [3.0], [-1.0], [1.0]]])            # window means 2, 0
        >>> Pool("avg", (2,), (2,)).kernel(input_kernel(x, None, True, False)).nngp.tolist()
        [[[[4.0, 0.0], [0.0, 0.0]]]]
    """

    per_block = True

    def __init__(self, kind, window_shape, strides=None, padding="VALID", normalize_edges=False):
        self.name = {"avg": "AvgPool", "sum": "SumPool"}[kind]
        _check_padding(self.name, padding)
        self.kind, self.window = kind, tuple(int(w) for w in window_shape)
        self.strides = tuple(strides) if strides is not None else (1,) * len(self.window)
        self.padding, self.normalize_edges = padding, bool(normalize_edges)

    def _geometry(self, spatial):
        pads = _pads(spatial, self.window, self.strides, self.padding)
        return pads, _out_spatial(spatial, self.window, self.strides, pads)

    def out_shape(self, in_shape):
        check_single_input(self, in_shape)
        if len(in_shape) != len(self.window) + 1:
            raise self.shape_error(f"window {self.window} needs {len(self.window)} spatial "
                                   f"dims, got per-sample shape {tuple(in_shape)}")
        _, out = self._geometry(tuple(in_shape[:-1]))
        if min(out) < 1:
            raise self.shape_error(f"window {self.window} does not fit {tuple(in_shape)}")
        return out + (in_shape[-1],)

    def _norm(self, spatial, pads, dtype):
        """Per-output-position normalizer ``Z`` (shape ``out_spatial``)."""
        if self.kind == "sum":
            return None
        if not self.normalize_edges:
            return float(math.prod(self.window))
        return lax.reduce_window(jnp.ones(spatial, dtype), 0.0, lax.add, self.window,
                                 self.strides, pads)

    def apply(self, params, x, **kwargs):
        pads = _pads(x.shape[1:-1], self.window, self.strides, self.padding)
        y = lax.reduce_window(x, 0.0, lax.add, (1,) + self.window + (1,),
                              (1,) + self.strides + (1,), [(0, 0)] + pads + [(0, 0)])
        z = self._norm(x.shape[1:-1], pads, x.dtype)
        if z is None:
            return y
        return y / (z if isinstance(z, float) else z[None, ..., None])

    def needs_full(self, out_full):
        return True

    def kernel(self, k):
        pads, out = self._geometry(k.spatial)
        d = len(self.window)
        z = self._norm(k.spatial, pads, k.nngp.dtype)

        def pool(t, nb):
            y = lax.reduce_window(t, 0.0, lax.add, (1,) * nb + self.window * 2,
                                  (1,) * nb + self.strides * 2, [(0, 0)] * nb + pads * 2)
            if z is None:
                return y
            if isinstance(z, float):
                return y / (z * z)
            zz = z.reshape(out + (1,) * d) * z.reshape((1,) * d + out)
            return y / zz

        nngp, ntk, cov = joint_linear(k, pool)
        return k.replace(nngp=nngp, ntk=ntk, cov=cov, shape1=out + (k.shape1[-1],))


class GlobalPool(Layer):
    """Global average (or sum) pooling over all spatial positions (Arora et al. 2019, CNTK
    with GAP): ``nngp' = mean_{s, s'} nngp[s, s']`` (sum: times ``|S|^2``).

    Args:
        kind: ``"avg"`` or ``"sum"``.

    References:
        Arora et al. 2019, "On exact computation with an infinitely wide neural net".

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> x = jnp.array([[[1.0], [3.0], [-1.0], [1.0]]])            # sum 4
        >>> GlobalPool("sum").kernel(input_kernel(x, None, True, False)).nngp.tolist()
        [[16.0]]
    """

    per_block = True

    def __init__(self, kind="avg"):
        self.kind = kind
        self.name = {"avg": "GlobalAvgPool", "sum": "GlobalSumPool"}[kind]

    def out_shape(self, in_shape):
        check_single_input(self, in_shape)
        if len(in_shape) < 2:
            raise self.shape_error(f"needs spatial inputs (batch, *spatial, channels), got "
                                   f"per-sample shape {tuple(in_shape)}")
        return (in_shape[-1],)

    def apply(self, params, x, **kwargs):
        axes = tuple(range(1, x.ndim - 1))
        return jnp.mean(x, axes) if self.kind == "avg" else jnp.sum(x, axes)

    def needs_full(self, out_full):
        return True

    def kernel(self, k):
        def pool(t, nb):
            # a dot with a constant vector, not jnp.mean: XLA's CPU reduce fuses the (costly)
            # activation before it into a slow loop; a dot makes it materialize (3-4x faster)
            flat = t.reshape(t.shape[:nb] + (-1,))
            w = 1.0 / flat.shape[-1] if self.kind == "avg" else 1.0
            return flat @ jnp.full((flat.shape[-1],), w, flat.dtype)

        return k.replace(nngp=pool(k.nngp, 2), ntk=map_optional(lambda t: pool(t, 2), k.ntk),
                         cov=map_optional(lambda c: pool(c, 1), k.cov), shape1=(k.shape1[-1],),
                         full=False)


class Flatten(Layer):
    """Flatten all non-batch axes. Kernel: the mean of the spatial diagonal,
    ``nngp' = mean_s nngp[s, s]`` (Novak et al. 2019): only the diagonal is needed.

    References:
        Novak et al. 2019, "Bayesian deep convolutional networks with many channels are
        Gaussian processes".

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> x = jnp.array([[[1.0], [3.0], [-1.0], [1.0]]])            # (1 + 9 + 1 + 1) / 4
        >>> Flatten().kernel(input_kernel(x, None, False, False)).nngp.tolist()
        [[3.0]]
    """

    name = "Flatten"
    per_block = True

    def out_shape(self, in_shape):
        check_single_input(self, in_shape)
        return (math.prod(in_shape),)

    def apply(self, params, x, **kwargs):
        return x.reshape(x.shape[0], -1)

    def needs_full(self, out_full):
        return False

    def kernel(self, k):
        k = to_diag(k)

        def flat(t, nb):
            return jnp.mean(t, axis=tuple(range(nb, t.ndim))) if t.ndim > nb else t

        return k.replace(nngp=flat(k.nngp, 2), ntk=map_optional(lambda t: flat(t, 2), k.ntk),
                         cov=map_optional(lambda c: flat(c, 1), k.cov), shape1=(math.prod(k.shape1),),
                         full=False)

