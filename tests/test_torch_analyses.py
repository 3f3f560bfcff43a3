"""Analyses on imported PyTorch models (``dk.models.from_torch``) and on the DenseNet / U-Net
builders, each against an independent computation (#13, "every analysis works on the new
graphs"):

- empirical NTK of an imported model = the Jacobian contraction done with ``torch.func``
  (``jacrev`` under ``vmap``, ``functional_call``) on the torch module itself;
- path-norm of an imported network with a concat, nearest and bilinear upsampling and a
  ``ConvTranspose2d`` = brute-force path enumeration on its neuron DAG;
- interpolation barrier of a model with a randomly permuted copy of itself = 0, and neural
  collapse of the feature node = NC of the features computed by hand; NC of a model whose
  feature node is a map output (a U-Net imported without ``feature=``) is refused.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from test_builders import torch_unet
from test_from_torch import SkipCNN, channels_last, randomize

import dynkit as dk
from dynkit.checkpoints import convert_state_dict
from dynkit.theory.empirical import model_ntk_fn

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional


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
    "skip_cnn": (lambda tv: SkipCNN(), (3, 3, 8, 8), imported, "structured"),
    "unet_imported": (lambda tv: torch_unet(2, 2, 2, 1, "transpose", {1: 0.6, 2: 0.36}),
                      (3, 2, 8, 8), imported, "jacobian"),
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
    ``jacobian``; the CNN's map output also channels-traced with its pixels on the diagonal
    (the layout: torch's ``(C, H, W)``, dynkit's ``(H, W, C)``)."""
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
    if name == "skip_cnn":
        ref = np.einsum("ihwcp,jhwcp->ijhw", jac, jac) / jac.shape[3]
        k = model_ntk_fn(model, method, trace_axes=(-1,), diagonal_axes=(1, 2))(
            xl, None, params)
        np.testing.assert_allclose(k, ref, rtol=1e-10, atol=1e-13 * np.abs(ref).max())
