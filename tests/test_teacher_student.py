"""Teacher-student ODEs checked against Monte Carlo integrals and an online-SGD simulation."""

import jax
import numpy as np
import pytest

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.theory import teacher_student as ts


@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_integrals_match_monte_carlo(activation):
    from scipy.special import erf

    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 3))
    c = a @ a.T / 3 + 0.3 * np.eye(3)
    z = rng.standard_normal((400_000, 3)) @ np.linalg.cholesky(c).T
    if activation == "erf":
        g, dg = erf(z / np.sqrt(2)), np.sqrt(2 / np.pi) * np.exp(-z ** 2 / 2)
    else:
        g, dg = np.maximum(z, 0), (z > 0) * 1.0
    got = ts.integrals(c, activation, mc_samples=1 << 15)
    n = len(z)
    mc = {"I2": g.T @ g / n, "J2": dg.T @ dg / n,
          "I3": np.einsum("sa,sb,sc->abc", dg, z, g) / n,
          "I4": np.einsum("sa,sb,sc,sd->abcd", dg, dg, g, g) / n}
    # Monte Carlo standard error ~ 1/sqrt(4e5) = 1.6e-3 (and ~6e-3 for the relu I4 inside)
    tol = {"I2": 6e-3, "J2": 6e-3, "I3": 8e-3, "I4": 8e-3 if activation == "erf" else 2e-2}
    for name, ref in mc.items():
        np.testing.assert_allclose(got[name], ref, atol=tol[name], err_msg=name)


def test_ode_matches_online_sgd_at_d500():
    # K = M = 2, erf, lr = 1, both layers trained, teacher v = (1, 0.6) (Goldt et al. 2019):
    # fast fall, then the long symmetric plateau. The ODE starts from each seed's measured
    # initial order parameters; at N = 500 finite-size fluctuations are O(1/sqrt(N)) ~ 5%, so
    # we allow |eps_sim - eps_ode| <= 0.15 eps_ode + 1e-3 at every time (3 seeds averaged).
    # (The plateau *escape* time fluctuates strongly from run to run at finite N; see the
    # teacher-student-ode figure.)
    times = np.linspace(0, 80, 17)
    kw = {"lr": 1.0, "times": times}
    sim = ts.simulate(jax.random.PRNGKey(0), dim=500, student=2, teacher=2, seeds=3,
                      v_teacher=[1.0, 0.6], **kw)
    ode = np.mean([ts.ode(s0, **kw)["eg"] for s0 in sim.initial], 0)
    simm = sim.history.groupby("time")["eg"].mean().to_numpy()
    assert np.all(np.abs(simm - ode) <= 0.15 * ode + 1e-3)
    assert ode[2] < 0.1 * ode[0]                          # fast initial fall ...
    assert abs(ode[16] - ode[8]) < 0.25 * ode[8]          # ... into a plateau


def test_generalisation_error_perfect_student_is_zero_and_noise_floor():
    t = np.eye(2)
    s = ts.State(Q=t, R=t, T=t, v=np.ones(2), v_teacher=np.ones(2))
    assert ts.generalisation_error(s) == pytest.approx(0.0, abs=1e-14)
    # a fixed point of the noiseless ODE
    df = ts.ode(s, lr=0.5, times=[0.0, 5.0])
    assert df["eg"].iloc[-1] == pytest.approx(0.0, abs=1e-10)


def test_bad_arguments():
    with pytest.raises(ShapeMismatchError):
        ts.State(Q=np.eye(2), R=np.eye(2), T=np.eye(3), v=np.ones(2), v_teacher=np.ones(2))
    s = ts.State(Q=np.eye(2), R=np.zeros((2, 2)), T=np.eye(2), v=np.ones(2),
                 v_teacher=np.ones(2))
    with pytest.raises(InvalidArgumentError):
        ts.ode(s, lr=float("nan"), times=[0, 1])
    with pytest.raises(InvalidArgumentError):
        ts.ode(s, lr=1.0, times=[0, 1], activation="tanh")
    with pytest.raises(InvalidArgumentError):
        ts.simulate(jax.random.PRNGKey(0), dim=-5, student=2, teacher=2, lr=1.0, times=[0, 1])
