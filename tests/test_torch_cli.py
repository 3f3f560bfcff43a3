"""A user's own PyTorch class on the command line (``--torch-model module:Class``), and native
checkpoints of imported models that reload without the torch class.

The user's module is a tiny CNN with a concatenation skip, written to a temporary ``.py`` file.
Numbers the CLI reports are checked against the torch module itself (its forward pass on the
same data), which is independent of dynkit's graph import."""

from __future__ import annotations

import importlib.util
import json
import re
import textwrap

import jax
import numpy as np
import pandas as pd
import pytest

import dynkit as dk
from dynkit.cli import main
from dynkit.errors import CheckpointError, InvalidArgumentError

torch = pytest.importorskip("torch")

NETS = textwrap.dedent('''
    import torch
    from torch import nn


    class TinyNet(nn.Module):
        """A CNN with a concatenation skip: stem -> [h, relu(branch(h))] -> pool -> fc."""

        def __init__(self, width=4, classes=10):
            super().__init__()
            self.stem = nn.Conv2d(1, width, 3, padding=1)
            self.bn = nn.BatchNorm2d(width)
            self.branch = nn.Conv2d(width, width, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2 * width, classes)

        def forward(self, x):
            h = torch.relu(self.bn(self.stem(x)))
            h = torch.cat([h, torch.relu(self.branch(h))], dim=1)
            return self.fc(torch.flatten(self.pool(h), 1))


    class Branchy(nn.Module):
        """Data-dependent control flow: torch.export cannot trace it."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)


    NOT_A_MODULE = 3
''')


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A folder with ``tinynets.py`` and two state_dicts of ``TinyNet(width=4)`` (two seeds,
    random BatchNorm statistics), and the torch modules they hold."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "tinynets.py").write_text(NETS)
    spec = importlib.util.spec_from_file_location("tinynets_fixture", folder / "tinynets.py")
    namespace = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(namespace)
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = namespace.TinyNet(width=4)
        with torch.no_grad():
            net.bn.running_mean.uniform_(-0.5, 0.5)
            net.bn.running_var.uniform_(0.5, 1.5)
        torch.save(net.state_dict(), folder / f"seed{seed}.pt")
        nets.append(net.eval())
    return folder, nets


def torch_scores(net, x, y):
    """Mean cross-entropy and accuracy of the torch module on channels-last inputs ``x``."""
    with torch.no_grad():
        logits = net(torch.from_numpy(np.moveaxis(np.asarray(x), -1, 1)).float())
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(np.asarray(y)).long())
    return float(loss), float((logits.argmax(1).numpy() == np.asarray(y)).mean())


def reset_bn(net, x):
    """A copy of ``net`` whose BatchNorm statistics are those of the batch ``x`` (unbiased
    variance), computed by torch in train mode with a cumulative average (momentum=None)."""
    import copy

    net = copy.deepcopy(net)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        net.train()(torch.from_numpy(np.moveaxis(np.asarray(x), -1, 1)).float())
    return net.eval()


@pytest.mark.slow
def test_info_dotted_module_and_file_path(user, monkeypatch, capsys):
    folder, _ = user
    monkeypatch.chdir(folder)  # a dotted module is importable from the current directory
    assert main(["info", "seed0.pt", "--torch-model", "tinynets:TinyNet",
                 "--input-shape", "1,1,8,8", "--torch-kwargs", '{"width": 4}']) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "tinynets.TinyNet" in out
    layers = [line.split()[:2] for line in out.split("layers:")[1].strip().splitlines()]
    assert ["cat", "concat"] in layers and ["fc", "dense"] in layers
    assert main(["info", str(folder / "seed0.pt"), "--torch-model",
                 f"{folder / 'tinynets.py'}:TinyNet", "--input-shape", "1,8,8"]) == 0
    assert f"parameters: {sum(p.numel() for p in user[1][0].parameters()):,}" in \
        capsys.readouterr().out


@pytest.mark.slow
def test_metrics_on_a_file_and_a_run_match_torch(user, tmp_path):
    folder, nets = user
    spec = f"{folder / 'tinynets.py'}:TinyNet"
    out = tmp_path / "one"
    assert main(["metrics", str(folder / "seed0.pt"), "--torch-model", spec, "--image",
                 "--metrics", "performance", "--out", str(out)]) == 0
    table = pd.read_csv(out / "metrics.csv").set_index(["split", "metric"])["value"]
    data = dk.data.load("digits", image=True)
    loss, acc = torch_scores(nets[0], data.x_test, data.y_test)
    assert table[("test", "loss")] == pytest.approx(loss, rel=1e-5)
    n = len(data.y_test)  # the same number of correct predictions (dynkit averages in float32)
    assert round(table[("test", "accuracy")] * n) == round(acc * n)
    run = tmp_path / "run"
    run.mkdir()
    for step, seed in ((10, 0), (20, 1)):
        (run / f"step_{step}.pt").write_bytes((folder / f"seed{seed}.pt").read_bytes())
    assert main(["metrics", str(run), "--torch-model", spec, "--image", "--input-shape",
                 "1,8,8", "--metrics", "performance", "--out", str(tmp_path / "run_out")]) == 0
    series = pd.read_csv(tmp_path / "run_out" / "metrics.csv")
    final = series[(series.step == 20) & (series.split == "train") & (series.metric == "loss")]
    assert float(final["value"].iloc[0]) == pytest.approx(
        torch_scores(nets[1], data.x_train, data.y_train)[0], rel=1e-5)


@pytest.mark.slow
def test_lmc_on_two_imported_checkpoints(user, tmp_path, capsys):
    folder, nets = user
    out = tmp_path / "lmc"
    assert main(["lmc", str(folder / "seed0.pt"), str(folder / "seed1.pt"), "--torch-model",
                 f"{folder / 'tinynets.py'}:TinyNet", "--image", "--alphas", "3",
                 "--out", str(out)]) == 0
    assert "loss_barrier" in capsys.readouterr().out
    barriers = pd.read_csv(out / "barriers.csv")
    assert set(barriers["alignment"]) == {"none", "weights"}
    curve = pd.read_csv(out / "interpolation.csv")
    data = dk.data.load("digits", image=True)
    # the end points are the two torch networks, with their BatchNorm statistics re-estimated
    # on the training inputs (lmc's default bn="reset"); aligning permutes, same function
    ends = [torch_scores(reset_bn(net, data.x_train), data.x_train, data.y_train)[0]
            for net in nets]
    for alignment in ("none", "weights"):
        c = curve[(curve.alignment == alignment) & (curve.split == "train")].set_index("alpha")
        assert [c.loc[0.0, "loss"], c.loc[1.0, "loss"]] == pytest.approx(ends, rel=1e-5)
    assert (out / "interpolation.png").exists() and (out / "layerwise.png").exists()


SHAPE = ["--input-shape", "1,8,8"]


@pytest.mark.parametrize("argv, message", [
    (["--torch-model", "tinynets:Missing", *SHAPE], r"module 'tinynets' has no 'Missing'"),
    (["--torch-model", "no_such_module_xyz:Net", *SHAPE],
     r"'no_such_module_xyz' could not be found"),
    (["--torch-model", "missing_file.py:Net", *SHAPE], r"no such Python file 'missing_file.py'"),
    (["--torch-model", "tinynets:NOT_A_MODULE", *SHAPE], r"not a torch.nn.Module subclass"),
    (["--torch-model", "TinyNet", *SHAPE], r"must be 'module:Class'"),
    (["--torch-model", "tinynets:TinyNet", "--input-shape", "1,x,8"], r"--input-shape must be"),
    (["--torch-model", "tinynets:TinyNet", "--input-shape", "0,8,8"], r"--input-shape must be"),
    (["--torch-model", "tinynets:TinyNet", *SHAPE, "--torch-kwargs", "{width: 4}"],
     r"not valid JSON"),
    (["--torch-model", "tinynets:TinyNet", *SHAPE, "--torch-kwargs", "[4]"],
     r"must be a JSON object"),
    (["--torch-model", "tinynets:TinyNet", *SHAPE, "--torch-kwargs", '{"depth": 2}'],
     r"TinyNet\(\*\*\{'depth': 2\}\) failed: TypeError"),
    (["--torch-model", "tinynets:TinyNet"], r"needs --input-shape"),
    (SHAPE, r"go with --torch-model"),
    (["--torch-model", "tinynets:Branchy", "--input-shape", "64"],
     r"torch\.export could not trace tinynets\.Branchy: .*"),
])
def test_info_errors_are_one_line_and_name_the_cause(user, monkeypatch, capsys, argv, message):
    folder, _ = user
    monkeypatch.chdir(folder)
    assert main(["info", "seed0.pt", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dynkit: error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_a_module_failing_on_import_is_named(tmp_path, capsys):
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    assert main(["info", "x.pt", "--torch-model", f"{tmp_path / 'broken.py'}:Net",
                 "--input-shape", "3"]) == 2
    err = capsys.readouterr().err
    assert "could not be imported" in err and "boom at import" in err


def test_input_shape_must_match_the_data(user, capsys):
    folder, _ = user
    spec = f"{folder / 'tinynets.py'}:TinyNet"
    assert main(["metrics", str(folder / "seed0.pt"), "--torch-model", spec, "--image",
                 "--input-shape", "3,8,8"]) == 2
    assert "does not match the examples of --data digits, (1, 8, 8)" in capsys.readouterr().err


def test_a_malicious_state_dict_never_runs(user, tmp_path, capsys):
    """The state_dict file is read with torch.load(weights_only=True), even with a template."""
    from test_checkpoints import _Evil

    folder, nets = user
    marker = tmp_path / "pwned"
    torch.save({"state_dict": nets[0].state_dict(), "hook": _Evil(marker)}, tmp_path / "evil.pt")
    assert main(["info", str(tmp_path / "evil.pt"), "--torch-model",
                 f"{folder / 'tinynets.py'}:TinyNet", "--input-shape", "1,8,8"]) == 2
    assert "weights_only" in capsys.readouterr().err and not marker.exists()


# --------------------------------------------------------------------- reloading without torch
def test_imported_model_reloads_without_its_class(user, tmp_path):
    """from_torch -> save_checkpoint -> load_checkpoint(path) with no template: the stored graph
    (JSON, no pickle) rebuilds the model, and its outputs are the torch module's."""
    _, nets = user
    x = torch.randn(5, 1, 8, 8)
    model, params = dk.models.from_torch(nets[0], x)
    path = dk.save_checkpoint(tmp_path / "tiny.safetensors", model, params, step=4)
    ckpt = dk.load_checkpoint(path)
    assert ckpt.model == model and ckpt.step == 4 and ckpt.model.feature == model.feature
    with torch.no_grad():
        ref = nets[0](x).numpy()
    ours = np.asarray(ckpt.model.apply(ckpt.params, np.moveaxis(x.numpy(), 1, -1)))
    assert np.max(np.abs(ours - ref)) <= 1e-5 * np.max(np.abs(ref))
    npz = dk.save_checkpoint(tmp_path / "tiny.npz", model, params)
    assert dk.load_checkpoint(npz).model == model
    header = json.loads(str(np.load(npz)["__dynkit__"]))
    assert [n[1] for n in header["graph"]["nodes"]][-3:] == ["concat", "global_avgpool", "dense"]
    built = dk.models.mlp(3, [4], 2)  # a built model keeps storing its config only
    plain = dk.save_checkpoint(tmp_path / "mlp.npz", built, built.init(jax.random.PRNGKey(0)))
    assert "graph" not in json.loads(str(np.load(plain)["__dynkit__"]))


@pytest.mark.parametrize("edit, message", [
    (lambda g: g["nodes"][1].__setitem__(1, "softmax"), "unknown op 'softmax'"),
    (lambda g: g["nodes"][1].__setitem__(2, ["later"]), r"reads \['later'\] before"),
    (lambda g: g.__setitem__("output", "nowhere"), "output node 'nowhere'"),
    (lambda g: g.__setitem__("input_shape", [8, -1]), "input_shape"),
    (lambda g: g["nodes"].__setitem__(0, "input"), r"not \[name, op, inputs, attrs\]"),
])
def test_a_malformed_stored_graph_is_a_checkpoint_error(user, tmp_path, edit, message):
    from safetensors.numpy import load_file, save_file

    _, nets = user
    model, params = dk.models.from_torch(nets[0], torch.zeros(1, 1, 8, 8))
    path = dk.save_checkpoint(tmp_path / "g.safetensors", model, params)
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        header = json.loads(f.metadata()["dynkit"])
    edit(header["graph"])
    save_file(load_file(str(path)), str(path), metadata={"dynkit": json.dumps(header)})
    with pytest.raises(CheckpointError, match=message):
        dk.load_checkpoint(path)


def test_torch_template_and_shape_helpers():
    from dynkit.models.torch_template import parse_input_shape, torch_template

    assert parse_input_shape("1,3,32,32") == parse_input_shape("3,32,32") == (3, 32, 32)
    with pytest.raises(InvalidArgumentError, match="--input-shape"):
        parse_input_shape("")
    module, x = torch_template("torch.nn:Conv2d", (3, 8, 8),
                               {"in_channels": 3, "out_channels": 2, "kernel_size": 3})
    assert not module.training and tuple(x.shape) == (1, 3, 8, 8)
