"""PyTorch state_dicts -> dynkit parameters (and back): name maps plus layout transposes.

dynkit node names mirror the PyTorch module names of each architecture's reference
implementation (see ``notes/naming.md``): ``layer1.0.conv1`` (torchvision ResNet,
akamaster's CIFAR ResNet-20), ``block1.layer.0.bn1`` (xternalz's WideResNet),
``features.0`` / ``classifier.0`` (torchvision VGG). The name map of those architectures is
therefore the identity on module names. The MLP is the exception: its torch counterpart is an
``nn.Sequential`` whose ``Linear`` layers (``0, 2, 4, ...``) map in order onto
``fc0, fc1, ..., head``.

Tensor layouts (torch -> dynkit):

* ``Linear.weight`` ``(out, in)`` -> dense ``w`` ``(in, out)``;
* ``Conv{1,2,3}d.weight`` ``(O, I, *k)`` -> conv ``w`` ``(*k, I, O)`` (inputs NCHW -> NHWC);
* ``ConvTranspose{1,2}d.weight`` ``(I, O, *k)`` -> conv_transpose ``w`` ``(*k, I, O)``;
* ``BatchNorm.weight, bias, running_mean, running_var`` -> ``scale, bias, mean, var``
  (``num_batches_tracked`` is ignored); ``LayerNorm``/``GroupNorm.weight, bias`` ->
  ``scale, bias``;
* a ``Linear`` reading a flattened feature map: torch flattens ``(C, H, W)``, dynkit
  ``(H, W, C)``, so its input axis is permuted accordingly.

dynkit dense/conv layers compute ``w_mult * (x @ w) + b_mult * b``. With the standard
parameterization (``w_mult = b_mult = 1``, what models built for import use) the torch tensors
are stored as they are; with another one (``ntk``, ``meanfield``, ``mup``) they are divided by
the multipliers, so the *effective* weights, hence the function, are the torch model's.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dynkit.errors import CheckpointError, InvalidArgumentError, ShapeMismatchError, require

__all__ = [
    "NAME_MAPS",
    "STATE_DICT_KEYS",
    "WRAPPER_PREFIXES",
    "Slot",
    "convert_state_dict",
    "identity_name_map",
    "mlp_name_map",
    "read_pt",
    "strip_wrapper_prefixes",
    "to_state_dict",
]

#: Prefixes added by wrappers: ``nn.DataParallel``/DDP (``module.``), ``torch.compile``.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: Keys of a training checkpoint dict that may hold the model's state_dict.
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")

_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
_OPTIONAL = ("num_batches_tracked",)

# A ``Slot`` says where one dynkit parameter comes from: torch key and layout transform.
Slot = tuple[str, str]  # (torch key, kind): "dense", "dense_chw", "conv", "conv_transpose", "copy"


# --------------------------------------------------------------------- name maps
def _module_slots(model, node_to_module: Mapping[str, str]) -> dict[tuple[str, str], Slot]:
    """``{(node, param): (torch_key, kind)}`` for every parameter of ``model``."""
    slots: dict[tuple[str, str], Slot] = {}
    shapes = model.param_shapes()
    for n in model.nodes:
        if n.name not in shapes:
            continue
        mod = node_to_module[n.name]
        for k in shapes[n.name]:
            if n.op in ("batchnorm", "layernorm", "groupnorm"):
                slots[(n.name, k)] = (f"{mod}.{_BN[k]}", "copy")
            elif k == "b":
                slots[(n.name, k)] = (f"{mod}.bias", "copy")
            elif n.op in ("conv", "conv_transpose"):
                slots[(n.name, k)] = (f"{mod}.weight", n.op)
            else:
                chw = _reads_feature_map(model, n)
                slots[(n.name, k)] = (f"{mod}.weight", "dense_chw" if chw else "dense")
    return slots


def _reads_feature_map(model, node) -> int | None:
    """Channel count if the dense ``node`` reads a flattened (spatial, C) map, else None."""
    prev = model.node(node.inputs[0])
    if prev.op != "flatten":
        return None
    shape = model.node_shapes()[prev.inputs[0]]
    return shape[-1] if len(shape) > 1 else None  # a vector is flattened as it is


def identity_name_map(model, keys) -> dict[str, str]:
    """Node name == torch module name (all architectures following the naming contract)."""
    return {n: n for n in model.param_shapes()}


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def mlp_name_map(model, keys) -> dict[str, str]:
    """The i-th ``Linear`` module of the state_dict -> the i-th dense node (``fc0..``, ``head``).

    Order: dynkit's own names if present; ``nn.Sequential`` indices in numeric order if every
    module name ends in an index (``0``, ``net.2``); otherwise the state_dict's order."""
    dense = [n.name for n in model.nodes if n.op == "dense"]
    modules = list(dict.fromkeys(k.rpartition(".")[0] for k in keys if k.endswith(".weight")))
    if set(dense) <= set(modules):
        return {n: n for n in dense}
    if modules and all(m.rpartition(".")[2].isdigit() for m in modules):
        modules.sort(key=_natural_key)
    if len(modules) != len(dense):
        raise CheckpointError(
            f"model 'mlp' has {len(dense)} Linear layers ({', '.join(dense)}) but the "
            f"state_dict has {len(modules)} modules with a weight: {modules}"
        )
    return dict(zip(dense, modules))


#: Architecture (``model.arch``) -> ``f(model, state_dict_keys) -> {node: torch module name}``.
#: Architectures not listed use ``identity_name_map``.
NAME_MAPS: dict[str, Callable[[Any, list[str]], dict[str, str]]] = {
    "mlp": mlp_name_map,
    "cnn": identity_name_map,
    "cifar_resnet": identity_name_map,  # akamaster/pytorch_resnet_cifar10 (option B)
    "resnet": identity_name_map,  # torchvision.models.resnet*
    "wrn": identity_name_map,  # xternalz/WideResNet-pytorch
    "vgg": identity_name_map,  # torchvision.models.vgg* (features.i, classifier.i)
    "densenet": identity_name_map,  # torchvision.models.densenet* (features.denseblock...)
    "torch": identity_name_map,  # graph import: nodes named by module (dk.models.from_torch)
}


# --------------------------------------------------------------------- conversion
def strip_wrapper_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove a ``module.`` (DataParallel/DDP) or ``_orig_mod.`` (torch.compile) prefix
    shared by every key.

    Example:
        >>> strip_wrapper_prefixes({"module.fc.weight": 1, "module.fc.bias": 2})
        {'fc.weight': 1, 'fc.bias': 2}
    """
    sd = dict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for p in WRAPPER_PREFIXES:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def _to_numpy(value, key: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    try:
        return np.asarray(value)
    except Exception as exc:
        raise CheckpointError(f"state_dict entry {key!r} is not an array: {type(value)}") from exc


def _to_dynkit(t: np.ndarray, kind: str, chw: int | None) -> np.ndarray:
    if kind == "conv":
        return np.ascontiguousarray(np.moveaxis(t, (0, 1), (-1, -2)))
    if kind == "conv_transpose":  # (I, O, *k) -> (*k, I, O)
        return np.ascontiguousarray(np.moveaxis(t, (0, 1), (-2, -1)))
    if kind == "dense":
        return np.ascontiguousarray(t.T)
    if kind == "dense_chw":  # (out, C*S) with torch index c*S+s -> (S*C, out) index s*C+c
        out, n = t.shape
        t = t.reshape(out, chw, n // chw).transpose(2, 1, 0)
        return np.ascontiguousarray(t.reshape(n, out))
    return t


def _to_torch(w: np.ndarray, kind: str, chw: int | None) -> np.ndarray:
    if kind == "conv":
        return np.ascontiguousarray(np.moveaxis(w, (-1, -2), (0, 1)))
    if kind == "conv_transpose":
        return np.ascontiguousarray(np.moveaxis(w, (-2, -1), (0, 1)))
    if kind == "dense":
        return np.ascontiguousarray(w.T)
    if kind == "dense_chw":
        n, out = w.shape
        w = w.reshape(n // chw, chw, out).transpose(2, 1, 0)
        return np.ascontiguousarray(w.reshape(out, n))
    return w


def _torch_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    if kind == "conv":
        return (shape[-1], shape[-2], *shape[:-2])
    if kind == "conv_transpose":
        return (shape[-2], shape[-1], *shape[:-2])
    if kind in ("dense", "dense_chw"):
        return (shape[1], shape[0])
    return tuple(shape)


def _slots(model, keys: list[str]) -> dict[tuple[str, str], Slot]:
    name_map = NAME_MAPS.get(model.arch, identity_name_map)
    return _module_slots(model, name_map(model, keys))


def convert_state_dict(model, state_dict: Mapping[str, Any]):
    """Convert a PyTorch ``state_dict`` (arrays or tensors) into dynkit params for ``model``.

    The torch name of each parameter comes from ``NAME_MAPS[model.arch]``; tensors are
    transposed as listed in the module docstring. A ``module.`` prefix is stripped.
    Raises ``CheckpointError`` listing missing and unexpected keys and
    ``ShapeMismatchError`` naming a tensor whose shape does not fit (found vs expected).

    Args:
        model: the ``Model`` (its ``arch`` picks the name map).
        state_dict: ``{torch_name: array or tensor}``.

    Returns:
        dynkit parameters ``{node: {param: jax array}}``.

    Example:
        >>> import jax, dynkit as dk
        >>> model = dk.models.mlp(3, [4], 2)
        >>> params = model.init(jax.random.PRNGKey(0))
        >>> back = convert_state_dict(model, to_state_dict(model, params))
        >>> bool(np.allclose(back["fc0"]["w"], params["fc0"]["w"]))
        True
    """
    import jax.numpy as jnp

    sd = strip_wrapper_prefixes(state_dict)
    keys = list(sd)
    slots = _slots(model, keys)
    wanted = {key for key, _ in slots.values()}
    missing = sorted(wanted - set(keys))
    unexpected = sorted(
        k for k in keys if k not in wanted and k.rpartition(".")[2] not in _OPTIONAL
    )
    if missing or unexpected:
        parts = [f"missing keys ({len(missing)}): {missing}"] if missing else []
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
        raise CheckpointError(
            f"state_dict does not match model {model.arch!r}: " + "; ".join(parts)
        )
    shapes = model.param_shapes()
    params: dict[str, dict[str, Any]] = {}
    for (node, k), (key, kind) in slots.items():
        t = _to_numpy(sd[key], key)
        expected = _torch_shape(shapes[node][k], kind)
        if tuple(t.shape) != expected:
            raise ShapeMismatchError(
                f"state_dict tensor {key!r} has shape {tuple(t.shape)}, but model "
                f"{model.arch!r} expects {expected} (torch layout) for node {node!r}"
            )
        chw = _reads_feature_map(model, model.node(node)) if kind == "dense_chw" else None
        mult = _multiplier(model, node, k)
        if mult == 0:
            raise InvalidArgumentError(
                f"node {node!r} of model {model.arch!r} has the multiplier {k}_mult = 0 (e.g. "
                f"b_std=0 outside the standard parameterization), so torch's {key!r} cannot be "
                f"represented; build the model with parameterization='standard'"
            )
        t = _to_dynkit(t, kind, chw)
        params.setdefault(node, {})[k] = jnp.asarray(t if mult == 1 else t / mult)
    return params


def _multiplier(model, node: str, k: str) -> float:
    """The fixed forward multiplier of parameter ``k`` of ``node`` (1 for BatchNorm)."""
    a = model.node(node).attrs
    if k == "w":
        return float(a.get("w_mult", 1.0))
    if k == "b":
        return float(a.get("b_mult", 1.0))
    return 1.0


def to_state_dict(model, params) -> dict[str, np.ndarray]:
    """dynkit params -> a PyTorch-layout state_dict (numpy arrays), the inverse of
    ``convert_state_dict`` (effective weights ``w_mult * w``); BatchNorm layers get
    ``num_batches_tracked = 0``. For ``mlp`` the module names are dynkit's (``fc0.weight``, ...,
    ``head.bias``).

    Args:
        model: the ``Model``.
        params: its parameters.

    Returns:
        ``{torch_name: np.ndarray}``.

    Example:
        >>> import jax, dynkit as dk
        >>> model = dk.models.mlp(3, [4], 2)
        >>> sd = to_state_dict(model, model.init(jax.random.PRNGKey(0)))
        >>> {k: v.shape for k, v in sd.items()}
        {'fc0.weight': (4, 3), 'fc0.bias': (4,), 'head.weight': (2, 4), 'head.bias': (2,)}
    """
    slots = _module_slots(model, {n: n for n in model.param_shapes()})
    sd: dict[str, np.ndarray] = {}
    for (node, k), (key, kind) in slots.items():
        w = np.asarray(params[node][k]) * _multiplier(model, node, k)
        chw = _reads_feature_map(model, model.node(node)) if kind == "dense_chw" else None
        sd[key] = _to_torch(w, kind, chw)
        if model.node(node).op == "batchnorm" and k == "var":
            sd[f"{node}.num_batches_tracked"] = np.zeros((), np.int64)
    return sd


# --------------------------------------------------------------------- .pt files
def read_pt(path: Path) -> tuple[dict[str, np.ndarray], int | None]:
    """Load a ``.pt``/``.pth`` state_dict with ``torch.load(weights_only=True)``.

    Accepts a raw state_dict or a dict holding one under ``state_dict``/``model``/
    ``model_state_dict`` (an integer ``step`` next to it is returned too). Pickles that
    reference anything but tensors and containers are refused, so loading never runs code."""
    torch = require("torch", "torch", f"loading the PyTorch file {str(path)!r}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{str(path)!r} was refused: its pickle references objects other than tensors "
            f"and containers, which could run code when unpickled. dynkit loads .pt files only "
            f"with torch.load(weights_only=True). ({str(exc).splitlines()[0]})"
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch file (truncated or corrupt): {exc}"
        ) from exc
    step = None
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                s = obj.get("step")
                step = s if isinstance(s, int) and not isinstance(s, bool) else None
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a state_dict (a dict of tensors)"
        )
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{str(path)!r} is not a state_dict: entries {not_tensors[:10]} are not tensors "
            f"(a training checkpoint should hold the weights under one of {STATE_DICT_KEYS})"
        )
    return {str(k): _to_numpy(v, str(k)) for k, v in obj.items()}, step
