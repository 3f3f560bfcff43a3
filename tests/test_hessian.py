"""dynkit.analyses.hessian against dense Hessians (jax.hessian, float64), closed forms and
error cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynkit as dk
from dynkit.analyses import hessian
from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.losses import cross_entropy
from dynkit.theory import empirical


@pytest.fixture(scope="module")
def net():
    """A 259-parameter tanh MLP on 40 points, its operator and the dense Hessian."""
    model = dk.models.mlp(5, [16, 8], 3, activation="tanh")
    params = model.init(jax.random.PRNGKey(0), dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(1), (40, 5), jnp.float64)
    y = np.arange(40) % 3
    op = hessian.hessian_operator(model, params, x, y, loss="cross_entropy")

    def loss(theta):
        return cross_entropy(model.apply(op.to_pytree(theta), x), jnp.asarray(y))

    H = np.asarray(jax.jit(jax.hessian(loss))(op.theta))
    return model, params, x, y, op, H


def test_operator_equals_dense_hessian(net):
    model, _params, _x, _y, op, H = net
    assert op.dim == model.num_params() == 259
    np.testing.assert_allclose(op.dense(), H, rtol=0, atol=1e-12 * np.abs(H).max())


@pytest.mark.slow
def test_minibatch_accumulation_equals_full_batch(net):
    model, params, x, y, op, _H = net
    small = hessian.hessian_operator(model, params, x, y, loss="cross_entropy", batch_size=7)
    v = np.random.default_rng(0).standard_normal((3, op.dim))
    np.testing.assert_allclose(small.matmat(v), op.matmat(v), rtol=1e-12, atol=1e-14)
    (l1, g1), (l2, g2) = small.value_and_gradient(), op.value_and_gradient()
    assert abs(l1 - l2) < 1e-12
    np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-15)


def test_lanczos_top_k_matches_dense(net):
    *_, op, H = net
    exact = np.linalg.eigvalsh(H)[::-1][:5]
    eig = hessian.top_eigenvalues(op, k=5)
    assert eig.converged
    np.testing.assert_allclose(eig.eigenvalues, exact, rtol=1e-8)
    for lam, v, tree in zip(eig.eigenvalues, eig.vectors, eig.eigenvectors):
        assert np.linalg.norm(H @ v - lam * v) < 1e-5 * abs(lam)
        np.testing.assert_array_equal(op.to_flat(tree), v)
    np.testing.assert_allclose(eig.vectors @ eig.vectors.T, np.eye(5), atol=1e-10)


def test_hutchinson_within_standard_error_and_exact_with_basis(net):
    *_, op, H = net
    exact = np.trace(H)
    est = hessian.trace(op, rtol=0.1, seed=1)
    assert est.converged and est.std_error <= 0.1 * abs(est.value)
    assert abs(est.value - exact) <= 3 * est.std_error
    assert est.num_probes == len(est.samples)
    basis = hessian.trace(op, probes="basis", block=259)
    assert basis.std_error == 0 and abs(basis.value - exact) < 1e-12 * abs(exact)


def test_slq_density_integrates_to_one_and_moments(net):
    *_, op, H = net
    P = op.dim
    evals = np.linalg.eigvalsh(H)
    exact = {p: np.sum(evals ** p) / P for p in (1, 2, 3, 4)}
    d = hessian.density(op, num_iter=30, num_runs=8, num_outliers=3, seed=0)
    assert abs(np.trapezoid(d.density, d.grid) - 1) < 1e-6
    np.testing.assert_allclose(d.weights.sum(axis=1), 1, atol=1e-12)
    np.testing.assert_allclose(d.outliers, evals[::-1][:3], rtol=1e-8)
    for p in (1, 2):   # random probes: each run is an unbiased estimate; 4 standard errors
        runs = np.sum(d.weights * d.nodes ** p, axis=1)
        se = runs.std(ddof=1) / np.sqrt(len(runs))
        assert abs(d.moment(p) - exact[p]) <= 4 * se
    basis = hessian.density(op, num_iter=3, probes="basis")    # 2m - 1 = 5 >= p: exact
    for p, value in exact.items():
        assert abs(basis.moment(p) - value) <= 1e-9 * abs(value) + 1e-15


@pytest.mark.slow
def test_layer_block_is_the_diagonal_block(net):
    model, params, x, y, op, H = net
    offsets = np.cumsum([0] + [int(np.prod(s)) for *_, s in op.spec])
    index = {(n, k): np.arange(a, b) for (n, k, _), a, b in zip(op.spec, offsets, offsets[1:])}
    for layers in ("fc1", ["head", "fc0"]):
        block = hessian.hessian_operator(model, params, x, y, layers=layers)
        idx = np.concatenate([index[(n, k)] for n, k, _ in block.spec])
        np.testing.assert_allclose(block.dense(), H[np.ix_(idx, idx)], atol=1e-12)
    df = hessian.layer_spectra(model, params, x, y, k=2, rtol=0.2, layers=["fc1"])
    fc1 = df[(df.layer == "fc1") & (df.metric == "lambda_1")].value.item()
    idx = np.concatenate([index[("fc1", "b")], index[("fc1", "w")]])
    assert abs(fc1 - np.linalg.eigvalsh(H[np.ix_(idx, idx)])[-1]) < 1e-8 * abs(fc1)
    assert df.metric.tolist() == ["lambda_1", "lambda_2", "trace", "trace_se"]


@pytest.mark.slow
def test_ggn_is_jt_hout_j_and_the_ntk(net):
    model, params, x, y, op, _H = net
    G = hessian.hessian_operator(model, params, x, y, ggn=True).dense()
    J = jax.jacobian(lambda t: model.apply(op.to_pytree(t), x))(op.theta).reshape(-1, op.dim)
    H_out = jax.hessian(lambda o: cross_entropy(o.reshape(40, 3), jnp.asarray(y)))(
        model.apply(params, x).ravel())
    np.testing.assert_allclose(G, J.T @ H_out @ J, atol=1e-12)
    assert np.linalg.eigvalsh(G).min() > -1e-12   # PSD, unlike H
    # MSE: G = JᵀJ / N has the nonzero eigenvalues of the full empirical NTK Θ / N.
    Gm = hessian.hessian_operator(model, params, x, y, loss="mse", ggn=True)
    top = hessian.top_eigenvalues(Gm, k=4).eigenvalues
    ntk = empirical.model_ntk_fn(model, trace_axes=())(x, None, params)
    theta = np.asarray(ntk).transpose(0, 2, 1, 3).reshape(120, 120)
    np.testing.assert_allclose(top, np.linalg.eigvalsh(theta)[::-1][:4] / 40, rtol=1e-8)


def test_linear_mse_closed_form():
    model = dk.models.mlp(6, [], 1, bias=False)
    params = model.init(jax.random.PRNGKey(2), dtype=jnp.float64)
    X = np.random.default_rng(0).standard_normal((30, 6))
    y = np.random.default_rng(1).standard_normal((30, 1))
    H = hessian.hessian_operator(model, params, X, y, loss="mse").dense()
    np.testing.assert_allclose(H, X.T @ X / 30, rtol=1e-13, atol=1e-14)
    G = hessian.hessian_operator(model, params, X, y, loss="mse", ggn=True).dense()
    np.testing.assert_allclose(G, H, atol=1e-14)


@pytest.mark.slow
def test_float32_agrees_with_float64(net):
    model, params, x, y, _op, H = net
    eig = hessian.top_eigenvalues(model, params, x, y, k=2, dtype=jnp.float32, tol=1e-4)
    assert eig.vectors.dtype == np.float32
    np.testing.assert_allclose(eig.eigenvalues, np.linalg.eigvalsh(H)[::-1][:2], rtol=1e-4)


def test_bad_input(net):
    model, params, x, y, op, _H = net
    with pytest.raises(InvalidArgumentError, match="k=260 exceeds the number of parameters"):
        hessian.top_eigenvalues(op, k=260)
    bad = jax.tree_util.tree_map(lambda a: a, params)
    bad["fc1"]["w"] = bad["fc1"]["w"].at[0, 0].set(jnp.nan)
    with pytest.raises(InvalidArgumentError, match=r"params\['fc1'\]\['w'\] contains 1 NaN"):
        hessian.trace(model, bad, x, y)
    with pytest.raises(InvalidArgumentError, match="needs integer class labels"):
        hessian.hessian_operator(model, params, x, np.zeros((40, 3)), loss="cross_entropy")
    with pytest.raises(InvalidArgumentError, match=r"labels must lie in \[0, 3\)"):
        hessian.hessian_operator(model, params, x, y + 1, loss="cross_entropy")
    with pytest.raises(ShapeMismatchError, match="do not fit the model's outputs"):
        hessian.hessian_operator(model, params, x, np.zeros((40, 2)), loss="mse")
    with pytest.raises(InvalidArgumentError, match=r"layers \['fc9'\] are not layers"):
        hessian.hessian_operator(model, params, x, y, layers=["fc0", "fc9"])
    with pytest.raises(InvalidArgumentError, match="loss must be one of"):
        hessian.hessian_operator(model, params, x, y, loss="hinge")
    with pytest.raises(ShapeMismatchError, match="x has 40 points but y"):
        hessian.hessian_operator(model, params, x, y[:5])


@pytest.mark.slow
def test_series_takes_the_checkpoint_loss_and_matches_direct_calls():
    from types import SimpleNamespace

    model = dk.models.mlp(3, [6], 2)
    x = np.random.default_rng(0).standard_normal((12, 3))
    y = np.arange(12) % 2
    run = [SimpleNamespace(model=model, params=model.init(jax.random.PRNGKey(s), jnp.float64),
                           step=5 * s, meta={"loss": loss, "epoch": s / 2})
           for s, loss in enumerate(["cross_entropy", "mse"])]
    df = hessian.hessian_series(run, (x, y), k=2, overlap_k=1, progress=False)
    assert set(df.columns) >= {"step", "epoch", "metric", "value"}
    assert sorted(set(df.metric)) == ["gradient_overlap", "hessian_lambda_2", "hessian_trace",
                                      "hessian_trace_se", "sharpness"]
    for ckpt in run:
        direct = hessian.top_eigenvalues(model, ckpt.params, x, y, k=2, loss=ckpt.meta["loss"])
        got = df[(df.step == ckpt.step)].set_index("metric").value
        assert abs(got["sharpness"] - direct.eigenvalues[0]) < 1e-8 * direct.eigenvalues[0]
        assert 0 <= got["gradient_overlap"] <= 1
    assert df[df.metric == "sharpness"].epoch.tolist() == [0.0, 0.5]


@pytest.mark.slow
def test_hessian_metric_is_registered_beside_ntk():
    from dynkit.metrics import compute_metrics, load_metrics

    assert "hessian" in load_metrics()
    data = dk.data.load("gaussian_mixture", n_train=24, n_test=4, num_classes=3, dim=2)
    model = dk.models.mlp(2, [5], 3)
    table = compute_metrics(model, model.init(jax.random.PRNGKey(0)), data, ["hessian"])
    assert table.attrs["entries"]["hessian"] == ["sharpness", "hessian_trace",
                                                 "hessian_trace_se", "gradient_overlap"]
    ntk_names = {"trace", "lambda_max", "effective_rank", "centered_alignment"}
    assert not ntk_names & set(table.metric)     # evaluable together with "ntk"


@pytest.mark.slow
def test_imported_torch_model_matches_torch_autograd(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(48, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    net = net.double().eval()
    x = torch.randn(24, 2, 6, 6, dtype=torch.float64)
    y = torch.arange(24) % 3
    torch.save(net.state_dict(), tmp_path / "net.pt")
    ckpt = dk.load_checkpoint(tmp_path / "net.pt", model=net, example_input=x[:1])
    xj = x.permute(0, 2, 3, 1).numpy()

    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    flat0 = torch.cat([p.detach().ravel() for _, p in net.named_parameters()])

    def torch_loss(flat):
        chunks = torch.split(flat, [int(np.prod(s)) for s in shapes])
        params = {n: c.reshape(s) for n, c, s in zip(names, chunks, shapes)}
        out = torch.func.functional_call(net, params, (x,))
        return torch.nn.functional.cross_entropy(out, y)

    H = torch.func.hessian(torch_loss)(flat0).detach().numpy()
    exact = np.linalg.eigvalsh(H)[::-1]
    eig = hessian.top_eigenvalues(ckpt.model, ckpt.params, xj, y.numpy(), k=3,
                                  loss="cross_entropy", tol=1e-9)
    np.testing.assert_allclose(eig.eigenvalues, exact[:3], rtol=1e-8)
    est = hessian.trace(ckpt.model, ckpt.params, xj, y.numpy(), probes="basis", block=256)
    assert abs(est.value - np.trace(H)) < 1e-9 * np.abs(H).sum()


def _planted(eigenvalues, seed=0):
    """The operator H = XᵀX/N = Q diag(λ) Qᵀ of a linear MSE model (N = P points)."""
    P = len(eigenvalues)
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((P, P)))
    X = np.sqrt(P) * (Q * np.sqrt(eigenvalues)) @ Q.T
    model = dk.models.mlp(P, [], 1, bias=False)
    params = {"head": {"w": jnp.zeros((P, 1), jnp.float64)}}
    return hessian.hessian_operator(model, params, X, np.zeros((P, 1)), loss="mse")


def test_density_detects_planted_outliers():
    """A bulk of 290 eigenvalues in [0, 1] and C = 10 planted spikes at 3 .. 12: the spikes
    come back as the outliers (exactly: isolated eigenvalues converge), the bulk has none."""
    rng = np.random.default_rng(0)
    C = 10
    spikes = np.arange(3.0, 3.0 + C)
    bulk = rng.uniform(0, 1, 290) ** 2
    d = hessian.density(_planted(np.r_[spikes, bulk]), num_iter=80, num_runs=2, seed=3)
    np.testing.assert_allclose(d.outliers, spikes[::-1], rtol=1e-8)
    assert d.bulk_edge <= bulk.max() + 1e-8
    assert abs(np.trapezoid(d.density, d.grid) - 1) < 1e-6
    fixed = hessian.density(_planted(np.r_[spikes, bulk]), num_iter=80, num_outliers=4)
    np.testing.assert_allclose(fixed.outliers, spikes[::-1][:4], rtol=1e-8)
    pure = hessian.density(_planted(rng.uniform(0, 1, 300) ** 2), num_iter=80, seed=1)
    assert len(pure.outliers) == 0 and pure.bulk_edge <= 1
    assert hessian.outlier_ritz(np.r_[9.0, 5.0, np.linspace(1, 0, 20)]) == 2
    assert hessian.outlier_ritz(np.r_[9.0, 5.0, np.linspace(1, 0, 20)], gap=100) == 0


@pytest.mark.slow
def test_class_mean_part_of_the_ggn(net):
    """G_class from C² vjps equals Σ W δδᵀ built from per-sample Jacobians, and G − G_class is
    positive semidefinite (the within-class part), so λ_k(G_class) <= λ_k(G)."""
    from dynkit.analyses.hessian_classes import class_mean_eigenvalues

    model, params, x, y, op, _H = net
    ev = class_mean_eigenvalues(model, params, x, y, batch_size=20)
    J = np.asarray(jax.jacobian(lambda t: model.apply(op.to_pytree(t), x))(op.theta))  # N,C,P
    p = np.asarray(jax.nn.softmax(model.apply(params, x)))
    G_class = np.zeros((op.dim, op.dim))
    for c in range(3):
        for c2 in range(3):
            idx = np.flatnonzero(y == c)
            w = p[idx, c2] / len(x)
            g = np.einsum("io,iop->ip", np.eye(3)[c2] - p[idx], J[idx])
            delta = w @ g / w.sum()
            G_class += w.sum() * np.outer(delta, delta)
    np.testing.assert_allclose(ev, np.linalg.eigvalsh(G_class)[::-1][:9], atol=1e-12)
    G = hessian.hessian_operator(model, params, x, y, ggn=True).dense()
    assert np.linalg.eigvalsh(G - G_class).min() > -1e-12
    assert np.all(ev <= np.linalg.eigvalsh(G)[::-1][:9] + 1e-12)
