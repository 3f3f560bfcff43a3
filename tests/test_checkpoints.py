"""Checkpoints: native round trips, PyTorch import checked against reference torch modules,
bad input (missing, truncated, foreign, malicious, mismatched), atomic saving, load_run."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

import dynkit as dk
from dynkit.checkpoints import convert_state_dict, to_state_dict
from dynkit.errors import (
    CheckpointError,
    InvalidArgumentError,
    MissingDependencyError,
    ShapeMismatchError,
)
from dynkit.io import atomic_path, atomic_write


# --------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def tr():
    """The PyTorch reference modules (skipped without torch)."""
    pytest.importorskip("torch")
    import torch_reference

    return torch_reference


def _random_params(model, dtype, seed):
    """Random parameters of the right shapes (numpy; BatchNorm variances positive)."""
    rng = np.random.default_rng(seed)
    params = {}
    for node, shapes in model.param_shapes().items():
        params[node] = {k: (0.5 + rng.random(s) if k in ("var", "scale") else
                            0.3 * rng.standard_normal(s)).astype(dtype)
                        for k, s in shapes.items()}
    return params


def _mlp(dtype=np.float32):
    model = dk.models.mlp(in_dim=6, widths=[8, 7], out_dim=3)
    return model, _random_params(model, dtype, 0)


def _bn_model(dtype=np.float64):
    """A small CIFAR ResNet (BatchNorm with running stats, projection shortcuts)."""
    model = dk.models.cifar_resnet(8, 4, input_shape=(8, 8, 3), width=4)
    return model, _random_params(model, dtype, 1)


def _assert_params_equal(a, b):
    assert set(a) == set(b)
    for node in a:
        assert set(a[node]) == set(b[node]), node
        for k in a[node]:
            x, y = np.asarray(a[node][k]), np.asarray(b[node][k])
            assert x.dtype == y.dtype, (node, k, x.dtype, y.dtype)
            np.testing.assert_array_equal(x, y, err_msg=f"{node}.{k}")


def _x(model, seed=0, batch=2):
    return np.random.default_rng(seed).standard_normal((batch, *model.input_shape))


def _torch_save(obj, path):
    import torch

    torch.save(obj, path)
    return path


def _as_torch(sd):
    import torch

    return {k: torch.from_numpy(np.asarray(v).copy()) for k, v in sd.items()}


# --------------------------------------------------------------------- atomic writing
def test_atomic_write_replaces_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "data.json"
    with atomic_write(path, "w") as f:
        json.dump({"good": 1}, f)
    assert json.loads(path.read_text()) == {"good": 1}
    for exc in (RuntimeError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), atomic_write(path, "w") as f:
            f.write('{"partial": ')
            raise exc
        assert json.loads(path.read_text()) == {"good": 1}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]
    with atomic_path(tmp_path / "new" / "t.csv") as tmp:
        assert tmp.suffix == ".csv" and tmp.parent == tmp_path / "new"
        tmp.write_text("a,b\n")
    assert (tmp_path / "new" / "t.csv").read_text() == "a,b\n"
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "new" / "t.csv").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_failed_save_does_not_clobber_existing_checkpoint(tmp_path, monkeypatch, suffix):
    model, params = _mlp()
    path = dk.save_checkpoint(tmp_path / f"ck{suffix}", model, params, step=1)
    before = path.read_bytes()

    def crash_mid_write(f, *args, **kwargs):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError("No space left on device")

    if suffix == ".npz":
        monkeypatch.setattr(np, "savez", crash_mid_write)
    else:
        from dynkit.checkpoints import native

        real_atomic_write = native.atomic_write

        class HalfWriter:
            def __init__(self, f):
                self.f = f

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                raise OSError("No space left on device")

        @contextlib.contextmanager
        def crashing_atomic_write(p, *a, **k):
            with real_atomic_write(p, *a, **k) as f:
                yield HalfWriter(f)

        monkeypatch.setattr(native, "atomic_write", crashing_atomic_write)
    with pytest.raises(OSError, match="No space"):
        dk.save_checkpoint(path, model, _random_params(model, np.float32, 9), step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    monkeypatch.undo()
    assert dk.load_checkpoint(path).step == 1


# --------------------------------------------------------------------- native round trips
@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
@pytest.mark.parametrize("which", ["mlp32", "mlp64", "bn"])
@pytest.mark.slow
def test_native_round_trip(tmp_path, suffix, which):
    model, params = {"mlp32": lambda: _mlp(np.float32), "mlp64": lambda: _mlp(np.float64),
                     "bn": _bn_model}[which]()
    meta = {"lr": 0.1, "note": "épreuve", "tags": [1, 2]}
    path = dk.save_checkpoint(tmp_path / "sub" / f"step_7{suffix}", model, params, step=7,
                              meta=meta)
    ckpt = dk.load_checkpoint(path)
    assert isinstance(ckpt, dk.Checkpoint)
    assert ckpt.step == 7 and ckpt.meta == meta and ckpt.path == path
    assert dict(ckpt.model.config) == dict(model.config)
    _assert_params_equal(ckpt.params, params)
    x = _x(model)
    np.testing.assert_array_equal(ckpt.model.apply(ckpt.params, x), model.apply(params, x))
    # the safetensors layout is the documented one, readable without dynkit
    if suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            header = json.loads(f.metadata()["dynkit"])
            keys = set(f.keys())
        assert header == {"format": 1, "config": dict(model.config), "step": 7, "meta": meta}
        assert keys == {f"{n}.{k}" for n, e in params.items() for k in e}


def test_native_with_explicit_model_checks_shapes(tmp_path):
    model, params = _mlp()
    path = dk.save_checkpoint(tmp_path / "a.safetensors", model, params)
    assert dk.load_checkpoint(path, model=model).step is None
    other = dk.models.mlp(in_dim=6, widths=[9, 7], out_dim=3)
    with pytest.raises(ShapeMismatchError, match=r"fc0\.w.*\(6, 8\).*\(6, 9\)"):
        dk.load_checkpoint(path, model=other)


def test_save_rejects_bad_arguments(tmp_path):
    model, params = _mlp()
    with pytest.raises(InvalidArgumentError, match=r"\.safetensors or \.npz"):
        dk.save_checkpoint(tmp_path / "a.ckpt", model, params)
    with pytest.raises(InvalidArgumentError, match="JSON"):
        dk.save_checkpoint(tmp_path / "a.npz", model, params, meta={"f": object()})
    with pytest.raises(InvalidArgumentError, match="step"):
        dk.save_checkpoint(tmp_path / "a.npz", model, params, step=1.5)
    bad = {**params, "fc0": {"w": np.zeros((6, 5), np.float32), "b": params["fc0"]["b"]}}
    with pytest.raises(ShapeMismatchError, match=r"fc0\.w.*\(6, 5\).*\(6, 8\)"):
        dk.save_checkpoint(tmp_path / "a.npz", model, bad)
    missing = {k: v for k, v in params.items() if k != "head"}
    with pytest.raises(CheckpointError, match=r"missing keys.*head\.b.*head\.w"):
        dk.save_checkpoint(tmp_path / "a.npz", model, missing)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------- bad files
def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nope.safetensors"):
        dk.load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="directory.*load_run"):
        dk.load_checkpoint(tmp_path)


def test_truncated_and_corrupt_safetensors(tmp_path):
    model, params = _mlp()
    good = dk.save_checkpoint(tmp_path / "good.safetensors", model, params).read_bytes()
    (n,) = struct.unpack("<Q", good[:8])
    cases = {
        "in_header.safetensors": (good[: 8 + n // 2], "truncated"),
        "in_data.safetensors": (good[: 8 + n + 10], "truncated or corrupt"),
        "garbled.safetensors": (good[:8] + b"{" + b"\xff" * (n - 1) + good[8 + n:], "corrupt"),
        "empty.safetensors": (b"", "empty"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=message) as info:
            dk.load_checkpoint(tmp_path / name)
        assert name in str(info.value)
    header = json.dumps({"format": 99, "config": dict(model.config)})
    from safetensors.numpy import save_file

    save_file({"fc0.w": np.zeros((6, 8), np.float32)}, str(tmp_path / "future.safetensors"),
              metadata={"dynkit": header})
    with pytest.raises(CheckpointError, match="format 99"):
        dk.load_checkpoint(tmp_path / "future.safetensors")
    save_file({"x.w": np.zeros(2, np.float32)}, str(tmp_path / "arch.safetensors"),
              metadata={"dynkit": json.dumps({"format": 1, "config": {"arch": "nonesuch"}})})
    with pytest.raises(CheckpointError, match="rebuild.*nonesuch"):
        dk.load_checkpoint(tmp_path / "arch.safetensors")


def test_truncated_header_message_states_what_is_missing(tmp_path):
    """A file cut inside its header, yet longer than the header length itself (n ≤ size <
    8 + n): the message once read "announces n bytes but the file has only n + 7 bytes"."""
    model, params = _mlp()
    good = dk.save_checkpoint(tmp_path / "good.safetensors", model, params).read_bytes()
    (n,) = struct.unpack("<Q", good[:8])
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good[: 8 + n - 1])
    with pytest.raises(CheckpointError) as info:
        dk.load_checkpoint(cut)
    message = str(info.value)
    assert "cut.safetensors" in message and "truncated" in message
    assert f"announces a {n}-byte safetensors header" in message
    assert f"need {8 + n} bytes, but the file has only {n + 7} bytes" in message


def test_truncated_npz(tmp_path):
    model, params = _mlp()
    good = dk.save_checkpoint(tmp_path / "good.npz", model, params).read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="cut.npz"):
        dk.load_checkpoint(tmp_path / "cut.npz")


def test_foreign_formats_are_recognized_not_misread(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    cases = {"image.safetensors": (png, "PNG"), "notes.pt": (b"hello world\n" * 4, "unknown"),
             "notes.npz": (b"a,b\n1,2\n", "unknown"), "image.pth": (png, "PNG")}
    for name, (data, what) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=f"not a checkpoint.*{what}"):
            dk.load_checkpoint(tmp_path / name)
    # a renamed but valid checkpoint is read by content, whatever its suffix
    model, params = _mlp()
    dk.save_checkpoint(tmp_path / "real.npz", model, params, step=3)
    os.replace(tmp_path / "real.npz", tmp_path / "real.safetensors")
    _assert_params_equal(dk.load_checkpoint(tmp_path / "real.safetensors").params, params)


def test_bfloat16_and_non_array_entries(tmp_path):
    import zipfile

    import ml_dtypes

    model, params = _mlp()
    half = {n: {k: v.astype(ml_dtypes.bfloat16) for k, v in e.items()} for n, e in params.items()}
    ckpt = dk.load_checkpoint(dk.save_checkpoint(tmp_path / "h.safetensors", model, half))
    _assert_params_equal(ckpt.params, half)
    with pytest.raises(InvalidArgumentError, match="bfloat16.*safetensors"):
        dk.save_checkpoint(tmp_path / "h.npz", model, half)
    with zipfile.ZipFile(tmp_path / "doc.npz", "w") as z:  # a zip, but not of .npy arrays
        z.writestr("word/document.xml", "<xml/>")
    with pytest.raises(CheckpointError, match="not numeric arrays.*document.xml"):
        dk.load_checkpoint(tmp_path / "doc.npz", model=model)


def test_foreign_checkpoint_requires_model(tmp_path):
    from safetensors.numpy import save_file

    save_file({"0.weight": np.zeros((8, 6), np.float32)}, str(tmp_path / "hf.safetensors"))
    with pytest.raises(CheckpointError, match=r"foreign safetensors.*model="):
        dk.load_checkpoint(tmp_path / "hf.safetensors")
    np.savez(tmp_path / "sd.npz", **{"0.weight": np.zeros((8, 6))})
    with pytest.raises(CheckpointError, match=r"foreign npz.*model="):
        dk.load_checkpoint(tmp_path / "sd.npz")


def test_nonfinite_weights_warn_naming_the_tensor(tmp_path):
    model, params = _mlp()
    params["fc1"]["w"][0, 0] = np.nan
    params["head"]["b"][1] = np.inf
    path = dk.save_checkpoint(tmp_path / "nan.safetensors", model, params)
    with pytest.warns(RuntimeWarning, match=r"NaN or Inf.*'fc1\.w'.*'head\.b'"):
        ckpt = dk.load_checkpoint(path)
    assert np.isnan(ckpt.params["fc1"]["w"][0, 0])
    clean = dk.save_checkpoint(tmp_path / "ok.safetensors", *_mlp())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dk.load_checkpoint(clean)


class _Evil:
    """Unpickling this creates ``marker`` (a stand-in for arbitrary code execution)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_npz_with_pickled_objects_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil(marker)
    np.savez(tmp_path / "evil.npz", **{"fc0.w": evil})
    with pytest.raises(CheckpointError, match="pickled"):
        dk.load_checkpoint(tmp_path / "evil.npz", model=_mlp()[0])
    assert not marker.exists()


# --------------------------------------------------------------------- torch files
@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, legacy, tr):
    import torch

    marker = tmp_path / "pwned"
    payload = {"state_dict": {"0.weight": torch.zeros(8, 6)}, "hook": _Evil(marker)}
    path = tmp_path / "evil.pt"
    if legacy:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointError, match="refused.*weights_only") as info:
        dk.load_checkpoint(path, model=_mlp()[0])
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()
    if not legacy:  # control: the file really is malicious when unpickled without protection
        torch.load(path, weights_only=False)
        assert marker.exists()


def test_pt_without_torch_names_the_extra(tmp_path, monkeypatch, tr):
    import sys

    model, params = _mlp()
    path = _torch_save(_as_torch(to_state_dict(model, params)), tmp_path / "m.pt")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'dynkit\[torch\]'"):
        dk.load_checkpoint(path, model=model)


@pytest.mark.parametrize("which", ["mlp", "bn"])
def test_pt_round_trip_and_wrappers(tmp_path, which, tr):
    model, params = _mlp() if which == "mlp" else _bn_model()
    sd = _as_torch(to_state_dict(model, params))
    wrapped = {
        "raw.pt": (sd, None),
        "ddp.pth": ({f"module.{k}": v for k, v in sd.items()}, None),
        "train.pt": ({"state_dict": sd, "step": 42, "epoch": 3, "optimizer": {"lr": 0.1}}, 42),
        "model.pt": ({"model": sd}, None),
    }
    for name, (obj, step) in wrapped.items():
        ckpt = dk.load_checkpoint(_torch_save(obj, tmp_path / name), model=model)
        _assert_params_equal(ckpt.params, params)
        assert ckpt.step == step and ckpt.model is model and ckpt.meta == {"source": "pt"}
    with pytest.raises(CheckpointError, match="not a state_dict"):
        dk.load_checkpoint(_torch_save(list(sd.values()), tmp_path / "list.pt"), model=model)
    with pytest.raises(CheckpointError, match="not tensors"):
        dk.load_checkpoint(_torch_save({**sd, "epoch": 3}, tmp_path / "mixed.pt"), model=model)
    (tmp_path / "cut.pt").write_bytes((tmp_path / "raw.pt").read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"cut\.pt.*(damaged|truncated)"):
        dk.load_checkpoint(tmp_path / "cut.pt", model=model)


def test_state_dict_mismatches_are_named(tr):
    torch_model = tr.randomize_batchnorm(tr.CifarResNet(8, num_classes=4, width=4))
    sd = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    model = dk.models.resnet20(num_classes=4, input_shape=(8, 8, 3), width=4)
    deep = dk.models.cifar_resnet(8, 4, input_shape=(8, 8, 3), width=4)
    convert_state_dict(deep, sd)  # fits

    bad = {**sd, "layer2.0.conv1.weight": np.zeros((8, 4, 5, 5), np.float32)}
    with pytest.raises(ShapeMismatchError) as info:
        convert_state_dict(deep, bad)
    msg = str(info.value)
    assert "'layer2.0.conv1.weight'" in msg and "(8, 4, 5, 5)" in msg and "(8, 4, 3, 3)" in msg

    with pytest.raises(CheckpointError) as info:
        convert_state_dict(model, sd)  # resnet20 has layer{1,2,3}.{1,2}, the file does not
    msg = str(info.value)
    assert "missing keys" in msg and "layer1.2.conv1.weight" in msg

    extra = {k: v for k, v in sd.items() if k != "linear.bias"}
    extra["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError) as info:
        convert_state_dict(deep, extra)
    msg = str(info.value)
    assert "missing keys (1): ['linear.bias']" in msg
    assert "unexpected keys (1): ['extra.weight']" in msg


# --------------------------------------------------------------------- torch == dynkit logits
def _check_against_torch(torch_model, model, x_nhwc, tmp_path=None, rtol=0.0):
    """Convert ``torch_model``'s state_dict, compare eval-mode logits (float64) and check that
    ``to_state_dict`` reproduces the torch state_dict exactly."""
    import torch

    torch_model = torch_model.double().eval()
    sd = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    if tmp_path is not None:  # through a .pt file
        path = _torch_save(torch_model.state_dict(), tmp_path / "model.pt")
        params = dk.load_checkpoint(path, model=model).params
    else:
        params = convert_state_dict(model, sd)
    x_nchw = np.ascontiguousarray(np.moveaxis(x_nhwc, -1, 1))
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x_nchw)).numpy()
    got = np.asarray(model.apply(params, x_nhwc))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.std(expected) > 1e-3  # a meaningful comparison, not all zeros
    back = to_state_dict(model, params)
    if model.arch == "mlp":
        back = dict(zip(sd, back.values()))
    assert set(back) == set(sd)
    for k, v in sd.items():
        if not k.endswith("num_batches_tracked"):  # exact unless divided by a multiplier
            np.testing.assert_allclose(back[k], v, rtol=rtol, atol=0, err_msg=k)
    return params


def test_torch_sequential_mlp_same_logits(tmp_path, tr):
    import torch
    from safetensors.numpy import save_file

    torch.manual_seed(0)
    widths = [7, 6, 5, 6, 7, 5]  # Linear indices 0, 2, ..., 12: "10" sorts before "2"
    torch_model = tr.sequential_mlp(4, widths, 3)
    model = dk.models.mlp(in_dim=4, widths=widths, out_dim=3)
    x = _x(model)
    _check_against_torch(torch_model, model, x)
    _check_against_torch(torch_model, model, x, tmp_path)
    # a foreign safetensors file stores keys sorted as strings; order is recovered numerically
    save_file({k: v.numpy() for k, v in torch_model.state_dict().items()},
              str(tmp_path / "mlp.safetensors"))
    ckpt = dk.load_checkpoint(tmp_path / "mlp.safetensors", model=model)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ckpt.model.apply(ckpt.params, x), expected, rtol=1e-5, atol=1e-5)


def test_torch_import_into_ntk_parameterization(tr):
    """Effective weights ``w_mult * w`` equal torch's, so the function is the same."""
    import torch

    torch.manual_seed(7)
    torch_model = tr.sequential_mlp(4, [6, 5], 3)
    model = dk.models.mlp(in_dim=4, widths=[6, 5], out_dim=3, parameterization="ntk",
                          W_std=1.3, b_std=0.4)
    params = _check_against_torch(torch_model, model, _x(model), rtol=1e-15)
    w_torch = torch_model.state_dict()["2.weight"].numpy().T
    np.testing.assert_allclose(np.asarray(params["fc1"]["w"]), w_torch * np.sqrt(6) / 1.3)
    no_bias_mult = dk.models.mlp(in_dim=4, widths=[6, 5], out_dim=3, parameterization="ntk")
    with pytest.raises(InvalidArgumentError, match="b_mult = 0.*standard"):
        convert_state_dict(no_bias_mult, torch_model.state_dict())


def test_torch_cnn_flatten_order(tr):
    import torch

    torch.manual_seed(1)
    torch_model = tr.SimpleCNN(2, [3, 5], 4, flat_dim=5 * 3 * 2)
    model = dk.models.cnn(input_shape=(12, 8, 2), channels=[3, 5], num_classes=4)
    _check_against_torch(torch_model, model, _x(model))


@pytest.mark.slow
def test_torch_resnet20_same_logits(tmp_path, tr):
    import torch

    torch.manual_seed(2)
    torch_model = tr.randomize_batchnorm(tr.CifarResNet(20, num_classes=10))
    model = dk.models.resnet20(num_classes=10, input_shape=(16, 16, 3))
    _check_against_torch(torch_model, model, _x(model), tmp_path)


@pytest.mark.slow
def test_torch_wrn_same_logits(tr):
    import torch

    torch.manual_seed(3)
    torch_model = tr.randomize_batchnorm(tr.WideResNet(10, 2, num_classes=10))
    model = dk.models.wrn(10, 2, 10, input_shape=(32, 32, 3))
    _check_against_torch(torch_model, model, _x(model))


@pytest.mark.slow
def test_torch_resnet18_same_logits(tr):
    import torch

    torch.manual_seed(4)
    torch_model = tr.randomize_batchnorm(tr.resnet18(num_classes=10))
    model = dk.models.resnet18(num_classes=10, input_shape=(64, 64, 3))
    _check_against_torch(torch_model, model, _x(model))


@pytest.mark.slow
def test_torch_resnet50_same_logits(tr):
    import torch

    torch.manual_seed(5)
    torch_model = tr.randomize_batchnorm(tr.resnet50(num_classes=10))
    model = dk.models.resnet50(num_classes=10, input_shape=(32, 32, 3))
    _check_against_torch(torch_model, model, _x(model))


@pytest.mark.slow
def test_torch_vgg11_bn_same_logits(tr):
    import torch

    torch.manual_seed(6)
    torch_model = tr.randomize_batchnorm(
        tr.VGG(tr.VGG11_CFG, flat_dim=512 * 2 * 2, width=16, batchnorm=True))
    model = dk.models.vgg11(input_shape=(64, 64, 3), num_classes=10, batchnorm=True,
                            classifier_width=16)
    _check_against_torch(torch_model, model, _x(model))


# --------------------------------------------------------------------- load_run
def test_load_run_orders_by_step_and_loads_lazily(tmp_path, monkeypatch):
    model = _mlp()[0]
    shifted = {s: _random_params(model, np.float32, s) for s in (5, 20, 100, 300)}
    # names deliberately out of step order; steps from metadata except the last
    dk.save_checkpoint(tmp_path / "b.safetensors", model, shifted[100], step=100)
    dk.save_checkpoint(tmp_path / "c.npz", model, shifted[5], step=5)
    dk.save_checkpoint(tmp_path / "a.safetensors", model, shifted[20], step=20)
    dk.save_checkpoint(tmp_path / "step_000300.safetensors", model, shifted[300])
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "metrics.csv").write_text("step,loss\n5,1.0\n20,0.5\n")

    run = dk.load_run(tmp_path)
    assert run.steps == (5, 20, 100, 300) and len(run) == 4
    assert [p.name for p in run.paths] == ["c.npz", "a.safetensors", "b.safetensors",
                                           "step_000300.safetensors"]
    assert list(run.metrics["loss"]) == [1.0, 0.5]

    import dynkit.checkpoints.run as run_mod

    loaded = []
    real = run_mod.load_checkpoint
    monkeypatch.setattr(run_mod, "load_checkpoint",
                        lambda p, **kw: loaded.append(Path(p).name) or real(p, **kw))
    it = iter(run)
    assert loaded == []  # nothing loaded before iteration
    first = next(it)
    assert loaded == ["c.npz"] and first.step == 5
    for ckpt, s in zip([first, *it], run.steps):
        _assert_params_equal(ckpt.params, shifted[s])
    assert ckpt.step == 300  # from the file name
    sub = run[::2]
    assert sub.steps == (5, 100) and run.at(100).path.name == "b.safetensors"
    with pytest.raises(CheckpointError, match="no step 7"):
        run.at(7)


def test_load_run_bad_input(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        dk.load_run(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no checkpoint files"):
        dk.load_run(tmp_path)
    model, params = _mlp()
    dk.save_checkpoint(tmp_path / "x.safetensors", model, params, step=3)
    dk.save_checkpoint(tmp_path / "step_3.npz", model, params)
    with pytest.raises(CheckpointError, match="two checkpoints for step 3"):
        dk.load_run(tmp_path)
    (tmp_path / "step_3.npz").unlink()
    dk.save_checkpoint(tmp_path / "final.npz", model, params)
    with pytest.raises(CheckpointError, match="cannot tell the step.*final.npz"):
        dk.load_run(tmp_path)


def test_safetensors_header_length_starting_like_a_pickle_is_not_a_pickle(tmp_path):
    # a header of length 0x380 makes the file start with b"\x80\x03", the pickle protocol-3 mark
    from dynkit.checkpoints.native import sniff_format

    path = tmp_path / "x.safetensors"
    header = b'{"__metadata__":{"a":"' + b"b" * (0x380 - 25) + b'"}}'
    assert len(header) == 0x380
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    assert path.read_bytes()[:2] == b"\x80\x03"
    assert sniff_format(path) == "safetensors"


# --------------------------------------------------------------------- iterate, one model
def test_model_equality_and_hash_follow_the_graph(tmp_path):
    """A model rebuilt from a checkpoint's config equals the original and hashes alike (so
    caches of compiled programs hit); another config or graph does not."""
    model, params = _mlp()
    dk.save_checkpoint(tmp_path / "a.safetensors", model, params, step=1)
    rebuilt = dk.load_checkpoint(tmp_path / "a.safetensors").model
    assert rebuilt is not model and rebuilt == model and hash(rebuilt) == hash(model)
    assert len({model, rebuilt, _mlp()[0]}) == 1
    other = dk.models.mlp(in_dim=6, widths=[8, 7], out_dim=3, activation="tanh")
    assert other != model and model != dk.models.mlp(in_dim=6, widths=[8, 8], out_dim=3)
    # same config, one node attribute changed: a different graph
    from dataclasses import replace

    nodes = tuple(replace(n, attrs={**n.attrs, "w_mult": 2.0}) if n.name == "head" else n
                  for n in model.nodes)
    assert replace(model, nodes=nodes) != model
    assert model != "mlp" and model == replace(model)


def _series(tmp_path, steps):
    model, _ = _mlp()
    for s in steps:
        dk.save_checkpoint(tmp_path / f"step_{s:03d}.safetensors", model,
                           _random_params(model, np.float32, s), step=s)
    return dk.load_run(tmp_path)


def _steps(checkpoints):
    return [c.step for c in checkpoints]


def test_iterate_every_and_last_over_folders_runs_and_iterables(tmp_path):
    run = _series(tmp_path, [0, 10, 20, 30, 40])
    assert _steps(dk.checkpoints.iterate(tmp_path)) == [0, 10, 20, 30, 40]
    assert _steps(dk.checkpoints.iterate(str(tmp_path), every=3)) == [0, 30, 40]
    assert _steps(dk.checkpoints.iterate(run, 3, include_last=False)) == [0, 30]
    assert _steps(dk.checkpoints.iterate(run, every=2)) == [0, 20, 40]  # last already in
    assert len(dk.checkpoints.iterate(run, every=3)) == 3
    ckpts = list(run)
    assert _steps(dk.checkpoints.iterate(ckpts, every=3)) == [0, 30, 40]
    assert _steps(dk.checkpoints.iterate(iter(ckpts), every=4, include_last=False)) == [0, 40]
    assert [(i, c.step) for i, c in dk.checkpoints.iterate(ckpts, 3, indexed=True)] == [
        (0, 0), (3, 30), (4, 40)]
    assert list(dk.checkpoints.iterate([], every=2)) == []
    with pytest.raises(TypeError, match="length"):
        len(dk.checkpoints.iterate(ckpts))


def test_iterate_is_lazy_and_shares_one_model(tmp_path, monkeypatch):
    run = _series(tmp_path, [0, 1, 2])
    import dynkit.checkpoints.run as run_mod

    loaded = []
    real = run_mod.load_checkpoint
    monkeypatch.setattr(run_mod, "load_checkpoint",
                        lambda p, **kw: loaded.append(Path(p).name) or real(p, **kw))
    it = dk.checkpoints.iterate(run)
    assert loaded == []
    models = [c.model for c in it]
    assert loaded == ["step_000.safetensors", "step_001.safetensors", "step_002.safetensors"]
    assert models[0] is models[1] is models[2]
    assert run[::2][1].model is models[0]  # a sub-run keeps sharing it


def test_iterate_bad_input(tmp_path):
    with pytest.raises(InvalidArgumentError, match="every must be an integer >= 1, got 0"):
        dk.checkpoints.iterate([], every=0)
    with pytest.raises(InvalidArgumentError, match="every must be an integer >= 1, got 1.5"):
        dk.checkpoints.iterate([], every=1.5)
    with pytest.raises(InvalidArgumentError, match="run must be a run folder.*got int"):
        dk.checkpoints.iterate(3)
    with pytest.raises(CheckpointError, match="does not exist"):
        dk.checkpoints.iterate(tmp_path / "nope")
