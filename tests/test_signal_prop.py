"""Tests of dynkit.theory.signal_prop against closed forms and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import erf
from scipy import optimize

from dynkit.errors import InvalidArgumentError
from dynkit.theory import signal_prop as sp

relu = jax.nn.relu


def erf_length_closed(q, sw2, sb2):
    """Williams (1997): E erf(sqrt(q) z)^2 = (2/pi) arcsin(2q / (1 + 2q))."""
    return sw2 * 2 / np.pi * np.arcsin(2 * q / (1 + 2 * q)) + sb2


def erf_corr_closed(c, q, sw2, sb2):
    return (sw2 * 2 / np.pi * np.arcsin(2 * q * c / (1 + 2 * q)) + sb2) / q


def erf_chi1_closed(q, sw2):
    """phi' = (2/sqrt(pi)) exp(-x^2): E phi'(sqrt(q) z)^2 = (4/pi) / sqrt(1 + 4q)."""
    return sw2 * 4 / np.pi / np.sqrt(1 + 4 * q)


def relu_corr_closed(c, q, sw2, sb2):
    """Arc-cosine kernel of order 1 (Cho & Saul 2009): E relu(u1) relu(u2) = q J_1(theta)/2pi."""
    th = np.arccos(c)
    return (sw2 * q * (np.sin(th) + (np.pi - th) * c) / (2 * np.pi) + sb2) / q


def test_relu_closed_forms():
    sw2, sb2 = 1.5, 0.05
    for q in (0.3, 1.0, 4.0):
        assert sp.length_map(q, sw2, sb2, relu) == pytest.approx(sw2 * q / 2 + sb2, rel=1e-12)
    qs = sp.q_star(sw2, sb2, relu)
    assert qs == pytest.approx(sb2 / (1 - sw2 / 2), rel=1e-10)
    assert sp.chi1(sw2, sb2, relu) == pytest.approx(sw2 / 2, rel=1e-12)
    for c in (-0.5, 0.2, 0.9):
        # the oblique kink makes tensor Gauss-Hermite converge as O(1/degree) (module docstring)
        errs = [abs(sp.correlation_map(c, qs, sw2, sb2, relu, degree=d)
                    - relu_corr_closed(c, qs, sw2, sb2)) for d in (50, 200)]
        assert errs[1] < errs[0] / 2
        assert errs[1] < 5e-4
    # no finite length fixed point in the chaotic/exploding ReLU regime
    assert sp.q_star(2.5, 0.1, relu) == np.inf


def test_relu_critical_point_is_he_init():
    df = sp.critical_line(relu, [0.0])
    assert list(df.columns) == ["sb2", "sw2", "q_star"]
    assert df.sw2.iloc[0] == pytest.approx(2.0, rel=1e-9)


@pytest.mark.parametrize("sw2,sb2", [(1.2, 0.1), (3.0, 0.3)])
def test_erf_closed_forms(sw2, sb2):
    for q in (0.1, 0.7, 3.0):
        assert sp.length_map(q, sw2, sb2, erf) == pytest.approx(erf_length_closed(q, sw2, sb2),
                                                                rel=1e-10)
    qs = sp.q_star(sw2, sb2, erf)
    ref = optimize.brentq(lambda q: erf_length_closed(q, sw2, sb2) - q, 1e-9, 100.0, xtol=1e-14)
    assert qs == pytest.approx(ref, rel=1e-9)
    assert sp.chi1(sw2, sb2, erf) == pytest.approx(erf_chi1_closed(ref, sw2), rel=1e-9)
    for c in (-0.6, 0.0, 0.5, 0.95):
        assert sp.correlation_map(c, qs, sw2, sb2, erf) == pytest.approx(
            erf_corr_closed(c, qs, sw2, sb2), rel=1e-8)


def test_erf_critical_line_matches_closed_form():
    sb2_grid = [0.0, 0.1, 0.5]
    df = sp.critical_line(erf, sb2_grid)
    # sb2 = 0: q* = 0 below the transition, chi1 = 4 sw2 / pi. Above it chi1 - 1 grows only
    # quadratically in (sw2 - pi/4), so the root is conditioned to ~sqrt(round-off).
    assert df.sw2.iloc[0] == pytest.approx(np.pi / 4, rel=1e-6)

    def closed(sb2):
        def f(sw2):
            q = optimize.brentq(lambda q: erf_length_closed(q, sw2, sb2) - q, 1e-12, 1e3,
                                xtol=1e-15)
            return erf_chi1_closed(q, sw2) - 1

        return optimize.brentq(f, 0.5, 20.0, xtol=1e-13)

    for sb2, sw2 in zip(sb2_grid[1:], df.sw2.iloc[1:]):
        assert sw2 == pytest.approx(closed(sb2), rel=1e-7)


def test_tanh_critical_point_without_bias():
    df = sp.critical_line(jnp.tanh, [0.0, 0.05])
    assert df.sw2.iloc[0] == pytest.approx(1.0, abs=1e-6)
    # with bias the transition moves to larger weight variance (Poole et al. 2016, Fig. 2)
    assert df.sw2.iloc[1] > 1.0 + 0.1


@pytest.mark.parametrize("phi", [jnp.tanh, erf, jnp.sin], ids=["tanh", "erf", "sin"])
def test_correlation_map_fixed_point_and_slope(phi):
    sw2, sb2 = 1.7, 0.2
    qs = sp.q_star(sw2, sb2, phi)
    assert sp.length_map(qs, sw2, sb2, phi) == pytest.approx(qs, rel=1e-10)
    assert sp.correlation_map(1.0, qs, sw2, sb2, phi) == pytest.approx(1.0, rel=1e-10)
    h = 1e-3
    c0, c1, c2 = (sp.correlation_map(1 - k * h, qs, sw2, sb2, phi) for k in (0, 1, 2))
    slope = (3 * c0 - 4 * c1 + c2) / (2 * h)  # second-order one-sided difference
    assert sp.chi1(sw2, sb2, phi) == pytest.approx(slope, rel=1e-4)
    scales = sp.depth_scales(sw2, sb2, phi)
    dq = 1e-4
    lslope = (sp.length_map(qs + dq, sw2, sb2, phi) - sp.length_map(qs - dq, sw2, sb2, phi)) / (
        2 * dq)
    assert scales.chi_q == pytest.approx(lslope, rel=1e-6)
    assert scales.xi_q == pytest.approx(-1 / np.log(lslope), rel=1e-6)


def test_depth_scales_ordered_and_chaotic():
    ordered = sp.depth_scales(1.0, 0.05, jnp.tanh)
    assert ordered.chi1 < 1 and ordered.c_star == 1.0
    assert ordered.xi_c == pytest.approx(-1 / np.log(ordered.chi1), rel=1e-12)
    chaotic = sp.depth_scales(3.0, 0.05, jnp.tanh)
    assert chaotic.chi1 > 1 and chaotic.c_star < 1
    q, c = chaotic.q_star, chaotic.c_star
    assert sp.correlation_map(c, q, 3.0, 0.05, jnp.tanh) == pytest.approx(c, abs=1e-10)
    h = 1e-4
    slope = (sp.correlation_map(c + h, q, 3.0, 0.05, jnp.tanh)
             - sp.correlation_map(c - h, q, 3.0, 0.05, jnp.tanh)) / (2 * h)
    assert chaotic.chi_c == pytest.approx(slope, rel=1e-6)
    assert 0 < chaotic.chi_c < 1  # c* is attracting
    assert chaotic.xi_c == pytest.approx(-1 / np.log(slope), rel=1e-5)


def test_depth_scales_table_is_tidy():
    df = sp.depth_scales_table(jnp.tanh, [0.8, 3.0], [0.05])
    assert len(df) == 2 and list(df.sw2) == [0.8, 3.0]
    one = sp.depth_scales(3.0, 0.05, jnp.tanh)
    assert df.iloc[1].xi_c == pytest.approx(one.xi_c, rel=1e-12)
    # the correlation depth scale is longer near the transition than deep in the ordered phase
    assert df.iloc[0].xi_c < sp.depth_scales(1.7, 0.05, jnp.tanh).xi_c


def test_bad_inputs():
    with pytest.raises(InvalidArgumentError, match="sw2"):
        sp.q_star(-1.0, 0.0, jnp.tanh)
    with pytest.raises(InvalidArgumentError, match="c must"):
        sp.correlation_map(1.5, 1.0, 1.0, 0.0, jnp.tanh)
    # the activation argument is named ``activation`` (issue #12, one vocabulary; was ``phi``)
    with pytest.raises(InvalidArgumentError, match="activation"):
        sp.chi1(1.0, 0.0, "tanh")
    with pytest.raises(InvalidArgumentError, match="q must"):
        sp.length_map(np.nan, 1.0, 0.0, jnp.tanh)
    with pytest.raises(InvalidArgumentError, match="sw2_range"):
        sp.critical_line(jnp.tanh, [0.0], sw2_range=(2.0, 1.0))


def test_fixed_point_near_the_critical_line_without_x64():
    """The quadrature runs in float64 even where JAX's default is float32 (as in the CLI: the
    test session enables x64). Just inside the chaotic phase (chi1 - 1 = 4e-4) c* - 1 is
    about 2e-3 and float32 rounding of the correlation map used to hide it (the full-size
    edge-of-chaos figure stopped with 'no stable correlation fixed point')."""
    import subprocess
    import sys

    point = (1.864406779661017, 0.07)
    code = ("import jax, jax.numpy as jnp\n"
            "from dynkit.theory import signal_prop as sp\n"
            "assert not jax.config.jax_enable_x64\n"
            f"print(repr(sp.c_star({point[0]!r}, {point[1]!r}, jnp.tanh, 200)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    here = sp.c_star(*point, jnp.tanh, 200)
    assert 0.99 < here < 1.0
    assert float(out.stdout.strip()) == pytest.approx(here, rel=1e-12)
    q = sp.q_star(*point, jnp.tanh, 200)
    assert sp.correlation_map(here, q, *point, jnp.tanh, 200) == pytest.approx(here, abs=1e-12)
