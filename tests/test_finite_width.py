"""Finite-width output kurtosis (dynkit.theory.finite_width) against closed forms and an
independent adaptive quadrature."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad

from dynkit.errors import InvalidArgumentError
from dynkit.theory.finite_width import output_excess_kurtosis


@pytest.mark.parametrize("q", [0.3, 1.0, 2.5])
def test_relu_and_linear_closed_forms(q):
    """ReLU: E relu(h)^4 = 3q²/2, E relu(h)^2 = q/2 -> 3 (3/2 - 1/4) / (1/4) / n = 15/n;
    linear: Var h² = 2q², E h² = q -> 6/n; both independent of q."""
    for n in (1, 7, 64):
        assert output_excess_kurtosis(n, q) == pytest.approx(15.0 / n, rel=1e-10)
        assert output_excess_kurtosis(n, q, activation=lambda h: h) == pytest.approx(6.0 / n, rel=1e-10)


def test_tanh_matches_adaptive_quadrature():
    """3 Var φ(h)² / (n (E φ(h)²)²) with the Gaussian moments by scipy's adaptive quad."""
    q, n = 1.7, 12

    def moment(k):
        def integrand(h):
            return math.tanh(h) ** k * math.exp(-h * h / (2 * q)) / math.sqrt(2 * math.pi * q)
        return quad(integrand, -np.inf, np.inf, epsabs=1e-14, epsrel=1e-13)[0]

    m2, m4 = moment(2), moment(4)
    want = 3 * (m4 - m2 ** 2) / (n * m2 ** 2)
    assert output_excess_kurtosis(n, q, activation=jnp.tanh) == pytest.approx(want, rel=1e-9)


def test_bad_arguments():
    with pytest.raises(InvalidArgumentError, match="width"):
        output_excess_kurtosis(0, 1.0)
    with pytest.raises(InvalidArgumentError, match="q"):
        output_excess_kurtosis(4, 0.0)
    with pytest.raises(InvalidArgumentError, match="q"):
        output_excess_kurtosis(4, float("nan"), activation=jax.nn.relu)
