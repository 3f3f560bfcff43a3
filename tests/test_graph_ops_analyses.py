"""Every analysis on the graph ops of ``dynkit.models.ops``: correct (checked against brute
force or a symmetry) or a clear refusal naming the node."""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_pathnorm import NeuronGraph, brute_force_qq, neuron_forward, randomize

from dynkit.analyses import lmc
from dynkit.analyses.pathnorm import path_norm
from dynkit.analyses.pathnorm_bound import architecture_constants, operator_norm_product
from dynkit.analyses.permutation import apply_permutation, permutation_spec, weight_matching
from dynkit.checkpoints import load_checkpoint, save_checkpoint
from dynkit.errors import CheckpointError, UnsupportedLayerError
from dynkit.metrics import weight_norms
from dynkit.models.graph import Model, Node
from dynkit.theory.empirical import model_ntk_fn

torch = pytest.importorskip("torch")


def lin(_kind, **attrs):
    return {"w_mult": 1.0, "init_std": 0.5, "b_init_std": 0.1, **attrs}


def graph(nodes, input_shape, output="head", feature="flat", arch="ops_net"):
    return Model({"arch": arch}, (Node("input", "input"), *nodes), output, feature,
                 tuple(input_shape))


def unet_like(fold_bn_after_ct=True, bilinear_size=(4, 5)):
    """conv -> relu -> {conv_transpose (-> BN), nearest x2} -> concat -> relu -> bilinear ->
    dilated grouped conv -> flatten -> dense."""
    ct_out = "bn" if fold_bn_after_ct else "ct"
    nodes = [
        Node("c1", "conv", ("input",), lin("conv", kernel=[3, 3], in_ch=1, out_ch=2,
                                            padding=1)),
        Node("r1", "relu", ("c1",)),
        Node("ct", "conv_transpose", ("r1",), lin("ct", kernel=[3, 3], in_ch=2, out_ch=2,
                                                   stride=2, padding=1, output_padding=1)),
        *([Node("bn", "batchnorm", ("ct",), {"num_features": 2, "eps": 1e-5})]
          if fold_bn_after_ct else []),
        Node("up", "upsample", ("r1",), {"mode": "nearest", "scale_factor": 2}),
        Node("cat", "concat", (ct_out, "up")),
        Node("r2", "relu", ("cat",)),
        Node("bl", "upsample", ("r2",), {"mode": "bilinear", "size": list(bilinear_size)}),
        Node("c2", "conv", ("bl",), lin("conv", kernel=[3, 3], in_ch=4, out_ch=2, padding=2,
                                         dilation=2, groups=2)),
        Node("flat", "flatten", ("c2",)),
        Node("head", "dense", ("flat",), lin("dense", in_dim=2 * math.prod(bilinear_size),
                                             out_dim=2)),
    ]
    return graph(nodes, (3, 2, 1))


# --------------------------------------------------------------------- explicit neuron DAG
def _impulse_weights(shape_in, fn):
    """Edge weights of a parameter-free linear map of one channel: ``fn`` applied to each
    unit impulse (PyTorch's own op, NCHW), as ``{(in_pos, out_pos): weight}``."""
    edges = {}
    for pos in np.ndindex(shape_in):
        e = np.zeros((1, 1, *shape_in))
        e[(0, 0, *pos)] = 1.0
        out = fn(torch.from_numpy(e)).numpy()[0, 0]
        for opos in zip(*np.nonzero(out)):
            edges[(pos, tuple(int(i) for i in opos))] = float(out[opos])
    return edges, out.shape


def _one(v):
    """A stride/padding/... attr, an int or the same int per spatial axis (as imported)."""
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    assert len(set(v)) == 1, v
    return v[0]


def neuron_graph(model, params, fold_bn):
    """The neuron DAG of ``unet_like``, edge by edge, with weights from the attrs (convs) and
    from torch impulse responses (upsampling)."""
    F = torch.nn.functional
    g, ids = NeuronGraph(), {}
    folded = {"ct": "bn"} if fold_bn and any(n.name == "bn" for n in model.nodes) else {}
    for n in model.nodes:
        a = n.attrs
        if n.op == "input":
            ids[n.name] = g.new(model.input_shape, "in")
            continue
        x = ids[n.inputs[0]]
        if n.op in ("conv", "conv_transpose"):
            p = params[n.name]
            w, b = p["w"] * a["w_mult"], p["b"] * a.get("b_mult", 1.0)
            if n.name in folded:
                bn = params[folded[n.name]]
                s = bn["scale"] / np.sqrt(bn["var"] + 1e-5)
                w, b = w * s, s * b + bn["bias"] - s * bn["mean"]
            (kh, kw), st, pad = a["kernel"], _one(a.get("stride", 1)), _one(a["padding"])
            d, groups = _one(a.get("dilation", 1)), a.get("groups", 1)
            H, W, cin = x.shape
            cout = w.shape[-1]
            if n.op == "conv":
                oh, ow = (H + 2 * pad - d * (kh - 1) - 1) // st + 1, \
                    (W + 2 * pad - d * (kw - 1) - 1) // st + 1
                out = g.new((oh, ow, cout), "lin", b)
                gin = cin // groups
                for oy, ox, co in np.ndindex(oh, ow, cout):
                    grp = co // (cout // groups)
                    for ky, kx, cl in np.ndindex(kh, kw, gin):
                        iy, ix = oy * st - pad + ky * d, ox * st - pad + kx * d
                        if 0 <= iy < H and 0 <= ix < W:
                            g.inc[out[oy, ox, co]].append((x[iy, ix, grp * gin + cl],
                                                           w[ky, kx, cl, co]))
            else:
                op = _one(a["output_padding"])
                oh, ow = (H - 1) * st - 2 * pad + kh + op, (W - 1) * st - 2 * pad + kw + op
                out = g.new((oh, ow, cout), "lin", b)
                for iy, ix, ci, ky, kx, co in np.ndindex(H, W, cin, kh, kw, cout):
                    oy, ox = iy * st - pad + ky, ix * st - pad + kx
                    if 0 <= oy < oh and 0 <= ox < ow:
                        g.inc[out[oy, ox, co]].append((x[iy, ix, ci], w[ky, kx, ci, co]))
            ids[n.name] = out
        elif n.op == "batchnorm" and folded:
            ids[n.name] = x
        elif n.op == "batchnorm":
            p = params[n.name]
            s = p["scale"] / np.sqrt(p["var"] + 1e-5)
            out = g.new(x.shape, "lin", p["bias"] - s * p["mean"])
            for idx in np.ndindex(x.shape):
                g.inc[out[idx]] = [(x[idx], s[idx[-1]])]
            ids[n.name] = out
        elif n.op == "relu":
            out = g.new(x.shape, "relu")
            for idx in np.ndindex(x.shape):
                g.inc[out[idx]] = [(x[idx], 1.0)]
            ids[n.name] = out
        elif n.op == "concat":
            ids[n.name] = np.concatenate([ids[s] for s in n.inputs], axis=-1)
        elif n.op == "upsample":
            kw = ({"scale_factor": float(_one(a["scale_factor"]))} if "scale_factor" in a
                  else {"size": tuple(a["size"])})
            if a["mode"] == "bilinear":
                kw["align_corners"] = False
            edges, oshape = _impulse_weights(x.shape[:-1],
                                             partial(F.interpolate, mode=a["mode"], **kw))
            out = g.new((*oshape, x.shape[-1]), "lin")
            for (ipos, opos), wgt in edges.items():
                for c in range(x.shape[-1]):
                    g.inc[out[(*opos, c)]].append((x[(*ipos, c)], wgt))
            ids[n.name] = out
        elif n.op == "flatten":
            ids[n.name] = x.reshape(-1)
        elif n.op == "dense":
            p = params[n.name]
            w, b = p["w"] * a["w_mult"], p["b"]
            out = g.new((w.shape[1],), "lin", b)
            for j in range(w.shape[1]):
                g.inc[out[j]] = [(x[i], w[i, j]) for i in range(w.shape[0])]
            ids[n.name] = out
        else:
            raise AssertionError(n.op)
    return g, ids[model.output].ravel()


@pytest.mark.parametrize("fold_bn", [True, False])
@pytest.mark.parametrize("bilinear_size", [(4, 5), (9, 7)])
@pytest.mark.slow
def test_pathnorm_through_concat_upsample_conv_transpose_matches_brute_force(fold_bn,
                                                                             bilinear_size):
    model = unet_like(True, bilinear_size)
    params = randomize(model, 3)
    g, outputs = neuron_graph(model, params, fold_bn)
    x = np.random.default_rng(4).normal(size=(1, *model.input_shape))
    expected = np.asarray(model.apply(params, jnp.asarray(x)))[0]
    np.testing.assert_allclose(neuron_forward(g, outputs, x[0]), expected, rtol=1e-10,
                               atol=1e-12)  # the neuron DAG is the network
    for q in (1.0, 2.0, 0.7):
        total, count = brute_force_qq(g, outputs, q)
        assert count > 1000
        pn = path_norm(model, params, q, fold_bn=fold_bn)
        assert pn.value == pytest.approx(total ** (1 / q), rel=1e-10)


@pytest.mark.slow
def test_bound_constants_and_operator_norms_count_the_new_layers():
    model = unet_like(False)
    # longest path: c1, ct, bl, c2, head (edges); up is one edge too but on a shorter branch
    assert architecture_constants(model).depth == 5
    params = randomize(model, 5)
    layers = dict(operator_norm_product(model, params, n_iter=2000).layers)
    assert set(layers) == {"c1", "ct", "c2", "head"}
    # the transposed convolution's norm: the largest singular value of its explicit matrix,
    # built column by column with torch's conv_transpose2d on unit impulses
    h, w_, c = model.node_shapes()["r1"]
    wt = torch.from_numpy(np.transpose(params["ct"]["w"], (2, 3, 0, 1)))
    eye = torch.eye(h * w_ * c, dtype=torch.float64).reshape(-1, h, w_, c).permute(0, 3, 1, 2)
    cols = torch.nn.functional.conv_transpose2d(eye, wt, None, 2, 1, 1)
    exact = np.linalg.norm(cols.reshape(h * w_ * c, -1).numpy().T, 2)
    assert exact * (1 - 1e-8) <= layers["ct"] <= exact * (1 + 1e-12)


@pytest.mark.parametrize("op,attrs", [
    ("layernorm", {"num_features": 2}),
    ("groupnorm", {"num_groups": 1, "num_features": 2}),
    ("act", {"fn": "silu"}),
])
def test_pathnorm_refuses_non_homogeneous_layers_naming_them(op, attrs):
    nodes = [Node("c1", "dense", ("input",), lin("d", in_dim=3, out_dim=2)),
             Node("odd", op, ("c1",), attrs),
             Node("head", "dense", ("odd",), lin("d", in_dim=2, out_dim=1))]
    model = graph(nodes, (3,), feature="odd")
    with pytest.raises(UnsupportedLayerError, match=f"'odd'.*{op}"):
        path_norm(model, model.init(jax.random.PRNGKey(0)))


# --------------------------------------------------------------------- empirical NTK
def ntk_net(kind):
    """A small conv net with one layer of ``kind`` in the middle."""
    mid = {
        "conv_transpose": [Node("mid", "conv_transpose", ("r1",), lin(
            "ct", kernel=[2, 3], in_ch=3, out_ch=2, stride=2, padding=1, output_padding=1))],
        "layernorm": [Node("mid", "layernorm", ("r1",), {"num_features": 3})],
        "groupnorm": [Node("mid", "groupnorm", ("r1",), {"num_groups": 3, "num_features": 3})],
        "grouped_conv": [Node("mid", "conv", ("r1",), lin(
            "c", kernel=[3, 3], in_ch=3, out_ch=3, padding=1, groups=3))],
        "dilated_concat_bilinear": [
            Node("d", "conv", ("r1",), lin("c", kernel=[3, 3], in_ch=3, out_ch=2, padding=2,
                                            dilation=2)),
            Node("cat", "concat", ("d", "r1")),
            Node("mid", "upsample", ("cat",), {"mode": "bilinear", "scale_factor": 2})],
    }[kind]
    nodes = [Node("c1", "conv", ("input",), lin("c", kernel=[3, 3], in_ch=2, out_ch=3,
                                                 padding=1)),
             Node("r1", "act", ("c1",), {"fn": "silu"}), *mid,
             Node("r2", "act", ("mid",), {"fn": "tanh"}),
             Node("pool", "global_avgpool", ("r2",)),
             Node("head", "dense", ("pool",), lin("d", in_dim=model_width(kind), out_dim=2))]
    return graph(nodes, (4, 3, 2), feature="pool")


def model_width(kind):
    return {"conv_transpose": 2, "dilated_concat_bilinear": 5}.get(kind, 3)


def brute_force_ntk(model, params, x):
    """``(1/O) Σ_a Σ_θ ∂f(x_i)_a/∂θ ∂f(x_j)_a/∂θ`` from ``jax.jacobian``: the logit trace is a
    mean, as in neural-tangents' ``trace_axes``."""
    def f(p):
        return model.apply(p, x)
    jac = jax.jacobian(f)(params)
    flat = jnp.concatenate([j.reshape(*j.shape[:2], -1) for j in jax.tree.leaves(jac)], -1)
    return jnp.einsum("iap,jap->ij", flat, flat) / flat.shape[1]


@pytest.mark.parametrize("kind", ["conv_transpose", "layernorm", "groupnorm", "grouped_conv",
                                  "dilated_concat_bilinear"])
@pytest.mark.slow
def test_empirical_ntk_on_new_ops_equals_jacobian_contraction(kind):
    model = ntk_net(kind)
    params = randomize(model, 6)
    x = jnp.asarray(np.random.default_rng(7).normal(size=(3, *model.input_shape)))
    ref = brute_force_ntk(model, params, x)
    covered = kind in ("layernorm", "groupnorm", "dilated_concat_bilinear")
    for method in ("auto", "structured", "jacobian"):
        if method == "structured" and not covered:
            with pytest.warns(UserWarning, match="'mid'"):
                k = model_ntk_fn(model, method)(x, None, params)
        else:
            k = model_ntk_fn(model, method)(x, None, params)
        np.testing.assert_allclose(k, ref, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------- permutations, LMC
def perm_net():
    nodes = [
        Node("c1", "conv", ("input",), lin("c", kernel=[3, 3], in_ch=2, out_ch=4, padding=1)),
        Node("ln", "layernorm", ("c1",), {"num_features": 4}),
        Node("r1", "relu", ("ln",)),
        Node("ct", "conv_transpose", ("r1",), lin("ct", kernel=[2, 2], in_ch=4, out_ch=5,
                                                   stride=2, padding=0)),
        Node("r2", "relu", ("ct",)),
        Node("up", "upsample", ("r2",), {"mode": "bilinear", "scale_factor": 2}),
        Node("pool", "global_avgpool", ("up",)),
        Node("head", "dense", ("pool",), lin("d", in_dim=5, out_dim=3)),
    ]
    return graph(nodes, (3, 4, 2), feature="pool")


@pytest.mark.slow
def test_permutation_through_conv_transpose_layernorm_upsample_is_undone():
    model = perm_net()
    spec = permutation_spec(model)
    assert dict(spec.sizes) == {"c1": 4, "ct": 5}
    params = randomize(model, 8)
    rng = np.random.default_rng(9)
    perm = {"c1": rng.permutation(4), "ct": rng.permutation(5)}
    shuffled = apply_permutation(model, params, perm)
    x = jnp.asarray(rng.normal(size=(4, *model.input_shape)))
    np.testing.assert_allclose(model.apply(shuffled, x), model.apply(params, x), rtol=1e-10)
    found = weight_matching(model, params, shuffled)
    back = apply_permutation(model, shuffled, found)
    for name, p in params.items():
        for k, v in p.items():
            np.testing.assert_allclose(back[name][k], v, rtol=1e-12)


# concat is no longer refused: its permutation is the block-diagonal union of its parts'
# (#13 step 3; tests/test_permutation_concat.py).
@pytest.mark.parametrize("op,attrs,match", [
    ("groupnorm", {"num_groups": 2, "num_features": 4}, "'cat'.*group statistics"),
    ("conv", lin("c", kernel=[1, 1], in_ch=4, out_ch=4, groups=2), "'cat'.*groups=2"),
])
def test_permutation_spec_refuses_naming_the_node(op, attrs, match):
    nodes = [Node("c1", "conv", ("input",), lin("c", kernel=[1, 1], in_ch=2, out_ch=2)),
             Node("c2", "conv", ("input",), lin("c", kernel=[1, 1], in_ch=2, out_ch=2)),
             Node("cat", op, ("c1", "c2") if op == "concat" else ("c1",), attrs)]
    if op != "concat":
        nodes[1] = Node("c2", "conv", ("input",), lin("c", kernel=[1, 1], in_ch=2, out_ch=4))
        nodes[2] = Node("cat", op, ("c2",), attrs)
    nodes += [Node("pool", "global_avgpool", ("cat",)),
              Node("head", "dense", ("pool",), lin("d", in_dim=4, out_dim=2))]
    with pytest.raises(UnsupportedLayerError, match=match):
        permutation_spec(graph(nodes, (3, 3, 2), feature="pool"))


def test_repair_corrects_conv_transpose_channels():
    model = perm_net()
    pa, pb = randomize(model, 10), randomize(model, 11)
    x = np.random.default_rng(12).normal(size=(64, *model.input_shape))
    p = lmc.repair(model, pa, pb, lmc.lerp(pa, pb, 0.5), 0.5, x)
    stats = {s: lmc._channel_stats(model, q, jnp.asarray(x), ["ct"])["ct"]
             for s, q in (("a", pa), ("b", pb), ("r", p))}
    np.testing.assert_allclose(stats["r"][0], (stats["a"][0] + stats["b"][0]) / 2, atol=1e-10)
    np.testing.assert_allclose(stats["r"][1], (stats["a"][1] + stats["b"][1]) / 2, rtol=1e-10)


# --------------------------------------------------------------------- checkpoints, metrics
def test_checkpoint_round_trip_of_a_hand_built_graph(tmp_path):
    model = unet_like(True)
    params = randomize(model, 13)
    path = save_checkpoint(tmp_path / "m.safetensors", model, params, step=3)
    ckpt = load_checkpoint(path, model=model)
    x = jnp.asarray(np.random.default_rng(14).normal(size=(2, *model.input_shape)))
    np.testing.assert_array_equal(ckpt.model.apply(ckpt.params, x), model.apply(params, x))
    # a hand-built graph has no builder config: rebuilding it without model= is refused
    with pytest.raises(CheckpointError, match="cannot rebuild"):
        load_checkpoint(path)


def test_weight_norms_count_conv_transpose():
    model = unet_like(False)
    params = randomize(model, 15)
    table = weight_norms(model, params).set_index("layer")["value"]
    assert table["ct"] == pytest.approx(float(np.linalg.norm(params["ct"]["w"])), rel=1e-12)
    assert set(table.index) == {"c1", "ct", "c2", "head", "total"}
