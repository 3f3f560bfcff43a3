"""Analyses on imported PyTorch models (``dk.models.from_torch``) and on the DenseNet / U-Net
builders, each against an independent computation (#13, "every analysis works on the new
graphs"):

- forward parity of an imported custom U-Net (float64 and float32);
- empirical NTK of an imported custom CNN and U-Net, and of the ``densenet``/``unet`` builders
  holding a torch module's weights = the Jacobian contraction done with ``torch.func``
  (``jacrev`` under ``vmap``, ``functional_call``) on the torch module itself;
- path-norm of an imported network with a concat, nearest and bilinear upsampling and a
  ``ConvTranspose2d`` = brute-force path enumeration on its neuron DAG;
- interpolation barrier of an imported U-Net and its randomly permuted copy, aligned by weight
  matching, = 0; neural collapse of the DenseNet builder = NC of the features and classifier
  taken from torch; NC of a model whose feature node is a map output (a U-Net imported without
  ``feature=``) is refused, naming the fix.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from test_builders import torch_unet
from test_from_torch import SkipCNN, channels_last, randomize
from test_from_torch_timm import parity_float64_and_float32
from test_graph_ops_analyses import neuron_graph
from test_pathnorm import brute_force_qq, neuron_forward

import dynkit as dk
from dynkit.analyses import collapse, lmc
from dynkit.analyses.pathnorm import path_norm
from dynkit.analyses.permutation import apply_permutation, permutation_spec
from dynkit.checkpoints import convert_state_dict
from dynkit.errors import InvalidArgumentError, UnsupportedLayerError
from dynkit.theory.empirical import model_ntk_fn

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional


@pytest.mark.slow
def test_custom_unet_forward_parity():
    """A hand-written torch U-Net (ConvTranspose2d, ScaleLong-scaled long skips, functional
    ReLU and max-pool): float64 1e-10, float32 1e-5; its map output comes back channels-last."""
    torch.manual_seed(0)
    model = parity_float64_and_float32(torch_unet(2, 3, 2, 2, "transpose", {1: 0.6, 2: 0.36}),
                                       (2, 2, 8, 8))
    assert model.node_shapes()[model.output] == (8, 8, 2)
    assert {n.op for n in model.nodes} >= {"conv_transpose", "concat", "scale", "maxpool"}


# --------------------------------------------------------------------- empirical NTK
def torch_jacobian(net, x):
    """Per-example Jacobians of ``net`` w.r.t. its parameters (buffers held fixed) with
    ``torch.func``: ``(N, *out_channels_last, P)``, all parameters concatenated."""
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = dict(net.named_buffers())

    def f(p, xi):
        return functional_call(net, (p, buffers), (xi[None],))[0]

    jac = vmap(jacrev(f), (None, 0))(params, x)
    n, out_ndim = x.shape[0], net(x[:1]).ndim - 1
    blocks = []
    for j in jac.values():
        j = j.reshape(*j.shape[:1 + out_ndim], -1)
        if out_ndim > 1:  # (N, C, H, W, P) -> (N, H, W, C, P)
            j = j.movedim(1, out_ndim)
        blocks.append(j)
    return torch.cat(blocks, -1).reshape(n, *blocks[0].shape[1:-1], -1).numpy()


def imported(net, x):
    return dk.models.from_torch(net, x)


def built(builder):
    """The dynkit builder's model with the torch module's state_dict (identity name map)."""
    def make(net, x):
        model = builder()
        return model, convert_state_dict(model, net.state_dict())
    return make


def torchvision_densenet(tv):
    return tv.models.DenseNet(growth_rate=3, block_config=(2, 1), num_init_features=4,
                              bn_size=2, num_classes=3)


NTK_NETS = {  # name: (torch module, input shape, dynkit model and params, method)
    "skip_cnn": (lambda tv: SkipCNN(), (3, 3, 4, 4), imported, "structured"),
    "unet_imported": (lambda tv: torch_unet(1, 2, 2, 1, "transpose", {1: 0.6}), (3, 2, 4, 4),
                      imported, "jacobian"),
    "unet_builder": (lambda tv: torch_unet(1, 2, 1, 2, "bilinear", {1: 0.5}), (3, 1, 4, 4),
                     built(lambda: dk.models.unet(1, 2, 2, input_shape=(4, 4, 1),
                                                  upsampling="bilinear", skip_scale=0.5)),
                     "structured"),
    "densenet_builder": (torchvision_densenet, (3, 3, 16, 16),
                         built(lambda: dk.models.densenet((2, 1), 3, growth_rate=3,
                                                          num_init_features=4, bn_size=2,
                                                          input_shape=(16, 16, 3))),
                         "structured"),
}


@pytest.mark.parametrize("name", sorted(NTK_NETS))
@pytest.mark.slow
def test_empirical_ntk_equals_torch_func(name, request):
    """float64, 1e-10, every output axis traced: an imported custom CNN (concat skip,
    upsample) and U-Net, and the ``unet``/``densenet`` builders holding a torch module's
    weights. ``structured`` where it covers the graph (not ``conv_transpose``), else
    ``jacobian``."""
    build, shape, make, method = NTK_NETS[name]
    tv = request.getfixturevalue("torchvision") if name.startswith("densenet") else None
    torch.manual_seed(0)
    net = randomize(build(tv).double(), seed=1)
    x = torch.randn(*shape, dtype=torch.float64)
    model, params = make(net, x)
    jac = torch_jacobian(net, x)  # (N, *out, P)
    assert jac.shape[-1] == model.num_params()
    xl = jnp.asarray(channels_last(x))
    out_axes = tuple(range(1, jac.ndim - 1))
    flat = jac.reshape(jac.shape[0], -1, jac.shape[-1])
    # every output axis traced (a mean, as neural-tangents' trace_axes)
    ref = np.einsum("iap,jap->ij", flat, flat) / flat.shape[1]
    k = model_ntk_fn(model, method, trace_axes=out_axes)(xl, None, params)
    np.testing.assert_allclose(k, ref, rtol=1e-10, atol=1e-13 * np.abs(ref).max())


# --------------------------------------------------------------------- path-norm
class PathNet(nn.Module):
    """conv -> relu -> {ConvTranspose2d -> BN, nearest x2} -> cat -> relu -> bilinear ->
    dilated grouped conv -> flatten -> Linear (the attribute names are the node names that
    ``test_graph_ops_analyses.neuron_graph`` reads)."""

    def __init__(self, size):
        super().__init__()
        self.c1, self.r1 = nn.Conv2d(1, 2, 3, padding=1), nn.ReLU()
        self.ct = nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1)
        self.bn, self.up = nn.BatchNorm2d(2), nn.Upsample(scale_factor=2, mode="nearest")
        self.r2, self.bl = nn.ReLU(), nn.Upsample(size, mode="bilinear")
        self.c2 = nn.Conv2d(4, 2, 3, padding=2, dilation=2, groups=2)
        self.flat, self.head = nn.Flatten(), nn.Linear(2 * size[0] * size[1], 2)

    def forward(self, x):
        h = self.r1(self.c1(x))
        h = torch.cat([self.bn(self.ct(h)), self.up(h)], dim=1)
        return self.head(self.flat(self.c2(self.bl(self.r2(h)))))


@pytest.mark.slow
def test_pathnorm_of_imported_network_matches_brute_force():
    """The neuron DAG of the imported graph (convolutions from their weights, nearest and
    bilinear upsampling from torch's own impulse responses) computes the torch forward pass;
    the sum over its paths of ``|Φ_p|^q`` is the path-norm, BatchNorm folded or not."""
    torch.manual_seed(0)
    net = randomize(PathNet((4, 5)).double(), seed=2)
    x = torch.randn(1, 1, 3, 2, dtype=torch.float64)
    model, params = dk.models.from_torch(net, x)
    assert [n.op for n in model.nodes if n.name in ("ct", "up", "cat", "bl")] == [
        "conv_transpose", "upsample", "concat", "upsample"]
    params = {k: {n: np.asarray(v) for n, v in p.items()} for k, p in params.items()}
    for fold_bn in (True, False):
        g, outputs = neuron_graph(model, params, fold_bn)
        with torch.no_grad():
            np.testing.assert_allclose(neuron_forward(g, outputs, channels_last(x)[0]),
                                       net(x)[0].numpy(), rtol=1e-10, atol=1e-12)
        for q in (1.0, 2.0):
            total, count = brute_force_qq(g, outputs, q)
            assert count > 1000
            pn = path_norm(model, params, q, fold_bn=fold_bn)
            assert pn.value == pytest.approx(total ** (1 / q), rel=1e-10)


# --------------------------------------------------------------------- permutations, LMC
@pytest.mark.slow
def test_barrier_with_a_permuted_copy_is_zero_after_weight_matching():
    """An imported U-Net (ConvTranspose, scaled long skip, functional ReLUs; the builders'
    DenseNets and U-Nets: tests/test_permutation_concat.py): the permutation spec comes from
    the imported graph; a random permutation keeps the function, weight matching undoes it
    exactly, and the aligned barrier is 0 (while the naive midpoint is another function)."""
    torch.manual_seed(0)
    shape = (6, 2, 4, 4)
    net = randomize(torch_unet(1, 3, 2, 2, "transpose", {1: 0.7}).double(), seed=3)
    model, params = dk.models.from_torch(net, torch.zeros(shape, dtype=torch.float64))
    params = {k: {n: np.asarray(v) for n, v in p.items()} for k, p in params.items()}
    spec = permutation_spec(model)
    rng = np.random.default_rng(4)
    perm = {g: rng.permutation(n) for g, n in spec.sizes.items()}
    permuted = apply_permutation(model, params, perm)
    x = rng.normal(size=(shape[0], *model.input_shape))
    np.testing.assert_allclose(model.apply(permuted, x), model.apply(params, x), rtol=1e-10,
                               atol=1e-12)
    aligned = apply_permutation(model, permuted, lmc.weight_matching(model, params, permuted))
    for node, p in params.items():
        for k, v in p.items():
            np.testing.assert_array_equal(aligned[node][k], v)
    y = rng.normal(size=(shape[0], *model.node_shapes()[model.output]))
    curve = lmc.interpolate(model, params, aligned, x, y, alphas=3, loss="mse", bn="interpolate")
    assert lmc.barrier(curve) == pytest.approx(0.0, abs=1e-12)
    naive = np.asarray(model.apply(lmc.lerp(params, permuted, 0.5), x))  # not a no-op
    assert np.abs(naive - np.asarray(model.apply(params, x))).max() > 1e-3


# --------------------------------------------------------------------- neural collapse
@pytest.mark.slow
def test_collapse_of_densenet_builder_equals_nc_of_torch_features(torchvision):
    """``collapse_of_model`` on the ``densenet`` builder holding a torchvision DenseNet's
    weights = ``neural_collapse`` of the features and classifier taken from torch."""
    torch.manual_seed(0)
    net = randomize(torchvision_densenet(torchvision).double(), seed=5)
    model = dk.models.densenet((2, 1), 3, growth_rate=3, num_init_features=4, bn_size=2,
                               input_shape=(16, 16, 3))
    params = convert_state_dict(model, net.state_dict())
    x = torch.randn(12, 3, 16, 16, dtype=torch.float64)
    y = np.arange(12) % 3
    with torch.no_grad():
        feats = F.adaptive_avg_pool2d(F.relu(net.features(x)), 1).flatten(1).numpy()
    W, b = net.classifier.weight.detach().numpy(), net.classifier.bias.detach().numpy()
    assert model.features(params, channels_last(x)).shape == feats.shape == (12, 8)
    ours = collapse.collapse_of_model(model, params, channels_last(x), y)
    ref = collapse.neural_collapse(feats, y, W=W, b=b)
    assert set(ours) == set(ref) and {"nc1", "nc3", "nc4"} <= set(ours)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], rel=1e-8, abs=1e-12), key


@pytest.mark.slow
def test_unet_collapse_needs_an_explicit_feature_node():
    """A U-Net imported without ``feature=`` has its output map as feature node: NC is refused
    saying so. With ``feature="bottleneck"`` (and in the ``unet`` builder) the features are
    the bottleneck's output (as torch computes it); the NC of those features is available,
    and the metrics that need a dense read-out say that one is needed."""
    torch.manual_seed(0)
    net = randomize(torch_unet(1, 2, 1, 1, "transpose", {1: 1.0}).double(), seed=6)
    x = torch.randn(8, 1, 4, 4, dtype=torch.float64)
    xl, y = channels_last(x), np.arange(8) % 2
    model, params = dk.models.from_torch(net, x)
    assert model.feature == model.output == "head"
    for run in (collapse.collapse_of_model, collapse.collapse_by_layer):
        with pytest.raises(UnsupportedLayerError,
                           match=r"needs an explicit feature node.*'head'.*feature="):
            run(model, params, xl, y, **({"layers": ["cat"]} if run is collapse.collapse_by_layer
                                         else {}))
    with torch.no_grad():
        ref = channels_last(net.bottleneck(F.max_pool2d(net.enc1(x), 2))).reshape(8, -1)
    builder = dk.models.unet(1, 2, 1, input_shape=(4, 4, 1))
    for m, p in (dk.models.from_torch(net, x, feature="bottleneck"),
                 (builder, convert_state_dict(builder, net.state_dict()))):
        assert m.feature in ("bottleneck.relu_1", "bottleneck.relu2")
        feats = np.asarray(m.features(p, xl))
        np.testing.assert_allclose(feats, ref, rtol=1e-12)
        assert np.isfinite(collapse.neural_collapse(feats, y)["nc1"])
        with pytest.raises(UnsupportedLayerError, match="'conv' node.*dense layer is needed"):
            collapse.collapse_of_model(m, p, xl, y)
    with pytest.raises(InvalidArgumentError, match="feature='neck' is neither"):
        dk.models.from_torch(net, x, feature="neck")
