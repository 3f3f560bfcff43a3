"""Checks of dynkit.theory.two_layer against identities and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.theory import stax
from dynkit.theory import two_layer as tl


def _sphere(key, n, d):
    z = jax.random.normal(key, (n, d))
    return z / jnp.linalg.norm(z, axis=1, keepdims=True)


@pytest.mark.slow
def test_balance_conserved_under_relu_gradient_flow():
    # d/dt a_i^2 = d/dt |w_i|^2 = -2 lr_scale * alpha/m^gamma * a_i E[l' relu(w_i.x)] for a
    # 1-homogeneous neuron, so a_i^2 - |w_i|^2 is constant per neuron (Du, Hu & Lee 2018).
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 2))
    y = jax.nn.relu(x[:, 0]) - 0.5 * jax.nn.relu(-x[:, 1])
    net = tl.TwoLayer(width=6, gamma=1.0, alpha=2.0)
    p = tl.init(jax.random.PRNGKey(10), net, 2)
    tr = tl.gradient_flow(p, net, x, y, np.linspace(0, 3, 31), rtol=1e-10, atol=1e-12)
    w, a = np.asarray(tr.params["w"]), np.asarray(tr.params["a"])
    pattern = np.einsum("rmd,nd->rmn", w, np.asarray(x)) > 0
    assert np.sum(pattern[1:] != pattern[:-1]) >= 2          # ReLU kinks were crossed
    assert tr.history["train_loss"].iloc[-1] < 0.2 * tr.history["train_loss"].iloc[0]
    balance = a ** 2 - np.sum(w ** 2, axis=2)
    # local error 1e-10 relative per step over a few hundred steps: drift stays below 1e-8
    np.testing.assert_allclose(balance, np.broadcast_to(balance[0], balance.shape), atol=1e-8)


@pytest.mark.slow
def test_dopri5_matches_closed_form():
    a = jnp.array([[0.0, 1.0], [-1.0, -0.1]])
    ts = jnp.linspace(0.0, 10.0, 6)
    ys, _ = tl.dopri5(lambda y: a @ y, jnp.array([1.0, 0.0]), ts, rtol=1e-10, atol=1e-12)
    exact = np.stack([np.asarray(jax.scipy.linalg.expm(a * t) @ jnp.array([1.0, 0.0]))
                      for t in ts])
    np.testing.assert_allclose(ys, exact, atol=1e-8)


@pytest.mark.slow
def test_relu_ntk_matches_stax():
    # stax Dense(W_std=s) in NTK parameterization equals our init with s_w = s, s_a = 1 when
    # s^2 = d (its first-layer NTK carries s^2/d, ours carries s_a^2 = 1).
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    _, _, kernel_fn = stax.serial(stax.Dense(64, W_std=np.sqrt(3.0)), stax.Relu(),
                                  stax.Dense(1, W_std=1.0))
    np.testing.assert_allclose(tl.relu_ntk(x, x, np.sqrt(3.0), 1.0), kernel_fn(x, x, "ntk"),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_wide_ntk_scaling_approaches_kernel_regression():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x, xt = _sphere(k1, 6, 3), _sphere(k2, 20, 3)
    y = jnp.sin(2 * x[:, 0]) + x[:, 1]
    ref = tl.ntk_predict(x, y, xt)
    errs = {}
    for m in (128, 4096):
        net = tl.TwoLayer(width=m, gamma=0.5)
        p = tl.init(jax.random.PRNGKey(3), net, 3, symmetric=True)    # f_0 = 0
        tr = tl.gd(p, net, x, y, lr=1.0, steps=1000, record_every=1000)
        assert tr.history["train_loss"].iloc[-1] < 1e-6     # prediction error O(1e-3)
        errs[m] = float(jnp.linalg.norm(tl.apply(tr.final, net, xt) - ref) / jnp.linalg.norm(ref))
    # the empirical kernel deviates from its limit by O(1/sqrt(m)) at init and moves by
    # O(1/sqrt(m)) in training (Jacot et al. 2018; Lee et al. 2019): allow 3/sqrt(m).
    assert errs[4096] < 3 / np.sqrt(4096)
    assert errs[4096] < errs[128]


@pytest.mark.slow
def test_trainers_run_and_record():
    x = jax.random.normal(jax.random.PRNGKey(0), (40, 3))
    y = jnp.tanh(x[:, 0])
    net = tl.TwoLayer(width=50, gamma=1.0, bias=True)
    p = tl.init(jax.random.PRNGKey(1), net, 3)
    key = jax.random.PRNGKey(2)
    sgd = tl.sgd(p, net, x, y, lr=0.2, steps=200, batch_size=8, key=key, record_every=50)
    noisy = tl.langevin(p, net, x, y, lr=0.2, steps=200, key=key, temperature=1e-4, weight_decay=1e-3,
                        record_every=50)

    def sample(k, b):
        xs = jax.random.normal(k, (b, 3))
        return xs, jnp.tanh(xs[:, 0])

    online = tl.online_sgd(p, net, sample, lr=0.2, steps=200, batch_size=8, key=key, x=x, y=y,
                           record_every=50)
    for tr in (sgd, noisy, online):
        h = tr.history
        assert list(h["step"]) == [0, 50, 100, 150, 200]
        assert h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]
    # with temperature 0 and no L2, Langevin on the full batch is plain GD
    a = tl.langevin(p, net, x, y, lr=0.2, steps=20, key=key, temperature=0.0, weight_decay=0.0)
    b = tl.gd(p, net, x, y, lr=0.2, steps=20)
    np.testing.assert_allclose(a.final["w"], b.final["w"], rtol=1e-12)


@pytest.mark.slow
def test_gd_step_is_scaled_gradient():
    # one GD step moves theta by lr * m^(2 gamma - 1) / alpha^2 * grad L
    x = jax.random.normal(jax.random.PRNGKey(0), (10, 2))
    y = x[:, 0]
    net = tl.TwoLayer(width=7, gamma=0.75, alpha=3.0)
    p = tl.init(jax.random.PRNGKey(1), net, 2)
    tr = tl.gd(p, net, x, y, lr=0.1, steps=1)
    g = jax.grad(tl.loss)(p, net, x, y)
    scale = 0.1 * 7 ** 0.5 / 9.0
    np.testing.assert_allclose(tr.final["a"], p["a"] - scale * g["a"], rtol=1e-12)
    np.testing.assert_allclose(tr.final["w"], p["w"] - scale * g["w"], rtol=1e-12)


@pytest.mark.slow
def test_neuron_table_and_effective_rank():
    x = jax.random.normal(jax.random.PRNGKey(0), (20, 2))
    net = tl.TwoLayer(width=4)
    p = tl.init(jax.random.PRNGKey(1), net, 2)
    tr = tl.gd(p, net, x, x[:, 0], lr=0.5, steps=10, record_every=5)
    df = tl.neurons(tr, x, directions={"e0": np.array([1.0, 0.0])})
    assert len(df) == 3 * 4
    first = df[df["step"] == 0]
    np.testing.assert_allclose(first["dist"], 0.0)
    np.testing.assert_allclose(first["cos_e0"], first["u_0"], rtol=1e-12)   # cos to e_0 = u_0
    np.testing.assert_allclose(first["norm_w"], np.linalg.norm(p["w"], axis=1), rtol=1e-12)
    pre = np.asarray(x @ p["w"].T)
    np.testing.assert_allclose(first["active"], np.mean(pre > 0, axis=0))
    # effective rank: exp(entropy) of normalized singular values
    assert float(tl.effective_rank(jnp.diag(jnp.array([1.0, 1.0, 1.0])))) == pytest.approx(3.0)
    assert float(tl.effective_rank(jnp.outer(jnp.ones(4), jnp.arange(3.0)))) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs", [{"width": -3}, {"width": 0}, {"width": 2.5},
                                    {"width": 4, "gamma": 0.3}, {"width": 4, "gamma": 1.5},
                                    {"width": 4, "alpha": float("nan")},
                                    {"width": 4, "activation": "sigmoid"}])
def test_bad_architecture(kwargs):
    with pytest.raises(InvalidArgumentError):
        tl.TwoLayer(**kwargs)


def test_bad_training_arguments():
    x = jnp.ones((4, 2))
    net = tl.TwoLayer(width=3)
    p = tl.init(jax.random.PRNGKey(0), net, 2)
    for lr in (float("nan"), float("inf"), -1.0, 0.0):
        with pytest.raises(InvalidArgumentError, match="lr"):
            tl.gd(p, net, x, x[:, 0], lr=lr, steps=2)
    with pytest.raises(ShapeMismatchError):
        tl.gd(p, net, x, jnp.ones(3), lr=0.1, steps=2)
    with pytest.raises(InvalidArgumentError):
        tl.gd(p, net, x.at[0, 0].set(jnp.nan), x[:, 0], lr=0.1, steps=2)
    with pytest.raises(InvalidArgumentError):
        tl.gradient_flow(p, net, x, x[:, 0], [0.0, 1.0, 0.5])
    with pytest.raises(InvalidArgumentError):
        tl.init(jax.random.PRNGKey(0), tl.TwoLayer(width=3), 2, symmetric=True)


# --- knots of univariate piecewise-linear functions (dynkit.theory.knots) ----------------

def test_knots_of_hand_built_network():
    from dynkit.theory import knots

    # relu(x) - 2 relu(x - 1) + relu(x - 2) + relu(-x + 3)/2 (a hat plus a ramp down at 3)
    a, w, b = [1.0, -2.0, 1.0, 0.5], [1.0, 1.0, 1.0, -1.0], [0.0, -1.0, -2.0, 3.0]
    k = knots.knots_of_network(a, w, b)
    np.testing.assert_allclose(k.positions, [0, 1, 2, 3])
    np.testing.assert_allclose(k.jumps, [1, -2, 1, 0.5])
    # two neurons that cancel have no knot; two that coincide merge into one
    k = knots.knots_of_network([1.0, -1.0, 1.0, 1.0], [2.0, 2.0, 1.0, 1.0],
                               [1.0, 1.0, -1.0, -1.0 - 1e-6], merge=1e-3)
    np.testing.assert_allclose(k.positions, [1.0 + 5e-7], atol=1e-9)
    np.testing.assert_allclose(k.jumps, [2.0])


def test_knots_of_samples_and_intervals():
    from dynkit.theory import knots

    xs = np.linspace(-1, 4, 501)                         # knots fall between grid points
    f = np.maximum(xs - 0.013, 0) - 2 * np.maximum(xs - 1.517, 0) + np.maximum(xs - 2.004, 0)
    k = knots.knots_of_samples(xs, f, tol=0.1, merge=0.011)
    np.testing.assert_allclose(k.positions, [0.013, 1.517, 2.004], atol=0.01)
    np.testing.assert_allclose(k.jumps, [1, -2, 1], atol=1e-9)
    table = knots.knots_between(k, [-1.0, 1.0, 3.0, 1.0])
    assert list(table["knots"]) == [1, 2]
    assert list(table["left"]) == [-1.0, 1.0]
    with pytest.raises(InvalidArgumentError):
        knots.knots_of_samples(xs[::-1], f, tol=0.1)
