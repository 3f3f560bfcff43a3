"""Cheaper Hutchinson probes of dynkit.analyses.hessian: forward-over-forward quadratic forms,
one linearization per block (``share_primal``) and the deflated trace, against dense float64
Hessians and the plain per-probe products."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynkit as dk
from dynkit.analyses import hessian
from dynkit.errors import InvalidArgumentError
from dynkit.losses import cross_entropy


@pytest.fixture(scope="module")
def mlp():
    """A 75-parameter tanh MLP on 30 points, its operator and the dense Hessian (float64)."""
    model = dk.models.mlp(5, [8], 3, activation="tanh")
    params = model.init(jax.random.PRNGKey(0), dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(1), (30, 5), jnp.float64)
    y = np.arange(30) % 3
    op = hessian.hessian_operator(model, params, x, y, loss="cross_entropy", batch_size=16)

    def loss(theta):
        return cross_entropy(model.apply(op.to_pytree(theta), x), jnp.asarray(y))

    return model, params, x, y, op, np.asarray(jax.jit(jax.hessian(loss))(op.theta))


def test_quadratic_forms_equal_dense_hessian_and_ggn(mlp):
    model, params, x, y, op, H = mlp
    V = np.random.default_rng(0).standard_normal((4, op.dim))
    exact = np.einsum("ij,jk,ik->i", V, H, V)
    np.testing.assert_allclose(op.quadratic_forms(V), exact, rtol=1e-10)
    ggn = hessian.hessian_operator(model, params, x, y, loss="cross_entropy", ggn=True)
    G = ggn.dense()
    np.testing.assert_allclose(ggn.quadratic_forms(V), np.einsum("ij,jk,ik->i", V, G, V),
                               rtol=1e-10)


def test_forward_trace_equals_hvp_trace_probe_by_probe(mlp):
    *_, op, H = mlp
    plain = hessian.trace(op, rtol=0.05, seed=3)
    forward = hessian.trace(op, rtol=0.05, seed=3, method="forward")
    assert forward.num_probes == plain.num_probes
    np.testing.assert_allclose(forward.samples, plain.samples, rtol=1e-10, atol=1e-12)
    basis = hessian.trace(op, probes="basis", method="forward", block=75)
    assert abs(basis.value - np.trace(H)) < 1e-10 * abs(np.trace(H))


def test_deflated_trace_exact_at_full_rank_and_within_se(mlp):
    *_, op, H = mlp
    exact = np.trace(H)
    evals, evecs = np.linalg.eigh(H)   # k = P (Lanczos stops early on repeated eigenvalues)
    every = hessian.Eigen(evals[::-1], [], evecs[:, ::-1].T, np.zeros(op.dim), True, 0)
    full = hessian.trace(op, deflate=every, min_probes=2, max_probes=2, method="forward")
    assert abs(full.value - exact) < 1e-9 * abs(exact)
    assert abs(full.deflated - exact) < 1e-9 * abs(exact) and full.std_error < 1e-9 * abs(exact)
    eig = hessian.top_eigenvalues(op, k=3)
    part = hessian.trace(op, deflate=eig, rtol=0.05, seed=1)
    np.testing.assert_allclose(part.deflated, evals[-3:].sum(), rtol=1e-8)
    assert part.converged and abs(part.value - exact) <= 4 * part.std_error


def test_deflation_reduces_the_standard_error_with_outliers():
    """Linear model, MSE: H = XᵀX/N with 3 outliers (100, 60, 30) over a bulk in [0.5, 1.5],
    in a random basis; the same 200 probes with and without deflating the top 3."""
    rng = np.random.default_rng(0)
    d, n = 40, 200
    spectrum = np.r_[100.0, 60.0, 30.0, np.linspace(0.5, 1.5, d - 3)]
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    x = rng.standard_normal((n, d))
    x = x @ np.linalg.inv(np.linalg.cholesky(x.T @ x / n)).T      # whitened: XᵀX/N = I
    x = x @ basis @ np.diag(np.sqrt(spectrum)) @ basis.T          # XᵀX/N = B diag(s) Bᵀ
    model = dk.models.mlp(d, [], 1, bias=False)
    params = {"head": {"w": jnp.zeros((d, 1), jnp.float64)}}
    op = hessian.hessian_operator(model, params, jnp.asarray(x), jnp.zeros((n, 1)), loss="mse",
                                  dtype=np.float64)
    H = op.dense()
    np.testing.assert_allclose(np.linalg.eigvalsh(H), np.sort(spectrum), rtol=1e-10)
    opts = {"min_probes": 200, "max_probes": 200, "seed": 2}
    plain = hessian.trace(op, **opts)
    deflated = hessian.trace(op, deflate=3, **opts)
    exact = spectrum.sum()
    assert abs(plain.value - exact) <= 4 * plain.std_error
    assert abs(deflated.value - exact) <= 4 * deflated.std_error
    assert deflated.std_error < plain.std_error / 10
    # the deflated probe variance is Hutchinson's 2 Σ_{i≠j} (ΠHΠ)_ij² (Monte Carlo, 200 probes)
    Q = np.linalg.eigh(H)[1][:, -3:]
    PHP = (np.eye(d) - Q @ Q.T) @ H @ (np.eye(d) - Q @ Q.T)
    theory = 2 * (np.sum(PHP ** 2) - np.sum(np.diag(PHP) ** 2))
    assert 0.6 < np.var(deflated.samples, ddof=1) / theory < 1.6


@pytest.mark.slow
def test_share_primal_block_equals_columns_on_a_cnn():
    model = dk.models.cnn((6, 6, 1), (3, 4), 3, pool="avg", readout="global_avgpool")
    params = model.init(jax.random.PRNGKey(0), dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(1), (10, 6, 6, 1), jnp.float64)
    y = np.arange(10) % 3
    opts = {"loss": "cross_entropy", "batch_size": 5}
    op = hessian.hessian_operator(model, params, x, y, **opts)
    shared = hessian.hessian_operator(model, params, x, y, share_primal=True, **opts)
    V = np.random.default_rng(0).standard_normal((3, op.dim))
    columns = np.stack([np.asarray(op.matvec(v)) for v in V])
    np.testing.assert_allclose(shared.matmat(V), columns, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(op.quadratic_forms(V), np.sum(V * columns, axis=1), rtol=1e-10)
    a = hessian.trace(op, block=3, min_probes=6, max_probes=6)
    b = hessian.trace(shared, block=3, min_probes=6, max_probes=6)
    np.testing.assert_allclose(b.samples, a.samples, rtol=1e-12)


def test_bad_trace_options(mlp):
    *_, op, _H = mlp
    with pytest.raises(InvalidArgumentError, match="method"):
        hessian.trace(op, method="backward")
    with pytest.raises(InvalidArgumentError, match="deflate"):
        hessian.trace(op, probes="basis", deflate=2)
    eig = hessian.top_eigenvalues(op, k=2)
    small = hessian.hessian_operator(op.model, op.params, op.x, op.y, layers="head")
    with pytest.raises(InvalidArgumentError, match="do not fit"):
        hessian.trace(small, deflate=eig)


def test_trace_method_reaches_series_metrics_and_layer_spectra(mlp):
    # the same Rademacher probes either way: the traces agree to rounding, per layer too
    model, params, x, y, _, _ = mlp
    kw = {"loss": "cross_entropy", "rtol": 0.2, "max_probes": 20}
    a = hessian.hessian_metrics(model, params, x, y, **kw)
    b = hessian.hessian_metrics(model, params, x, y, trace_method="forward", **kw)
    for key in ("hessian_trace", "hessian_trace_se", "sharpness"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-10)
    la = hessian.layer_spectra(model, params, x, y, loss="cross_entropy", rtol=0.2)
    lb = hessian.layer_spectra(model, params, x, y, loss="cross_entropy", rtol=0.2,
                               trace_method="forward")
    np.testing.assert_allclose(lb.value, la.value, rtol=1e-10)
    with pytest.raises(InvalidArgumentError, match="method"):
        hessian.hessian_metrics(model, params, x, y, trace_method="backward", **kw)
