"""DenseNet and U-Net builders: shapes, configs, checkpoints, training, torchvision parity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynkit as dk
import dynkit.train
from dynkit.errors import InvalidArgumentError, ShapeMismatchError, UnsupportedLayerError


def tiny_densenet(**kw):
    kw = {"growth_rate": 4, "num_init_features": 8, "stem": "cifar", "input_shape": (8, 8, 1),
          **kw}
    return dk.models.densenet((2, 2), 10, **kw)


def tiny_unet(**kw):
    return dk.models.unet(2, 4, 1, input_shape=(8, 8, 1), **kw)


def densenet_param_count(blocks, k, c0, bn_size, theta, stem_kernel, in_ch, classes,
                         stem_bn):
    """DenseNet parameter count by hand: conv weights, BN (scale, bias), the read-out."""
    n = stem_kernel ** 2 * in_ch * c0 + (2 * c0 if stem_bn else 0)
    c = c0
    for b, layers in enumerate(blocks):
        for _ in range(layers):
            if bn_size:
                n += 2 * c + c * bn_size * k + 2 * bn_size * k + 9 * bn_size * k * k
            else:
                n += 2 * c + 9 * c * k
            c += k
        if b < len(blocks) - 1:
            out = int(theta * c)
            n += 2 * c + c * out
            c = out
    return n + 2 * c + c * classes + classes


@pytest.mark.slow
def test_densenet_shapes_and_parameter_counts():
    model = tiny_densenet()
    params = model.init(jax.random.PRNGKey(0))
    x = jnp.ones((3, 8, 8, 1))
    assert model.apply(params, x).shape == (3, 10)
    # stem 8 + 2·4 -> transition (16 // 2 = 8) + 2·4 = 16 features
    assert model.features(params, x).shape == (3, 16)
    assert model.num_params() == densenet_param_count((2, 2), 4, 8, 4, 0.5, 3, 1, 10, False)
    # torchvision densenet121: 7 978 856; the classic DenseNet-40 (k=12): about 1.0M
    assert dk.models.densenet121().num_params() == densenet_param_count(
        (6, 12, 24, 16), 32, 64, 4, 0.5, 7, 3, 1000, True) == 7978856
    assert dk.models.densenet40().num_params() == densenet_param_count(
        (12, 12, 12), 12, 16, None, 1.0, 3, 3, 10, False)
    names = {n.name for n in dk.models.densenet40().nodes}
    assert "features.denseblock3.denselayer12.conv1" in names
    assert "features.denseblock1.denselayer1.conv2" not in names  # non-BC: one conv per layer


@pytest.mark.parametrize("upsampling", ["transpose", "nearest", "bilinear"])
def test_unet_shapes(upsampling):
    model = tiny_unet(upsampling=upsampling)
    params = model.init(jax.random.PRNGKey(0))
    x = jnp.ones((2, 8, 8, 1))
    assert model.apply(params, x).shape == (2, 8, 8, 1)
    assert model.feature == "bottleneck.relu2"
    assert model.features(params, x).shape == (2, 2 * 2 * 16)  # the flattened bottleneck
    with pytest.raises(UnsupportedLayerError, match="dense"):  # NC3/NC4 need a dense read-out
        model.readout()
    assert model.forward(params, x, keep=["bottleneck.relu2"])["bottleneck.relu2"].shape == (2, 2, 2, 16)
    assert model.forward(params, x, keep=["dec1.cat"])["dec1.cat"].shape == (2, 8, 8, 8)


def test_unet_skip_scale_multiplies_the_long_skip():
    """ScaleLong: ``dec{i}.cat`` holds ``κ_i · enc{i}.relu2`` after the upsampled channels."""
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
    for mode, kappas in [("constant", {1: 0.5, 2: 0.5}), ("power", {1: 1.0, 2: 0.5})]:
        model = tiny_unet(skip_scale=0.5, skip_scale_mode=mode)
        params = model.init(jax.random.PRNGKey(0))
        for i, kappa in kappas.items():
            out = model.forward(params, x, keep=[f"dec{i}.cat", f"enc{i}.relu2"])
            cat, skip = out[f"dec{i}.cat"], out[f"enc{i}.relu2"]
            np.testing.assert_allclose(cat[..., -skip.shape[-1]:], kappa * skip, rtol=1e-6)
    plain = tiny_unet()
    assert not any(n.op == "scale" for n in plain.nodes)


def test_bad_arguments():
    with pytest.raises(InvalidArgumentError, match="compression"):
        tiny_densenet(compression=0.0)
    with pytest.raises(InvalidArgumentError, match="stem"):
        tiny_densenet(stem="nope")
    with pytest.raises(InvalidArgumentError, match="block_config"):
        dk.models.densenet((), 10)
    with pytest.raises(InvalidArgumentError, match="upsampling"):
        tiny_unet(upsampling="cubic")
    with pytest.raises(InvalidArgumentError, match="skip_scale"):
        tiny_unet(skip_scale=0.0)
    with pytest.raises(ShapeMismatchError, match="divisible"):
        dk.models.unet(3, 4, input_shape=(12, 12, 1))


@pytest.mark.parametrize("make", [tiny_densenet, tiny_unet,
                                  lambda: tiny_unet(upsampling="bilinear", skip_scale=0.7,
                                                    skip_scale_mode="power"),
                                  dk.models.densenet40, dk.models.densenet121])
def test_build_round_trip(make):
    model = make()
    assert dk.models.build(model.config) == model


@pytest.mark.parametrize("make", [tiny_densenet, tiny_unet])
def test_checkpoint_round_trip(tmp_path, make):
    model = make()
    params = model.init(jax.random.PRNGKey(3))
    path = dk.save_checkpoint(tmp_path / "ck.npz", model, params, step=5)
    ckpt = dk.load_checkpoint(path)
    assert ckpt.model == model and ckpt.step == 5
    x = jnp.ones((2, 8, 8, 1))
    np.testing.assert_array_equal(ckpt.model.apply(ckpt.params, x), model.apply(params, x))


def test_denoise_data():
    clean = dk.data.load("digits", image=True)
    d = dk.data.load("denoise", noise_std=0.5)
    assert d.task == "regression" and d.num_classes is None
    np.testing.assert_array_equal(d.y_train, clean.x_train)
    np.testing.assert_array_equal(d.meta["labels_test"], clean.y_test)
    noise = (d.x_train - d.y_train).ravel()
    assert abs(noise.std() - 0.5) < 0.01 and abs(noise.mean()) < 0.01
    np.testing.assert_array_equal(dk.data.load("denoise", noise_std=0.0).x_test, clean.x_test)
    with pytest.raises(InvalidArgumentError, match="noise_std"):
        dk.data.load("denoise", noise_std=-1.0)
    with pytest.raises(InvalidArgumentError, match="source"):
        dk.data.load("denoise", source="cifar")


@pytest.mark.slow
def test_densenet_fit_on_digits_reduces_loss():
    res = dynkit.train.fit(tiny_densenet(), dk.data.load("digits", image=True), steps=20,
                           batch_size=64, optimizer="adam", lr=1e-2, progress=False)
    train = res.history[res.history.split == "train"].loss.to_numpy()
    assert train[-1] < 0.9 * train[0]


@pytest.mark.slow
def test_unet_fit_denoise_reduces_loss():
    res = dynkit.train.fit(dk.models.unet(1, 4, input_shape=(8, 8, 1)), "denoise", steps=20,
                           batch_size=64, optimizer="adam", lr=1e-2, loss="mse",
                           progress=False)
    train = res.history[res.history.split == "train"].loss.to_numpy()
    assert train[-1] < 0.5 * train[0]


def import_torchvision():
    """torchvision, or skip. Test-only shim: the installed torchvision wheel is built for CUDA
    torch and its import fails on the CPU torch with ``operator torchvision::nms does not
    exist``; declaring the two missing operator schemas first lets its pure-Python model code
    import. This belongs in the tests, never in the package."""
    torch = pytest.importorskip("torch")
    if not hasattr(torch.ops.torchvision, "nms"):
        try:
            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            import_torchvision.lib = lib  # keep the registration alive
        except RuntimeError:
            pass  # already declared by another test module
    return pytest.importorskip("torchvision")


@pytest.mark.slow
def test_densenet121_converts_torchvision_state_dict_and_matches_its_logits():
    import torch

    tv = import_torchvision()
    torch.manual_seed(0)
    net = tv.models.densenet121(weights=None).eval()
    with torch.no_grad():  # random BN statistics and affine parameters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1.0, 0.1)
                m.bias.normal_(0.0, 0.1)
    sd = net.state_dict()
    model = dk.models.densenet121(input_shape=(64, 64, 3))
    params = dk.checkpoints.convert_state_dict(model, sd)
    for node, shapes in model.param_shapes().items():
        for k, shape in shapes.items():
            assert int(np.prod(shape)) > 0 and params[node][k].shape == shape
    trained = {k for k in sd if not k.endswith("num_batches_tracked")}
    ours = {f"{n}.{k}" for n, ps in params.items() for k in ps}
    torch_names = {k.replace(".scale", ".weight") for k in ours}
    assert len(ours) == len(trained), (len(ours), len(trained))
    assert {k.rsplit(".", 1)[0] for k in torch_names} == {k.rsplit(".", 1)[0] for k in trained}
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    out = np.asarray(model.apply(params, jnp.asarray(x)))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def torch_unet(depth, width, in_ch, out_ch, upsampling, kappas):
    """A hand-written PyTorch U-Net with dynkit's node names (independent reference)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, padding=1), nn.Conv2d(cout, cout, 3,
                                                                                    padding=1)

        def forward(self, x):
            return torch.relu(self.conv2(torch.relu(self.conv1(x))))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            cin = in_ch
            for i in range(1, depth + 1):
                setattr(self, f"enc{i}", Block(cin, width * 2 ** (i - 1)))
                cin = width * 2 ** (i - 1)
            self.bottleneck = Block(cin, width * 2 ** depth)
            for i in range(depth, 0, -1):
                w = width * 2 ** (i - 1)
                dec = Block(2 * w, w)
                if upsampling == "transpose":
                    dec.up = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
                else:
                    dec.upconv = nn.Conv2d(2 * w, w, 3, padding=1)
                setattr(self, f"dec{i}", dec)
            self.head = nn.Conv2d(width, out_ch, 1)

        def forward(self, x):
            skips = []
            for i in range(1, depth + 1):
                x = getattr(self, f"enc{i}")(x)
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
            x = self.bottleneck(x)
            for i in range(depth, 0, -1):
                dec = getattr(self, f"dec{i}")
                if upsampling == "transpose":
                    up = dec.up(x)
                else:
                    up = dec.upconv(nn.functional.interpolate(x, scale_factor=2, mode=upsampling))
                x = dec(torch.cat([up, kappas[i] * skips[i - 1]], dim=1))
            return self.head(x)

    return UNet()


@pytest.mark.parametrize("upsampling,mode", [("transpose", "power"), ("bilinear", "constant"),
                                             ("nearest", "constant")])
def test_unet_matches_a_hand_written_torch_unet(upsampling, mode):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    kappa = 0.6
    kappas = {i: kappa if mode == "constant" else kappa ** (i - 1) for i in (1, 2)}
    net = torch_unet(2, 3, 2, 2, upsampling, kappas).double().eval()
    model = dk.models.unet(2, 3, 2, input_shape=(8, 8, 2), upsampling=upsampling,
                           skip_scale=kappa, skip_scale_mode=mode)
    # converted by hand: checkpoints.convert_state_dict has no conv_transpose layout yet
    params = {}
    for key, t in net.state_dict().items():
        node, k = key.rsplit(".", 1)
        t = t.numpy()
        if k == "weight":  # conv OIHW -> HWIO; ConvTranspose2d (in, out, kh, kw) -> HWIO too
            order = (2, 3, 0, 1) if model.node(node).op == "conv_transpose" else (2, 3, 1, 0)
            t = t.transpose(order)
        params.setdefault(node, {})["w" if k == "weight" else "b"] = t
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 2))
    with torch.no_grad():
        ref = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(model.apply(params, x), ref, rtol=1e-10, atol=1e-12)
