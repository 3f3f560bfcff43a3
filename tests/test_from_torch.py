"""Graph import of PyTorch modules (``dk.models.from_torch``) and ``load_checkpoint`` with a
torch module as the template.

Forward parity: every supported op, as a module and as a functional call, is checked against
the torch forward pass on random weights and random BatchNorm statistics, float64 to 1e-10
and float32 to 1e-5 relative to the largest output entry (inputs are NCHW for torch and NHWC
for dynkit). torchvision tests use the ``torchvision`` fixture of ``conftest.py`` (skipped
without torchvision)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import dynkit as dk
from dynkit.errors import (
    CheckpointError,
    InvalidArgumentError,
    MissingDependencyError,
    ShapeMismatchError,
    UnsupportedLayerError,
)

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

TOLS = {torch.float64: 1e-10, torch.float32: 1e-5}
DTYPES = [torch.float64, torch.float32]


# --------------------------------------------------------------------- helpers
def randomize(module, seed=0):
    """Random weights of every norm layer and random BatchNorm running statistics, eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            norm = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
            if isinstance(m, norm) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return module.eval()


def channels_last(t):
    """NC... torch tensor -> N...C numpy array."""
    return np.moveaxis(t.detach().numpy(), 1, -1) if t.ndim > 2 else t.detach().numpy()


def check_parity(module, shape, dtype, seed=0):
    """Import ``module`` and compare its output with torch's; returns ``(model, params)``."""
    torch.manual_seed(seed)
    module = randomize(module.to(dtype), seed)
    x = torch.randn(*shape, dtype=dtype)
    model, params = dk.models.from_torch(module, x)
    with torch.no_grad():
        ref = module(x)
    ours = np.asarray(model.apply(params, channels_last(x)))
    ref = channels_last(ref).reshape(ours.shape) if ref.ndim == 4 and ref.shape[2:] == (1, 1) \
        else channels_last(ref)
    assert ours.dtype == np.dtype(str(dtype).removeprefix("torch."))
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) <= TOLS[dtype] * np.max(np.abs(ref))
    return model, params


# --------------------------------------------------------------------- one model per op group
def dense_modules():
    return nn.Sequential(
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.LeakyReLU(0.2),
        nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8), nn.GELU("tanh"), nn.Linear(8, 8),
        nn.SiLU(), nn.LayerNorm(8), nn.Linear(8, 8), nn.Tanh(), nn.Dropout(0.5),
        nn.Linear(8, 8, bias=False), nn.Sigmoid(), nn.Identity(), nn.Linear(8, 3))


class DenseFunctional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(16, 3)
        self.ln = nn.LayerNorm(8, elementwise_affine=False)

    def forward(self, x):
        h = F.leaky_relu(self.fc1(x), 0.1)
        h = F.gelu(h) + 0.5 * F.silu(h) + torch.tanh(h) / 4.0 + torch.sigmoid(h) * 2
        h = self.ln(F.relu(self.fc2(F.gelu(h, approximate="tanh"))))
        return self.fc3(torch.cat([h, F.dropout(h, 0.3, training=False)], dim=1))


def conv_modules():
    """Conv (stride, padding, dilation, groups, 'same'), pools, norms, conv-transpose, and a
    flatten of a 3x3 map into a Linear (torch's C-major flatten order)."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, padding=(1, 2), dilation=(1, 2), groups=3),
        nn.GroupNorm(3, 6), nn.SiLU(), nn.Conv2d(6, 8, 3, padding="same", bias=False),
        nn.MaxPool2d(3, stride=1, padding=1), nn.AvgPool2d(2, padding=1, count_include_pad=False),
        nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1),
        nn.AdaptiveAvgPool2d(3), nn.AvgPool2d(1), nn.AdaptiveAvgPool2d((6, 3)),
        nn.AdaptiveAvgPool2d((3, 3)), nn.Flatten(), nn.Linear(36, 5))


def conv1d_modules():
    return nn.Sequential(nn.Conv1d(2, 4, 3, padding=2, dilation=2), nn.BatchNorm1d(4),
                         nn.LeakyReLU(), nn.MaxPool1d(2),
                         nn.ConvTranspose1d(4, 3, 4, stride=2, padding=1),
                         nn.Upsample(scale_factor=2, mode="linear"), nn.AdaptiveAvgPool1d(1),
                         nn.Flatten(), nn.Linear(3, 2))


class ConvFunctional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1)
        self.fc, self.fc2 = nn.Linear(4 * 2 * 2, 3), nn.Linear(8, 3)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True)
        h = F.interpolate(F.avg_pool2d(self.conv2(h), 2), size=(6, 6), mode="nearest")
        h = F.interpolate(h, size=(4, 4), mode="bilinear")
        h = F.adaptive_avg_pool2d(torch.sigmoid(h), 2)
        flat = h.view(h.size(0), -1)
        pooled = torch.cat([h.mean((2, 3)), torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)], 1)
        return self.fc(flat.reshape(flat.shape[0], -1)) + self.fc2(pooled)


class SkipCNN(nn.Module):
    """A small encoder-decoder: a long skip by concatenation, an upsample, a scaled residual
    branch and a channels-last map output."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.res = nn.Conv2d(8, 8, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.GELU())
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        skip = self.enc(x)
        h = self.down(skip)
        h = h + 0.5 * self.res(h)
        return self.head(self.dec(torch.cat([self.up(h), skip], dim=1)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("build,shape", [
    (dense_modules, (5, 6)), (DenseFunctional, (5, 6)), (conv_modules, (3, 3, 9, 10)),
    (conv1d_modules, (3, 2, 11)), (ConvFunctional, (3, 3, 8, 8)), (SkipCNN, (2, 3, 8, 8))],
    ids=["dense", "dense_functional", "conv", "conv1d", "conv_functional", "skip_cnn"])
@pytest.mark.slow
def test_forward_parity(build, shape, dtype):
    check_parity(build(), shape, dtype)


def test_node_names_follow_module_paths():
    model, _ = check_parity(SkipCNN(), (2, 3, 8, 8), torch.float64)
    names = [n.name for n in model.nodes]
    assert names[:6] == ["input", "enc.0", "enc.1", "enc.2", "down.0", "down.1"]
    assert {"res", "up", "dec.0", "dec.1", "head", "mul", "add", "cat"} <= set(names)
    assert model.node("cat").op == "concat" and model.node("up").op == "upsample"
    assert model.output == "head" and model.feature == "head"  # no Linear: the output


def test_flatten_into_linear_reads_torch_order():
    """Conv -> flatten -> Linear: the Linear's columns are permuted from torch's (C, H, W)
    order to dynkit's (H, W, C), so an unpermuted import would differ."""
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 5, 2))
    model, params = check_parity(net, (4, 2, 6, 7), torch.float64)
    assert [n.op for n in model.nodes] == ["input", "conv", "flatten", "dense"]
    w = net[2].weight.detach().numpy()  # (out, C*H*W)
    expected = w.reshape(2, 3, 4, 5).transpose(2, 3, 1, 0).reshape(60, 2)
    np.testing.assert_array_equal(np.asarray(params["2"]["w"]), expected)


def test_model_api_on_imported_graph():
    net = randomize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(4, 3)).double())
    x = torch.randn(6, 3, 7, 7, dtype=torch.float64)
    model, params = dk.models.from_torch(net, x)
    again, _ = dk.models.from_torch(net, torch.zeros(1, 3, 7, 7, dtype=torch.float64))
    assert model == again and hash(model) == hash(again)
    assert model.config == {"arch": "torch", "class": "torch.nn.modules.container.Sequential"}
    assert model.feature == "2" and model.readout() == ("4", 1.0)
    with torch.no_grad():
        feats = net[:4](x).numpy()
    np.testing.assert_allclose(model.features(params, channels_last(x)), feats, rtol=1e-12)
    assert model.param_shapes() == {k: {p: tuple(v.shape) for p, v in ps.items()}
                                     for k, ps in params.items()}
    import jax

    fresh = model.init(jax.random.PRNGKey(0))
    model.check_params(fresh)
    assert model.apply(fresh, channels_last(x)).shape == (6, 3)


def test_unused_submodules_are_left_out():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.aux = nn.Linear(3, 2), nn.Linear(3, 5)

        def forward(self, x):
            return self.fc(x)

    _, params = check_parity(Net(), (2, 3), torch.float64)
    assert sorted(params) == ["fc"]


# --------------------------------------------------------------------- torchvision ResNet-18
@pytest.fixture(scope="module")
def resnet18_torch(torchvision):
    torch.manual_seed(0)
    return randomize(torchvision.models.resnet18(weights=None, num_classes=10), seed=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.slow
def test_torchvision_resnet18_parity(resnet18_torch, dtype):
    check_parity(resnet18_torch, (2, 3, 32, 32), dtype)
    resnet18_torch.float()


@pytest.mark.slow
def test_torchvision_resnet18_same_graph_as_name_map(resnet18_torch, tmp_path):
    """The traced import and the hand-written ``dk.models.resnet18`` name map read the same
    state_dict into the same parameters (names, shapes, values) and give the same logits."""
    net = resnet18_torch.double()
    path = tmp_path / "resnet18.pt"
    torch.save(net.state_dict(), path)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    traced, params = dk.models.from_torch(net, x)
    mapped = dk.load_checkpoint(path, model=dk.models.resnet18(num_classes=10,
                                                               input_shape=(32, 32, 3)))
    assert traced.param_shapes() == mapped.model.param_shapes()
    for node, ps in mapped.params.items():
        assert traced.node(node).op == mapped.model.node(node).op
        for k, v in ps.items():
            np.testing.assert_array_equal(np.asarray(params[node][k]), np.asarray(v))
    assert (traced.feature, traced.output) == (mapped.model.feature, mapped.model.output)
    x_nhwc = channels_last(x)
    np.testing.assert_allclose(traced.apply(params, x_nhwc),
                               mapped.model.apply(mapped.params, x_nhwc), rtol=1e-12)
    via_module = dk.load_checkpoint(path, model=net, example_input=x)
    assert via_module.model == traced
    resnet18_torch.float()


# --------------------------------------------------------------------- load_checkpoint
def test_load_checkpoint_with_a_torch_module(tmp_path):
    torch.manual_seed(0)
    trained = randomize(SkipCNN().double(), seed=2)
    path = tmp_path / "skip.pt"
    torch.save({"state_dict": trained.state_dict(), "step": 40}, path)
    template = SkipCNN().double().eval()  # other weights: only the file's must be used
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ckpt = dk.load_checkpoint(path, model=template, example_input=x)
    assert ckpt.step == 40 and ckpt.model.arch == "torch"
    with torch.no_grad():
        ref = channels_last(trained(x))
    ours = np.asarray(ckpt.model.apply(ckpt.params, channels_last(x)))
    assert np.max(np.abs(ours - ref)) <= 1e-10 * np.max(np.abs(ref))


def test_load_checkpoint_state_dict_mismatch_names_the_tensor(tmp_path):
    net = SkipCNN().eval()
    x = torch.zeros(1, 3, 8, 8)
    sd = net.state_dict()
    bad = dict(sd, **{"dec.0.weight": torch.zeros(8, 16, 5, 5)})
    torch.save(bad, tmp_path / "shape.pt")
    with pytest.raises(ShapeMismatchError, match=r"dec\.0\.weight"):
        dk.load_checkpoint(tmp_path / "shape.pt", model=net, example_input=x)
    torch.save({k: v for k, v in sd.items() if k != "head.bias"}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing keys.*head\.bias"):
        dk.load_checkpoint(tmp_path / "missing.pt", model=net, example_input=x)
    torch.save(dict(sd, **{"extra.weight": torch.zeros(2)}), tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys.*extra\.weight"):
        dk.load_checkpoint(tmp_path / "extra.pt", model=net, example_input=x)
    with pytest.raises(InvalidArgumentError, match="example_input"):
        dk.load_checkpoint(tmp_path / "extra.pt", model=net)


def test_native_checkpoint_of_an_imported_model(tmp_path):
    """A traced model saved by dynkit loads back with the torch module as the template."""
    net = randomize(SkipCNN().double(), seed=3)
    x = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    model, params = dk.models.from_torch(net, x)
    path = dk.save_checkpoint(tmp_path / "skip.safetensors", model, params, step=3)
    ckpt = dk.load_checkpoint(path, model=SkipCNN().double().eval(), example_input=x)
    assert ckpt.model == model and ckpt.step == 3
    for node, ps in params.items():
        for k, v in ps.items():
            np.testing.assert_array_equal(np.asarray(ckpt.params[node][k]), np.asarray(v))


def test_functional_op_names_avoid_module_names():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.add = nn.Linear(3, 3)

        def forward(self, x):
            h = x + x
            return self.add(h)

    model, _ = check_parity(Net(), (2, 3), torch.float64)
    assert [(n.name, n.op) for n in model.nodes] == [("input", "input"), ("add_1", "add"),
                                                     ("add", "dense")]


# --------------------------------------------------------------------- bad input
class Attention(nn.Module):
    def forward(self, x):
        return F.scaled_dot_product_attention(x, x, x)  # (N, C) batches of H x W tokens


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.block3 = nn.Module()
        self.block3.attn = Attention()

    def forward(self, x):
        return self.block3.attn(x)


class AttentionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.encoder = nn.Conv2d(2, 2, 1), Encoder()

    def forward(self, x):
        return self.encoder(self.conv(x))


def test_unsupported_op_names_the_module_path():
    with pytest.raises(UnsupportedLayerError,
                       match=r"^encoder\.block3\.attn: scaled_dot_product_attention is not "):
        dk.models.from_torch(AttentionNet().eval(), torch.zeros(1, 2, 3, 3))


@pytest.mark.parametrize("net,why", [
    (nn.Sequential(nn.Conv2d(2, 2, 1), nn.Flatten(), nn.ReLU(), nn.Linear(18, 2)),
     "flattened feature map must feed a Linear"),
    (nn.Sequential(nn.Conv2d(2, 2, 1), nn.ELU()), "elu"),
    (nn.Sequential(nn.Conv2d(2, 2, 1), nn.MaxPool2d(2, ceil_mode=True)), "ceil_mode"),
    (nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2, affine=False)), "affine"),
    (nn.Sequential(nn.Conv2d(2, 2, 1), nn.Linear(3, 3)), "feature map"),
])
def test_unsupported_patterns_are_refused(net, why):
    with pytest.raises(UnsupportedLayerError, match=why):
        dk.models.from_torch(net.eval(), torch.zeros(1, 2, 3, 3))


def test_shared_weights_are_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            return self.conv(self.conv(x))

    with pytest.raises(UnsupportedLayerError, match="conv.*called twice"):
        dk.models.from_torch(Twice().eval(), torch.zeros(1, 2, 3, 3))


def test_training_mode_is_refused_with_the_fix():
    with pytest.raises(InvalidArgumentError, match=r"training mode.*\.eval\(\)"):
        dk.models.from_torch(nn.Sequential(nn.Linear(3, 2)), torch.zeros(1, 3))


def test_untraceable_module_gets_the_tracer_reason():
    class DataDependent(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(UnsupportedLayerError, match="torch.export could not trace") as info:
        dk.models.from_torch(DataDependent().eval(), torch.ones(1, 3))
    assert info.value.__cause__ is not None and str(info.value.__cause__).split()[0] in \
        str(info.value)


def test_bad_arguments():
    with pytest.raises(InvalidArgumentError, match="module must be a torch.nn.Module"):
        dk.models.from_torch(lambda x: x, torch.zeros(1, 3))
    with pytest.raises(InvalidArgumentError, match="example_input"):
        dk.models.from_torch(nn.Linear(3, 2).eval(), np.zeros((1, 3)))


def test_missing_torch_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'dynkit\[torch\]'"):
        dk.models.from_torch(object(), object())


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "dtype"), [
    (arch, dtype) for arch in ("resnet50", "densenet121", "vgg11_bn") for dtype in DTYPES
    if (arch, dtype) != ("densenet121", torch.float32)])
def test_torchvision_parity_slow(torchvision, arch, dtype):
    """torchvision ResNet-50 (bottlenecks), DenseNet-121 (dense blocks: concatenation,
    transitions) and VGG-11-BN (on 32x32 inputs its AdaptiveAvgPool2d(7) replicates a 1x1
    map), random weights and BatchNorm statistics. DenseNet-121 in float64 only (40 s a
    dtype): the float32 path of the same ops is covered by the other two."""
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None, num_classes=7)
    size = 32 if arch == "vgg11_bn" else 64
    model, _ = check_parity(net, (2, 3, size, size), dtype)
    assert (model.feature, model.output) == {
        "resnet50": ("avgpool", "fc"), "densenet121": ("avgpool", "classifier"),
        "vgg11_bn": ("classifier.4", "classifier.6")}[arch]  # Dropout classifier.5: no node
