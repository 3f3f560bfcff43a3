"""Tests of dynkit.theory.symbolic: sympy-derived dual activations vs recurrences, quadrature,
and the closed forms the infinite-width kernels use."""

import numpy as np
import pytest
import sympy as sp
from scipy import integrate, special

from dynkit.errors import InvalidArgumentError
from dynkit.theory import dual_activations, symbolic
from dynkit.theory.symbolic import Q11, Q12, Q22, THETA

# (q11, q12, q22) with |q12| < sqrt(q11 q22)
GRID = [(1.0, 0.3, 2.0), (0.5, -0.4, 0.7), (2.5, 2.4, 2.5), (0.2, 0.0, 3.0), (1.3, -1.0, 0.9)]


def test_arc_cosine_J_matches_cho_saul_recurrence_and_textbook_forms():
    textbook = {
        0: sp.pi - THETA,
        1: sp.sin(THETA) + (sp.pi - THETA) * sp.cos(THETA),
        2: 3 * sp.sin(THETA) * sp.cos(THETA) + (sp.pi - THETA) * (1 + 2 * sp.cos(THETA) ** 2),
    }
    for n, ref in textbook.items():
        derived = symbolic.arc_cosine_J(n)
        assert sp.simplify(sp.expand_trig(derived - symbolic.cho_saul_J(n))) == 0
        assert sp.simplify(sp.expand_trig(derived - ref)) == 0


def test_half_moments_elementary_values():
    assert sp.simplify(symbolic.half_moment(1, 1, False, False) - sp.cos(THETA)) == 0  # E[uv]
    assert symbolic.half_moment(0, 0, False, True) == sp.Rational(1, 2)  # P(v > 0)
    assert symbolic.half_moment(2, 0, False, False) == 1  # E[u^2]
    assert symbolic.half_moment(1, 0, False, False) == 0  # E[u]
    # E[u relu(v)] = E[u v] / 2, since E[u |v|] = 0 by the symmetry (u, v) -> (-u, -v)
    assert sp.simplify(symbolic.half_moment(1, 1, False, True) - sp.cos(THETA) / 2) == 0


def test_abs_dual_vs_quadrature():
    q = (1.0, 0.3, 2.0)
    k, d = symbolic.dual_fn("abs")(*q)
    rho = q[1] / np.sqrt(q[0] * q[2])
    assert k == pytest.approx(4 * symbolic.dual_fn("relu")(*q)[0] - q[1], rel=1e-12)
    assert d == pytest.approx(1 - 2 * np.arccos(rho) / np.pi, rel=1e-12)  # E sign(u) sign(v)
    gh = symbolic.gauss_hermite_expectation(np.abs, np.abs, *q, degree=300)
    assert k == pytest.approx(gh, abs=2e-3)


def test_price_theorem_relations():
    """d/dq12 E[s(u)s(v)] = E[s'(u)s'(v)]: ReLU -> step, ReLU^2 -> 4 ReLU, erf -> erf'."""
    k, d = symbolic.relu_dual()
    assert sp.simplify(d - symbolic.step_dual()) == 0
    _, d2 = symbolic.relu2_dual()
    assert sp.simplify(d2 - 4 * k) == 0
    ke, de = symbolic.erf_dual()
    assert sp.simplify(sp.diff(ke, Q12) - de) == 0
    assert ke.subs(Q12, 0) == 0  # erf is odd
    # Williams' (1997) form
    williams = 2 / sp.pi * sp.asin(2 * Q12 / sp.sqrt(sp.expand((1 + 2 * Q11) * (1 + 2 * Q22))))
    assert sp.simplify(ke - williams) == 0


def _wedge(f, q11, q12, q22):
    """E[1{u>0} 1{v>0} f(u, v)] over the exact wedge by adaptive 2-D quadrature."""
    rho = q12 / np.sqrt(q11 * q22)
    s = np.sqrt(1 - rho * rho)

    def integrand(z2, z1):
        u = np.sqrt(q11) * z1
        v = np.sqrt(q22) * (rho * z1 + s * z2)
        return f(u, v) * np.exp(-(z1 * z1 + z2 * z2) / 2) / (2 * np.pi)

    # Gaussian tails beyond |z| = 12 are below 1e-31
    val, _ = integrate.dblquad(integrand, 0, 12.0, lambda z1: max(-rho * z1 / s, -12.0), 12.0,
                               epsabs=1e-13, epsrel=1e-12)
    return val


@pytest.mark.parametrize("q", GRID)
def test_arc_cosine_kernels_vs_quadrature(q):
    step = symbolic.dual_fn("step")
    relu_k = symbolic.dual_fn("relu")
    relu2_k = symbolic.dual_fn("relu2")
    sign_k = symbolic.dual_fn("sign")
    monomials = [(step(*q), 0), (relu_k(*q)[0], 1), (relu2_k(*q)[0], 2)]
    for value, n in monomials:
        exact = _wedge(lambda u, v, n=n: (u * v) ** n, *q)
        assert value == pytest.approx(exact, rel=1e-9, abs=1e-12)
        if n > 0:
            # for continuous activations tensor Gauss-Hermite converges, if only as O(1/degree)
            # across the oblique kink (the step's discontinuity is too slow to be useful)
            act = (lambda x, n=n: np.where(x > 0, np.abs(x) ** n, 0.0))
            gh = symbolic.gauss_hermite_expectation(act, act, *q, degree=300)
            assert gh == pytest.approx(value, abs=1e-3 * np.sqrt(q[0] * q[2]) ** n)
    assert sign_k(*q) == pytest.approx(4 * step(*q) - 1, rel=1e-12, abs=1e-14)
    sign_exact = 1 - 2 * np.arccos(q[1] / np.sqrt(q[0] * q[2])) / np.pi  # P(agree) - P(differ)
    assert sign_k(*q) == pytest.approx(sign_exact, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("q", GRID)
def test_erf_dual_vs_gauss_hermite(q):
    k, d = symbolic.dual_fn("erf")(*q)
    derf = (lambda x: 2 / np.sqrt(np.pi) * np.exp(-x * x))
    assert k == pytest.approx(
        symbolic.gauss_hermite_expectation(special.erf, special.erf, *q), rel=1e-9, abs=1e-12)
    assert d == pytest.approx(symbolic.gauss_hermite_expectation(derf, derf, *q), rel=1e-9)


def test_dual_activations_use_the_derived_closed_forms():
    q11, q12, q22 = (np.array(a) for a in zip(*GRID))
    relu_k, relu_d = symbolic.dual_fn("relu")(q11, q12, q22)
    got_k, got_d = dual_activations.relu_dual(q11, q12, q22)
    np.testing.assert_allclose(got_k, relu_k, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got_d, relu_d, rtol=1e-12, atol=1e-14)

    erf_k, erf_d = symbolic.dual_fn("erf")(q11, q12, q22)
    got_k, got_d = dual_activations.erf_dual(q11, q12, q22)
    np.testing.assert_allclose(got_k, erf_k, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got_d, erf_d, rtol=1e-12)

    # a erf(b x) + c: E = a^2 k_erf(b^2 q) + c^2 and E' = a^2 b^2 k_erf'(b^2 q)
    a, b, c = 0.5, 1 / dual_activations.SIGMOID_LIKE_SCALE, 0.5
    sk, sd = symbolic.dual_fn("erf")(b * b * q11, b * b * q12, b * b * q22)
    got_k, got_d = dual_activations.sigmoid_like_dual(q11, q12, q22)
    np.testing.assert_allclose(got_k, a * a * sk + c * c, rtol=1e-12)
    np.testing.assert_allclose(got_d, a * a * b * b * sd, rtol=1e-12)

    for a, b, fn in [(0.1, 1.0, lambda *q: dual_activations.leaky_relu_dual(*q, alpha=0.1)),
                     (-1.0, 1.0, dual_activations.abs_dual),
                     (0.3, -0.7, lambda *q: dual_activations.abrelu_dual(*q, 0.3, -0.7))]:
        k, d = symbolic.abrelu_dual(a, b)
        got_k, got_d = fn(q11, q12, q22)
        np.testing.assert_allclose(got_k, symbolic.lambdify_dual(k)(q11, q12, q22), rtol=1e-12,
                                   atol=1e-14)
        np.testing.assert_allclose(got_d, symbolic.lambdify_dual(d)(q11, q12, q22), rtol=1e-12,
                                   atol=1e-14)

    got_sign, _ = dual_activations.sign_dual(q11, q12, q22)
    np.testing.assert_allclose(got_sign, symbolic.dual_fn("sign")(q11, q12, q22), rtol=1e-12,
                               atol=1e-14)


def test_lambdified_expressions_are_plain_functions_of_q():
    expr = symbolic.arc_cosine_kernel(1)
    assert expr.free_symbols == {Q11, Q12, Q22}
    f = symbolic.lambdify_dual(expr)
    # positive homogeneity of degree 2 in (q11, q12, q22) for n = 1 ... of degree n in general
    np.testing.assert_allclose(f(4.0, 1.2, 9.0), 3.0 * f(4.0 / 3, 0.4, 3.0), rtol=1e-13)
    # fully correlated: E relu(u)^2 = q/2
    np.testing.assert_allclose(f(2.0, 2.0, 2.0), 1.0, rtol=1e-13)


def test_bad_inputs():
    with pytest.raises(InvalidArgumentError, match="non-negative integer"):
        symbolic.arc_cosine_J(-1)
    with pytest.raises(InvalidArgumentError, match="non-negative integer"):
        symbolic.cho_saul_J(1.5)
    with pytest.raises(InvalidArgumentError, match="n_u"):
        symbolic.half_moment(-2, 0, True, True)
    with pytest.raises(InvalidArgumentError, match="unknown dual"):
        symbolic.dual_fn("tanh")
