r"""Finite-width corrections to the Gaussian (NNGP) output distribution of a random network.

At infinite width the output of a randomly initialized network is a Gaussian process (Neal
1996; Lee et al. 2018); at width ``n`` it deviates from it at order :math:`1/n`. For one hidden
layer, :math:`f(x) = \frac{\sigma_v}{\sqrt n}\sum_{i=1}^n v_i\,\phi(h_i(x))` with i.i.d.
pre-activations :math:`h_i \sim N(0, q)` and readout weights :math:`v_i \sim N(0, 1)` (no readout
bias), ``f`` given the hidden layer is Gaussian with variance :math:`\sigma_v^2 S`,
:math:`S = \frac1n\sum_i \phi(h_i)^2`, so ``f`` is a scale mixture of Gaussians whose excess
kurtosis is :math:`3\,\mathrm{Var}\,S / (E S)^2` and whose density is
:math:`N(f; 0, K)\,[1 + \frac{\kappa_4}{24} He_4(f/\sqrt K)] + O(n^{-2})` (Antognini 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dynkit.errors import InvalidArgumentError
from dynkit.theory.signal_prop import gauss_hermite

__all__ = ["output_excess_kurtosis"]


def output_excess_kurtosis(width: int, q: float, activation: Callable = jax.nn.relu,
                           degree: int = 200) -> float:
    r"""Excess kurtosis of the output of a random one-hidden-layer network of width ``n``:

    .. math:: \kappa_4 = \frac{E f^4}{(E f^2)^2} - 3
              = \frac{3\,\mathrm{Var}\,\phi(h)^2}{n\,(E\phi(h)^2)^2},\qquad h \sim N(0, q)

    (module docstring), exact at every width; the moments of :math:`\phi(h)^2` are taken by
    Gauss-Hermite quadrature. For ReLU :math:`\kappa_4 = 15/n` whatever ``q``; for a linear
    network :math:`6/n`.

    Args:
        width: hidden width ``n`` (a positive integer).
        q: variance of the pre-activations, e.g. :math:`\sigma_w^2\|x\|^2/d + \sigma_b^2` for
            a first layer in NTK parameterization (``q > 0``).
        activation: the activation :math:`\phi`, a JAX function applied elementwise.
        degree: number of Gauss-Hermite nodes.

    Returns:
        :math:`\kappa_4` as a float.

    References:
        Antognini 2019, "Finite size corrections for neural network Gaussian processes".

    Example:
        >>> round(output_excess_kurtosis(10, q=2.0), 4)   # ReLU: 15 / n
        1.5
    """
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise InvalidArgumentError(f"width must be a positive integer, got {width!r}")
    if not (math.isfinite(float(q)) and float(q) > 0):
        raise InvalidArgumentError(f"q must be a positive finite variance, got {q!r}")
    z, w = gauss_hermite(degree)
    f2 = np.asarray(activation(jnp.asarray(np.sqrt(q) * z))) ** 2
    m2, m4 = w @ f2, w @ f2**2
    return float(3.0 * (m4 - m2**2) / (width * m2**2))
