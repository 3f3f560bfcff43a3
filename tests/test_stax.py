"""dynkit.theory.stax: golden neural-tangents 0.6.5 kernels, API, jit, batching, errors."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynkit.errors import InvalidArgumentError, ShapeMismatchError, UnsupportedLayerError
from dynkit.theory import dual_activations as duals
from dynkit.theory import stax

DATA = pathlib.Path(__file__).parent / "data" / "neural_tangents"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
KERNEL_CASES = sorted(c for c in MANIFEST if c.startswith(("fc_", "cnn_")))


def assert_rel(actual, expected, rtol=1e-6):
    """Max abs error relative to the max abs entry of the reference."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    err = np.max(np.abs(actual - expected)) / np.max(np.abs(expected))
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


@pytest.mark.parametrize("case", KERNEL_CASES)
def test_golden_neural_tangents(case):
    """All four golden blocks from one compiled call: the kernel of [x1; x2] with itself
    (x2=None path) holds nngp_11 / ntk_11 (top-left) and nngp_12 / ntk_12 (top-right)."""
    d = np.load(DATA / f"{case}.npz")
    _, _, kernel_fn = stax.from_spec(MANIFEST[case])
    n1 = d["x1"].shape[0]
    k = kernel_fn(np.concatenate([d["x1"], d["x2"]]), None, ("nngp", "ntk"))
    assert_rel(k.nngp[:n1, :n1], d["nngp_11"])
    assert_rel(k.ntk[:n1, :n1], d["ntk_11"])
    assert_rel(k.nngp[:n1, n1:], d["nngp_12"])
    assert_rel(k.ntk[:n1, n1:], d["ntk_12"])


@pytest.mark.parametrize("case", ["fc_layernorm", "fc_resnet", "cnn_valid_avgpool"])
def test_golden_cross_path(case):
    """The x1-vs-x2 code path (separate self-covariances) against the golden cross blocks."""
    d = np.load(DATA / f"{case}.npz")
    _, _, kernel_fn = stax.from_spec(MANIFEST[case])
    k = kernel_fn(d["x1"], d["x2"], ("ntk", "nngp"))
    assert k._fields == ("ntk", "nngp")
    assert_rel(k.nngp, d["nngp_12"])
    assert_rel(k.ntk, d["ntk_12"])


@pytest.mark.parametrize("dual,fn", [
    (duals.erf_dual, jax.scipy.special.erf),
    (duals.gelu_dual, lambda x: jax.nn.gelu(x, approximate=False)),
    (duals.sin_dual, jnp.sin),
    (duals.cos_dual, jnp.cos),
    (duals.sigmoid_like_dual, lambda x: 0.5 * jax.scipy.special.erf(x / 2.4020563531719796) + .5),
])
def test_smooth_duals_match_quadrature(dual, fn):
    """Closed forms vs 2-D Gauss-Hermite quadrature (exact to ~1e-12 for these smooth maps),
    including the diagonal q12^2 = q11 q22 and anti-correlated pairs."""
    q11 = jnp.array([1.3, 0.5, 2.0, 0.7])
    q22 = jnp.array([0.8, 0.5, 1.1, 0.7])
    q12 = jnp.array([0.4, 0.5, -1.2, -0.69])
    closed = dual(q11, q12, q22)
    quad = duals.gauss_hermite_dual(fn, q11, q12, q22, degree=80)
    np.testing.assert_allclose(closed[0], quad[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(closed[1], quad[1], rtol=1e-9, atol=1e-12)


def test_abrelu_special_cases():
    """ABRelu reduces to ReLU (a=0,b=1), |x| (a=-1,b=1) and the identity (a=b=1)."""
    q11, q12, q22 = 1.3, 0.4, 0.8
    ident = duals.abrelu_dual(q11, q12, q22, 1.0, 1.0)
    np.testing.assert_allclose(ident, (q12, 1.0), rtol=1e-14)
    # |x|: E|u||v| = 4 k_relu - q12 and the sign kernel 1 - 2 theta / pi
    theta = np.arccos(q12 / np.sqrt(q11 * q22))
    np.testing.assert_allclose(duals.abs_dual(q11, q12, q22)[1], 1 - 2 * theta / np.pi)
    np.testing.assert_allclose(duals.sign_dual(q11, q12, q22)[0], 1 - 2 * theta / np.pi)


def test_numerical_layer_matches_closed_form():
    """ElementwiseNumerical(erf) reproduces Erf() through a whole network (NNGP and NTK).
    Inputs on the sphere |x|^2 = d keep the pre-activation variance near 1, where 60-point
    quadrature of erf and its Gaussian derivative is converged to ~1e-11."""
    x = np.random.default_rng(0).normal(size=(5, 4))
    x = 2 * x / np.linalg.norm(x, axis=1, keepdims=True)
    head = [stax.Dense(64, W_std=1.0, b_std=0.1)]
    tail = [stax.Dense(64, W_std=1.2, b_std=0.2), stax.Relu(), stax.Dense(1)]
    _, _, k_closed = stax.serial(*head, stax.Erf(), *tail)
    _, _, k_num = stax.serial(*head, stax.ElementwiseNumerical(jax.scipy.special.erf, deg=60),
                              *tail)
    a, b = k_closed(x, None, ("nngp", "ntk")), k_num(x, None, ("nngp", "ntk"))
    assert_rel(b.nngp, a.nngp, 1e-10)
    assert_rel(b.ntk, a.ntk, 1e-10)


def test_numerical_degree_and_its_neural_tangents_alias():
    """``degree`` is dynkit's name (issue #12, one vocabulary); neural-tangents' ``deg`` stays
    accepted as a keyword, positionally and in specs, and all spellings give one kernel."""
    x = np.random.default_rng(3).normal(size=(3, 2))
    kernels = [stax.serial(stax.Dense(4), layer)[2](x, None, "nngp") for layer in (
        stax.ElementwiseNumerical(jnp.tanh, degree=12),
        stax.ElementwiseNumerical(jnp.tanh, deg=12),
        stax.ElementwiseNumerical(jnp.tanh, 12))]
    spec = stax.from_spec([["Dense", {"out_dim": 4}],
                           ["ElementwiseNumerical", {"fn": "tanh", "degree": 12}]])[2]
    kernels.append(spec(x, None, "nngp"))
    for k in kernels[1:]:
        np.testing.assert_array_equal(k, kernels[0])
    with pytest.raises(InvalidArgumentError, match="deg"):
        stax.ElementwiseNumerical(jnp.tanh, degree=12, deg=20)
    with pytest.raises(InvalidArgumentError, match="degree must be >= 2"):
        stax.ElementwiseNumerical(jnp.tanh, deg=1)


@pytest.mark.slow
def test_get_variants_and_kernel_object():
    rng = np.random.default_rng(1)
    x1, x2 = rng.normal(size=(4, 3)), rng.normal(size=(3, 3))
    _, _, kernel_fn = stax.serial(stax.Dense(8, b_std=0.1), stax.Relu(), stax.Dense(1))
    full = kernel_fn(x1, x2)
    assert isinstance(full, stax.Kernel)
    np.testing.assert_array_equal(kernel_fn(x1, x2, "nngp"), full.nngp)
    np.testing.assert_array_equal(kernel_fn(x1, x2, "ntk"), full.ntk)
    # self-covariances agree with the batch diagonal of the x1-x1 / x2-x2 kernels
    np.testing.assert_allclose(full.cov1, np.diag(kernel_fn(x1, None, "nngp")), rtol=1e-12)
    np.testing.assert_allclose(full.cov2, np.diag(kernel_fn(x2, None, "nngp")), rtol=1e-12)
    assert kernel_fn(x1, None).cov2 is None
    sym = kernel_fn(x1, None, "ntk")
    np.testing.assert_allclose(sym, sym.T, rtol=1e-12)
    for bad in ("nngpp", ("nngp", "nngp"), ()):
        with pytest.raises(InvalidArgumentError):
            kernel_fn(x1, x2, bad)


@pytest.mark.slow
def test_jit_float32_and_float64():
    """kernel_fn traces under an outer jax.jit (static get) in both precisions."""
    rng = np.random.default_rng(2)
    x1, x2 = rng.normal(size=(6, 5)), rng.normal(size=(4, 5))
    _, _, kernel_fn = stax.from_spec(MANIFEST["fc_relu_depth3"])
    jitted = jax.jit(kernel_fn, static_argnames="get")
    k64 = jitted(jnp.asarray(x1), jnp.asarray(x2), get=("nngp", "ntk"))
    k32 = jitted(jnp.asarray(x1, jnp.float32), jnp.asarray(x2, jnp.float32), get=("nngp", "ntk"))
    assert k64.nngp.dtype == jnp.float64 and k32.ntk.dtype == jnp.float32
    np.testing.assert_allclose(k64.nngp, kernel_fn(x1, x2, "nngp"), rtol=1e-13)
    assert_rel(k32.nngp, k64.nngp, 1e-5)
    assert_rel(k32.ntk, k64.ntk, 1e-5)
    full = jitted(jnp.asarray(x1), None, get=None)
    assert isinstance(full, stax.Kernel) and full.nngp.shape == (6, 6)


def test_spatial_output_layout():
    """A network ending in a spatial layer returns neural-tangents' (N1, N2, H, H', W, W');
    its pixel diagonal is what Flatten averages."""
    x = np.random.default_rng(3).normal(size=(3, 4, 5, 2))
    conv = [stax.Conv(8, (2, 3), padding="SAME", W_std=1.3, b_std=0.1), stax.Relu()]
    k = stax.serial(*conv)[2](x, None, "nngp")
    assert k.shape == (3, 3, 4, 4, 5, 5)
    diag = np.einsum("abhhww->abhw", np.asarray(k))
    flat = stax.serial(*conv, stax.Flatten())[2](x, None, "nngp")
    np.testing.assert_allclose(diag.mean(axis=(2, 3)), flat, rtol=1e-12)


@pytest.mark.parametrize("x2_rows", [None, 7])
@pytest.mark.slow
def test_batch_matches_unbatched(x2_rows):
    rng = np.random.default_rng(4)
    x1 = rng.normal(size=(11, 5))
    x2 = None if x2_rows is None else rng.normal(size=(x2_rows, 5))
    _, _, kernel_fn = stax.from_spec(MANIFEST["fc_resnet"])
    ref = kernel_fn(x1, x2, ("nngp", "ntk"))
    out = stax.batch(kernel_fn, batch_size=4, progress=False)(x1, x2, ("nngp", "ntk"))
    assert isinstance(out.nngp, np.ndarray) and out.nngp.shape == ref.nngp.shape
    np.testing.assert_allclose(out.nngp, ref.nngp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.ntk, ref.ntk, rtol=1e-12, atol=1e-12)
    single = stax.batch(kernel_fn, batch_size=3, progress=False)(x1, x2, "ntk")
    np.testing.assert_allclose(single, ref.ntk, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("net", ["fc_resnet", "cnn_spatial_out", "cnn_gap_1d"])
def test_symmetric_tiles_match_one_block(net, monkeypatch):
    """``kernel_fn(x, None)`` on N >= 64 computes only the block tiles on and above the
    diagonal and mirrors the rest (spatial pairs swapped); it equals the single-block path."""
    from dynkit.theory import stax_batching

    nets = {
        "fc_resnet": (lambda: stax.from_spec(MANIFEST["fc_resnet"]), (5,)),
        "cnn_spatial_out": (lambda: stax.serial(stax.Conv(4, (3, 2), padding="SAME"),
                                                stax.Relu(), stax.Conv(3, (2, 2))), (4, 3, 2)),
        "cnn_gap_1d": (lambda: stax.serial(stax.Conv(4, (3,), strides=(2,)), stax.Erf(),
                                           stax.AvgPool((2,)), stax.GlobalAvgPool()), (9, 2)),
    }
    build, shape = nets[net]
    x = np.random.default_rng(6).normal(size=(67,) + shape)
    assert stax_batching.symmetric_blocks(67) == 2
    tiled = build()[2](x, None, ("nngp", "ntk"))
    monkeypatch.setattr(stax_batching, "MIN_SYMMETRIC_BLOCK", 10**9)
    one = build()[2](x, None, ("nngp", "ntk"))
    for a, b in zip(tiled, one):
        assert a.shape == b.shape
        assert_rel(a, b, rtol=1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("padding,strides,param,with_x2", [
    ("SAME", (1, 1), "ntk", False), ("VALID", (2, 1), "standard", True),
    ("SAME", (2, 2), "standard", False), ("VALID", (1, 1), "ntk", True)])
def test_first_conv_patch_gram_equals_windowed_mean(padding, strides, param, with_x2):
    """A first ``Conv`` builds its kernel from the Gram matrix of input patches; it equals the
    CNN-GP recursion (shifted windowed mean) applied to the pixel-pair input kernel."""
    from dynkit.theory import stax_layers as L

    rng = np.random.default_rng(7)
    x1 = jnp.asarray(rng.normal(size=(3, 6, 5, 2)))
    x2 = jnp.asarray(rng.normal(size=(4, 6, 5, 2))) if with_x2 else None
    conv = L.Conv(3, (3, 2), strides=strides, padding=padding, W_std=1.3, b_std=0.2,
                  parameterization=param)
    for full in (True, False):
        fast = conv.input_kernel(x1, x2, full, True)
        ref = conv.kernel(L.input_kernel(x1, x2, full, True))
        assert (fast.shape1, fast.full) == (ref.shape1, ref.full)
        for name in ("nngp", "ntk", "cov"):
            a, b = getattr(fast, name), getattr(ref, name)
            assert (a is None) == (b is None) == (name == "cov" and not with_x2)
            if a is not None:
                assert_rel(a, b, rtol=1e-14)


def test_batch_spatial_output_and_errors():
    x = np.random.default_rng(5).normal(size=(5, 4, 4, 2))
    _, _, kernel_fn = stax.serial(stax.Conv(4, (3, 3), padding="SAME"), stax.Relu())
    ref = kernel_fn(x, None, "nngp")
    out = stax.batch(kernel_fn, 2, progress=False)(x, None, "nngp")
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(InvalidArgumentError):
        stax.batch(kernel_fn, 0)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InvalidArgumentError, match="x1"):
        stax.batch(kernel_fn, 2, progress=False)(bad)


def test_from_spec_errors_name_the_layer():
    with pytest.raises(InvalidArgumentError, match="Tanhh"):
        stax.from_spec([["Dense", {"out_dim": 3}], ["Tanhh", {}]])
    with pytest.raises(UnsupportedLayerError, match=r"spec\[1\] MaxPool"):
        stax.from_spec([["Conv", {"out_chan": 3, "filter_shape": [2, 2]}],
                        ["MaxPool", {"window_shape": [2, 2]}]])
    with pytest.raises(InvalidArgumentError, match="bogus"):
        stax.from_spec([["Dense", {"out_dim": 3, "bogus": 1}]])
    with pytest.raises(InvalidArgumentError):
        stax.from_spec({"Dense": {}})
    _, _, kernel_fn = stax.from_spec([["Conv", {"out_chan": 3, "filter_shape": [2, 2]}],
                                      ["Relu", {}], ["Dense", {"out_dim": 1}]])
    assert kernel_fn(np.ones((2, 4, 4, 3)), None, "nngp").shape == (2, 2, 3, 3, 3, 3)  # per pixel
    with pytest.raises(ShapeMismatchError, match=r"spec\[0\] Conv"):
        kernel_fn(np.ones((2, 3)))
    init_fn = stax.from_spec([["Conv", {"out_chan": 3, "filter_shape": [2, 2]}]])[0]
    with pytest.raises(ShapeMismatchError, match="Conv"):
        init_fn(jax.random.PRNGKey(0), (-1, 5))


@pytest.mark.slow
def test_from_spec_numerical_and_residual_shapes():
    init_fn, apply_fn, kernel_fn = stax.from_spec(
        [["Dense", {"out_dim": 6, "b_std": 0.1}],
         ["ElementwiseNumerical", {"fn": "tanh", "deg": 10}],
         ["Residual", [["Relu", {}], ["Dense", {"out_dim": 6}]]],
         ["Dense", {"out_dim": 2}]])
    out_shape, params = init_fn(jax.random.PRNGKey(0), (-1, 3))
    assert out_shape == (-1, 2)
    assert apply_fn(params, jnp.ones((4, 3))).shape == (4, 2)
    assert kernel_fn(np.ones((2, 3)), None, "nngp").shape == (2, 2)
    with pytest.raises(InvalidArgumentError, match="fn"):
        stax.from_spec([["ElementwiseNumerical", {"fn": "cube"}]])


def test_bad_inputs():
    _, _, kernel_fn = stax.serial(stax.Dense(4), stax.Relu())
    with pytest.raises(InvalidArgumentError, match="NaN"):
        kernel_fn(np.array([[1.0, np.nan]]))
    with pytest.raises(ShapeMismatchError):
        kernel_fn(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ShapeMismatchError):
        kernel_fn(np.ones(3))
    with pytest.raises(ShapeMismatchError, match="FanInSum"):
        stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(3), stax.Dense(4)),
                    stax.FanInSum())[2](np.ones((2, 3)))
    with pytest.raises(UnsupportedLayerError):
        stax.LayerNorm(axis=0)
    with pytest.raises(InvalidArgumentError):
        stax.Dense(3, parameterization="mup")
    with pytest.raises(InvalidArgumentError):
        stax.serial(stax.Dense(3), "Relu")


@pytest.mark.slow
def test_arccos_matches_numpy_in_float32_and_float64():
    import numpy as np

    from dynkit.theory.dual_activations import arccos

    x = np.concatenate([np.linspace(-1, 1, 20001), [0.5, -0.5, 0.4999999, 1 - 1e-7, 1 - 1e-15]])
    got64 = np.asarray(arccos(jnp.asarray(x, jnp.float64)))
    assert np.max(np.abs(got64 - np.arccos(x))) < 2e-15
    x32 = np.float32(x)
    got32 = np.asarray(arccos(jnp.asarray(x32, jnp.float32)), np.float64)
    assert np.max(np.abs(got32 - np.arccos(np.asarray(x32, np.float64)))) < 4e-7
