"""Monte Carlo checks of dynkit.theory.stax: finite random networks vs infinite-width kernels.

Error model. For D independent draws of a network of width n, the empirical kernel
``K_d = h(x1) . h(x2) / n`` (or the empirical NTK) has mean ``E K`` and standard error
``se = std(K_d) / sqrt(D)``. For one hidden layer after the (exactly Gaussian) input layer,
and for a linear readout / residual / concat on top of it, ``E K`` equals the analytic kernel
exactly, so we require ``|mean - K| <= 5 se`` entrywise (plus 1e-9 for entries that are
deterministic, e.g. the Sign diagonal). Deeper or normalized stacks have an O(1/n)
finite-width bias (Yaida 2020; Hanin & Nica 2019); there we allow ``5 se + 4 max|K| / n``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynkit.theory import dual_activations as duals
from dynkit.theory import stax

KEY = jax.random.PRNGKey(0)


def _inputs(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


def mc_nngp(net, x, draws, key=KEY):
    """Mean and standard error over ``draws`` random networks of ``h h^T / C`` (features
    flattened; for spatial outputs, the per-pixel-pair covariance in NT layout)."""
    init_fn, apply_fn, _ = net

    def one(k):
        _, params = init_fn(k, x.shape)
        h = apply_fn(params, x)
        if h.ndim == 2:
            return h @ h.T / h.shape[-1]
        d = h.ndim - 2
        hs = h.reshape(h.shape[0], -1, h.shape[-1])
        k = jnp.einsum("apc,bqc->abpq", hs, hs) / h.shape[-1]
        k = k.reshape((h.shape[0],) * 2 + h.shape[1:-1] * 2)
        perm = [0, 1] + [a for i in range(d) for a in (2 + i, 2 + d + i)]
        return jnp.transpose(k, perm)

    ks = jax.lax.map(one, jax.random.split(key, draws), batch_size=25)
    return ks.mean(0), ks.std(0) / np.sqrt(draws)


def empirical_ntk(apply_fn, params, x):
    """``sum_params J J^T`` of the scalar-output network (our own tiny Jacobian helper)."""
    jac = jax.jacobian(lambda p: apply_fn(p, x)[:, 0])(params)
    leaves = [j.reshape(x.shape[0], -1) for j in jax.tree_util.tree_leaves(jac)]
    return sum(j @ j.T for j in leaves)


def mc_ntk(net, x, draws, key=KEY):
    init_fn, apply_fn, _ = net

    def one(k):
        _, params = init_fn(k, x.shape)
        return empirical_ntk(apply_fn, params, x)

    ks = jax.lax.map(one, jax.random.split(key, draws))
    return ks.mean(0), ks.std(0) / np.sqrt(draws)


def assert_mc(mean, se, exact, bias=0.0):
    mean, se, exact = map(np.asarray, (mean, se, exact))
    assert mean.shape == exact.shape
    tol = 5 * se + bias * np.max(np.abs(exact)) + 1e-9
    z = np.abs(mean - exact) - tol
    assert np.all(z <= 0), (
        f"MC mismatch: max |mean-exact| = {np.max(np.abs(mean - exact)):.3g}, "
        f"max se = {np.max(se):.3g}, worst excess {np.max(z):.3g}")


ACTIVATIONS = {
    "Relu": stax.Relu(), "LeakyRelu": stax.LeakyRelu(0.2), "ABRelu": stax.ABRelu(-0.5, 1.3),
    "Abs": stax.Abs(), "Erf": stax.Erf(), "Gelu": stax.Gelu(), "Sin": stax.Sin(),
    "Cos": stax.Cos(), "Sign": stax.Sign(), "Sigmoid_like": stax.Sigmoid_like(),
    "tanh (numerical)": stax.ElementwiseNumerical(jnp.tanh, deg=30),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_dense_activation_nngp(name):
    """Dense(1024) + activation, 100 draws: 102,400 channel samples per kernel entry."""
    x = _inputs((4, 5))
    net = stax.serial(stax.Dense(1024, W_std=1.5, b_std=0.2), ACTIVATIONS[name])
    mean, se = mc_nngp(net, x, 100)
    assert_mc(mean, se, net[2](x, None, "nngp"))


@pytest.mark.slow
@pytest.mark.parametrize("dual,fn", [
    (duals.relu_dual, jax.nn.relu), (duals.abs_dual, jnp.abs),
    (lambda a, b, c: duals.abrelu_dual(a, b, c, -0.5, 1.3),
     lambda x: jnp.where(x < 0, -0.5 * x, 1.3 * x)),
    (duals.erf_dual, jax.scipy.special.erf), (duals.gelu_dual, jax.nn.gelu),
])
def test_dual_derivative_by_sampling(dual, fn):
    """dnngp = E[phi'(u) phi'(v)] by direct sampling of 400k correlated Gaussian pairs."""
    q11, q12, q22 = 1.3, -0.6, 0.9
    z = jax.random.normal(KEY, (2, 400_000))
    u = np.sqrt(q11) * z[0]
    v = q12 / np.sqrt(q11) * z[0] + np.sqrt(q22 - q12 ** 2 / q11) * z[1]
    dfn = jax.vmap(jax.grad(fn))
    for est, exact in ((fn(u) * fn(v), dual(q11, q12, q22)[0]),
                       (dfn(u) * dfn(v), dual(q11, q12, q22)[1])):
        assert abs(est.mean() - exact) <= 5 * est.std() / np.sqrt(est.size)


CONV = {"W_std": 1.4, "b_std": 0.1}
SPATIAL_NETS = {
    "conv_same_flatten": lambda: stax.serial(stax.Conv(256, (3, 3), padding="SAME", **CONV),
                                             stax.Relu(), stax.Flatten()),
    "conv_valid_gap": lambda: stax.serial(stax.Conv(256, (3, 3), **CONV), stax.Relu(),
                                          stax.GlobalAvgPool()),
    "avgpool_same_edges": lambda: stax.serial(
        stax.Conv(256, (2, 2), **CONV), stax.Erf(),
        stax.AvgPool((2, 2), (2, 2), padding="SAME", normalize_edges=True), stax.Flatten()),
    "sumpool": lambda: stax.serial(stax.Conv(256, (3, 3), padding="SAME", **CONV), stax.Relu(),
                                   stax.SumPool((2, 2), (1, 2)), stax.Flatten()),
    "spatial_output": lambda: stax.serial(stax.Conv(256, (2, 3), strides=(1, 2), **CONV),
                                          stax.Abs()),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPATIAL_NETS))
def test_conv_and_pool_nngp(name):
    x = _inputs((3, 5, 5, 2), seed=1)
    net = SPATIAL_NETS[name]()
    mean, se = mc_nngp(net, x, 100)
    assert_mc(mean, se, net[2](x, None, "nngp"))


@pytest.mark.slow
def test_conv1d_nngp():
    x = _inputs((3, 9, 2), seed=2)
    net = stax.serial(stax.Conv(256, (3,), strides=(2,), padding="SAME", **CONV), stax.Gelu(),
                      stax.GlobalAvgPool())
    mean, se = mc_nngp(net, x, 100)
    assert_mc(mean, se, net[2](x, None, "nngp"))


@pytest.mark.slow
def test_residual_and_concat_nngp():
    """FanOut/parallel/FanInSum residual and FanInConcat: exact in expectation."""
    x = _inputs((4, 5), seed=3)
    dense = lambda: stax.Dense(256, W_std=1.5, b_std=0.1)
    res = stax.serial(dense(), stax.FanOut(2),
                      stax.parallel(stax.serial(stax.Relu(), dense()), stax.Identity()),
                      stax.FanInSum())
    cat = stax.serial(dense(), stax.FanOut(3),
                      stax.parallel(stax.Relu(), stax.Erf(), stax.Dense(128)),
                      stax.FanInConcat())
    for net in (res, cat):
        mean, se = mc_nngp(net, x, 100)
        assert_mc(mean, se, net[2](x, None, "nngp"))


@pytest.mark.slow
def test_layernorm_and_depth_nngp():
    """O(1/n)-biased stacks: LayerNorm (empirical mean/variance) and two hidden layers."""
    x = _inputs((4, 5), seed=4)
    n = 256
    ln = stax.serial(stax.Dense(n, W_std=1.5, b_std=0.3), stax.LayerNorm(), stax.Relu())
    deep = stax.serial(stax.Dense(n, W_std=1.5, b_std=0.1), stax.Relu(),
                       stax.Dense(n, W_std=1.5, b_std=0.1), stax.Erf())
    for net in (ln, deep):
        mean, se = mc_nngp(net, x, 60)
        assert_mc(mean, se, net[2](x, None, "nngp"), bias=4 / n)


@pytest.mark.slow
@pytest.mark.parametrize("name,net,bias", [
    ("fc_ntk_param", lambda: stax.serial(stax.Dense(512, W_std=1.5, b_std=0.1), stax.Relu(),
                                         stax.Dense(1, W_std=1.5, b_std=0.1)), 0.0),
    ("fc_standard_param", lambda: stax.serial(
        stax.Dense(512, W_std=1.5, b_std=0.1, parameterization="standard"), stax.Erf(),
        stax.Dense(1, W_std=1.5, b_std=0.1, parameterization="standard")), 0.0),
    ("cnn_gap", lambda: stax.serial(stax.Conv(64, (3, 3), padding="SAME", **CONV), stax.Relu(),
                                    stax.GlobalAvgPool(), stax.Dense(1)), 0.0),
    ("cnn_standard", lambda: stax.serial(
        stax.Conv(64, (2, 2), parameterization="standard", **CONV), stax.Relu(), stax.Flatten(),
        stax.Dense(1, parameterization="standard")), 0.0),
    ("fc_depth2", lambda: stax.serial(stax.Dense(256, W_std=1.5, b_std=0.1), stax.Relu(),
                                      stax.Dense(256, W_std=1.5, b_std=0.1), stax.Relu(),
                                      stax.Dense(1)), 4 * 2 / 256),
])
def test_empirical_ntk(name, net, bias):
    """Empirical NTK (Jacobian contraction) of random finite nets vs the analytic NTK; the
    standard-parameterization cases check the fan_in factors of the raw-weight NTK."""
    net = net()
    x = _inputs((3, 4, 4, 2) if name.startswith("cnn") else (4, 5), seed=5)
    mean, se = mc_ntk(net, x, 40)
    assert_mc(mean, se, net[2](x, None, "ntk"), bias=bias)
