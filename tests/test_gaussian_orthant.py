"""Gaussian orthant probabilities and truncated moments against scipy's Genz integration, the
bivariate closed forms (Rosenbaum 1961), independent coordinates, and Monte Carlo."""

import jax
import numpy as np
import pytest

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.theory import gaussian_orthant as go


def _random_cov(rng, n, jitter):
    a = rng.standard_normal((n, n))
    return a @ a.T + jitter * np.eye(n)


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3, 4])
def test_orthant_probability_matches_scipy_genz(n):
    # scipy's Genz integration is a randomised lattice rule in n >= 3: at 2e6 points one estimate
    # has a standard deviation of ~4e-9 (measured over seeds, n = 4). The mean of 4 seeded
    # estimates is within 1e-8 (5 of its standard errors); Plackett's quadrature agrees with a
    # 2.5e7-point Genz estimate to <1e-9.
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(2)
    for jitter in (0.5, 1e-3):
        c = _random_cov(rng, n, jitter)
        ref = np.mean([multivariate_normal(np.zeros(n), c, abseps=1e-10, releps=1e-10,
                                           maxpts=2_000_000, seed=seed).cdf(np.zeros(n))
                       for seed in range(4)])
        assert float(go.orthant_probability(c)) == pytest.approx(ref, abs=1e-8)


def test_orthant_probability_independent_and_low_dimensions():
    for n in range(5):
        cov = np.diag(np.arange(1.0, n + 1))
        assert float(go.orthant_probability(cov)) == pytest.approx(0.5 ** n, abs=1e-14)


def test_moments_one_dimension_closed_form():
    s2 = 2.7
    c = np.array([[s2]])
    assert float(go.orthant_moment1(c, 0)) == pytest.approx(np.sqrt(s2 / (2 * np.pi)), rel=1e-14)
    assert float(go.orthant_moment2(c, 0, 0)) == pytest.approx(s2 / 2, rel=1e-14)


@pytest.mark.parametrize("rho", [-0.9, -0.3, 0.0, 0.6, 0.99])
def test_moments_bivariate_closed_form(rho):
    # Standard bivariate normal with correlation rho over {X > 0, Y > 0} (Rosenbaum 1961):
    # P = 1/4 + asin(rho)/2pi, E[X 1] = (1 + rho)/(2 sqrt(2pi)),
    # E[X^2 1] = P + rho sqrt(1 - rho^2)/2pi, E[XY 1] = rho P + sqrt(1 - rho^2)/2pi;
    # scaled to standard deviations (sx, sy).
    sx, sy = 1.3, 0.7
    c = np.array([[sx ** 2, rho * sx * sy], [rho * sx * sy, sy ** 2]])
    p = 0.25 + np.arcsin(rho) / (2 * np.pi)
    root = np.sqrt(1 - rho ** 2) / (2 * np.pi)
    assert float(go.orthant_probability(c)) == pytest.approx(p, abs=1e-14)
    assert float(go.orthant_moment1(c, 0)) == pytest.approx(
        sx * (1 + rho) / (2 * np.sqrt(2 * np.pi)), abs=1e-14)
    assert float(go.orthant_moment2(c, 0, 0)) == pytest.approx(sx ** 2 * (p + rho * root),
                                                               abs=1e-14)
    assert float(go.orthant_moment2(c, 1, 1)) == pytest.approx(sy ** 2 * (p + rho * root),
                                                               abs=1e-14)
    assert float(go.orthant_moment2(c, 0, 1)) == pytest.approx(sx * sy * (rho * p + root),
                                                               abs=1e-14)


@pytest.mark.parametrize("n", [3, 4])
def test_moments_independent_coordinates_factorise(n):
    # cov diagonal: E[Y_k Y_l 1{Y > 0}] = prod of one-dimensional half-moments.
    var = np.arange(1.0, n + 1)
    c = np.diag(var)
    half1 = np.sqrt(var / (2 * np.pi))                     # E[Y_i 1{Y_i > 0}]
    rest = 0.5 ** (n - 1)
    assert float(go.orthant_moment1(c, 1)) == pytest.approx(half1[1] * rest, abs=1e-14)
    assert float(go.orthant_moment2(c, 2, 2)) == pytest.approx(var[2] / 2 * rest, abs=1e-14)
    assert float(go.orthant_moment2(c, 0, 2)) == pytest.approx(
        half1[0] * half1[2] * 0.5 ** (n - 2), abs=1e-14)


def test_four_dim_moments_match_monte_carlo():
    rng = np.random.default_rng(3)
    c = _random_cov(rng, 4, 0.3)
    y = rng.standard_normal((1_000_000, 4)) @ np.linalg.cholesky(c).T
    inside = np.all(y > 0, axis=1)
    for k, l in ((1, 1), (0, 3), (2, 1)):
        sample = y[:, k] * y[:, l] * inside
        se = sample.std() / np.sqrt(len(y))
        assert abs(float(go.orthant_moment2(c, k, l)) - sample.mean()) < 5 * se, (k, l)
    for l in range(4):
        sample = y[:, l] * inside
        se = sample.std() / np.sqrt(len(y))
        assert abs(float(go.orthant_moment1(c, l)) - sample.mean()) < 5 * se, l


@pytest.mark.slow
def test_batched_and_jitted_equal_one_at_a_time():
    rng = np.random.default_rng(4)
    covs = np.stack([_random_cov(rng, 4, 0.2) for _ in range(3)]).reshape(3, 1, 4, 4)
    batched = jax.jit(lambda c: go.orthant_moment2(c, 0, 2))(covs)
    assert batched.shape == (3, 1)
    for i in range(3):
        assert float(batched[i, 0]) == pytest.approx(float(go.orthant_moment2(covs[i, 0], 0, 2)),
                                                     abs=1e-14)
    assert go.orthant_probability(covs).shape == (3, 1)


def test_bad_arguments():
    with pytest.raises(ShapeMismatchError):
        go.orthant_probability(np.eye(5))                  # more than four dimensions
    with pytest.raises(ShapeMismatchError):
        go.orthant_probability(np.ones((3, 2)))            # not square
    with pytest.raises(ShapeMismatchError):
        go.orthant_moment1(np.ones(3), 0)                  # not a matrix
    with pytest.raises(InvalidArgumentError):
        go.orthant_moment1(np.eye(3), 3)                   # index out of range
    with pytest.raises(InvalidArgumentError):
        go.orthant_moment2(np.eye(3), 0, 1.0)              # index not an int
