"""Internal layer objects behind ``dynkit.theory.stax``: finite network + kernel recursion.

Every layer knows four things: its output shape (per sample, no batch axis), how to draw
parameters and apply the finite network, how it maps an infinite-width ``Kernel`` to the
next one, and whether it needs the full pixel-pixel covariance of its input.

Kernel layout (``N1, N2`` batch sizes, ``S`` the spatial shape, ``d = len(S)``):

* fully connected: ``nngp, ntk (N1, N2)``, ``cov (N1 + N2,)``
* spatial, diagonal: ``nngp, ntk (N1, N2, *S)``, ``cov (N1 + N2, *S)`` (only ``s == s'``)
* spatial, full: ``nngp, ntk (N1, N2, *S, *S)``, ``cov (N1 + N2, *S, *S)``

``cov`` holds the self-covariances of x1 and x2 stacked; it is None when x2 is x1 (the
batch diagonal of ``nngp`` is then the same thing, and each layer does one op less).
Covariances are channel-averaged (``x1 . x2 / C``), as in neural-tangents (Novak et al. 2020).
The recursions are those of Lee et al. 2018 (NNGP), Jacot et al. 2018 (NTK), Novak et al. 2019
and Arora et al. 2019 (CNN-GP / CNTK, pooling).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dynkit.errors import ShapeMismatchError, UnsupportedLayerError

Array = Any


@dataclasses.dataclass(frozen=True)
class Kernel:
    """Infinite-width kernel of a layer's output (a pytree; ``shape1``, ``full`` static).

    ``nngp``: NNGP covariance of x1 vs x2; ``ntk``: NTK (None when not requested);
    ``cov``: batch-diagonal self-covariances of ``[x1; x2]`` stacked, ``(N1 + N2, ...)``, or
    None when x2 is x1 (then they are the batch diagonal of ``nngp``); ``shape1``: per-sample
    output shape (channels last); ``full``: spatial off-diagonal pixel pairs tracked.
    ``cov1``/``cov2`` give the x1/x2 self-covariances (``cov2`` is None when x2 is x1).
    """

    nngp: Array
    ntk: Array | None
    cov: Array | None
    shape1: tuple = ()
    full: bool = False

    def replace(self, **kw) -> Kernel:
        return dataclasses.replace(self, **kw)

    @property
    def spatial(self) -> tuple:
        return tuple(self.shape1[:-1])

    @property
    def cov1(self) -> Array:
        if self.cov is None:
            return jnp.moveaxis(jnp.diagonal(self.nngp, axis1=0, axis2=1), -1, 0)
        return self.cov[: self.nngp.shape[0]]

    @property
    def cov2(self) -> Array | None:
        return None if self.cov is None else self.cov[self.nngp.shape[0]:]


jax.tree_util.register_dataclass(
    Kernel, data_fields=["nngp", "ntk", "cov"], meta_fields=["shape1", "full"])


def _map(fn, *xs):
    """Apply ``fn`` to the non-None arguments, keep None."""
    return None if xs[0] is None else fn(*xs)


def spatial_diag(x: Array, nb: int, spatial: tuple) -> Array:
    """``x[..., s, s']`` laid out ``(*batch, *S, *S)`` -> its diagonal ``(*batch, *S)``."""
    p = math.prod(spatial)
    flat = x.reshape(x.shape[:nb] + (p, p))
    return jnp.diagonal(flat, axis1=-2, axis2=-1).reshape(x.shape[:nb] + tuple(spatial))


def to_diag(k: Kernel) -> Kernel:
    """Drop the spatial off-diagonal entries of a full kernel."""
    if not k.full:
        return k
    s = k.spatial
    return k.replace(nngp=spatial_diag(k.nngp, 2, s),
                     ntk=_map(lambda t: spatial_diag(t, 2, s), k.ntk),
                     cov=_map(lambda c: spatial_diag(c, 1, s), k.cov), full=False)


def coerce(ks, full: bool):
    """Bring a kernel (or list of kernels) down to diagonal form when ``full`` is False."""
    if isinstance(ks, (list, tuple)):
        return [coerce(k, full) for k in ks]
    return ks if full else to_diag(ks)


def variances(k: Kernel):
    """Per-position variances ``(v1 (N1, *S), v2 (N2, *S))`` of x1 and x2."""
    if k.cov is None:
        v = jnp.moveaxis(jnp.diagonal(k.nngp, axis1=0, axis2=1), -1, 0)
        v = spatial_diag(v, 1, k.spatial) if k.full else v
        return v, v
    v = spatial_diag(k.cov, 1, k.spatial) if k.full else k.cov
    n1 = k.nngp.shape[0]
    return v[:n1], v[n1:]


def pointwise(k: Kernel, fn) -> Kernel:
    """Apply a per-entry map ``fn(q11, q12, q22, ntk) -> (q12', ntk')`` to ``nngp``/``ntk``
    (with the matching variances ``q11, q22``) and ``fn(c11, c, c22, None)[0]`` to ``cov``.
    Spatial axes are flattened to one pixel axis first (fewer, faster-compiling loops)."""
    v1, v2 = variances(k)
    p = math.prod(k.spatial)
    n1, n2 = v1.shape[0], v2.shape[0]
    v1, v2 = v1.reshape(n1, -1), v2.reshape(n2, -1)
    if not k.spatial:
        q11, q22, shape, cshape = v1, v2.T, (n1, n2), (-1,)
    elif not k.full:
        q11, q22, shape, cshape = v1[:, None], v2[None], (n1, n2, p), (-1, p)
    else:
        q11, q22 = v1[:, None, :, None], v2[None, :, None, :]
        shape, cshape = (n1, n2, p, p), (-1, p, p)
    nngp, ntk = fn(q11, k.nngp.reshape(shape), q22, _map(lambda t: t.reshape(shape), k.ntk))
    cov = None
    if k.cov is not None:
        v = jnp.concatenate([v1, v2])
        c = k.cov.reshape(cshape)
        if not k.spatial:
            cov = fn(v[:, 0], c, v[:, 0], None)[0]
        elif not k.full:
            cov = fn(v, c, v, None)[0]
        else:
            cov = fn(v[:, :, None], c, v[:, None, :], None)[0]
        cov = cov.reshape(k.cov.shape)
    return k.replace(nngp=nngp.reshape(k.nngp.shape),
                     ntk=_map(lambda t: t.reshape(k.nngp.shape), ntk), cov=cov)


def input_kernel(x1: Array, x2: Array | None, full: bool, compute_ntk: bool) -> Kernel:
    """Kernel of the inputs: ``nngp = x1 . x2 / C`` over the channel (last) axis."""
    shape1 = tuple(x1.shape[1:])
    c = shape1[-1]
    both = None if x2 is None else jnp.concatenate([x1, x2])
    if len(shape1) == 1:
        nngp = x1 @ (x1 if x2 is None else x2).T / c
        cov = _map(lambda b: jnp.sum(b * b, -1) / c, both)
    else:
        s = shape1[:-1]
        p = math.prod(s)
        flat = lambda x: x.reshape(x.shape[0], p, c)
        f1 = flat(x1)
        f2 = f1 if x2 is None else flat(x2)
        fb = _map(flat, both)
        n1, n2 = f1.shape[0], f2.shape[0]
        if full:
            nngp = jnp.einsum("apc,bqc->abpq", f1, f2).reshape((n1, n2) + s + s)
            cov = _map(lambda f: jnp.einsum("apc,aqc->apq", f, f).reshape((f.shape[0],) + s + s),
                       fb)
        else:
            nngp = jnp.einsum("apc,bpc->abp", f1, f2).reshape((n1, n2) + s)
            cov = _map(lambda f: jnp.sum(f * f, -1).reshape((f.shape[0],) + s), fb)
        nngp = nngp / c
        cov = _map(lambda t: t / c, cov)
    ntk = jnp.zeros_like(nngp) if compute_ntk else None
    return Kernel(nngp, ntk, cov, shape1, full and len(shape1) > 1)


class Layer:
    """Base class; subclasses override what they need. ``label`` names it in errors."""

    name = "Layer"
    label = None

    def describe(self) -> str:
        return self.label or self.name

    def out_shape(self, in_shape):
        return in_shape

    def init(self, key, in_shape):
        return ()

    def apply(self, params, x, **kwargs):
        return x

    def kernel(self, k):
        return k

    def needs_full(self, out_full: bool) -> bool:
        return out_full

    def shape_error(self, msg: str) -> ShapeMismatchError:
        return ShapeMismatchError(f"{self.describe()}: {msg}")


def _check_single(layer: Layer, in_shape):
    if isinstance(in_shape, list):
        raise layer.shape_error(f"expects one input, got a list of {len(in_shape)} "
                                "(missing FanInSum/FanInConcat?)")


# ----------------------------------------------------------------------------- affine layers


def _check_param(name, parameterization):
    if parameterization not in ("ntk", "standard"):
        from dynkit.errors import InvalidArgumentError
        raise InvalidArgumentError(
            f"{name}: parameterization must be 'ntk' or 'standard', got {parameterization!r}")


class Dense(Layer):
    """Fully connected layer. NTK parameterization: ``y = W_std/sqrt(n) x W + b_std b`` with
    ``W, b ~ N(0, 1)``; standard: ``y = x W + b`` with ``W ~ N(0, W_std^2/n)``,
    ``b ~ N(0, b_std^2)``. Kernel: ``nngp' = W_std^2 nngp + b_std^2``;
    NTK param ``ntk' = nngp' + W_std^2 ntk``; standard ``ntk' = n nngp + W_std^2 ntk (+1 if
    bias)`` (Jacot et al. 2018; Sohl-Dickstein et al. 2020 for the standard one)."""

    name = "Dense"

    def __init__(self, out_dim, W_std=1.0, b_std=None, parameterization="ntk"):
        _check_param("Dense", parameterization)
        self.out_dim, self.W_std, self.b_std = int(out_dim), float(W_std), b_std
        self.parameterization = parameterization

    def out_shape(self, in_shape):
        _check_single(self, in_shape)
        if len(in_shape) != 1:
            raise self.shape_error(
                f"expects inputs of shape (batch, features), got per-sample shape "
                f"{tuple(in_shape)}; add Flatten() or GlobalAvgPool() before Dense")
        return (self.out_dim,)

    def init(self, key, in_shape):
        k1, k2 = jax.random.split(key)
        n = in_shape[-1]
        w = jax.random.normal(k1, (n, self.out_dim))
        b = None if self.b_std is None else jax.random.normal(k2, (self.out_dim,))
        if self.parameterization == "standard":
            w = w * (self.W_std / math.sqrt(n))
            b = None if b is None else b * self.b_std
        return (w, b)

    def apply(self, params, x, **kwargs):
        w, b = params
        if self.parameterization == "ntk":
            y = (self.W_std / math.sqrt(x.shape[-1])) * (x @ w)
            return y if b is None else y + self.b_std * b
        y = x @ w
        return y if b is None else y + b

    def kernel(self, k):
        w2 = self.W_std ** 2
        b2 = 0.0 if self.b_std is None else float(self.b_std) ** 2
        aff = lambda t: w2 * t + b2
        ntk = k.ntk
        if self.parameterization == "standard" and ntk is not None:
            ntk = k.shape1[-1] * k.nngp + w2 * ntk + (0.0 if self.b_std is None else 1.0)
        nngp = aff(k.nngp)
        if self.parameterization == "ntk" and ntk is not None:
            ntk = nngp + w2 * ntk
        return k.replace(nngp=nngp, ntk=ntk, cov=_map(aff, k.cov), shape1=(self.out_dim,))


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
    compile times of convolutional kernels down). Returns the three images (None kept)."""
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
        from dynkit.errors import InvalidArgumentError
        raise InvalidArgumentError(f"{layer}: padding must be 'SAME' or 'VALID', got "
                                   f"{padding!r}")


class Conv(Layer):
    """Convolution (1-3 spatial dims, channels last, weights ``(*filter, C_in, C_out)``).

    CNN-GP / CNTK recursion (Novak et al. 2019; Garriga-Alonso et al. 2019; Arora et al.
    2019): ``nngp'[s, s'] = W_std^2 mean_o nngp[s + o, s' + o] + b_std^2`` over the filter
    offsets ``o`` (zero padding counts as zeros), NTK param ``ntk' = nngp' + W_std^2 mean_o
    ntk[...]``, standard ``ntk' = fan_in mean_o nngp[...] + W_std^2 mean_o ntk[...] (+1)``
    with ``fan_in = C_in * prod(filter)``."""

    name = "Conv"

    def __init__(self, out_chan, filter_shape, strides=None, padding="VALID", W_std=1.0,
                 b_std=None, parameterization="ntk"):
        _check_param("Conv", parameterization)
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
        _check_single(self, in_shape)
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

    def apply(self, params, x, **kwargs):
        w, b = params
        y = lax.conv_general_dilated(x, w.astype(x.dtype), self.strides, self.padding,
                                     dimension_numbers=_CONV_SPECS[len(self.filter_shape)])
        if self.parameterization == "ntk":
            fan_in = x.shape[-1] * math.prod(self.filter_shape)
            y = (self.W_std / math.sqrt(fan_in)) * y
            return y if b is None else y + self.b_std * b
        return y if b is None else y + b

    def kernel(self, k):
        pads, out = self._geometry(k.spatial)
        n_sets = 2 if k.full else 1

        def conv(t, nb):
            return _windowed_mean(t, nb, n_sets, self.filter_shape, self.strides, pads, out)

        nngp_u, ntk_u, cov_u = joint_linear(k, conv)
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

        pk = input_kernel(patches(x1), _map(patches, x2), full, False)
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
        cov = _map(lambda c: w2 * c + b2, cov_u)
        return Kernel(nngp, ntk, cov, out + (self.out_chan,), full)


# ----------------------------------------------------------------------------- pooling, reshaping


class Pool(Layer):
    """Average (``kind='avg'``) or sum pooling over spatial windows. Needs the full
    pixel-pixel covariance: ``nngp'[p, p'] = sum_{w, w'} nngp[p s + w, p' s + w'] / Z_p Z_p'``
    with ``Z = window size`` (avg), the count of non-padded pixels (avg with
    ``normalize_edges``) or 1 (sum)."""

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
        _check_single(self, in_shape)
        if len(in_shape) != len(self.window) + 1:
            raise self.shape_error(f"window {self.window} needs {len(self.window)} spatial "
                                   f"dims, got per-sample shape {tuple(in_shape)}")
        _, out = self._geometry(tuple(in_shape[:-1]))
        if min(out) < 1:
            raise self.shape_error(f"window {self.window} does not fit {tuple(in_shape)}")
        return out + (in_shape[-1],)

    def _norm(self, spatial, pads, dtype):
        """Per-output-position normaliser ``Z`` (shape ``out_spatial``)."""
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
    with GAP): ``nngp' = mean_{s, s'} nngp[s, s']`` (sum: times ``|S|^2``)."""

    def __init__(self, kind="avg"):
        self.kind = kind
        self.name = {"avg": "GlobalAvgPool", "sum": "GlobalSumPool"}[kind]

    def out_shape(self, in_shape):
        _check_single(self, in_shape)
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
        red = jnp.mean if self.kind == "avg" else jnp.sum

        def pool(t, nb):
            return red(t, axis=tuple(range(nb, t.ndim)))

        return k.replace(nngp=pool(k.nngp, 2), ntk=_map(lambda t: pool(t, 2), k.ntk),
                         cov=_map(lambda c: pool(c, 1), k.cov), shape1=(k.shape1[-1],),
                         full=False)


class Flatten(Layer):
    """Flatten all non-batch axes. Kernel: the mean of the spatial diagonal,
    ``nngp' = mean_s nngp[s, s]`` (Novak et al. 2019): only the diagonal is needed."""

    name = "Flatten"

    def out_shape(self, in_shape):
        _check_single(self, in_shape)
        return (math.prod(in_shape),)

    def apply(self, params, x, **kwargs):
        return x.reshape(x.shape[0], -1)

    def needs_full(self, out_full):
        return False

    def kernel(self, k):
        k = to_diag(k)

        def flat(t, nb):
            return jnp.mean(t, axis=tuple(range(nb, t.ndim))) if t.ndim > nb else t

        return k.replace(nngp=flat(k.nngp, 2), ntk=_map(lambda t: flat(t, 2), k.ntk),
                         cov=_map(lambda c: flat(c, 1), k.cov), shape1=(math.prod(k.shape1),),
                         full=False)


class Identity(Layer):
    name = "Identity"


class LayerNorm(Layer):
    """Layer normalisation over the channel axis, ``(x - mean_c x) / sqrt(var_c x + eps)``.
    At infinite width the channel mean vanishes and the variance is ``q(x)``, so
    ``nngp' = nngp / sqrt(q11 q22)`` and ``ntk' = ntk / sqrt(q11 q22)`` (Novak et al. 2020)."""

    name = "LayerNorm"

    def __init__(self, axis=-1, eps=1e-12):
        axes = tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)
        if axes != (-1,):
            raise UnsupportedLayerError(f"LayerNorm: only axis=-1 (channels) is supported, got "
                                        f"axis={axis!r}")
        self.eps = float(eps)

    def apply(self, params, x, **kwargs):
        mean = jnp.mean(x, -1, keepdims=True)
        var = jnp.var(x, -1, keepdims=True)
        return (x - mean) / jnp.sqrt(var + self.eps)

    def kernel(self, k):
        def fn(q11, q12, q22, ntk):
            norm = jnp.sqrt(q11 * q22)
            return q12 / norm, _map(lambda t: t / norm, ntk)

        return pointwise(k, fn)


# ----------------------------------------------------------------------------- nonlinearities


class Elementwise(Layer):
    """Elementwise nonlinearity ``fn`` with dual ``dual(q11, q12, q22) -> (nngp, dnngp)``:
    ``nngp' = nngp_dual``, ``ntk' = ntk * dnngp`` (Jacot et al. 2018)."""

    def __init__(self, name: str, fn: Callable, dual: Callable):
        self.name, self.fn, self.dual = name, fn, dual

    def apply(self, params, x, **kwargs):
        return self.fn(x)

    def kernel(self, k):
        def fn(q11, q12, q22, ntk):
            nngp, dnngp = self.dual(q11, q12, q22)
            return nngp, _map(lambda t: t * dnngp, ntk)

        return pointwise(k, fn)


# ----------------------------------------------------------------------------- combinators


class Serial(Layer):
    """Composition ``layers[-1] o ... o layers[0]``."""

    name = "serial"

    def __init__(self, layers):
        self.layers = list(layers)

    def out_shape(self, in_shape):
        for layer in self.layers:
            in_shape = layer.out_shape(in_shape)
        return in_shape

    def init(self, key, in_shape):
        params = []
        for layer, k in zip(self.layers, jax.random.split(key, max(len(self.layers), 1))):
            params.append(layer.init(k, in_shape))
            in_shape = layer.out_shape(in_shape)
        return tuple(params)

    def apply(self, params, x, **kwargs):
        for layer, p in zip(self.layers, params):
            x = layer.apply(p, x, **kwargs)
        return x

    def requirements(self, out_full):
        """Per-layer input requirement (full spatial covariance needed?), back to front."""
        reqs = []
        for layer in reversed(self.layers):
            out_full = layer.needs_full(out_full)
            reqs.append(out_full)
        return reqs[::-1]

    def needs_full(self, out_full):
        return self.requirements(out_full)[0] if self.layers else out_full

    def kernel_with(self, k, out_full):
        reqs = self.requirements(out_full)
        outs = reqs[1:] + [out_full]
        for layer, req, out in zip(self.layers, reqs, outs):
            k = kernel_of(layer, coerce(k, req), out)
        return k


def split_first(layer: Layer):
    """``layer`` as ``(first, rest)``: its first primitive layer (nested ``Serial``s opened)
    and the layers after it (a ``Serial``, or None when nothing follows)."""
    if not isinstance(layer, Serial) or not layer.layers:
        return layer, None
    first, rest = split_first(layer.layers[0])
    tail = ([] if rest is None else [rest]) + layer.layers[1:]
    return first, (Serial(tail) if tail else None)


def kernel_of(layer: Layer, k, out_full: bool):
    """Run ``layer`` on kernel(s) ``k``; nested serials get the downstream requirement."""
    if isinstance(layer, Serial):
        return layer.kernel_with(k, out_full)
    if isinstance(layer, Parallel):
        return [kernel_of(sub, ki, out_full) for sub, ki in zip(layer.layers, k)]
    return layer.kernel(k)


class Parallel(Layer):
    """Apply ``layers[i]`` to the i-th of a list of inputs."""

    name = "parallel"

    def __init__(self, layers):
        self.layers = list(layers)

    def out_shape(self, in_shape):
        if not isinstance(in_shape, list) or len(in_shape) != len(self.layers):
            got = len(in_shape) if isinstance(in_shape, list) else "a single input"
            raise self.shape_error(f"expects a list of {len(self.layers)} inputs (use FanOut), "
                                   f"got {got}")
        return [layer.out_shape(s) for layer, s in zip(self.layers, in_shape)]

    def init(self, key, in_shape):
        keys = jax.random.split(key, max(len(self.layers), 1))
        return tuple(layer.init(k, s) for layer, k, s in zip(self.layers, keys, in_shape))

    def apply(self, params, x, **kwargs):
        return [layer.apply(p, xi, **kwargs) for layer, p, xi in zip(self.layers, params, x)]

    def needs_full(self, out_full):
        return any(layer.needs_full(out_full) for layer in self.layers)


class FanOut(Layer):
    """Replicate the input ``num`` times (a list of identical inputs)."""

    name = "FanOut"

    def __init__(self, num):
        self.num = int(num)

    def out_shape(self, in_shape):
        _check_single(self, in_shape)
        return [in_shape] * self.num

    def apply(self, params, x, **kwargs):
        return [x] * self.num

    def kernel(self, k):
        return [k] * self.num


def _check_list(layer, in_shape):
    if not isinstance(in_shape, list):
        raise layer.shape_error("expects a list of inputs (after FanOut/parallel), got a "
                                "single input")


class FanInSum(Layer):
    """Sum a list of inputs. Kernel: the sum of the kernels (branches are independent
    Gaussian processes at infinite width, e.g. a residual block ending in Dense/Conv)."""

    name = "FanInSum"

    def out_shape(self, in_shape):
        _check_list(self, in_shape)
        if any(tuple(s) != tuple(in_shape[0]) for s in in_shape):
            raise self.shape_error(f"inputs must have equal shapes, got "
                                   f"{[tuple(s) for s in in_shape]}")
        return in_shape[0]

    def apply(self, params, x, **kwargs):
        return sum(x[1:], x[0])

    def kernel(self, ks):
        full = all(k.full for k in ks)
        ks = coerce(ks, full)
        add = lambda name: (None if getattr(ks[0], name) is None
                            else sum(getattr(k, name) for k in ks))
        return ks[0].replace(nngp=add("nngp"), ntk=add("ntk"), cov=add("cov"))


class FanInConcat(Layer):
    """Concatenate a list of inputs along the channel axis. Kernel: the channel-weighted
    mean ``sum_i C_i K_i / sum_i C_i`` (covariances are channel averages)."""

    name = "FanInConcat"

    def __init__(self, axis=-1):
        if axis != -1:
            raise UnsupportedLayerError(f"FanInConcat: only axis=-1 (channels) is supported, "
                                        f"got axis={axis!r}")

    def out_shape(self, in_shape):
        _check_list(self, in_shape)
        if any(tuple(s[:-1]) != tuple(in_shape[0][:-1]) for s in in_shape):
            raise self.shape_error(f"inputs must agree except in channels, got "
                                   f"{[tuple(s) for s in in_shape]}")
        return tuple(in_shape[0][:-1]) + (sum(s[-1] for s in in_shape),)

    def apply(self, params, x, **kwargs):
        return jnp.concatenate(x, axis=-1)

    def kernel(self, ks):
        full = all(k.full for k in ks)
        ks = coerce(ks, full)
        chans = [k.shape1[-1] for k in ks]
        total = sum(chans)

        def mix(name):
            if getattr(ks[0], name) is None:
                return None
            return sum(c * getattr(k, name) for c, k in zip(chans, ks)) / total

        shape1 = tuple(ks[0].shape1[:-1]) + (total,)
        return ks[0].replace(nngp=mix("nngp"), ntk=mix("ntk"), cov=mix("cov"), shape1=shape1)
