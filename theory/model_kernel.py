"""``kernel_of(model)``: the infinite-width NNGP/NTK of a dynkit graph ``Model``.

The model's nodes are walked in graph order and each is mapped to its ``stax`` kernel
recursion: ``dense``/``conv`` (any parameterization of ``dynkit.models``), ``relu``/``act``
(closed-form duals), ``avgpool``, ``global_avgpool``, ``flatten``, ``add`` (independent
branches: sum), ``scale``, ``concat`` (block-structured, :mod:`dynkit.theory.stax_blocks`) and
nearest ``upsample``. A node computing ``w_mult (x w) + b_mult b`` with stored
``w ~ N(0, init_std²)``, ``b ~ N(0, b_init_std²)`` and ``fan_in`` inputs per unit maps

    K' = w_mult² init_std² fan_in m(K) + b_mult² b_init_std²
    Θ' = w_mult² fan_in m(K) + b_mult² + w_mult² init_std² fan_in m(Θ)

(``m`` the conv window mean, the identity for dense; the ``b`` terms only with a bias): the
NTK of the model's own parameters (Jacot et al. 2018), whatever the parameterization. The
limit: every hidden width -> ∞ in the model's proportions. Nodes without a Gaussian-process
limit (BatchNorm, MaxPool, ...) raise an ``UnsupportedLayerError`` naming the node.
"""

from __future__ import annotations

import math

import jax

from dynkit.errors import UnsupportedLayerError
from dynkit.theory import dual_activations as duals
from dynkit.theory.stax_blocks import concat_kernels, merge_blocks, sum_kernels
from dynkit.theory.stax_combinators import kernel_of as run_layer
from dynkit.theory.stax_kernel import Kernel, Layer, map_optional
from dynkit.theory.stax_pointwise import Elementwise
from dynkit.theory.stax_recipes import NearestUpsample
from dynkit.theory.stax_spatial import Conv, Flatten, GlobalPool, Pool
from dynkit.theory.stax_triple import KernelFn

__all__ = ["ModelLayer", "kernel_of"]


def _act_layer(node):
    fn = node.attrs.get("fn") if node.op == "act" else "relu"
    if fn == "relu":
        return Elementwise("relu", jax.nn.relu, duals.relu_dual)
    if fn == "erf":
        return Elementwise("erf", jax.scipy.special.erf, duals.erf_dual)
    if fn == "abs":
        return Elementwise("abs", abs, duals.abs_dual)
    if fn == "gelu" and node.attrs.get("approximate", "none") == "none":
        return Elementwise("gelu", lambda x: jax.nn.gelu(x, approximate=False), duals.gelu_dual)
    if fn in ("leaky_relu", "identity"):
        alpha = 1.0 if fn == "identity" else float(node.attrs.get("negative_slope", 0.01))
        return Elementwise(fn, lambda x: jax.nn.leaky_relu(x, alpha),
                           lambda a, b, c: duals.leaky_relu_dual(a, b, c, alpha))
    return None


def _conv_geometry(node):
    """``(strides, padding)`` for ``stax_spatial.Conv``, or None when not expressible."""
    a = node.attrs
    kernel = tuple(a["kernel"])
    nd = len(kernel)
    seq = lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v,) * nd
    if any(int(d) != 1 for d in seq(a.get("dilation", 1))) or int(a.get("groups", 1)) != 1:
        return None
    strides, pad = seq(a.get("stride", 1)), a.get("padding", "SAME")
    if isinstance(pad, str):
        return strides, pad
    pad = seq(pad)
    if all(p == 0 for p in pad):
        return strides, "VALID"
    if all(s == 1 for s in strides) and all(2 * p + 1 == k for p, k in zip(pad, kernel)):
        return strides, "SAME"
    return None


def _affine(node, nngp_u, ntk_u, cov_u, out_shape1, full, fan_in, like: Kernel) -> Kernel:
    a = node.attrs
    wm2, s2 = float(a["w_mult"]) ** 2, float(a["init_std"]) ** 2
    bias = bool(a.get("bias", True))
    bm2 = float(a.get("b_mult", 1.0)) ** 2 if bias else 0.0
    b2 = bm2 * float(a.get("b_init_std", 0.0)) ** 2
    gain = wm2 * s2 * fan_in
    nngp = gain * nngp_u + b2
    ntk = None
    if like.ntk is not None:
        ntk = wm2 * fan_in * nngp_u + bm2 + gain * ntk_u
    cov = map_optional(lambda c: gain * c + b2, cov_u)
    return Kernel(nngp, ntk, cov, out_shape1, full)


class ModelLayer(Layer):
    """A dynkit graph ``Model`` as one ``stax`` layer (kernel map only; see the module doc).

    Spatial kernels keep every pixel pair (``needs_full``), so use small images.

    Args:
        model: a ``dynkit.models.Model``.

    Raises:
        UnsupportedLayerError: a node has no infinite-width kernel here (named in the message).

    Example:
        >>> import dynkit as dk
        >>> ModelLayer(dk.models.mlp(3, [8], 1)).out_shape((3,))
        (1,)
    """

    name = "Model"

    def __init__(self, model):
        self.model = model
        self.layers = {n.name: self._layer(n) for n in model.nodes}
        self.shapes = model.node_shapes()

    def _unsupported(self, node, why):
        return UnsupportedLayerError(
            f"kernel_of: node {node.name!r} ({node.op}) of model {self.model.arch!r} {why}")

    def _layer(self, node):
        op, a = node.op, node.attrs
        if op in ("input", "add", "concat", "scale", "dense", "flatten", "global_avgpool"):
            return {"flatten": Flatten(), "global_avgpool": GlobalPool("avg")}.get(op)
        if op in ("relu", "act"):
            layer = _act_layer(node)
            if layer is None:
                raise self._unsupported(node, f"uses activation {a.get('fn')!r}, which has no "
                                        "closed-form dual here (relu, erf, abs, gelu, "
                                        "leaky_relu, identity do)")
            return layer
        if op == "conv":
            geom = _conv_geometry(node)
            if geom is None:
                raise self._unsupported(node, "needs groups=1, dilation=1 and SAME/VALID "
                                        "padding for its kernel")
            return Conv(a["out_ch"], a["kernel"], geom[0], geom[1])
        if op == "avgpool":
            pad = a.get("padding", "VALID")
            if pad not in ("VALID", 0):
                raise self._unsupported(node, "needs VALID padding for its kernel")
            return Pool("avg", a["window"], a.get("stride", a["window"]), "VALID")
        if op == "upsample" and a.get("mode", "nearest") == "nearest":
            return NearestUpsample(int(a["scale_factor"]))
        raise self._unsupported(node, "has no infinite-width Gaussian-process kernel "
                                "(BatchNorm and MaxPool have none anywhere); remove it or use a "
                                "kernel-supported model (MLP, CNN, ResNet/DenseNet without BN)")

    def out_shape(self, in_shape):
        return tuple(self.shapes[self.model.output])

    def needs_full(self, out_full):
        return len(self.model.input_shape) > 1

    def kernel(self, k):
        out = {}
        for node in self.model.nodes:
            ins = [out[i] for i in node.inputs]
            out[node.name] = k if node.op == "input" else self._node_kernel(node, ins)
        return merge_blocks(out[self.model.output])

    def _node_kernel(self, node, ins):
        op, layer = node.op, self.layers[node.name]
        if op == "add":
            return sum_kernels(ins)
        if op == "concat":
            return concat_kernels(ins)
        k = ins[0]
        if op == "scale":
            f2 = float(node.attrs["factor"]) ** 2
            scale = lambda b: b.replace(nngp=f2 * b.nngp, ntk=map_optional(lambda t: f2 * t, b.ntk),
                                        cov=map_optional(lambda c: f2 * c, b.cov))
            return k.map(scale) if hasattr(k, "blocks") else scale(k)
        if op == "dense":
            k = merge_blocks(k)
            return _affine(node, k.nngp, k.ntk, k.cov, (node.attrs["out_dim"],), k.full,
                           node.attrs["in_dim"], k)
        if op == "conv":
            k = merge_blocks(k)
            nngp_u, ntk_u, cov_u, spatial = layer.windowed(k)
            fan_in = node.attrs["in_ch"] * math.prod(node.attrs["kernel"])
            return _affine(node, nngp_u, ntk_u, cov_u, spatial + (node.attrs["out_ch"],),
                           k.full, fan_in, k)
        return run_layer(layer, k, True)


def kernel_of(model) -> KernelFn:
    """The infinite-width kernel function of a dynkit ``Model``.

    ``kernel_of(model)(x1, x2=None, get=None)`` behaves like a ``stax`` ``kernel_fn``
    (``get="nngp"``/``"ntk"``/a tuple/None), for the model's output (every logit has the
    same kernel; the NTK is per logit). The recursion per node is in the module docstring.

    Args:
        model: a ``dynkit.models.Model`` whose nodes are all kernel-supported (MLP, CNN,
            ResNet or DenseNet without BatchNorm, U-Net without max pooling).

    Returns:
        A jitted :class:`~dynkit.theory.stax_triple.KernelFn`.

    Raises:
        UnsupportedLayerError: naming the first node without a kernel (BatchNorm, MaxPool, ...).

    References:
        Lee et al. 2018 (NNGP); Jacot et al. 2018 (NTK); Novak et al. 2019 (CNN-GP);
        Huang et al. 2017 (DenseNet concatenation, see :mod:`dynkit.theory.stax_blocks`).

    Example:
        >>> import jax.numpy as jnp, dynkit as dk
        >>> model = dk.models.mlp(2, [512], 1, parameterization="ntk")
        >>> k = kernel_of(model)(jnp.array([[1.0, 1.0], [1.0, -1.0]]), None, ("nngp", "ntk"))
        >>> [round(float(v), 6) for v in (k.nngp[0, 0], k.ntk[0, 0])]
        [2.0, 4.0]
    """
    return KernelFn(ModelLayer(model))
