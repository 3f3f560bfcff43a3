"""The rest of the stax vocabulary (issue 14): ConvTranspose, ConvLocal, ImageResize, Dropout,
GlobalSelfAttention and the exponential / polynomial activations.

Checks: neural-tangents 0.6.5 golden kernels (the shared set ``neural_tangents_arch`` and the
variants of ``benchmarks/nt_golden_vocab.py`` in ``neural_tangents_vocab``) to 1e-6 relative in
float64; brute force (a resize of the inputs); closed forms against quadrature; Monte Carlo
over random finite networks (error model of ``test_stax_montecarlo``); float32 under an outer
``jax.jit``; errors naming the layer.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_stax_montecarlo import assert_mc, mc_nngp

from dynkit.errors import InvalidArgumentError, ShapeMismatchError, UnsupportedLayerError
from dynkit.theory import dual_activations, dual_exp_poly, stax

DATA = pathlib.Path(__file__).parent / "data"
ARCH = json.loads((DATA / "neural_tangents_arch" / "manifest.json").read_text())
VOCAB = json.loads((DATA / "neural_tangents_vocab" / "manifest.json").read_text())
QUICK_ARCH = ["fc_exp", "fc_gaussian", "fc_rbf", "fc_hermite3", "fc_monomial2", "fc_polynomial"]
#: Cases whose x1-vs-x2 path (separate self-covariances ``cov``) is checked too.
CROSS = {"fc_dropout", "img_convlocal", "seq_attention", "img_resize_linear", "img_dropout",
         "seq_attention_identity_sqrt", "img_convtranspose_same", "fc_rectified_monomial3"}
QUICK_VOCAB = ["fc_exp_gaussian", "fc_exp_normalized", "fc_hermite_nonunit", "fc_monomials",
               "fc_rectified_monomial3"]


def _slow_unless(case, quick):
    return case if case in quick else pytest.param(case, marks=pytest.mark.slow)


def assert_rel(actual, expected, rtol=1e-6):
    """Max abs error over the finite reference entries, relative to its max abs entry."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    ok = np.isfinite(expected)
    err = np.max(np.abs(actual[ok] - expected[ok])) / np.max(np.abs(expected[ok]))
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


@pytest.mark.parametrize("case", [_slow_unless(c, QUICK_ARCH) for c in sorted(ARCH)])
def test_golden_arch(case):
    """Shared golden set: one call on [x1; x2] gives the 11 and 12 blocks (x2=None path); the
    x1-vs-x2 path (separate self-covariances) is checked on the 12 block for the layers that
    treat the two differently (``CROSS``)."""
    d = np.load(DATA / "neural_tangents_arch" / f"{case}.npz")
    kernel_fn = stax.from_spec(ARCH[case])[2]
    n1 = d["x1"].shape[0]
    k = kernel_fn(np.concatenate([d["x1"], d["x2"]]), None, ("nngp", "ntk"))
    assert_rel(k.nngp[:n1, :n1], d["nngp_11"])
    assert_rel(k.ntk[:n1, :n1], d["ntk_11"])
    assert_rel(k.nngp[:n1, n1:], d["nngp_12"])
    assert_rel(k.ntk[:n1, n1:], d["ntk_12"])
    if case in CROSS:
        k12 = kernel_fn(d["x1"], d["x2"], ("nngp", "ntk"))
        assert_rel(k12.nngp, d["nngp_12"])
        assert_rel(k12.ntk, d["ntk_12"])


def _vocab_spec(case):
    spec = json.loads(json.dumps(VOCAB[case]["spec"]))
    if case == "fc_hermite_nonunit":
        spec[1][1]["unit_norm"] = True  # neural-tangents' K**n shortcut on non-unit inputs
    if case == "img_resize_down":
        # neural-tangents 0.6.5 resizes the swapped axes when its kernel's spatial axes are
        # stored reversed (after an odd number of full-covariance Conv layers): its numbers
        # for target (3, 5) are the kernel of target (5, 3); test_resize_brute_force and the
        # Monte Carlo test below show that dynkit's axis order is the finite network's.
        spec[2][1]["shape"] = [-1, 5, 3, -1]
    return spec


@pytest.mark.parametrize("case", [_slow_unless(c, QUICK_VOCAB) for c in sorted(VOCAB)])
def test_golden_vocab(case):
    """Variants from ``benchmarks/nt_golden_vocab.py``: attention (identity, 1/sqrt(d)
    scaling, 2-D softmax), strided/SAME/standard ConvTranspose and ConvLocal, downsampling
    resizes, image dropout, ExpNormalized, Hermite on non-unit inputs, Monomial 3-5,
    RectifiedMonomial (neural-tangents' NaN diagonal skipped: see the Monte Carlo test)."""
    d = np.load(DATA / "neural_tangents_vocab" / f"{case}.npz")
    kernel_fn = stax.from_spec(_vocab_spec(case))[2]
    n1 = d["x1"].shape[0]
    k = kernel_fn(np.concatenate([d["x1"], d["x2"]]), None, ("nngp", "ntk"))
    blocks = [(k.nngp[:n1, :n1], "nngp_11"), (k.ntk[:n1, :n1], "ntk_11"),
              (k.nngp[:n1, n1:], "nngp_12"), (k.ntk[:n1, n1:], "ntk_12")]
    if case in CROSS:
        k12 = kernel_fn(d["x1"], d["x2"], ("nngp", "ntk"))
        blocks += [(k12.nngp, "nngp_12"), (k12.ntk, "ntk_12")]
    for got, ref in blocks:
        assert np.all(np.isfinite(got))
        assert_rel(got, d[ref])


@pytest.mark.slow
def test_resize_brute_force():
    """The kernel of ``ImageResize`` on the inputs is the input kernel of the resized inputs
    (resizing is linear), for a non-square target, down- and upsampling."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 3, 1)))
    for method in ("nearest", "linear", "cubic"):
        kernel_fn = stax.ImageResize((-1, 2, 5, -1), method)[2]
        direct = stax.Identity()[2](jax.image.resize(x, (2, 2, 5, 1), method), None, "nngp")
        np.testing.assert_allclose(kernel_fn(x, None, "nngp"), direct, rtol=1e-6, atol=1e-6)


def test_rectified_monomial_dual_finite_and_monte_carlo():
    """E[relu(u)^n relu(v)^n] and its derivative map against 2e5 Gaussian samples (5 standard
    errors), on the diagonal (u = v, where neural-tangents 0.6.5 returns NaN), near it and
    anti-correlated; n = 0..4."""
    z = np.random.default_rng(0).standard_normal((2, 200_000))
    q11, q22 = 1.3, 0.7
    for q12 in (np.sqrt(q11 * q22), 0.95 * np.sqrt(q11 * q22), -0.4):
        u = np.sqrt(q11) * z[0]
        rho = q12 / np.sqrt(q11 * q22)
        v = np.sqrt(q22) * (rho * z[0] + np.sqrt(max(1 - rho * rho, 0)) * z[1])
        pu, pv = np.maximum(u, 0), np.maximum(v, 0)
        for n in range(5):
            nngp, dnngp = map(float, dual_exp_poly.rectified_monomial_dual(q11, q12, q22, n))
            assert np.isfinite(nngp) and np.isfinite(dnngp)
            prod = (pu ** n * (u >= 0)) * (pv ** n * (v >= 0))
            assert abs(prod.mean() - nngp) <= 5 * prod.std() / np.sqrt(prod.size)
            if n:
                dprod = n * n * (pu ** (n - 1) * (u >= 0)) * (pv ** (n - 1) * (v >= 0))
                assert abs(dprod.mean() - dnngp) <= 5 * dprod.std() / np.sqrt(dprod.size)
    # degree 1 is ReLU
    np.testing.assert_allclose(dual_exp_poly.rectified_monomial_dual(1.3, 0.2, 0.7, 1),
                               dual_activations.relu_dual(1.3, 0.2, 0.7), rtol=1e-12)


@pytest.mark.slow
def test_rectified_monomial_network_monte_carlo():
    """A wide random network Dense(4096) -> RectifiedMonomial(2) -> Dense: the empirical NNGP
    of 200 draws matches the kernel, diagonal included (one hidden layer: no finite-width
    bias, 5 standard errors)."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)))
    net = stax.serial(stax.Dense(4096, W_std=1.2, b_std=0.3), stax.RectifiedMonomial(2))
    mean, se = mc_nngp(net, x, 200)
    exact = net[2](x, None, "nngp")
    assert np.all(np.isfinite(exact))
    assert_mc(mean, se, exact)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ConvTranspose", "ConvLocal", "ImageResize", "Dropout",
                                  "attention softmax", "attention identity sqrt"])
def test_finite_networks_converge(name):
    """``apply_fn`` and ``kernel_fn`` describe the same network: the empirical NNGP of 32
    random networks (one hidden layer of width 128, then the layer; output shapes must agree
    with the kernel's) matches the kernel within 5 standard errors plus the O(1/n)
    finite-width bias of the error model."""
    rng = np.random.default_rng(2)
    wide = 128
    if name.startswith("attention"):
        x = jnp.asarray(rng.normal(size=(2, 3, 4)))
        first = stax.Dense(wide, W_std=1.3, b_std=0.2)
        mech = "SOFTMAX" if "softmax" in name else "IDENTITY"
        layer = stax.GlobalSelfAttention(wide, wide, wide, 8, linear_scaling=mech == "SOFTMAX",
                                         W_key_std=1.2, W_query_std=0.9, W_value_std=1.1,
                                         b_std=0.2, attention_mechanism=mech)
    else:
        x = jnp.asarray(rng.normal(size=(2, 3, 2, 2)))
        first = stax.Conv(wide, (2, 2), padding="SAME", W_std=1.3, b_std=0.2)
        layer = {"ConvTranspose": stax.ConvTranspose(wide, (3, 2), (2, 2), "SAME", 1.2, 0.1),
                 "ConvLocal": stax.ConvLocal(wide, (2, 2), (1, 1), "SAME", 1.2, 0.1),
                 "ImageResize": stax.ImageResize((-1, 2, 5, -1), "linear"),
                 "Dropout": stax.Dropout(0.6)}[name]
    # ImageResize: the activation comes after it (its input, a Conv output, is Gaussian)
    order = [first, layer, stax.Relu()] if name == "ImageResize" else [first, stax.Relu(), layer]
    net = stax.serial(*order)
    if name == "Dropout":  # a fresh mask per draw: the network's key also seeds the mask
        init_fn, apply_fn, kernel_fn = net

        def init_with_mask(key, shape):
            out, params = init_fn(key, shape)
            return out, (params, jax.random.fold_in(key, 1))

        net = (init_with_mask, lambda p, a: apply_fn(p[0], a, rng=p[1]), kernel_fn)
    mean, se = mc_nngp(net, x, 32)
    exact = net[2](x, None, "nngp")
    assert_mc(mean, se, exact, bias=4 / wide)


@pytest.mark.slow
def test_float32_under_jit():
    """float32 kernels under an outer ``jax.jit`` agree with float64 (relative 1e-4)."""
    x = np.random.default_rng(3).normal(size=(3, 4, 2))
    net = stax.serial(stax.Dense(8, W_std=1.2, b_std=0.1), stax.RectifiedMonomial(2),
                      stax.GlobalSelfAttention(8, 8, 8, 2, b_std=0.1),
                      stax.Polynomial([0.1, 1.0, 0.3]), stax.Dropout(0.8),
                      stax.ConvTranspose(8, (2,), (2,), W_std=1.1),
                      stax.ImageResize((-1, 5, -1), "linear"), stax.Gaussian(),
                      stax.ConvLocal(8, (2,)), stax.Exp(0.5, 0.3), stax.GlobalAvgPool(),
                      stax.Dense(1))
    kernel_fn = net[2]
    f32 = jax.jit(lambda a: kernel_fn(a, None, ("nngp", "ntk")))(jnp.asarray(x, jnp.float32))
    assert f32.ntk.dtype == jnp.float32
    f64 = kernel_fn(jnp.asarray(x, jnp.float64), None, ("nngp", "ntk"))  # conftest: x64 on
    assert_rel(f32.nngp, f64.nngp, 1e-4)
    assert_rel(f32.ntk, f64.ntk, 1e-4)


@pytest.mark.slow
def test_polynomial_duals_match_quadrature():
    """Hermite-expansion duals (Polynomial, Monomial, Hermite) and Exp/Gaussian/Rbf closed forms
    vs 60-point Gauss-Hermite quadrature, at unequal variances and anti-correlation."""
    q11, q12, q22 = jnp.array([1.3, 0.5, 2.0]), jnp.array([0.4, 0.5, -1.2]), jnp.array(
        [0.8, 0.5, 1.1])
    cases = [
        (lambda a, b, c: dual_exp_poly.polynomial_dual(a, b, c, [0.1, 1.0, 0.5, -0.2]),
         lambda x: 0.1 + x + 0.5 * x ** 2 - 0.2 * x ** 3),
        (lambda a, b, c: dual_exp_poly.exp_dual(a, b, c, 1.5, 0.4), lambda x: 1.5 * jnp.exp(0.4 * x)),
        (lambda a, b, c: dual_exp_poly.gaussian_dual(a, b, c, 0.7, -0.3),
         lambda x: 0.7 * jnp.exp(-0.3 * x * x)),
        (lambda a, b, c: dual_exp_poly.rbf_dual(a, b, c, 0.5),
         lambda x: np.sqrt(2) * jnp.sin(x + np.pi / 4)),
    ]
    for dual, fn in cases:
        closed = dual(q11, q12, q22)
        quad = dual_activations.gauss_hermite_dual(fn, q11, q12, q22, degree=60)
        np.testing.assert_allclose(closed[0], quad[0], rtol=1e-9)
        np.testing.assert_allclose(closed[1], quad[1], rtol=1e-9, atol=1e-12)


def test_bad_input_names_the_layer():
    with pytest.raises(ShapeMismatchError, match="GlobalSelfAttention.*sequence"):
        stax.GlobalSelfAttention(4, 4, 4, 1)[2](np.ones((2, 3)), None, "nngp")
    with pytest.raises(ShapeMismatchError, match=r"spec\[1\] GlobalSelfAttention"):
        stax.from_spec([["Dense", {"out_dim": 4}], ["GlobalSelfAttention", {
            "n_chan_out": 4, "n_chan_key": 4, "n_chan_val": 4, "n_heads": 1}]])[2](
                np.ones((2, 3)), None, "nngp")
    with pytest.raises(UnsupportedLayerError, match="GlobalSelfAttention.*softmax"):
        stax.GlobalSelfAttention(4, 4, 4, 1, linear_scaling=False)
    with pytest.raises(InvalidArgumentError, match="ImageResize.*fractional"):
        stax.ImageResize((-1, 12.5, 12, -1), "linear")
    with pytest.raises(InvalidArgumentError, match="ImageResize.*fractional"):
        stax.from_spec([["ImageResize", {"shape": [-1, 7.5, -1], "method": "nearest"}]])
    with pytest.raises(UnsupportedLayerError, match="ImageResize.*channel"):
        stax.ImageResize((-1, 4, 4, 8), "nearest")
    with pytest.raises(InvalidArgumentError, match="ImageResize.*method"):
        stax.ImageResize((-1, 4, 4, -1), "area")
    with pytest.raises(ShapeMismatchError, match="ImageResize.*spatial"):
        stax.ImageResize((-1, 4, 4, -1), "nearest")[2](np.ones((2, 3, 2)), None, "nngp")
    with pytest.raises(InvalidArgumentError, match="Dropout.*keep probability"):
        stax.Dropout(0.0)
    with pytest.raises(InvalidArgumentError, match="Dropout.*rng"):
        stax.Dropout(0.5)[1]((), np.ones((2, 3)))
    with pytest.raises(UnsupportedLayerError, match="ExpNormalized"):
        stax.ExpNormalized()[1]((), np.ones((2, 3)))
    with pytest.raises(InvalidArgumentError, match="RectifiedMonomial.*degree"):
        stax.RectifiedMonomial(-1)
    x = np.ones((2, 3))
    assert stax.Dropout(0.5, mode="test")[1]((), x) is x
