"""Why ``from_torch`` has no ``torch.fx`` fallback (module docstring of
``dynkit.models.torch_graph``): where ``torch.export`` fails on an eval-mode module, fx fails
too or returns an opaque call; where fx fails, export traces and the import is exact."""

import math

import numpy as np
import pytest
from test_from_torch import check_parity

import dynkit as dk
from dynkit.errors import UnsupportedLayerError

torch = pytest.importorskip("torch")
nn = torch.nn


class Net(nn.Module):
    """A Linear, then ``rest(self, x, h)``."""

    def __init__(self, rest):
        super().__init__()
        self.fc, self.rest = nn.Linear(3, 3), rest

    def forward(self, x):
        return self.rest(self, x, self.fc(x))


VALUE_DEPENDENT = {  # Python control flow or numbers from tensor values
    "branch": lambda m, x, h: h if x.sum() > 0 else -h,
    "item": lambda m, x, h: h * float(x.abs().max()),
    "assert": lambda m, x, h: (h if bool(torch.isfinite(x).all()) else None),
}


@pytest.mark.parametrize("name", sorted(VALUE_DEPENDENT))
def test_value_dependent_python_defeats_both_tracers(name):
    net = Net(VALUE_DEPENDENT[name]).eval()
    with pytest.raises(UnsupportedLayerError,
                       match="torch.export could not trace .*GuardOnDataDependentSymNode"):
        dk.models.from_torch(net, torch.ones(2, 3))
    with pytest.raises((torch.fx.proxy.TraceError, TypeError)):
        torch.fx.symbolic_trace(net)


def test_torchscript_submodule_is_refused_naming_it():
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    net[0] = torch.jit.script(net[0])
    net.eval()
    with pytest.raises(UnsupportedLayerError, match=r"^0: a TorchScript module.*before scripting"):
        dk.models.from_torch(net, torch.ones(2, 3))
    with pytest.raises(UnsupportedLayerError, match=r"^<root>: a TorchScript module"):
        dk.models.from_torch(torch.jit.script(nn.Linear(3, 2)).eval(), torch.ones(2, 3))
    # fx sees no op inside: one opaque call on the scripted module's C++ object
    traced = torch.fx.symbolic_trace(net)
    assert [(n.op, n.target) for n in traced.graph.nodes][1:3] == [("get_attr", "0._c"),
                                                                   ("call_method", "forward")]


@torch.jit.script
def half_relu(x):
    return torch.relu(x) * 0.5


FX_ONLY_FAILS = {  # fx raises; export traces, and the import reproduces torch's forward
    "shape_branch": lambda m, x, h: h if x.shape[1] == 3 else x,
    "numpy_on_sizes": lambda m, x, h: h * float(np.sqrt(x.shape[1])) / math.sqrt(3.0),
    "scripted_function": lambda m, x, h: half_relu(h),
}


@pytest.mark.parametrize("name", sorted(FX_ONLY_FAILS))
def test_what_fx_cannot_trace_export_imports_exactly(name):
    net = Net(FX_ONLY_FAILS[name])
    with pytest.raises(Exception):  # noqa: B017 - TraceError, ValueError or RuntimeError
        torch.fx.symbolic_trace(net.eval())
    check_parity(net, (4, 3), torch.float64)


# --------------------------------------------------------------------- bad input (gaps)
def test_unsupported_module_names_its_path():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.Hardswish()

        def forward(self, x):
            return self.act(x)

    net = nn.Sequential(nn.Linear(3, 3), Encoder()).eval()
    with pytest.raises(UnsupportedLayerError, match=r"^1\.act: hardswish is not supported"):
        dk.models.from_torch(net, torch.ones(2, 3))


def test_load_checkpoint_refuses_a_template_in_training_mode(tmp_path):
    """A freshly built module is in training mode; the template is refused with the fix."""
    from dynkit.errors import InvalidArgumentError

    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    torch.save(net.state_dict(), tmp_path / "net.pt")
    with pytest.raises(InvalidArgumentError, match=r"training mode.*'<root>'.*module\.eval\(\)"):
        dk.load_checkpoint(tmp_path / "net.pt", model=net, example_input=torch.zeros(2, 3))
    ckpt = dk.load_checkpoint(tmp_path / "net.pt", model=net.eval(),
                              example_input=torch.zeros(2, 3))
    assert sorted(ckpt.params) == ["0", "1", "2"]


def test_ops_the_output_does_not_depend_on_are_skipped():
    """A buffer updated in ``forward`` (a call counter) and an unused branch with an op dynkit
    does not support change nothing in the eval-mode function: the import is exact."""
    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)
            self.register_buffer("calls", torch.zeros((), dtype=torch.float64))

        def forward(self, x):
            self.calls += 1
            unused = torch.nn.functional.hardswish(x)  # noqa: F841
            return self.fc(x)

    model, params = check_parity(Counting(), (4, 3), torch.float64)
    assert [n.op for n in model.nodes] == ["input", "dense"] and sorted(params) == ["fc"]
