"""Path-norms (Gonon et al., ICLR 2024) against brute-force path enumeration, symmetries,
closed forms and the authors' published bound constants."""

from __future__ import annotations

import math
from collections import namedtuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dynkit as dk
from dynkit.analyses.pathnorm import path_norm, path_norm_series
from dynkit.analyses.pathnorm_bound import (
    ArchitectureConstants,
    architecture_constants,
    bound_factor,
    operator_norm_product,
    pathnorm_bound,
    theorem_constants,
)
from dynkit.data import from_arrays
from dynkit.errors import InvalidArgumentError, UnsupportedLayerError
from dynkit.models import GraphBuilder
from dynkit.registry import METRICS


# --------------------------------------------------------------------- random parameters
def randomize(model, seed, bias_std=0.5, he=False):
    """float64 parameters with random weights (``N(0, 1)``, or ``N(0, 2 / fan_in)`` if
    ``he``), biases and BatchNorm statistics, drawn with numpy (nothing to compile)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shapes in model.param_shapes().items():
        p = {}
        for k, shape in shapes.items():
            if k == "var":
                p[k] = rng.uniform(0.2, 2.0, shape)
            elif k == "scale":
                p[k] = rng.uniform(0.3, 1.5, shape) * rng.choice([-1, 1], shape)
            elif k in ("b", "bias", "mean"):
                p[k] = bias_std * rng.normal(size=shape)
            else:
                p[k] = rng.normal(size=shape) * (np.sqrt(2 / np.prod(shape[:-1])) if he else 1)
        params[name] = p
    return params


# --------------------------------------------------------------------- explicit neuron DAG
class NeuronGraph:
    """Neurons with incoming edges ``(src, weight)``, a bias and a kind (lin, relu, max)."""

    def __init__(self):
        self.kind, self.bias, self.inc = [], [], []

    def new(self, shape, kind, bias=None):
        start = len(self.kind)
        n = int(np.prod(shape))
        self.kind += [kind] * n
        self.bias += [None] * n if bias is None else list(np.broadcast_to(bias, shape).ravel())
        self.inc += [[] for _ in range(n)]
        return np.arange(start, start + n).reshape(shape)


def neuron_graph(model, params, fold_bn=True):
    """Walk the model graph edge by edge (with ``fold_bn``, a BatchNorm right after a dense/conv
    that only feeds it is folded into it: W' = a W, b' = a b + c; otherwise every BatchNorm is
    a layer of neurons with one edge ``a`` and the bias ``c``)."""
    g = NeuronGraph()
    ids = {}
    consumers = {n.name: [m.name for m in model.nodes if n.name in m.inputs] for n in model.nodes}
    folded = {}
    for n in model.nodes:
        if fold_bn and n.op == "batchnorm":
            src = model.node(n.inputs[0])
            if src.op in ("dense", "conv") and consumers[src.name] == [n.name]:
                folded[src.name] = n.name
    for n in model.nodes:
        a = n.attrs
        if n.op == "input":
            ids[n.name] = g.new(model.input_shape, "in")
            continue
        x = ids[n.inputs[0]]
        if n.op in ("dense", "conv"):
            p = params[n.name]
            w = a["w_mult"] * p["w"]
            b = a.get("b_mult", 1.0) * p["b"] if "b" in p else np.zeros(w.shape[-1])
            if n.name in folded:
                bn = params[folded[n.name]]
                s = bn["scale"] / np.sqrt(bn["var"] + model.node(folded[n.name]).attrs["eps"])
                w, b = w * s, s * b + bn["bias"] - s * bn["mean"]
            if n.op == "dense":
                out = g.new((w.shape[1],), "lin", b)
                for j in range(w.shape[1]):
                    g.inc[out[j]] = [(x[i], w[i, j]) for i in range(w.shape[0])]
            else:
                (kh, kw), (sh, sw), pad = a["kernel"], a["stride"], a["padding"]
                H, W_, _ = x.shape
                oh, ow = (H + 2 * pad - kh) // sh + 1, (W_ + 2 * pad - kw) // sw + 1
                out = g.new((oh, ow, w.shape[-1]), "lin", b)
                for oy, ox, co in np.ndindex(oh, ow, w.shape[-1]):
                    for ky, kx, ci in np.ndindex(kh, kw, w.shape[2]):
                        iy, ix = oy * sh - pad + ky, ox * sw - pad + kx
                        if 0 <= iy < H and 0 <= ix < W_:
                            g.inc[out[oy, ox, co]].append((x[iy, ix, ci], w[ky, kx, ci, co]))
            ids[n.name] = out
        elif n.op == "batchnorm" and n.inputs[0] in folded:
            ids[n.name] = x
        elif n.op == "batchnorm":
            p = params[n.name]
            s = p["scale"] / np.sqrt(p["var"] + a["eps"])
            out = g.new(x.shape, "lin", p["bias"] - s * p["mean"])
            for idx in np.ndindex(x.shape):
                g.inc[out[idx]] = [(x[idx], s[idx[-1]])]
            ids[n.name] = out
        elif n.op in ("relu", "add", "scale"):
            kind = "relu" if n.op == "relu" else "lin"
            weight = a["factor"] if n.op == "scale" else 1.0
            out = g.new(x.shape, kind)
            for idx in np.ndindex(x.shape):
                g.inc[out[idx]] = [(ids[s][idx], weight) for s in n.inputs]
            ids[n.name] = out
        elif n.op in ("maxpool", "avgpool"):
            (kh, kw), (sh, sw), pad = a["window"], a["stride"], a["padding"]
            H, W_, C = x.shape
            oh, ow = (H + 2 * pad - kh) // sh + 1, (W_ + 2 * pad - kw) // sw + 1
            out = g.new((oh, ow, C), "max" if n.op == "maxpool" else "lin")
            weight = 1.0 if n.op == "maxpool" else 1.0 / (kh * kw)
            for oy, ox, c in np.ndindex(oh, ow, C):
                for ky, kx in np.ndindex(kh, kw):
                    iy, ix = oy * sh - pad + ky, ox * sw - pad + kx
                    if 0 <= iy < H and 0 <= ix < W_:
                        g.inc[out[oy, ox, c]].append((x[iy, ix, c], weight))
            ids[n.name] = out
        elif n.op == "global_avgpool":
            C = x.shape[-1]
            out = g.new((C,), "lin")
            hw = x.shape[0] * x.shape[1]
            for c in range(C):
                g.inc[out[c]] = [(x[iy, ix, c], 1.0 / hw) for iy, ix in np.ndindex(x.shape[:2])]
            ids[n.name] = out
        elif n.op == "flatten":
            ids[n.name] = x.reshape(-1)
        else:
            raise AssertionError(n.op)
    return g, ids[model.output].ravel()


def neuron_forward(g, outputs, x):
    """Evaluate the neuron DAG on one input (ReLU / max-pooling / linear neurons)."""
    val = np.zeros(len(g.kind))
    val[: x.size] = x.ravel()
    for v in range(x.size, len(g.kind)):
        terms = [w * val[u] for u, w in g.inc[v]]
        if g.kind[v] == "max":
            val[v] = max(terms)
            continue
        s = sum(terms) + (g.bias[v] or 0.0)
        val[v] = max(s, 0.0) if g.kind[v] == "relu" else s
    return val[outputs]


def brute_force_qq(g, outputs, q):
    """sum_p |Phi_p|^q by listing every path (input or biased neuron -> output), edge by edge."""
    out_edges = [[] for _ in g.kind]
    for v, inc in enumerate(g.inc):
        for u, w in inc:
            out_edges[u].append((v, w))
    is_out = np.zeros(len(g.kind), bool)
    is_out[outputs] = True
    total, count = 0.0, 0
    for start, kind in enumerate(g.kind):
        if kind == "in":
            coef = 1.0
        elif g.bias[start] is not None:
            coef = abs(g.bias[start]) ** q
        else:
            continue
        stack = [(start, coef)]
        while stack:
            v, c = stack.pop()
            if is_out[v]:
                total += c
                count += 1
            stack.extend((u, c * abs(w) ** q) for u, w in out_edges[v])
    return total, count


def tiny_dag(channels, head_gap, conv_bias):
    """Biases, folded and stand-alone BatchNorm, an identity skip, an avg-pool branch, two
    max-pools (one padded), a scale node; flatten or global average pool before the head."""
    g = GraphBuilder((4, 4, 1))
    h = g.conv("input", channels, 3, name="c1", padding=1, bias=True)
    h = g.batchnorm(h, name="bn1")
    r = g.relu(h, name="r1")
    a = g.pool(r, "max", 2, name="mp", stride=1, padding=0)
    a = g.conv(a, channels, 1, name="c2", padding=0, bias=conv_bias)
    s = g.pool(r, "avg", 2, name="ap", stride=1, padding=0)
    h = g.add_([a, s], name="add")
    h = g.relu(h, name="r2")
    c = g.conv(h, channels, 3, name="c3", padding=1, bias=conv_bias)
    h = g.add_([c, h], name="skip")
    h = g.batchnorm(h, name="bn2")
    h = g.pool(h, "max", 2, name="mp2", stride=2, padding=1)
    h = g.global_avgpool(h, name="gap") if head_gap else g.flatten(h, name="flat")
    out = g.dense(h, 2, name="head")
    out = g.scale(out, -1.7, name="alpha")
    return g.build({"arch": "tiny"}, out, h)


@pytest.mark.parametrize("channels, head_gap, conv_bias, fold_bn",
                         [(1, True, True, True), (2, False, False, True), (1, False, True, False)])
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), q=st.sampled_from([0.5, 1.0, 1.7, 2.0, 3.0]))
@pytest.mark.slow
def test_matches_brute_force_path_enumeration(channels, head_gap, conv_bias, fold_bn, seed, q):
    model = tiny_dag(channels, head_gap, conv_bias)
    params = randomize(model, seed)
    g, outputs = neuron_graph(model, params, fold_bn)
    # the explicit neuron DAG is the network: it reproduces the forward pass
    x = np.random.default_rng(seed + 1).normal(size=(1, *model.input_shape))
    expected = np.asarray(model.apply(params, jnp.asarray(x)))[0]
    np.testing.assert_allclose(neuron_forward(g, outputs, x[0]), expected, rtol=1e-10,
                               atol=1e-12)
    total, count = brute_force_qq(g, outputs, q)
    assert count > 100
    pn = path_norm(model, params, q, fold_bn=fold_bn)
    assert pn.q == q
    assert pn.value == pytest.approx(total ** (1 / q), rel=1e-10)
    assert pn.log_value == pytest.approx(math.log(total) / q, rel=1e-10, abs=1e-12)


def test_mlp_matches_brute_force_with_parameterization_multipliers():
    model = dk.models.mlp(3, [4, 3], 2, parameterization="ntk", W_std=1.3, b_std=0.4)
    params = randomize(model, 3)
    g, outputs = neuron_graph(model, params)
    for q in (1.0, 2.0, 4.0):
        total, _ = brute_force_qq(g, outputs, q)
        assert path_norm(model, params, q).value == pytest.approx(total ** (1 / q), rel=1e-10)


# --------------------------------------------------------------------- symmetries
def test_invariant_under_neuron_rescaling_and_permutation():
    model = dk.models.mlp(5, [6, 4], 3, b_std=0.5)
    params = randomize(model, 7)
    lam = np.random.default_rng(0).uniform(0.1, 10.0, 6)
    perm = np.random.default_rng(1).permutation(6)
    rescaled = {k: dict(v) for k, v in params.items()}
    rescaled["fc0"] = {"w": params["fc0"]["w"] * lam, "b": params["fc0"]["b"] * lam}
    rescaled["fc1"] = {"w": params["fc1"]["w"] / lam[:, None], "b": params["fc1"]["b"]}
    permuted = {k: dict(v) for k, v in params.items()}
    permuted["fc0"] = {"w": params["fc0"]["w"][:, perm], "b": params["fc0"]["b"][perm]}
    permuted["fc1"] = {"w": params["fc1"]["w"][perm], "b": params["fc1"]["b"]}
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 5)))
    for other in (rescaled, permuted):  # the same function ...
        np.testing.assert_allclose(model.apply(other, x), model.apply(params, x), rtol=1e-10)
    for q in (1, 2, 3.3):  # ... and the same path-norm
        base = path_norm(model, params, q).log_value
        assert path_norm(model, rescaled, q).log_value == pytest.approx(base, rel=1e-12)
        assert path_norm(model, permuted, q).log_value == pytest.approx(base, rel=1e-12)
    assert path_norm(model, {**params, "fc0": {"w": 2 * params["fc0"]["w"],
                                               "b": params["fc0"]["b"]}}).value \
        > path_norm(model, params).value


def test_invariant_under_channel_rescaling_through_max_pool():
    model = dk.models.cnn((6, 6, 2), channels=[3, 4], num_classes=2)
    params = randomize(model, 5)
    convs = [n.name for n in model.nodes if n.op == "conv"]
    lam = np.random.default_rng(3).uniform(0.2, 5.0, 3)
    first, second = convs[0], convs[1]
    rescaled = {k: dict(v) for k, v in params.items()}
    rescaled[first] = {k: v * lam for k, v in params[first].items()}
    rescaled[second] = {**params[second], "w": params[second]["w"] / lam[:, None]}
    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 6, 6, 2)))
    np.testing.assert_allclose(model.apply(rescaled, x), model.apply(params, x), rtol=1e-10)
    for q in (1, 2):
        assert path_norm(model, rescaled, q).log_value == \
            pytest.approx(path_norm(model, params, q).log_value, rel=1e-12)


def test_batchnorm_folding_equals_explicit_affine_layer():
    def build(bn):
        g = GraphBuilder((5, 5, 2))
        h = g.conv("input", 3, 3, name="conv", padding=1, bias=True)
        if bn:
            h = g.batchnorm(h, name="bn")
        h = g.relu(h, name="relu")
        h = g.pool(h, "max", 2, name="pool", stride=2, padding=0)
        h = g.flatten(h)
        return g.build({"arch": "t"}, g.dense(h, 2, name="head"), h)

    with_bn, folded = build(True), build(False)
    params = randomize(with_bn, 11)
    bn, conv = params["bn"], params["conv"]
    a = bn["scale"] / np.sqrt(bn["var"] + 1e-5)
    fparams = {"conv": {"w": conv["w"] * a, "b": a * conv["b"] + bn["bias"] - a * bn["mean"]},
               "head": params["head"]}
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 5, 2)))
    np.testing.assert_allclose(folded.apply(fparams, x), with_bn.apply(params, x), rtol=1e-10)
    for q in (0.5, 1, 2, 4):
        assert path_norm(with_bn, params, q).value == \
            pytest.approx(path_norm(folded, fparams, q).value, rel=1e-12)


def conv_bn_relu_dense(conv_bias, through_scale=False):
    """conv (3x3, padding 1) -> BatchNorm -> ReLU -> flatten -> dense; ``through_scale`` puts a
    ``scale(1)`` node between conv and BatchNorm, so the BatchNorm cannot be folded."""
    g = GraphBuilder((3, 3, 1))
    h = g.conv("input", 2, 3, name="conv", padding=1, bias=conv_bias)
    if through_scale:
        h = g.scale(h, 1.0, name="one")
    h = g.relu(g.batchnorm(h, name="bn"), name="relu")
    h = g.flatten(h)
    return g.build({"arch": "t"}, g.dense(h, 2, name="head"), h)


@pytest.mark.parametrize("q", [0.5, 1.0, 2.0, 3.0])
def test_fold_bn_conventions_match_brute_force_on_conv_bn_relu_dense(q):
    model = conv_bn_relu_dense(conv_bias=True)
    params = randomize(model, 12)
    assert np.all(np.abs(params["bn"]["mean"]) > 0) and np.all(np.abs(params["conv"]["b"]) > 0)
    folded_total, folded_count = brute_force_qq(*neuron_graph(model, params, True), q)
    split_total, split_count = brute_force_qq(*neuron_graph(model, params, False), q)
    assert split_count > folded_count  # the BN shifts are paths of their own
    # fold_bn=True is the default and today's value
    default = path_norm(model, params, q)
    assert path_norm(model, params, q, fold_bn=True) == default
    assert default.value == pytest.approx(folded_total ** (1 / q), rel=1e-12)
    split = path_norm(model, params, q, fold_bn=False)
    assert split.value == pytest.approx(split_total ** (1 / q), rel=1e-12)
    assert abs(split.log_value - default.log_value) > 1e-5  # conv bias and BN mean != 0
    # a BatchNorm that cannot be folded (behind a scale(1) node) is the fold_bn=False network
    unfoldable = conv_bn_relu_dense(conv_bias=True, through_scale=True)
    assert path_norm(unfoldable, params, q).value == pytest.approx(split.value, rel=1e-12)


def test_fold_bn_is_irrelevant_without_a_conv_bias():
    model = conv_bn_relu_dense(conv_bias=False)
    params = randomize(model, 13)
    for q in (1.0, 2.0):
        assert path_norm(model, params, q, fold_bn=False).value == \
            pytest.approx(path_norm(model, params, q).value, rel=1e-12)
    assert architecture_constants(model, fold_bn=False).depth == \
        architecture_constants(model).depth + 1  # the BatchNorm edge layer


@pytest.mark.slow
def test_fold_bn_false_matches_the_reference_convention_on_vgg_bn():
    """VGG-11-BN converted from PyTorch; the authors' convention rewritten here in torch from
    its definition: every weight and bias t -> |t|^q, each BatchNorm an affine layer of its own
    with weight |a|^q and bias |c|^q, max-pools summing their window, all-ones input; the sum
    of the outputs is ||Phi||_q^q."""
    torch = pytest.importorskip("torch")
    import torch_reference as tr
    from torch import nn

    from dynkit.checkpoints import convert_state_dict

    torch.manual_seed(0)
    net = tr.randomize_batchnorm(tr.VGG(tr.VGG11_CFG, flat_dim=512, width=16, batchnorm=True))
    net = net.double().eval()
    model = dk.models.vgg11(input_shape=(32, 32, 3), batchnorm=True, classifier_width=16)
    params = convert_state_dict(model, {k: v.numpy() for k, v in net.state_dict().items()})

    class SumPool(nn.Module):
        def forward(self, x):
            return nn.functional.avg_pool2d(x, 2, 2) * 4.0

    for q in (1.0, 2.0):
        layers = []
        with torch.no_grad():
            for m in net.features:
                if isinstance(m, nn.Conv2d):
                    r = nn.Conv2d(m.in_channels, m.out_channels, 3, padding=1).double()
                    r.weight.copy_(m.weight.abs() ** q)
                    r.bias.copy_(m.bias.abs() ** q)
                elif isinstance(m, nn.BatchNorm2d):
                    a = m.weight / torch.sqrt(m.running_var + m.eps)
                    r = nn.Conv2d(m.num_features, m.num_features, 1,
                                  groups=m.num_features).double()
                    r.weight.copy_((a.abs() ** q).view(-1, 1, 1, 1))
                    r.bias.copy_((m.bias - a * m.running_mean).abs() ** q)
                else:
                    r = SumPool() if isinstance(m, nn.MaxPool2d) else nn.Identity()
                layers.append(r)
            h = nn.Sequential(*layers)(torch.ones(1, 3, 32, 32, dtype=torch.float64))
            h = h.flatten(1)
            for m in net.classifier:
                if isinstance(m, nn.Linear):
                    h = h @ (m.weight.abs() ** q).T + m.bias.abs() ** q
            reference = float(h.sum()) ** (1 / q)
        split = path_norm(model, params, q, fold_bn=False)
        assert split.value == pytest.approx(reference, rel=1e-10)
        folded = path_norm(model, params, q)
        assert abs(folded.value / split.value - 1) > 1e-5  # conv biases and BN shifts differ


def test_global_pool_scaling_with_input_size():
    """1x1 convolutions + global average pool: ||Phi||_q^q scales exactly as (HW)^(1-q)."""
    def build(size):
        g = GraphBuilder((size, size, 2))
        h = g.relu(g.conv("input", 3, 1, name="c", padding=0, bias=True), name="r")
        h = g.global_avgpool(h)
        return g.build({"arch": "t"}, g.dense(h, 2, name="head", bias=False), h)

    small, large = build(3), build(6)
    params = randomize(small, 2)
    for q in (1.0, 2.0, 3.0):
        lq_small = q * path_norm(small, params, q).log_value
        lq_large = q * path_norm(large, params, q).log_value
        assert lq_large - lq_small == pytest.approx((1 - q) * math.log(4), abs=1e-12)


# --------------------------------------------------------------------- overflow and errors
@pytest.mark.slow
def test_resnet50_l1_is_finite_in_log_space_and_never_silently_inf():
    model = dk.models.resnet50(input_shape=(32, 32, 3), num_classes=10)
    params = randomize(model, 0, he=True)
    params["fc"]["b"] = np.zeros_like(params["fc"]["b"])
    base = path_norm(model, params, 1)
    assert math.isfinite(base.log_value) and base.log_value > 50
    assert base.value == pytest.approx(math.exp(base.log_value), rel=1e-12)
    # every path crosses fc once and fc has no bias: scaling fc by c scales ||Phi||_1 by c
    big = {**params, "fc": {**params["fc"], "w": params["fc"]["w"] * 1e300}}
    with pytest.warns(RuntimeWarning, match="float64 range"):
        huge = path_norm(model, big, 1)
    assert huge.value == math.inf
    assert huge.log_value == pytest.approx(base.log_value + 300 * math.log(10), rel=1e-12)


def test_unsupported_layers_raise_naming_the_node():
    tanh = dk.models.mlp(3, [4], 2, activation="tanh")
    with pytest.raises(UnsupportedLayerError, match="act0.*tanh"):
        path_norm(tanh, tanh.init(jax.random.PRNGKey(0)))
    g = GraphBuilder((4,))
    h = g.dense("input", 3, name="fc")
    # layernorm became a graph op with parameters (issue #13): it needs num_features now;
    # path-norms still refuse it
    h = g.add("ln", "layernorm", [h], (3,), num_features=3)
    model = g.build({"arch": "t"}, g.dense(h, 2, name="head"), h)
    with pytest.raises(UnsupportedLayerError, match="'ln'.*layernorm"):
        path_norm(model, model.init(jax.random.PRNGKey(0)))


def test_bad_arguments():
    model = dk.models.mlp(3, [4], 2)
    params = randomize(model, 0)
    for q in (0, -1, math.nan, math.inf):
        with pytest.raises(InvalidArgumentError, match="q must be"):
            path_norm(model, params, q)
    bad = {**params, "fc0": {**params["fc0"], "w": params["fc0"]["w"] * np.nan}}
    with pytest.raises(InvalidArgumentError, match="fc0.*NaN"):
        path_norm(model, bad)
    with pytest.raises(InvalidArgumentError, match="head"):
        path_norm(model, {"fc0": params["fc0"]})


# --------------------------------------------------------------------- bound, operator norms
def test_bound_constants_reproduce_the_authors_table2_for_resnet18():
    """Gonon et al. (2024), Table 2: 4 C B / sqrt(n) = 0.088093 (sharpened: 0.059894) with
    D=18, P=1, K=9, d_in=224*224*3, d_out=1000, n=int(0.99 * 1281167), B=2.64."""
    c = ArchitectureConstants(depth=18, pool_kinds=1, pool_kernel=9, pools_on_path=1,
                              d_in=224 * 224 * 3, d_out=1000)
    C, C_sharp = theorem_constants(c)
    n = int(0.99 * 1281167)
    assert bound_factor(C, 2.640000104904175, n) == pytest.approx(0.088093, abs=5e-7)
    assert bound_factor(C_sharp, 2.640000104904175, n) == pytest.approx(0.059894, abs=5e-7)


def test_architecture_constants_of_resnet18():
    c = architecture_constants(dk.models.resnet18())
    assert (c.pool_kinds, c.pool_kernel, c.pools_on_path, c.d_in, c.d_out) == \
        (1, 9, 1, 224 * 224 * 3, 1000)
    assert c.depth == 18 + 2 + 8  # weight layers + (max, global avg) pools + residual adds
    assert architecture_constants(dk.models.resnet18(), depth=18).depth == 18


def test_pathnorm_bound_is_factor_times_l1_pathnorm():
    model = dk.models.mlp(4, [5], 3, b_std=0.3)
    params = randomize(model, 1)
    b = pathnorm_bound(model, params, n_train=500, input_bound=0.5)
    c = b.constants
    assert (c.depth, c.pool_kinds, c.pool_kernel, c.d_in, c.d_out) == (2, 0, 1, 4, 3)
    expected_C = math.sqrt(2 * math.log(3) + math.log(3 * 5 * 3))
    assert b.C == pytest.approx(expected_C, rel=1e-14)
    assert b.B == 1.0  # bias paths see the constant input 1
    assert b.factor == pytest.approx(4 * expected_C / math.sqrt(500), rel=1e-14)
    assert b.value == pytest.approx(b.factor * path_norm(model, params, 1).value, rel=1e-12)
    with pytest.raises(InvalidArgumentError, match="n_train"):
        pathnorm_bound(model, params, n_train=0, input_bound=1.0)


def test_operator_norm_product_dense_is_product_of_spectral_norms():
    model = dk.models.mlp(6, [5, 4], 3, parameterization="ntk", W_std=1.4)
    params = randomize(model, 2)
    out = operator_norm_product(model, params)
    norms = []
    for name in ("fc0", "fc1", "head"):
        w = model.node(name).attrs["w_mult"] * params[name]["w"]
        norms.append(np.linalg.norm(w, 2))
    assert [v for _, v in out.layers] == pytest.approx(norms, rel=1e-12)
    assert out.log_value == pytest.approx(np.sum(np.log(norms)), rel=1e-12)


def test_operator_norm_of_conv_matches_svd_of_its_matrix():
    g = GraphBuilder((5, 5, 2))
    h = g.conv("input", 3, 3, name="conv", stride=2, padding=1, bias=True)
    h = g.batchnorm(h, name="bn")
    h = g.flatten(g.relu(h, name="r"))
    model = g.build({"arch": "t"}, g.dense(h, 2, name="head"), h)
    params = randomize(model, 4)
    bn = params["bn"]
    a = bn["scale"] / np.sqrt(bn["var"] + 1e-5)
    w = params["conv"]["w"] * a
    conv = jax.vmap(lambda e: jax.lax.conv_general_dilated(
        e.reshape(1, 5, 5, 2), jnp.asarray(w), (2, 2), [(1, 1), (1, 1)],
        dimension_numbers=("NHWC", "HWIO", "NHWC")).ravel())
    matrix = np.asarray(conv(jnp.eye(50))).T
    exact = np.linalg.norm(matrix, 2)
    out = operator_norm_product(model, params, n_iter=2000)
    est = dict(out.layers)["conv"]
    assert exact * (1 - 1e-8) <= est <= exact * (1 + 1e-12)


# --------------------------------------------------------------------- series and metric
def test_series_over_checkpoints_and_metric_table():
    model = dk.models.mlp(3, [4], 2, b_std=0.2)
    Ckpt = namedtuple("Ckpt", "model params step")
    run = [Ckpt(model, randomize(model, s), s * 10) for s in range(2)]
    df = path_norm_series(run, qs=(1, 2, 4))
    # the tidy series schema (issue #12): one row per (step, metric, q), metric pathnorm and
    # log_pathnorm (formerly the columns value and log_value)
    assert list(df.columns) == ["step", "epoch", "metric", "value", "q"]
    assert len(df) == 12 and df["epoch"].isna().all()
    row = df[(df.step == 10) & (df.q == 2) & (df.metric == "pathnorm")].iloc[0]
    assert row.value == pytest.approx(path_norm(model, run[1].params, 2).value, rel=1e-14)

    data = from_arrays(np.random.default_rng(0).normal(size=(40, 3)),
                               np.arange(40) % 2)
    table = METRICS.get("pathnorm").func(model, run[0].params, data).set_index("metric")
    assert list(table.columns) == ["value"]
    for q in (1, 2, 4):
        pn = path_norm(model, run[0].params, q)
        assert table.loc[f"pathnorm_l{q}", "value"] == pytest.approx(pn.value, rel=1e-14)
        assert table.loc[f"log_pathnorm_l{q}", "value"] == pytest.approx(pn.log_value)
    b = pathnorm_bound(model, run[0].params, n_train=len(data.x_train),
                       input_bound=float(np.abs(data.x_train).max()))
    assert table.loc["bound", "value"] == pytest.approx(b.value, rel=1e-12)


def test_series_from_a_run_folder(tmp_path):
    model = dk.models.mlp(3, [4], 2, b_std=0.2)
    params = {s: randomize(model, s) for s in (5, 20)}
    for step, p in params.items():
        dk.save_checkpoint(tmp_path / f"step_{step}.safetensors", model, p, step=step)
    df = path_norm_series(tmp_path, qs=(1, 2))
    logs = df[df.metric == "log_pathnorm"]  # tidy schema: the log is a metric of its own
    assert list(logs.step) == [5, 5, 20, 20] and list(logs.q) == [1.0, 2.0, 1.0, 2.0]
    for row in logs.itertuples():
        expected = path_norm(model, params[row.step], row.q)
        assert row.value == pytest.approx(expected.log_value, rel=1e-14)  # float64 kept
