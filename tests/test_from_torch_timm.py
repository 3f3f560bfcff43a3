"""Forward parity of ``dk.models.from_torch`` on timm's ResNet-18 (random weights and BatchNorm
statistics, ``pretrained=False``: nothing is downloaded). timm is a test-only extra, installed
with ``--no-deps`` next to torchvision (.ci/run); the test skips without it."""

import importlib.util

import numpy as np
import pytest
from test_from_torch import TOLS, channels_last, check_parity

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def timm(torchvision):  # timm imports torchvision: the fixture's shim comes first
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed")
    import timm

    return timm


@pytest.mark.slow
def test_timm_resnet18_parity(timm):
    """float64 to 1e-10 and float32 to 1e-5 relative (one trace: the graph does not depend on
    the dtype); timm keeps torchvision's ResNet-18 module names, so the nodes carry them, and
    the feature node is the global pool."""
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=7)
    model = parity_float64_and_float32(net, (2, 3, 32, 32))
    assert model.output == "fc" and model.node("fc").op == "dense"
    assert model.node(model.feature).op == "global_avgpool"
    assert {"conv1", "bn1", "layer4.1.conv2", "layer2.0.downsample.0"} <= {
        n.name for n in model.nodes}


def parity_float64_and_float32(net, shape):
    """``check_parity`` in float64 (1e-10), then the same import with float32 parameters
    against torch's float32 forward (1e-5 relative): one trace, as the graph does not depend
    on the dtype. Returns the model."""
    model, params = check_parity(net, shape, torch.float64)
    net = net.float()
    x = torch.randn(*shape)
    p32 = {k: {n: np.asarray(v, np.float32) for n, v in p.items()} for k, p in params.items()}
    ours = np.asarray(model.apply(p32, channels_last(x)))
    with torch.no_grad():
        ref = channels_last(net(x))
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) <= TOLS[torch.float32] * np.max(np.abs(ref))
    return model
