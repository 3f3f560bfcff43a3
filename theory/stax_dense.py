"""Fully connected layer of the ``stax`` vocabulary: finite network and NNGP/NTK recursion,
in NTK or standard parameterization (Jacot et al. 2018; Sohl-Dickstein et al. 2020)."""

from __future__ import annotations

import math

import jax

from dynkit.errors import InvalidArgumentError
from dynkit.theory.stax_kernel import Layer, check_single_input, map_optional

__all__ = ["Dense", "check_parameterization"]


def check_parameterization(name, parameterization):
    """``parameterization`` must be ``"ntk"`` or ``"standard"`` (``name``: the layer).

    Args:
        name: the layer, named in the error.
        parameterization: the value to check.

    Raises:
        InvalidArgumentError: for any other value.

    Example:
        >>> check_parameterization("Dense", "ntk") is None
        True
    """
    if parameterization not in ("ntk", "standard"):
        raise InvalidArgumentError(
            f"{name}: parameterization must be 'ntk' or 'standard', got {parameterization!r}")


class Dense(Layer):
    """Fully connected layer. NTK parameterization: ``y = W_std/sqrt(n) x W + b_std b`` with
    ``W, b ~ N(0, 1)``; standard: ``y = x W + b`` with ``W ~ N(0, W_std^2/n)``,
    ``b ~ N(0, b_std^2)``. Kernel: ``nngp' = W_std^2 nngp + b_std^2``;
    NTK param ``ntk' = nngp' + W_std^2 ntk``; standard ``ntk' = n nngp + W_std^2 ntk (+1 if
    bias)`` (Jacot et al. 2018; Sohl-Dickstein et al. 2020 for the standard one). On inputs
    ``(batch, *spatial, C)`` it acts on the channel axis at every position (a 1x1 convolution,
    as neural-tangents' ``Dense``), elementwise on the spatial kernel.

    Args:
        out_dim: output features; W_std, b_std: weight and bias scales (``b_std=None``: no
            bias); parameterization: ``"ntk"`` or ``"standard"``.

    References:
        Neal 1996; Lee et al. 2018; Jacot et al. 2018; Sohl-Dickstein et al. 2020.

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k = Dense(3, W_std=2.0, b_std=0.5).kernel(
        ...     input_kernel(jnp.array([[1.0, 1.0]]), None, False, True))
        >>> k.nngp.tolist(), k.ntk.tolist(), k.shape1
        ([[4.25]], [[4.25]], (3,))
    """

    name = "Dense"

    def __init__(self, out_dim, W_std=1.0, b_std=None, parameterization="ntk"):
        check_parameterization("Dense", parameterization)
        self.out_dim, self.W_std, self.b_std = int(out_dim), float(W_std), b_std
        self.parameterization = parameterization

    def out_shape(self, in_shape):
        check_single_input(self, in_shape)
        return tuple(in_shape[:-1]) + (self.out_dim,)  # on the channel axis, as neural-tangents

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
        return k.replace(nngp=nngp, ntk=ntk, cov=map_optional(aff, k.cov),
                         shape1=k.shape1[:-1] + (self.out_dim,))

