"""Forward parity of the graph ops of ``dynkit.models.ops`` (and grouped/dilated conv, the
activations) with their PyTorch functional counterparts, on hand-built one-op models.

Tensors are compared after the NCHW <-> NHWC transpose; float64 to 1e-10 and float32 to 1e-5,
relative to the largest output entry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynkit.errors import InvalidArgumentError, UnsupportedLayerError
from dynkit.models.graph import Model, Node
from dynkit.models.ops import interpolation_matrix

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOLS = {np.float64: 1e-10, np.float32: 1e-5}


def one_op(op, input_shapes, **attrs):
    """A model ``inputs -> op`` (several inputs: slices of one input along the channels)."""
    if len(input_shapes) == 1:
        nodes = [Node("input", "input"), Node("op", op, ("input",), attrs)]
        return Model({"arch": "one_op"}, tuple(nodes), "op", "op", tuple(input_shapes[0]))
    raise AssertionError("use concat_model for several inputs")


def to_nhwc(t):
    return np.moveaxis(t.detach().numpy(), 1, -1)


def to_nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def check_close(ours, ref, dtype):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    scale = max(np.max(np.abs(ref)), 1e-300)
    assert np.max(np.abs(ours - ref)) <= TOLS[dtype] * scale


def _rng(seed=0):
    return np.random.default_rng(seed)


DTYPES = [np.float64, np.float32]


# ------------------------------------------------------------------ conv_transpose
CT_CASES = [
    # kernel, stride, padding, output_padding, dilation, (H, W)
    ((3, 3), 1, 0, 0, 1, (5, 7)),
    ((3, 3), 2, 1, 1, 1, (4, 6)),
    ((2, 3), (2, 3), (0, 1), (1, 2), 1, (3, 5)),
    ((3, 2), 2, 1, 0, (2, 1), (5, 4)),
    ((4, 4), 2, 1, 0, 1, (6, 6)),
    ((3, 3), 3, 2, (2, 1), 2, (4, 3)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CT_CASES)
def test_conv_transpose_matches_torch(case, dtype):
    kernel, stride, padding, out_pad, dilation, hw = case
    cin, cout = 3, 4
    rng = _rng(1)
    x = rng.normal(size=(2, *hw, cin)).astype(dtype)
    wt = rng.normal(size=(cin, cout, *kernel)).astype(dtype)  # torch layout (in, out, kh, kw)
    b = rng.normal(size=(cout,)).astype(dtype)
    model = one_op("conv_transpose", [(*hw, cin)], kernel=list(kernel), in_ch=cin, out_ch=cout,
                   stride=stride, padding=padding, output_padding=out_pad, dilation=dilation,
                   init_std=1.0)
    params = {"op": {"w": np.transpose(wt, (2, 3, 0, 1)), "b": b}}
    assert model.param_shapes()["op"] == {"w": (*kernel, cin, cout), "b": (cout,)}
    ours = model.apply(params, jnp.asarray(x))
    ref = F.conv_transpose2d(to_nchw(x), torch.from_numpy(wt), torch.from_numpy(b), stride,
                             padding, out_pad, 1, dilation)
    assert ours.dtype == dtype
    check_close(ours, to_nhwc(ref), dtype)


def test_conv_transpose_1d_matches_torch():
    rng = _rng(2)
    x = rng.normal(size=(2, 6, 3))
    wt = rng.normal(size=(3, 2, 4))
    model = one_op("conv_transpose", [(6, 3)], kernel=[4], in_ch=3, out_ch=2, stride=2,
                   padding=1, bias=False, init_std=1.0)
    ours = model.apply({"op": {"w": np.transpose(wt, (2, 0, 1))}}, jnp.asarray(x))
    ref = F.conv_transpose1d(to_nchw(x), torch.from_numpy(wt), None, 2, 1)
    check_close(ours, to_nhwc(ref), np.float64)


def test_conv_transpose_refuses_bad_attrs():
    model = one_op("conv_transpose", [(4, 4, 2)], kernel=[3, 3], in_ch=2, out_ch=2, stride=2,
                   output_padding=2, init_std=1.0)
    with pytest.raises(InvalidArgumentError, match="output_padding"):
        model.apply(model.init(jax.random.PRNGKey(0)), jnp.ones((1, 4, 4, 2)))
    model = one_op("conv_transpose", [(4, 4, 2)], kernel=[3, 3], in_ch=2, out_ch=2, groups=2,
                   init_std=1.0)
    with pytest.raises(InvalidArgumentError, match="groups"):
        model.apply(model.init(jax.random.PRNGKey(0)), jnp.ones((1, 4, 4, 2)))


# ------------------------------------------------------------------ grouped / dilated conv
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups,dilation,stride,padding", [
    (1, 2, 1, 2), (2, 1, 2, 1), (3, (2, 1), 1, (1, 0)), (6, 1, 1, 1), (2, 2, 2, "VALID")])
def test_grouped_dilated_conv_matches_torch(groups, dilation, stride, padding, dtype):
    cin, cout, kernel, hw = 6, 6, (3, 3), (7, 8)
    rng = _rng(3)
    x = rng.normal(size=(2, *hw, cin)).astype(dtype)
    wt = rng.normal(size=(cout, cin // groups, *kernel)).astype(dtype)
    b = rng.normal(size=(cout,)).astype(dtype)
    model = one_op("conv", [(*hw, cin)], kernel=list(kernel), in_ch=cin, out_ch=cout,
                   stride=stride, padding=padding, dilation=dilation, groups=groups,
                   w_mult=1.0, init_std=1.0)
    assert model.param_shapes()["op"]["w"] == (*kernel, cin // groups, cout)
    ours = model.apply({"op": {"w": np.transpose(wt, (2, 3, 1, 0)), "b": b}}, jnp.asarray(x))
    ref = F.conv2d(to_nchw(x), torch.from_numpy(wt), torch.from_numpy(b), stride,
                   "valid" if padding == "VALID" else padding, dilation, groups)
    check_close(ours, to_nhwc(ref), dtype)
    p = model.init(jax.random.PRNGKey(0))  # init knows the grouped shape
    assert p["op"]["w"].shape == (*kernel, cin // groups, cout)


def test_conv_groups_must_divide_channels():
    model = one_op("conv", [(4, 4, 3)], kernel=[3, 3], in_ch=3, out_ch=4, groups=2,
                   w_mult=1.0, init_std=1.0)
    with pytest.raises(InvalidArgumentError, match="groups=2"):
        model.param_shapes()


# ------------------------------------------------------------------ upsample
UP_CASES = [
    # mode, attrs, (H, W)
    ("nearest", {"scale_factor": 2}, (3, 5)),
    ("nearest", {"scale_factor": [3, 2]}, (2, 3)),
    ("nearest", {"size": [7, 11]}, (3, 4)),
    ("nearest", {"size": [4, 3]}, (6, 5)),  # a downsampling size, too
    ("bilinear", {"scale_factor": 2}, (3, 5)),
    ("bilinear", {"scale_factor": 3}, (4, 2)),
    ("bilinear", {"size": [7, 10]}, (3, 4)),
    ("bilinear", {"size": [5, 3]}, (8, 7)),
    ("bilinear", {"scale_factor": 2, "align_corners": True}, (3, 5)),
    ("bilinear", {"size": [7, 9], "align_corners": True}, (4, 3)),
    ("bilinear", {"size": [1, 4], "align_corners": True}, (3, 3)),
]


def _torch_interpolate(x, mode, attrs):
    kw = {}
    if "size" in attrs:
        kw["size"] = tuple(attrs["size"])
    else:
        f = attrs["scale_factor"]
        kw["scale_factor"] = tuple(float(v) for v in f) if isinstance(f, list) else float(f)
    if mode == "bilinear":
        kw["align_corners"] = attrs.get("align_corners", False)
        mode = "bilinear" if x.ndim == 4 else "linear"
    return F.interpolate(x, mode=mode, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", UP_CASES)
def test_upsample_matches_torch(case, dtype):
    mode, attrs, hw = case
    x = _rng(4).normal(size=(2, *hw, 3)).astype(dtype)
    model = one_op("upsample", [(*hw, 3)], mode=mode, **attrs)
    ours = model.apply({}, jnp.asarray(x))
    ref = _torch_interpolate(to_nchw(x), mode, attrs)
    check_close(ours, to_nhwc(ref), dtype)
    assert model.node_shapes()["op"] == ours.shape[1:]


@pytest.mark.parametrize("mode,attrs", [("nearest", {"scale_factor": 2}),
                                        ("bilinear", {"size": [9]}),
                                        ("bilinear", {"scale_factor": 2, "align_corners": True})])
def test_upsample_1d_matches_torch(mode, attrs):
    x = _rng(5).normal(size=(2, 4, 3))
    ours = one_op("upsample", [(4, 3)], mode=mode, **attrs).apply({}, jnp.asarray(x))
    check_close(ours, to_nhwc(_torch_interpolate(to_nchw(x), mode, attrs)), np.float64)


def test_interpolation_matrix_rows_are_convex_weights():
    for n_in, n_out, ac in [(3, 7, False), (5, 2, False), (4, 9, True)]:
        m = interpolation_matrix(n_in, n_out, ac)
        assert np.all(m >= 0) and np.allclose(m.sum(1), 1.0)


@pytest.mark.parametrize("attrs,match", [({}, "exactly one"),
                                         ({"size": [4, 4], "scale_factor": 2}, "exactly one"),
                                         ({"scale_factor": 1.5}, "positive integer"),
                                         ({"scale_factor": 2, "mode": "bicubic"}, "mode")])
def test_upsample_bad_attrs(attrs, match):
    model = one_op("upsample", [(2, 2, 1)], **attrs)
    with pytest.raises(InvalidArgumentError, match=match):
        model.apply({}, jnp.ones((1, 2, 2, 1)))


# ------------------------------------------------------------------ concat
@pytest.mark.parametrize("dtype", DTYPES)
def test_concat_matches_torch_cat(dtype):
    rng = _rng(6)
    # input (N, 5, 4, 3) -> three 1x1 convs of widths 2, 3, 1 -> concat of 6 channels
    nodes = [Node("input", "input")]
    ws = {}
    for name, c in (("a", 2), ("b", 3), ("c", 1)):
        attrs = {"kernel": [1, 1], "in_ch": 3, "out_ch": c, "bias": False, "w_mult": 1.0,
                 "init_std": 1.0}
        nodes.append(Node(name, "conv", ("input",), attrs))
        ws[name] = {"w": rng.normal(size=(1, 1, 3, c)).astype(dtype)}
    nodes.append(Node("cat", "concat", ("a", "b", "c")))
    model = Model({"arch": "cat"}, tuple(nodes), "cat", "cat", (5, 4, 3))
    x = rng.normal(size=(2, 5, 4, 3)).astype(dtype)
    ours = model.apply(ws, jnp.asarray(x))
    parts = [F.conv2d(to_nchw(x), torch.from_numpy(np.transpose(ws[k]["w"], (3, 2, 0, 1))))
             for k in "abc"]
    check_close(ours, to_nhwc(torch.cat(parts, dim=1)), dtype)


# ------------------------------------------------------------------ layer / group norm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 4, 6), (7, 6), (6,)])
def test_layernorm_matches_torch(shape, dtype):
    rng = _rng(7)
    c = shape[-1]
    x = (3.0 + 2.0 * rng.normal(size=(2, *shape))).astype(dtype)
    scale, bias = rng.normal(size=c).astype(dtype), rng.normal(size=c).astype(dtype)
    model = one_op("layernorm", [shape], num_features=c, eps=1e-3)
    assert model.param_shapes() == {"op": {"scale": (c,), "bias": (c,)}}
    ours = model.apply({"op": {"scale": scale, "bias": bias}}, jnp.asarray(x))
    ref = F.layer_norm(torch.from_numpy(x), (c,), torch.from_numpy(scale),
                       torch.from_numpy(bias), 1e-3)  # channels-last: LayerNorm(C) on axis -1
    check_close(ours, ref.numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups,shape", [(2, (5, 4, 6)), (3, (7, 6)), (1, (3, 3, 4)),
                                          (4, (3, 5, 4))])
def test_groupnorm_matches_torch(groups, shape, dtype):
    rng = _rng(8)
    c = shape[-1]
    x = (1.0 + rng.normal(size=(2, *shape))).astype(dtype)
    scale, bias = rng.normal(size=c).astype(dtype), rng.normal(size=c).astype(dtype)
    model = one_op("groupnorm", [shape], num_groups=groups, num_features=c)
    ours = model.apply({"op": {"scale": scale, "bias": bias}}, jnp.asarray(x))
    ref = F.group_norm(to_nchw(x), groups, torch.from_numpy(scale), torch.from_numpy(bias), 1e-5)
    check_close(ours, to_nhwc(ref), dtype)


def test_norms_without_affine_and_init():
    model = one_op("groupnorm", [(4, 4, 4)], num_groups=2, num_features=4, affine=False)
    assert model.param_shapes() == {} and model.init(jax.random.PRNGKey(0)) == {}
    x = _rng(9).normal(size=(2, 4, 4, 4))
    ref = F.group_norm(to_nchw(x), 2, None, None, 1e-5)
    check_close(model.apply({}, jnp.asarray(x)), to_nhwc(ref), np.float64)
    p = one_op("layernorm", [(3, 5)], num_features=5).init(jax.random.PRNGKey(0))
    assert set(p["op"]) == {"scale", "bias"}  # no running statistics
    np.testing.assert_array_equal(p["op"]["scale"], 1.0)
    np.testing.assert_array_equal(p["op"]["bias"], 0.0)


def test_groupnorm_refuses_indivisible_channels():
    model = one_op("groupnorm", [(2, 2, 6)], num_groups=4, num_features=6)
    with pytest.raises(InvalidArgumentError, match="num_groups=4"):
        model.apply(model.init(jax.random.PRNGKey(0)), jnp.ones((1, 2, 2, 6)))


# ------------------------------------------------------------------ activations, constants
ACTS = [
    ("silu", {}, F.silu),
    ("gelu", {}, F.gelu),
    ("gelu", {"approximate": "tanh"}, lambda t: F.gelu(t, approximate="tanh")),
    ("tanh", {}, torch.tanh),
    ("sigmoid", {}, torch.sigmoid),
    ("leaky_relu", {}, F.leaky_relu),  # torch's default negative_slope 0.01
    ("leaky_relu", {"negative_slope": 0.2}, lambda t: F.leaky_relu(t, 0.2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn,attrs,ref", ACTS)
def test_activations_match_torch(fn, attrs, ref, dtype):
    x = (3 * _rng(10).normal(size=(4, 5, 3))).astype(dtype)
    ours = one_op("act", [(5, 3)], fn=fn, **attrs).apply({}, jnp.asarray(x))
    check_close(ours, ref(torch.from_numpy(x)).numpy(), dtype)


def test_scale_is_multiplication_by_a_constant():
    x = _rng(11).normal(size=(2, 3))
    ours = one_op("scale", [(3,)], factor=0.25).apply({}, jnp.asarray(x))
    check_close(ours, (torch.from_numpy(x) * 0.25).numpy(), np.float64)


def test_unknown_op_and_activation_are_named():
    with pytest.raises(UnsupportedLayerError, match="'op'.*'attention'"):
        one_op("attention", [(3,)]).apply({}, jnp.ones((1, 3)))
    with pytest.raises(InvalidArgumentError, match="'mish'"):
        one_op("act", [(3,)], fn="mish").apply({}, jnp.ones((1, 3)))


def test_norm_without_num_features_is_named():
    with pytest.raises(InvalidArgumentError, match="'op'.*num_features"):
        one_op("layernorm", [(3,)]).param_shapes()
