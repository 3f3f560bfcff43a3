"""Empirical NTK (dynkit.theory.empirical): every method against a brute-force ravelled
Jacobian, the neural-tangents golden file, the infinite-width limit and its 1/sqrt(width)
fluctuations, output-axis conventions, dtypes and bad input."""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from dynkit import validation
from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.models import GraphBuilder, merge_params, mlp, resnet20, split_params
from dynkit.theory import empirical

GOLDEN = Path(__file__).parent / "data" / "neural_tangents"
EXACT = ("jacobian", "ntvp", "structured")


# ----------------------------------------------------------------------------- models
def _cnn():
    g = GraphBuilder((6, 6, 2), "ntk")
    h = g.conv("input", 3, 3, name="c1", W_std=1.4, b_std=0.1)
    h = g.relu(h, name="r1")
    h = g.conv(h, 4, (3, 2), name="c2", stride=2, padding="VALID", W_std=1.3, b_std=0.2)
    h = g.relu(h, name="r2")
    h = g.pool(h, "max", 2, name="p1", stride=1)
    h = g.conv(h, 3, 2, name="c3", padding=1, bias=False)
    h = g.pool(h, "avg", 2, name="p2")
    h = g.flatten(h, name="flat")
    out = g.dense(h, 3, name="fc", b_std=0.3)
    return g.build({"arch": "test_cnn"}, out, h)


def _bn_block():
    """conv-BN-relu-conv-BN + (1x1 conv-BN shortcut) -> relu -> global pool -> dense."""
    g = GraphBuilder((5, 5, 2))
    stem = g.relu(g.batchnorm(g.conv("input", 3, 3, name="conv1", bias=False), name="bn1"),
                  name="relu1")
    h = g.conv(stem, 4, 3, name="b.conv1", stride=2, bias=False)
    h = g.relu(g.batchnorm(h, name="b.bn1"), name="b.relu1")
    h = g.batchnorm(g.conv(h, 4, 3, name="b.conv2", bias=False), name="b.bn2")
    s = g.batchnorm(g.conv(stem, 4, 1, name="b.short", stride=2, bias=False), name="b.sbn")
    h = g.relu(g.add_([h, s], name="b.add"), name="b.out")
    h = g.global_avgpool(h, name="pool")
    out = g.dense(h, 3, name="fc")
    return g.build({"arch": "test_bn_block"}, out, h)


def _randomize_bn(params, key):
    """Non-trivial BatchNorm scale/bias/running statistics."""
    out = {}
    for name, p in params.items():
        p = dict(p)
        if "mean" in p:
            key, *ks = jax.random.split(key, 5)
            c = p["mean"].shape
            p["mean"] = 0.3 * jax.random.normal(ks[0], c, p["mean"].dtype)
            p["var"] = jnp.exp(0.5 * jax.random.normal(ks[1], c, p["var"].dtype))
            p["scale"] = 1 + 0.3 * jax.random.normal(ks[2], c, p["scale"].dtype)
            p["bias"] = 0.2 * jax.random.normal(ks[3], c, p["bias"].dtype)
        out[name] = p
    return out


def _case(name, dtype=jnp.float64):
    key = jax.random.PRNGKey({"mlp": 0, "cnn": 1, "bn": 2}[name])
    k0, k1, k2, k3 = jax.random.split(key, 4)
    if name == "mlp":
        model = mlp(4, [8, 6], 3, W_std=1.3, b_std=0.2)
    elif name == "cnn":
        model = _cnn()
    else:
        model = _bn_block()
    params = model.init(k0, dtype)
    if name == "bn":
        params = _randomize_bn(params, k3)
    x1 = jax.random.normal(k1, (5, *model.input_shape), dtype)
    x2 = jax.random.normal(k2, (3, *model.input_shape), dtype)
    return model, params, x1, x2


def _brute_full(model, params, x):
    """Θ[n, m, a, b] on ``x`` from the ravelled Jacobian of the trainable parameters."""
    trainable, stats = split_params(params)
    flat, unravel = ravel_pytree(trainable)

    def f(t):
        return model.apply(merge_params(unravel(t), stats), x)

    j = jax.jit(jax.jacobian(f))(flat)
    return np.einsum("nap,mbp->nmab", j, j)


def _close(a, b, rtol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


# ----------------------------------------------------------------------------- exactness
@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp", "cnn", "bn"])
def test_methods_match_brute_force(name):
    model, params, x1, x2 = _case(name)
    both = _brute_full(model, params, jnp.concatenate([x1, x2]))
    n1 = len(x1)
    full = both[:n1, n1:]
    traced11 = np.einsum("nmaa->nm", both[:n1, :n1]) / both.shape[-1]
    traced12 = np.einsum("nmaa->nm", full) / both.shape[-1]
    for method in EXACT:
        # cross kernel, full output covariance
        _close(empirical.ntk_fn(model, method, trace_axes=())(x1, x2, params), full)
        # traced over logits (mean), tiled with ragged last tiles; via model.apply
        fn = empirical.ntk_fn(model.apply, method, batch_size=2)
        _close(fn(x1, None, params), traced11)  # upper-triangle tiles, transposed below
        _close(fn(x1, x2, params), traced12)


@pytest.mark.slow
def test_methods_agree_on_resnet20():
    """The real ResNet-20 graph (depth 20: 19 convs and the dense read-out, plus 2 option-B
    1x1 projections; 21 BatchNorms with random running statistics; eval mode), on 8x8 inputs
    with first-stage width 4: every method equals the brute-force ravelled Jacobian to 1e-10
    (full output covariance; the logit-traced paths of every method are checked on the MLP,
    CNN and BN graphs above)."""
    model = resnet20(num_classes=4, input_shape=(8, 8, 3), width=4)
    assert [sum(n.op == op for n in model.nodes) for op in ("conv", "batchnorm")] == [21, 21]
    k0, k1, k2 = jax.random.split(jax.random.PRNGKey(3), 3)
    params = _randomize_bn(model.init(k0, jnp.float64), k1)
    x = jax.random.normal(k2, (3, 8, 8, 3), jnp.float64)
    full = _brute_full(model, params, x)
    for method in EXACT:
        _close(empirical.ntk_fn(model, method, trace_axes=())(x, None, params), full)


@pytest.mark.slow
def test_ntvp_memory_plan(monkeypatch):
    """The activation footprint counts every intermediate value (nested jit included); the
    plan obeys its bound; a tiny NTVP_MEMORY_BYTES forces one column per step and JVPs over
    2 of the 5 inputs at a time (the last row tile padded) and leaves the kernel unchanged."""
    w = jnp.ones((4, 3))

    def f(x):
        return jnp.tanh(jnp.sin(x) @ w)

    assert empirical.activation_footprint(f, jnp.ones((2, 4))) == 2 * 4 + 2 * 3 + 2 * 3
    # a nested jit adds its inner equations (an upper bound: its outputs count twice)
    assert empirical.activation_footprint(lambda x: 2 * jax.jit(f)(x), jnp.ones((2, 4))) == 32
    chunk, rows = empirical.ntvp_plan(10**5, 10**4, 64, 64, 10, itemsize=4, budget=2**26)
    assert rows == 64 and chunk * (10**5 + 10**4 + 64 * 10**4) * 4 <= 2**26 and chunk >= 1
    assert empirical.ntvp_plan(10**5, 10**6, 64, 64, 10, budget=2**26)[1] == 8
    assert empirical.ntvp_plan(10**5, 10**6, 64, 64, 10, whole_batch=True,
                               budget=2**26) == (1, 64)
    model, params, x1, x2 = _case("cnn")
    want = _brute_full(model, params, jnp.concatenate([x1, x2]))[: len(x1), len(x1):]
    a = empirical.activation_footprint(lambda x: model.apply(params, x), x1[:1])
    assert model.num_params() <= a  # so a budget of 4 float64 footprints gives (1, 2)
    monkeypatch.setattr(empirical, "NTVP_MEMORY_BYTES", 8 * 4 * a)
    assert empirical.ntvp_plan(model.num_params(), a, 5, 3, 3, itemsize=8) == (1, 2)
    _close(empirical.ntk_fn(model, "ntvp", trace_axes=())(x1, x2, params), want)


@pytest.mark.slow
def test_golden_empirical_fc_width64():
    d = np.load(GOLDEN / "empirical_fc_width64.npz")
    spec = json.loads((GOLDEN / "manifest.json").read_text())["empirical_fc_width64"]
    widths = [kw["out_dim"] for layer, kw in spec if layer == "Dense"]
    model = mlp(d["x1"].shape[1], widths[:-1], widths[-1], parameterization="ntk",
                W_std=1.5, b_std=0.05)
    names = ["fc0", "fc1", "head"]
    params = {n: {"w": jnp.asarray(d[f"layer{2 * i}_W"]), "b": jnp.asarray(d[f"layer{2 * i}_b"][0])}
              for i, n in enumerate(names)}
    _close(model.apply(params, d["x1"]), d["f_x1"])
    for method in EXACT:
        _close(empirical.ntk_fn(model, method, trace_axes=())(d["x1"], d["x2"], params),
               d["ntk_full"])
        _close(empirical.ntk_fn(model, method)(d["x1"], d["x2"], params), d["ntk_trace"])


def _pytree_net():
    """An equinox-style apply_fn over a list of (W, b) tuples, tanh, outputs (N, 2, 3)."""
    ks = jax.random.split(jax.random.PRNGKey(7), 4)
    params = [(jax.random.normal(ks[0], (4, 5)) / 2, jax.random.normal(ks[1], (5,))),
              (jax.random.normal(ks[2], (5, 6)) / 2, jax.random.normal(ks[3], (6,)))]

    def apply_fn(p, x):
        h = jnp.tanh(x @ p[0][0] + p[0][1])
        return (h @ p[1][0] + p[1][1]).reshape(x.shape[0], 2, 3)

    return apply_fn, params


def _brute_raw(apply_fn, params, x1, x2):
    """Θ as (N1, d..., N2, d...) from the ravelled Jacobian."""
    flat, unravel = ravel_pytree(params)
    j1 = jax.jacobian(lambda t: apply_fn(unravel(t), x1))(flat)
    j2 = jax.jacobian(lambda t: apply_fn(unravel(t), x2))(flat)
    return np.tensordot(j1, j2, axes=([-1], [-1]))


@pytest.mark.slow
def test_generic_pytree_axes_conventions():
    """Arbitrary pytrees, multi-axis outputs: neural-tangents' zipped layout, traces are
    means, diagonals keep one axis; vmap_axes=None (whole-batch Jacobians) agrees."""
    apply_fn, params = _pytree_net()
    x1 = jax.random.normal(jax.random.PRNGKey(1), (3, 4))
    x2 = jax.random.normal(jax.random.PRNGKey(2), (2, 4))
    raw = _brute_raw(apply_fn, params, x1, x2)  # (n, i, j, m, k, l)
    raw11 = _brute_raw(apply_fn, params, x1, x1)
    cases = [
        ((), (), np.einsum("nijmkl->nmikjl", raw), raw),
        ((-1,), (), np.einsum("nijmkj->nmik", raw) / 3, raw),
        ((1, 2), (), np.einsum("nijmij->nm", raw) / 6, raw),
        ((2,), (1,), np.einsum("nijmij->nmi", raw) / 3, raw),
        ((1,), (0,), np.einsum("nijnik->njk", raw11) / 2, raw11),
    ]
    for method in ("jacobian", "ntvp"):
        for trace_axes, diagonal_axes, want, src in cases:
            fn = empirical.ntk_fn(apply_fn, method, trace_axes, diagonal_axes)
            got = fn(x1, None, params) if src is raw11 else fn(x1, x2, params)
            _close(got, want)
        # whole-batch Jacobians / VJPs (for apply_fns that mix examples) give the same kernel
        fn = empirical.ntk_fn(apply_fn, method, trace_axes=(), vmap_axes=None)
        _close(fn(x1, x2, params), cases[0][2])


@pytest.mark.slow
def test_structured_on_plain_apply_fn_warns_and_falls_back():
    apply_fn, params = _pytree_net()
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 4))
    with pytest.warns(UserWarning, match="falling back"):
        fn = empirical.ntk_fn(apply_fn, "structured")
    _close(fn(x, None, params), empirical.ntk_fn(apply_fn, "jacobian")(x, None, params))


@pytest.mark.slow
def test_float32_matches_float64():
    model, params, x1, x2 = _case("cnn")
    ref = _brute_full(model, params, jnp.concatenate([x1, x2]))[: len(x1), len(x1):]
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    for method in EXACT:
        k = empirical.ntk_fn(model, method, trace_axes=())(x1.astype(jnp.float32),
                                                           x2.astype(jnp.float32), p32)
        assert k.dtype == jnp.float32
        np.testing.assert_allclose(k, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


@pytest.mark.slow
def test_auto_choice():
    assert empirical.choose_method(10**6, 16, 16, 10, True, structured=True) == "structured"
    assert empirical.choose_method(10**4, 16, 16, 10, traced=True) == "jacobian"
    assert empirical.choose_method(10**4, 16, 16, 10, traced=False) == "ntvp"
    assert empirical.choose_method(10**4, 16, 16, 2, traced=False) == "jacobian"
    # a Jacobian larger than JACOBIAN_MEMORY_BYTES is never chosen
    assert empirical.choose_method(10**9, 16, 16, 1, traced=True) == "ntvp"
    model, params, x1, x2 = _case("mlp")
    _close(empirical.ntk_fn(model)(x1, x2, params),
           empirical.ntk_fn(model, "jacobian")(x1, x2, params))


# ----------------------------------------------------------------------------- infinite width
def _relu_ntk(x, depth, w_std, b_std):
    """Analytic NTK of a ReLU MLP in NTK parameterization with ``depth`` hidden layers and
    one linear read-out, via the arc-cosine recursion (Cho & Saul 2009; Jacot et al. 2018;
    Arora et al. 2019): Σ¹ = σw² xx'/d + σb², Θ¹ = Σ¹,
    Σ^{l+1} = σw² √(q q') (sin θ + (π − θ) cos θ)/(2π) + σb²,
    Θ^{l+1} = Σ^{l+1} + σw² (π − θ)/(2π) Θ^l, cos θ = Σ^l(x,x')/√(q q')."""
    x = np.asarray(x, np.float64)
    s = w_std**2 * x @ x.T / x.shape[1] + b_std**2
    theta = s.copy()
    for _ in range(depth):
        q = np.sqrt(np.outer(np.diag(s), np.diag(s)))
        cos = np.clip(s / q, -1.0, 1.0)
        ang = np.arccos(cos)
        s_new = w_std**2 * q * (np.sin(ang) + (np.pi - ang) * cos) / (2 * np.pi) + b_std**2
        theta = s_new + w_std**2 * (np.pi - ang) / (2 * np.pi) * theta
        s = s_new
    return theta


def test_relu_ntk_recursion_matches_golden():
    """The closed form used below reproduces neural-tangents' analytic NTK (fc_relu_depth3)."""
    d = np.load(GOLDEN / "fc_relu_depth3.npz")
    x = np.concatenate([d["x1"], d["x2"]])
    k = _relu_ntk(x, 3, 1.5, 0.05)
    n1 = len(d["x1"])
    np.testing.assert_allclose(k[:n1, n1:], d["ntk_12"], rtol=1e-10)
    np.testing.assert_allclose(k[:n1, :n1], d["ntk_11"], rtol=1e-6)  # arccos near cos = 1


@pytest.mark.slow
def test_converges_to_infinite_width_ntk():
    """Mean over S seeds of the empirical NTK at init -> analytic NTK of ``dynkit.theory.stax``
    (itself checked against the arc-cosine recursion above); the seed-to-seed
    standard deviation scales like width^(-1/2) (Jacot et al. 2018; Hanin & Nica 2020)."""
    w_std, b_std, seeds = math.sqrt(2.0), 0.1, 48
    widths = np.array([64, 128, 256, 512])
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (4, 3)))
    from dynkit.theory import stax

    dense = [stax.Dense(512, W_std=w_std, b_std=b_std), stax.Relu()]
    _, _, kernel_fn = stax.serial(*dense, *dense, stax.Dense(1, W_std=w_std, b_std=b_std))
    theta = np.asarray(kernel_fn(jnp.asarray(x, jnp.float64), None, "ntk"))
    np.testing.assert_allclose(theta, _relu_ntk(x, 2, w_std, b_std), rtol=1e-6)
    stds = []
    for w in widths:
        model = mlp(3, [int(w), int(w)], 1, parameterization="ntk", W_std=w_std, b_std=b_std)
        fn = empirical.ntk_fn(model, "structured")
        keys = jax.random.split(jax.random.PRNGKey(int(w)), seeds)
        ks = np.asarray(jax.jit(jax.vmap(
            lambda k, model=model, fn=fn: fn(x, None, model.init(k, jnp.float64))))(keys))
        mean, std = ks.mean(0), ks.std(0, ddof=1)
        # CLT band for the seed mean plus an O(1/width) finite-width bias
        assert np.all(np.abs(mean - theta) <= 4 * std / np.sqrt(seeds) + 2 * np.abs(theta) / w)
        stds.append(std.mean())
    slope = np.polyfit(np.log(widths), np.log(stds), 1)[0]
    assert abs(slope + 0.5) < 0.15, slope  # std of log-std with 48 seeds: ~0.1 per width


# ----------------------------------------------------------------------------- bad input
@pytest.mark.slow
def test_bad_input():
    model, params, x1, x2 = _case("mlp")
    fn = empirical.ntk_fn(model, "jacobian")
    with pytest.raises(ShapeMismatchError, match="same feature shape"):
        fn(x1, jnp.ones((2, 5)), params)
    with pytest.raises(ShapeMismatchError, match="expects inputs"):
        fn(jnp.ones((2, 5)), None, params)
    bad = {**params, "fc1": {"w": params["fc1"]["w"][:, :2], "b": params["fc1"]["b"]}}
    with pytest.raises(ShapeMismatchError, match="fc1"):
        fn(x1, x2, bad)
    with pytest.raises(ShapeMismatchError, match="missing layers"):
        fn(x1, x2, {k: v for k, v in params.items() if k != "head"})
    with pytest.raises(InvalidArgumentError, match="NaN"):
        fn(x1.at[0, 0].set(jnp.nan), x2, params)
    with pytest.raises(InvalidArgumentError, match="NaN"):
        fn(x1, x2, {**params, "head": {**params["head"], "b": params["head"]["b"] * jnp.nan}})
    with pytest.raises(InvalidArgumentError, match="method"):
        empirical.ntk_fn(model, "fast")
    with pytest.raises(InvalidArgumentError, match="vmap_axes"):
        empirical.ntk_fn(model, vmap_axes=1)
    with pytest.raises(InvalidArgumentError, match="overlap"):
        empirical.ntk_fn(model, trace_axes=(-1,), diagonal_axes=(1,))(x1, x2, params)
    with pytest.raises(ShapeMismatchError, match="batch axis"):
        empirical.ntk_fn(model, diagonal_axes=(0,))(x1, x2, params)
    apply_fn, pparams = _pytree_net()
    with pytest.raises(ShapeMismatchError, match="apply_fn"):
        empirical.ntk_fn(apply_fn)(jnp.ones((2, 4)), None, pparams[:1])
    with pytest.raises(ShapeMismatchError, match="apply_fn"):
        empirical.ntk_fn(apply_fn)(jnp.ones((2, 7)), None, pparams)


def test_finite_check_is_cached_only_for_immutable_arrays():
    """jax params found finite are not scanned again; numpy params (mutable) are re-checked."""
    model, params, x1, x2 = _case("mlp")
    fn = empirical.ntk_fn(model, "jacobian")
    host = jax.tree.map(np.array, params)
    fn(x1, x2, host)
    host["head"]["b"][0] = np.nan
    with pytest.raises(InvalidArgumentError, match=r"params\['head'\]\['b'\]"):
        fn(x1, x2, host)
    fn(x1, x2, params)
    # the cache moved with the finite check to dynkit.validation (issue #12)
    assert all(validation._known_finite(leaf) for leaf in jax.tree.leaves(params))
