"""``GraphBuilder``: appends ``Node``s with shape inference; every architecture uses it.

Parameterizations (how a layer's weight is split into a stored ``w`` and a fixed multiplier):

============  =====================  ==========================  =====================
name          stored ``w`` std        multiplier ``w_mult``        source
============  =====================  ==========================  =====================
standard      ``W_std / sqrt(fan_in)``  1                          LeCun/He init
ntk           1                      ``W_std / sqrt(fan_in)``      Jacot et al. 2018
meanfield     as ntk; read-out:      read-out ``W_std / fan_in``  Mei, Montanari &
              1                                                    Nguyen 2018
mup           input ``1/sqrt(n)``,   input ``W_std sqrt(n/d)``,    Yang & Hu 2021
              hidden/read-out        hidden 1, read-out            (Tensor Programs IV,
              ``W_std/sqrt(n)``      ``1/sqrt(n)``                 abc-table for SGD)
============  =====================  ==========================  =====================

Under ``mup`` each dense/conv node also records its ``role`` (``input``/``hidden``/``readout``),
from which ``dynkit.models.lr_scaling`` derives the per-layer learning rates muP needs.

Biases: standard stores ``b ~ N(0, b_std^2)`` with multiplier 1; the others store
``b ~ N(0, 1)`` with multiplier ``b_std``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from dynkit.errors import InvalidArgumentError
from dynkit.models.graph import Model, Node

__all__ = [
    "PARAMETERIZATIONS",
    "GraphBuilder",
    "layer_scales",
]

PARAMETERIZATIONS = ("standard", "ntk", "meanfield", "mup")


def layer_scales(
    parameterization: str, fan_in: int, fan_out: int, W_std: float, b_std: float, role: str
) -> dict[str, float]:
    """Initialization std and forward multipliers of one layer (table in the module doc).

    Args:
        parameterization: one of ``PARAMETERIZATIONS``.
        fan_in: inputs per output unit (``in_ch · prod(kernel)`` for a convolution).
        fan_out: output units.
        W_std: weight scale ``σ_w``.
        b_std: bias scale ``σ_b``.
        role: ``"input"``, ``"hidden"`` or ``"readout"``.

    Returns:
        ``{"init_std", "w_mult", "b_init_std", "b_mult"}``: the stored ``w ~ N(0, init_std²)``
        and the layer computes ``w_mult · (x @ w) + b_mult · b``.

    Raises:
        InvalidArgumentError: an unknown parameterization.

    References:
        Jacot, Gabriel & Hongler 2018 (ntk); Mei, Montanari & Nguyen 2018 (meanfield); Yang &
        Hu 2021, "Tensor Programs IV: feature learning in infinite-width neural networks" (mup).

    Example:
        >>> layer_scales("ntk", 4, 8, 2.0, 0.1, "hidden")
        {'init_std': 1.0, 'w_mult': 1.0, 'b_init_std': 1.0, 'b_mult': 0.1}
        >>> layer_scales("standard", 4, 8, 2.0, 0.1, "hidden")["init_std"]
        1.0
    """
    W_std, b_std = float(W_std), float(b_std)  # numpy scalars would promote float32 weights
    if parameterization not in PARAMETERIZATIONS:
        raise InvalidArgumentError(
            f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
        )
    if parameterization == "standard":
        return {"init_std": W_std / math.sqrt(fan_in), "w_mult": 1.0, "b_init_std": b_std,
                "b_mult": 1.0}
    bias = {"b_init_std": 1.0, "b_mult": b_std}
    if parameterization == "ntk" or (parameterization == "meanfield" and role != "readout"):
        return dict(init_std=1.0, w_mult=W_std / math.sqrt(fan_in), **bias)
    if parameterization == "meanfield":
        return dict(init_std=1.0, w_mult=W_std / fan_in, **bias)
    # mup: width n is fan_out for the input layer and fan_in otherwise
    if role == "input":
        return dict(init_std=1 / math.sqrt(fan_out),
                    w_mult=W_std * math.sqrt(fan_out / fan_in), **bias)
    if role == "hidden":
        return dict(init_std=W_std / math.sqrt(fan_in), w_mult=1.0, **bias)
    return dict(init_std=W_std / math.sqrt(fan_in), w_mult=1 / math.sqrt(fan_in), **bias)


def _out_len(n: int, k: int, s: int, padding) -> int:
    if padding == "SAME":
        return -(-n // s)
    if padding == "VALID":
        return -(-(n - k + 1) // s)
    return (n + 2 * int(padding) - k) // s + 1


def _seq(v, nd) -> tuple[int, ...]:
    return tuple(int(u) for u in v) if isinstance(v, (tuple, list)) else (int(v),) * nd


class GraphBuilder:
    """Build a ``Model`` node by node; each method returns the new node's name.

    Shapes exclude the batch axis; images are channels-last. Dense and conv layers take their
    initialization and multipliers from :func:`layer_scales`.

    Args:
        input_shape: input shape without the batch axis.
        parameterization: one of ``PARAMETERIZATIONS``.

    Example:
        >>> g = GraphBuilder((3,))
        >>> h = g.relu(g.dense("input", 4, name="fc0", W_std=2 ** 0.5), name="act0", tap=True)
        >>> model = g.build({"arch": "custom"}, g.dense(h, 2, name="head"), h)
        >>> model.param_shapes()
        {'fc0': {'w': (3, 4), 'b': (4,)}, 'head': {'w': (4, 2), 'b': (2,)}}
    """

    def __init__(self, input_shape: Sequence[int], parameterization: str = "standard"):
        self.input_shape = tuple(int(s) for s in input_shape)
        self.parameterization = parameterization
        self.nodes: list[Node] = [Node("input", "input")]
        self.shapes: dict[str, tuple[int, ...]] = {"input": self.input_shape}

    def add(self, name: str, op: str, inputs: Sequence[str], shape, **attrs: Any) -> str:
        """Append a node ``name`` of ``op`` with output ``shape``.

        Raises:
            InvalidArgumentError: ``name`` is already taken.
        """
        if name in self.shapes:
            raise InvalidArgumentError(f"duplicate node name {name!r}")
        self.nodes.append(Node(name, op, tuple(inputs), dict(attrs)))
        self.shapes[name] = tuple(shape)
        return name

    def _scales(self, fan_in, fan_out, W_std, b_std, role) -> dict[str, Any]:
        sc = layer_scales(self.parameterization, fan_in, fan_out, W_std, b_std, role)
        return dict(sc, role=role) if self.parameterization == "mup" else sc

    def gate(self, x, *, name):
        """ReZero gate ``alpha * x`` with one trainable scalar ``alpha = 0`` at init
        (Bachlechner et al. 2021, "ReZero is all you need")."""
        return self.add(name, "gate", [x], self.shapes[x])

    def dense(self, x, out_dim, *, name, bias=True, W_std=1.0, b_std=0.0, role="hidden", **kw):
        in_dim = self.shapes[x][-1]
        sc = self._scales(in_dim, out_dim, W_std, b_std, role)
        return self.add(name, "dense", [x], (*self.shapes[x][:-1], out_dim), in_dim=in_dim,
                        out_dim=int(out_dim), bias=bias, **sc, **kw)

    def conv(self, x, out_ch, kernel, *, name, stride=1, padding="SAME", bias=True,
             W_std=1.0, b_std=0.0, role="hidden", **kw):
        shape = self.shapes[x]
        nd = len(shape) - 1
        kernel, stride = _seq(kernel, nd), _seq(stride, nd)
        in_ch = shape[-1]
        fan_in = in_ch * math.prod(kernel)
        sc = self._scales(fan_in, out_ch, W_std, b_std, role)
        spatial = tuple(_out_len(n, k, s, padding) for n, k, s in zip(shape[:-1], kernel, stride))
        return self.add(name, "conv", [x], (*spatial, out_ch), in_ch=in_ch, out_ch=int(out_ch),
                        kernel=list(kernel), stride=list(stride), padding=padding, bias=bias,
                        **sc, **kw)

    def batchnorm(self, x, *, name, eps=1e-5, momentum=0.1):
        return self.add(name, "batchnorm", [x], self.shapes[x],
                        num_features=self.shapes[x][-1], eps=eps, momentum=momentum)

    def relu(self, x, *, name, tap=False):
        return self.add(name, "relu", [x], self.shapes[x], tap=tap)

    def act(self, x, activation, *, name, tap=False):
        """Elementwise ``activation`` (a name of ``graph.ACTIVATIONS``) of ``x``."""
        return self.add(name, "act", [x], self.shapes[x], fn=activation, tap=tap)

    def pool(self, x, kind, window, *, name, stride=None, padding="VALID", tap=False):
        shape = self.shapes[x]
        nd = len(shape) - 1
        window = _seq(window, nd)
        stride = _seq(stride if stride is not None else window, nd)
        spatial = tuple(_out_len(n, k, s, padding) for n, k, s in zip(shape[:-1], window, stride))
        return self.add(name, f"{kind}pool", [x], (*spatial, shape[-1]), window=list(window),
                        stride=list(stride), padding=padding, tap=tap)

    def global_avgpool(self, x, *, name="avgpool", tap=False):
        return self.add(name, "global_avgpool", [x], (self.shapes[x][-1],), tap=tap)

    def flatten(self, x, *, name="flatten"):
        return self.add(name, "flatten", [x], (math.prod(self.shapes[x]),))

    def add_(self, inputs: Sequence[str], *, name, tap=False):
        """Sum of the ``inputs`` (residual connection).

        Raises:
            InvalidArgumentError: the inputs have different shapes.
        """
        shapes = {self.shapes[s] for s in inputs}
        if len(shapes) != 1:
            raise InvalidArgumentError(f"cannot add tensors of shapes {sorted(shapes)} at {name!r}")
        return self.add(name, "add", inputs, self.shapes[inputs[0]], tap=tap)

    def scale(self, x, factor, *, name):
        return self.add(name, "scale", [x], self.shapes[x], factor=float(factor))

    def concat(self, inputs: Sequence[str], *, name, tap=False):
        """Channel concatenation of the ``inputs`` (``torch.cat(xs, dim=1)``).

        Raises:
            InvalidArgumentError: the inputs differ in their spatial shapes.

        Example:
            >>> g = GraphBuilder((4, 4, 2))
            >>> a = g.conv("input", 3, 1, name="a")
            >>> g.shapes[g.concat(["input", a], name="cat")]
            (4, 4, 5)
        """
        spatial = {self.shapes[s][:-1] for s in inputs}
        if len(spatial) != 1:
            raise InvalidArgumentError(f"cannot concatenate tensors of spatial shapes "
                                       f"{sorted(spatial)} at {name!r}")
        channels = sum(self.shapes[s][-1] for s in inputs)
        return self.add(name, "concat", inputs, (*self.shapes[inputs[0]][:-1], channels), tap=tap)

    def upsample(self, x, scale_factor: int, mode="nearest", *, name):
        """Upsampling of ``x`` by the integer ``scale_factor`` (``F.interpolate``).

        Example:
            >>> g = GraphBuilder((4, 4, 2))
            >>> g.shapes[g.upsample("input", 2, "bilinear", name="up")]
            (8, 8, 2)
        """
        shape = self.shapes[x]
        spatial = tuple(n * int(scale_factor) for n in shape[:-1])
        return self.add(name, "upsample", [x], (*spatial, shape[-1]), mode=mode,
                        scale_factor=int(scale_factor))

    def conv_transpose(self, x, out_ch, kernel, *, name, stride=1, padding=0, bias=True,
                       W_std=1.0, b_std=0.0, role="hidden"):
        """Transposed convolution (``nn.ConvTranspose``), output size per axis
        ``(n - 1) s - 2 p + k``; ``fan_in = in_ch · prod(kernel)``.

        Example:
            >>> g = GraphBuilder((4, 4, 2))
            >>> g.shapes[g.conv_transpose("input", 3, 2, name="up", stride=2)]
            (8, 8, 3)
        """
        shape = self.shapes[x]
        nd = len(shape) - 1
        kernel, stride, pad = _seq(kernel, nd), _seq(stride, nd), _seq(padding, nd)
        in_ch = shape[-1]
        sc = self._scales(in_ch * math.prod(kernel), out_ch, W_std, b_std, role)
        spatial = tuple((n - 1) * s - 2 * p + k
                        for n, k, s, p in zip(shape[:-1], kernel, stride, pad))
        return self.add(name, "conv_transpose", [x], (*spatial, out_ch), in_ch=in_ch,
                        out_ch=int(out_ch), kernel=list(kernel), stride=list(stride),
                        padding=list(pad), bias=bias, **sc)

    def build(self, config: Mapping[str, Any], output: str, feature: str) -> Model:
        """The ``Model`` with this graph, its logits at ``output``, features at ``feature``."""
        return Model(dict(config), tuple(self.nodes), output, feature, self.input_shape)
