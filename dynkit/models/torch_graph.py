"""Graph import of any traceable PyTorch module: ``from_torch(module, example_input)``.

The module is traced with ``torch.export.export`` (eval mode), and each ATen op of the exported
graph becomes one dynkit ``Node`` (``dynkit.models.graph``). A module that ``torch.export``
cannot trace gets the tracer's reason in an ``UnsupportedLayerError``.

No ``torch.fx`` fallback, on purpose. ``torch.export`` (``strict=False``, its default) runs the
module's own Python on fake tensors, so it traces modules that ``torch.fx.symbolic_trace``
cannot (control flow on shapes, numpy or ``math`` on sizes, ``@torch.jit.script`` functions,
which it inlines). Where export fails on an eval-mode module, fx gives nothing dynkit could
import either (checked on torch 2.13 in tests/test_from_torch_fx.py):

- control flow or Python numbers computed from tensor *values* (``if x.sum() > 0``,
  ``float(x.max())``, ``assert torch.isfinite(x).all()``): export raises
  ``GuardOnDataDependentSymNode``; fx cannot turn a ``Proxy`` into a bool or float either;
- a TorchScript submodule (``torch.jit.script(module)``): export fails, and fx records one
  opaque ``call_method forward`` on its C++ object, with no op inside to map. It is refused
  before tracing, naming its module path (import the module before scripting it).

Layouts. dynkit is channels-last: the imported ``Model`` takes ``x.permute(0, 2, 3, 1)`` of the
torch input (``x.permute(0, 2, 1)`` for 1-d inputs), and its feature maps, hence a map-valued
output (a U-Net's), are channels-last too. Parameters are converted by
``dynkit.checkpoints.convert_state_dict``: conv ``(O, I, *k) -> (*k, I, O)``, conv-transpose
``(I, O, *k) -> (*k, I, O)``, Linear ``(out, in) -> (in, out)``, BatchNorm
``weight, bias, running_mean, running_var -> scale, bias, mean, var``.

Flatten. torch flattens a ``(C, H, W)`` map in C-major order, dynkit an ``(H, W, C)`` map in
C-minor order. The import keeps dynkit's ``flatten`` and permutes the columns of the ``Linear``
that reads it (the ``dense_chw`` layout of ``convert_state_dict``), so a flattened map must feed
a ``Linear`` directly (through Dropout/Identity); anything else in between is refused. A global
average pool (``AdaptiveAvgPool2d(1)``, ``x.mean((2, 3))``) gives a ``(N, C)`` dynkit tensor, so
its flatten is no op: a torchvision ResNet imports to the graph of ``dynkit.models.resnet``.

Only the ops the output depends on are imported: an op that only updates a buffer (a call
counter incremented in ``forward``) or whose result is unused does not change the function.

Names. Nodes with parameters are named by their module path (``layer1.0.conv1``), so the model
reads the module's state_dict with the identity name map. Parameter-free ops are named after
their module (``layer1.0.relu``) or, for a functional call, ``<module>.<op>`` (``layer1.0.add``);
a repeated name gets a suffix ``_1, _2, ...``. The ``feature`` node is the input of the last
``Linear`` (its output when there is no ``Linear``), or the node named by ``feature=``: a node
name or a module path (the module's output, the last node inside it), e.g. a U-Net's
``bottleneck``. A map-valued output is no feature representation: neural collapse on a model
whose feature node is such an output is refused (``dynkit.analyses.collapse``).

Supported ops: ``Linear``, ``Conv1d/2d`` (stride, padding, dilation, groups),
``ConvTranspose1d/2d`` (groups 1), ``BatchNorm1d/2d`` (affine, with running statistics),
``LayerNorm`` (over the features of a ``(N, C)`` tensor), ``GroupNorm``; ReLU, LeakyReLU, GELU,
SiLU, Tanh, Sigmoid (modules and functional calls); ``MaxPool``, ``AvgPool``,
``AdaptiveAvgPool`` (global, an exact divisor or multiple of the input size), ``mean`` over the spatial axes; nearest and
(bi)linear ``Upsample``/``F.interpolate``; ``flatten``/``view``/``reshape`` to ``(N, -1)``,
``torch.cat`` on channels, ``+`` of two tensors, multiplication or division by a constant,
``Dropout``/``Identity``. Anything else raises ``UnsupportedLayerError`` naming the module path
and the op; nothing is approximated.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

from dynkit.errors import InvalidArgumentError, UnsupportedLayerError, require
from dynkit.models.builder import layer_scales
from dynkit.models.graph import Model, Node, Params

__all__ = ["from_torch", "trace_torch", "used_state_dict"]

_PURPOSE = "dynkit.models.from_torch (PyTorch graph import)"
#: Ops that return their input unchanged in eval mode.
_ALIASES = ("dropout", "alpha_dropout", "feature_dropout", "feature_alpha_dropout", "clone",
            "contiguous", "alias", "detach", "lift_fresh_copy")
#: Bookkeeping nodes of an exported graph that compute nothing.
_SKIP_PREFIXES = ("_assert", "sym_size", "sym_constrain")
#: torch activation op -> (dynkit op, attrs).
_ACTS = {"relu": ("relu", {}), "tanh": ("act", {"fn": "tanh"}),
         "sigmoid": ("act", {"fn": "sigmoid"}), "silu": ("act", {"fn": "silu"}),
         "gelu": ("act", {"fn": "gelu"}), "leaky_relu": ("act", {"fn": "leaky_relu"})}


@dataclass(frozen=True)
class _Value:
    """A traced tensor: the dynkit node holding it and how it is laid out.

    ``kind``: ``map`` (torch ``(N, C, *spatial)``, dynkit ``(N, *spatial, C)``), ``vec``
    (``(N, D)`` both), ``pooled`` (torch ``(N, C, 1, ..)``, dynkit ``(N, C)``), ``flat``
    (torch's C-major flatten of a map, dynkit's C-minor one: only a Linear may read it)."""

    node: str
    kind: str
    shape: tuple[int, ...]  # torch shape, batch included


def from_torch(module, example_input, *, feature: str | None = None) -> tuple[Model, Params]:
    """Import a PyTorch module as a dynkit graph ``Model`` and its parameters.

    The module is traced by ``torch.export.export(module, (example_input,))``; every ATen op
    maps to one dynkit node (see the module docstring for the op list, names and layouts). The
    model takes channels-last inputs: ``model.apply(params, x.permute(0, 2, 3, 1))`` equals
    ``module(x)``. A map-valued output is channels-last as well, and a global pool's
    ``(N, C, 1, 1)`` output comes back as ``(N, C)``. ``model.features`` is the input of the
    last ``Linear`` (a flattened map's features in dynkit's ``(H, W, C)`` order), or the
    output of the node or module named by ``feature``.

    Args:
        module: an ``nn.Module`` in eval mode (``module.eval()``).
        example_input: one input batch ``(N, C, *spatial)`` or ``(N, D)`` (a ``torch.Tensor``).
        feature: the feature node: a node name, or a module path (its output); default the
            input of the last ``Linear``, else the output.

    Returns:
        ``(model, params)``: ``model.config`` is ``{"arch": "torch", "class": <qualname>}``.

    Raises:
        MissingDependencyError: torch is not installed.
        InvalidArgumentError: the module is in training mode, the arguments are not a
            module and a tensor, or ``feature`` names no node or module of the graph.
        UnsupportedLayerError: an op outside the supported list (named with its module path),
            a TorchScript submodule (named), or a module ``torch.export`` cannot trace (with the
            tracer's reason).

    References:
        PyTorch ``torch.export`` (ATen IR), https://pytorch.org/docs/stable/export.html.

    Example:
        >>> import torch, dynkit as dk
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(),
        ...                           torch.nn.Linear(4, 2)).eval()
        >>> model, params = dk.models.from_torch(net, torch.zeros(1, 3))
        >>> [n.name for n in model.nodes], model.feature
        (['input', '0', '1', '2'], '1')
        >>> x = torch.randn(5, 3)
        >>> bool(abs(model.apply(params, x.numpy()) - net(x).detach().numpy()).max() < 1e-5)
        True
    """
    from dynkit.checkpoints.torch_import import convert_state_dict

    model = trace_torch(module, example_input, feature=feature)
    return model, convert_state_dict(model, used_state_dict(model, module, module.state_dict()))


def used_state_dict(model: Model, module, state_dict) -> dict[str, Any]:
    """``state_dict`` without the entries of ``module``'s submodules that its forward pass does
    not call (an unused head, say): the traced ``model`` has no node for them. Entries that
    ``module`` does not have are kept, so ``convert_state_dict`` names them as unexpected.

    Example:
        >>> import torch
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc, self.unused = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        ...     def forward(self, x):
        ...         return self.fc(x)
        >>> net = Net().eval()
        >>> sorted(used_state_dict(trace_torch(net, torch.zeros(1, 3)), net, net.state_dict()))
        ['fc.bias', 'fc.weight']
    """
    used = set(model.param_shapes())
    unused = {k for k in module.state_dict() if k.rpartition(".")[0] not in used}
    return {k: v for k, v in state_dict.items() if k not in unused}


def trace_torch(module, example_input, *, feature: str | None = None) -> Model:
    """The dynkit ``Model`` (graph only, no parameters) of a PyTorch module: ``from_torch``
    without reading the weights, e.g. to load a state_dict file into it.

    Args:
        module: an ``nn.Module`` in eval mode.
        example_input: one input batch (a ``torch.Tensor``).
        feature: as in :func:`from_torch`.

    Returns:
        The ``Model``.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
        >>> trace_torch(net, torch.zeros(1, 3, 8, 8)).input_shape
        (8, 8, 3)
    """
    torch = require("torch", "torch", _PURPOSE)
    if not isinstance(module, torch.nn.Module):
        raise InvalidArgumentError(f"module must be a torch.nn.Module, got {type(module)}")
    if not isinstance(example_input, torch.Tensor) or example_input.ndim < 2:
        raise InvalidArgumentError("example_input must be a torch.Tensor batch (N, C, ...) or "
                                   f"(N, D), got {type(example_input).__name__}"
                                   f"{tuple(getattr(example_input, 'shape', ()))}")
    training = [name or "<root>" for name, m in module.named_modules() if m.training]
    if training:
        raise InvalidArgumentError(
            f"module {_qualname(module)} is in training mode (e.g. {training[0]!r}); dynkit "
            "imports the eval-mode function: call module.eval() first")
    scripted = [name or "<root>" for name, m in module.named_modules()
                if isinstance(m, torch.jit.ScriptModule)]
    if scripted:
        raise UnsupportedLayerError(
            f"{scripted[0]}: a TorchScript module (torch.jit.script/trace) is opaque to "
            "torch.export and torch.fx; import the module before scripting it")
    try:
        with torch.no_grad():
            exported = torch.export.export(module, (example_input,))
    except Exception as exc:  # the tracer's own error types vary between torch versions
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedLayerError(
            f"torch.export could not trace {_qualname(module)}: {type(exc).__name__}: "
            f"{reason}") from exc
    return _Importer(module, exported).run(feature)


def _qualname(module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _bind(fx_node) -> dict[str, Any]:
    """Arguments of an ATen call by schema name, defaults filled in."""
    schema = fx_node.target._schema.arguments
    bound = {a.name: a.default_value if a.has_default_value() else None for a in schema}
    bound.update(zip((a.name for a in schema), fx_node.args))
    bound.update(fx_node.kwargs)
    return bound


def _ints(v, nd: int) -> list[int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return [int(u) for u in (v * nd if len(v) == 1 else v)]


class _Importer:
    """One pass over an exported graph, appending dynkit nodes."""

    def __init__(self, module, exported):
        self.module = module
        sig = exported.graph_signature
        self.graph = exported.graph
        self.keys = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
        self.user_inputs = list(sig.user_inputs)
        self.user_outputs = list(sig.user_outputs)
        self.nodes: list[Node] = [Node("input", "input")]
        self.names = {"input"}  # every node's
        self.param_nodes: set[str] = set()  # the nodes named after a module with parameters
        self.modules = {name for name, _ in module.named_modules() if name}
        self.env: dict[str, _Value] = {}

    # ------------------------------------------------------------------ helpers
    def where(self, fx_node) -> str:
        stack = fx_node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        return path or _qualname(self.module)

    def unsupported(self, fx_node, why: str = ""):
        op = getattr(fx_node.target, "__name__", str(fx_node.target)).split(".")[0]
        raise UnsupportedLayerError(
            f"{self.where(fx_node)}: {op} is not supported by dynkit's graph import"
            + (f" ({why})" if why else "") + "; see dynkit.models.torch_graph for the ops "
            "that are")

    def name_for(self, fx_node, op: str) -> str:
        stack = fx_node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        try:
            leaf = bool(path) and not any(True for _ in self.module.get_submodule(path).children())
        except AttributeError:  # a path torch reports in another spelling
            leaf = False
        base = path if leaf else (f"{path}.{op}" if path else op)
        name, i = base, 0
        while name in self.names or (name != path and name in self.modules):
            i += 1
            name = f"{base}_{i}"
        return name

    def add(self, fx_node, name: str, op: str, inputs, kind: str, **attrs) -> None:
        self.names.add(name)
        self.nodes.append(Node(name, op, tuple(v.node for v in inputs), attrs))
        self.env[fx_node.name] = _Value(name, kind, tuple(fx_node.meta["val"].shape))

    def value(self, fx_node, arg, kinds=("map", "vec", "pooled")) -> _Value:
        v = self.env.get(getattr(arg, "name", None))
        if v is None:
            self.unsupported(fx_node, f"its input {arg!r} is not a traced activation")
        if v.kind not in kinds:
            why = {"map": "it needs a (N, C) tensor, got a feature map",
                   "vec": "it needs a feature map, got a (N, C) tensor",
                   "pooled": "it needs a feature map, got a global pool's (N, C, 1, 1) output",
                   "flat": "a flattened feature map must feed a Linear directly"}[v.kind]
            self.unsupported(fx_node, why)
        return v

    def module_of(self, fx_node, args: dict[str, Any]) -> str:
        """The module path owning the parameters ``args`` ({suffix: placeholder or None});
        raises if they are not ``<module>.<suffix>`` of one module."""
        prefixes = set()
        for suffix, arg in args.items():
            if arg is None:
                continue
            key = self.keys.get(getattr(arg, "name", None))
            if key is None:
                self.unsupported(fx_node, f"its {suffix} is computed in forward, not a module "
                                          "parameter")
            prefix, _, last = key.rpartition(".")
            if last != suffix or not prefix:
                self.unsupported(fx_node, f"parameter {key!r} is not the {suffix!r} of a "
                                          "submodule; use the nn module (e.g. nn.Conv2d)")
            prefixes.add(prefix)
        if len(prefixes) != 1:
            self.unsupported(fx_node, f"parameters of several modules {sorted(prefixes)}")
        name = prefixes.pop()
        if name in self.param_nodes:
            self.unsupported(fx_node, f"module {name!r} is called twice (shared weights)")
        self.param_nodes.add(name)
        return name

    # ------------------------------------------------------------------ main loop
    def run(self, feature: str | None = None) -> Model:
        if len(self.user_inputs) != 1:
            raise InvalidArgumentError(f"from_torch imports modules with one input tensor, "
                                       f"got {len(self.user_inputs)} inputs")
        if len(self.user_outputs) != 1:
            raise UnsupportedLayerError(f"{_qualname(self.module)} returns "
                                        f"{len(self.user_outputs)} values; from_torch needs "
                                        "exactly one output tensor")
        needed = self.needed()
        for fx in self.graph.nodes:
            if fx.op == "placeholder":
                if fx.name == self.user_inputs[0]:
                    shape = tuple(fx.meta["val"].shape)
                    self.env[fx.name] = _Value("input", "map" if len(shape) > 2 else "vec", shape)
            elif fx.op == "call_function":
                if fx.name in needed:
                    self.call(fx)
            elif fx.op != "output":
                self.unsupported(fx, f"fx node of kind {fx.op!r}")
        out = self.env.get(self.user_outputs[0])
        if out is None or out.kind == "flat":
            raise UnsupportedLayerError(f"{_qualname(self.module)}: the output is not a "
                                        "traced activation dynkit can return in torch's order")
        dense = [n for n in self.nodes if n.op == "dense"]
        feature = (self.feature_node(feature) if feature is not None
                   else dense[-1].inputs[0] if dense else out.node)
        shape = tuple(self.env[self.user_inputs[0]].shape[1:])
        input_shape = (*shape[1:], shape[0]) if len(shape) > 1 else shape
        config = {"arch": "torch", "class": _qualname(self.module)}
        return Model(config, tuple(self.nodes), out.node, feature, input_shape)

    def needed(self) -> set[str]:
        """The fx nodes the output depends on: ops whose results only update buffers (a call
        counter, say) or are unused do not change the imported function and are skipped."""
        needed = set(self.user_outputs)
        for fx in reversed(self.graph.nodes):
            if fx.name in needed:
                needed.update(a.name for a in fx.all_input_nodes)
        return needed

    def feature_node(self, feature: str) -> str:
        """The node named ``feature``, or the last node inside the module path ``feature``."""
        names = [n.name for n in self.nodes[1:]]
        inside = [n for n in names if n == feature or n.startswith(f"{feature}.")]
        if not inside:
            raise InvalidArgumentError(
                f"feature={feature!r} is neither a node nor a module path of the imported "
                f"graph of {_qualname(self.module)}; its nodes: {', '.join(names)}")
        return feature if feature in names else inside[-1]

    def call(self, fx) -> None:
        target = fx.target
        if target is operator.getitem:
            self.unsupported(fx, "ops with several outputs")
        if not hasattr(target, "_schema"):
            self.unsupported(fx)
        op = target._overloadpacket.__name__
        if op.startswith(_SKIP_PREFIXES):
            return
        base = op.rstrip("_")
        if base in _ALIASES:
            self.env[fx.name] = self.value(fx, fx.args[0], ("map", "vec", "pooled", "flat"))
            return
        handler = getattr(self, f"op_{base}", None)
        if handler is None:
            for prefix in ("conv_transpose", "conv", "max_pool", "avg_pool", "adaptive_avg_pool",
                           "upsample"):
                if base.startswith(prefix) and base[len(prefix):] in ("1d", "2d",
                                                                      "_nearest1d",
                                                                      "_nearest2d",
                                                                      "_bilinear2d",
                                                                      "_linear1d"):
                    handler = getattr(self, f"op_{prefix}")
                    break
        if handler is None and base in _ACTS:
            handler = self.op_activation
        if handler is None:
            self.unsupported(fx)
        handler(fx, base, _bind(fx))

    # ------------------------------------------------------------------ layers
    def op_linear(self, fx, op, a):
        x = self.value(fx, a["input"], ("vec", "pooled", "flat"))
        name = self.module_of(fx, {"weight": a["weight"], "bias": a["bias"]})
        out_dim, in_dim = a["weight"].meta["val"].shape
        self.add(fx, name, "dense", [x], "vec", in_dim=int(in_dim), out_dim=int(out_dim),
                 bias=a["bias"] is not None,
                 **layer_scales("standard", int(in_dim), int(out_dim), 1.0, 0.0, "hidden"))

    def op_conv(self, fx, op, a):
        x = self.value(fx, a["input"], ("map",))
        name = self.module_of(fx, {"weight": a["weight"], "bias": a["bias"]})
        w = tuple(a["weight"].meta["val"].shape)
        kernel, nd, groups = list(w[2:]), len(w) - 2, int(a["groups"])
        dilation = _ints(a["dilation"], nd)
        padding = a["padding"]
        if isinstance(padding, str):
            if padding == "same" and any(d * (k - 1) % 2 for k, d in zip(kernel, dilation)):
                self.unsupported(fx, "padding='same' with an even effective kernel (asymmetric)")
            padding = [d * (k - 1) // 2 if padding == "same" else 0
                       for k, d in zip(kernel, dilation)]
        fan_in = w[1] * math.prod(kernel)
        self.add(fx, name, "conv", [x], "map", kernel=kernel, in_ch=int(w[1]) * groups,
                 out_ch=int(w[0]), stride=_ints(a["stride"], nd), padding=_ints(padding, nd),
                 dilation=dilation, groups=groups, bias=a["bias"] is not None,
                 **layer_scales("standard", fan_in, int(w[0]), 1.0, 0.0, "hidden"))

    def op_conv_transpose(self, fx, op, a):
        x = self.value(fx, a["input"], ("map",))
        name = self.module_of(fx, {"weight": a["weight"], "bias": a["bias"]})
        if int(a["groups"]) != 1:
            self.unsupported(fx, f"groups={a['groups']} (dynkit's conv_transpose has groups=1)")
        w = tuple(a["weight"].meta["val"].shape)  # (in, out, *kernel)
        kernel, nd = list(w[2:]), len(w) - 2
        self.add(fx, name, "conv_transpose", [x], "map", kernel=kernel, in_ch=int(w[0]),
                 out_ch=int(w[1]), stride=_ints(a["stride"], nd),
                 padding=_ints(a["padding"], nd), output_padding=_ints(a["output_padding"], nd),
                 dilation=_ints(a["dilation"], nd), bias=a["bias"] is not None,
                 **layer_scales("standard", int(w[0]) * math.prod(kernel), int(w[1]), 1.0, 0.0,
                                "hidden"))

    def op_batch_norm(self, fx, op, a):
        x = self.value(fx, a["input"], ("map", "vec"))
        if a["weight"] is None or a["bias"] is None:
            self.unsupported(fx, "BatchNorm without affine weight and bias (affine=False)")
        if a["running_mean"] is None or a["running_var"] is None:
            self.unsupported(fx, "BatchNorm without running statistics "
                                 "(track_running_stats=False)")
        name = self.module_of(fx, {"weight": a["weight"], "bias": a["bias"],
                                   "running_mean": a["running_mean"],
                                   "running_var": a["running_var"]})
        momentum = a["momentum"] if a["momentum"] is not None else 0.1
        self.add(fx, name, "batchnorm", [x], x.kind, num_features=int(x.shape[1]),
                 eps=float(a["eps"]), momentum=float(momentum))

    def op_layer_norm(self, fx, op, a):
        x = self.value(fx, a["input"], ("vec",))
        if list(a["normalized_shape"]) != [x.shape[1]]:
            self.unsupported(fx, f"normalized_shape={list(a['normalized_shape'])} (dynkit "
                                 "normalizes the features of an (N, C) tensor)")
        self._norm(fx, "layernorm", a, x)

    def op_group_norm(self, fx, op, a):
        x = self.value(fx, a["input"], ("map", "vec"))
        self._norm(fx, "groupnorm", a, x, num_groups=int(a["num_groups"]))

    def _norm(self, fx, op, a, x, **extra):
        affine = a["weight"] is not None
        if affine != (a["bias"] is not None):
            self.unsupported(fx, "a norm with a weight but no bias (or the reverse)")
        name = (self.module_of(fx, {"weight": a["weight"], "bias": a["bias"]}) if affine
                else self.name_for(fx, op))
        self.add(fx, name, op, [x], x.kind, num_features=int(x.shape[1]), eps=float(a["eps"]),
                 affine=affine, **extra)

    # ------------------------------------------------------------------ parameter-free ops
    def op_activation(self, fx, op, a):
        x = self.value(fx, fx.args[0])
        dk_op, attrs = _ACTS[op]
        attrs = dict(attrs)
        if op == "gelu" and a.get("approximate", "none") != "none":
            attrs["approximate"] = a["approximate"]
        if op == "leaky_relu":
            attrs["negative_slope"] = float(a["negative_slope"])
        self.add(fx, self.name_for(fx, op), dk_op, [x], x.kind, **attrs)

    def _pool_attrs(self, fx, a, nd):
        window = _ints(a["kernel_size"], nd)
        stride = _ints(a["stride"], nd) if a["stride"] else window
        pad = _ints(a["padding"], nd)
        if a.get("ceil_mode"):
            self.unsupported(fx, "ceil_mode=True")
        padding = ("VALID" if not any(pad) else pad[0] if len(set(pad)) == 1
                   else [[0, 0], *([p, p] for p in pad), [0, 0]])
        return {"window": window, "stride": stride, "padding": padding}

    def op_max_pool(self, fx, op, a):
        x = self.value(fx, a["self"], ("map",))
        if any(d != 1 for d in _ints(a["dilation"], len(x.shape) - 2)):
            self.unsupported(fx, f"dilation={a['dilation']}")
        self.add(fx, self.name_for(fx, "maxpool"), "maxpool", [x], "map",
                 **self._pool_attrs(fx, a, len(x.shape) - 2))

    def op_avg_pool(self, fx, op, a):
        x = self.value(fx, a["self"], ("map",))
        if a.get("divisor_override") is not None:
            self.unsupported(fx, "divisor_override")
        self.add(fx, self.name_for(fx, "avgpool"), "avgpool", [x], "map",
                 count_include_pad=bool(a["count_include_pad"]),
                 **self._pool_attrs(fx, a, len(x.shape) - 2))

    def op_adaptive_avg_pool(self, fx, op, a):
        x = self.value(fx, a["self"], ("map",))
        spatial = x.shape[2:]
        out = _ints(a["output_size"], len(spatial))
        if all(o == 1 for o in out):
            self.add(fx, self.name_for(fx, "avgpool"), "global_avgpool", [x], "pooled")
        elif all(n % o == 0 for n, o in zip(spatial, out)):
            window = [n // o for n, o in zip(spatial, out)]
            self.add(fx, self.name_for(fx, "avgpool"), "avgpool", [x], "map", window=window,
                     stride=window, padding="VALID")
        elif all(o % n == 0 for n, o in zip(spatial, out)):  # each bin holds one pixel
            self.add(fx, self.name_for(fx, "avgpool"), "upsample", [x], "map", mode="nearest",
                     scale_factor=[o // n for n, o in zip(spatial, out)])
        else:
            self.unsupported(fx, f"output_size {out} neither divides nor is a multiple of the "
                                 f"input size {list(spatial)}")

    def op_mean(self, fx, op, a):
        x = self.value(fx, a["self"], ("map",))
        nd = len(x.shape)
        dims = sorted(int(d) % nd for d in (a.get("dim") or ()))
        if dims != list(range(2, nd)):
            self.unsupported(fx, f"a mean over dims {a.get('dim')} (dynkit averages over all "
                                 "spatial axes)")
        self.add(fx, self.name_for(fx, "avgpool"), "global_avgpool", [x],
                 "pooled" if a.get("keepdim") else "vec")

    def op_upsample(self, fx, op, a):
        x = self.value(fx, fx.args[0], ("map",))
        spatial, out = x.shape[2:], tuple(fx.meta["val"].shape[2:])
        mode = "nearest" if "nearest" in op else "bilinear"
        attrs: dict[str, Any] = {"mode": mode}
        if mode == "bilinear":
            attrs["align_corners"] = bool(a.get("align_corners"))
        factors = a.get("scale_factors")
        if factors is None:  # the .default overloads: output_size and per-axis scales
            factors = [a.get(k) for k in ("scales_h", "scales_w", "scales") if a.get(k)] or None
        if factors is None:
            attrs["size"] = list(out)
        elif all(float(f).is_integer() and f >= 1 for f in factors):  # torch maps by 1/factor
            attrs["scale_factor"] = _ints([int(f) for f in factors], len(spatial))
        else:
            self.unsupported(fx, f"a non-integer scale_factor {list(factors)}; give size=")
        self.add(fx, self.name_for(fx, "upsample"), "upsample", [x], "map", **attrs)

    def op_cat(self, fx, op, a):
        xs = [self.value(fx, t) for t in a["tensors"]]
        if len({v.kind for v in xs}) != 1 or int(a["dim"]) % len(xs[0].shape) != 1:
            self.unsupported(fx, f"concatenation along dim {a['dim']} (dynkit concatenates "
                                 "channels, dim=1, of tensors of one kind)")
        self.add(fx, self.name_for(fx, "cat"), "concat", xs, xs[0].kind)

    def op_add(self, fx, op, a):
        if not all(hasattr(t, "name") for t in (a["self"], a["other"])):
            self.unsupported(fx, "adding a constant")
        if a.get("alpha", 1) != 1:
            self.unsupported(fx, f"alpha={a['alpha']}")
        xs = [self.value(fx, a["self"]), self.value(fx, a["other"])]
        if xs[0].shape != xs[1].shape or xs[0].kind != xs[1].kind:
            self.unsupported(fx, f"adding tensors of shapes {xs[0].shape} and {xs[1].shape} "
                                 "(broadcasting)")
        self.add(fx, self.name_for(fx, "add"), "add", xs, xs[0].kind)

    def _scale(self, fx, op, a, invert: bool):
        tensors = [t for t in (a["self"], a["other"]) if hasattr(t, "name")]
        consts = [t for t in (a["self"], a["other"]) if isinstance(t, (int, float))]
        if len(tensors) != 1 or len(consts) != 1 or (invert and a["other"] is not consts[0]):
            self.unsupported(fx, "only multiplication or division by a Python constant")
        if invert and a.get("rounding_mode") is not None:
            self.unsupported(fx, f"rounding_mode={a['rounding_mode']!r}")
        x = self.value(fx, tensors[0])
        factor = 1.0 / float(consts[0]) if invert else float(consts[0])
        self.add(fx, self.name_for(fx, op), "scale", [x], x.kind, factor=factor)

    def op_mul(self, fx, op, a):
        self._scale(fx, op, a, invert=False)

    def op_div(self, fx, op, a):
        self._scale(fx, op, a, invert=True)

    def op_flatten(self, fx, op, a):
        x = self.value(fx, fx.args[0], ("map", "vec", "pooled", "flat"))
        out = tuple(fx.meta["val"].shape)
        if out == x.shape:
            self.env[fx.name] = x
            return
        x = self.value(fx, fx.args[0], ("map", "vec", "pooled"))
        if len(out) != 2 or out[0] != x.shape[0]:
            self.unsupported(fx, f"a reshape of {x.shape} to {out}: dynkit reshapes only to "
                                 "(N, -1)")
        if x.kind in ("vec", "pooled"):
            self.env[fx.name] = _Value(x.node, "vec", out)
            return
        kind = "vec" if math.prod(x.shape[2:]) == 1 else "flat"
        self.add(fx, self.name_for(fx, "flatten"), "flatten", [x], kind)

    op_view = op_reshape = op__unsafe_view = op_flatten
