"""Pure-JAX models whose layer graph is explicit data (see ``dynkit.models.graph``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dynkit.errors import InvalidArgumentError
from dynkit.models.builder import PARAMETERIZATIONS, GraphBuilder, layer_scales
from dynkit.models.cnn import cnn
from dynkit.models.densenet import densenet, densenet40, densenet121
from dynkit.models.graph import (
    Model,
    Node,
    merge_params,
    split_params,
    trainable_mask,
)
from dynkit.models.lr_scaling import lr_multipliers
from dynkit.models.mlp import mlp
from dynkit.models.resmlp import residual_mlp
from dynkit.models.resnet import (
    cifar_resnet,
    resnet,
    resnet18,
    resnet20,
    resnet32,
    resnet34,
    resnet44,
    resnet50,
    resnet56,
    resnet101,
    resnet110,
    resnet152,
)
from dynkit.models.torch_graph import from_torch
from dynkit.models.unet import unet
from dynkit.models.vgg import vgg, vgg11
from dynkit.models.wrn import wrn

#: Architecture name -> builder; ``build({"arch": name, **kwargs})`` calls it. Models record
#: the family name (``cifar_resnet``, ``resnet``, ``vgg`` with a ``depth``); the named
#: variants (``resnet20``, ``resnet18``, ``vgg11``, ...) are accepted as well.
ARCHITECTURES: dict[str, Callable[..., Model]] = {
    "mlp": mlp,
    "residual_mlp": residual_mlp,
    "cnn": cnn,
    "cifar_resnet": cifar_resnet,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet": resnet,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    "wrn": wrn,
    "vgg": vgg,
    "vgg11": vgg11,
    "densenet": densenet,
    "densenet121": densenet121,
    "densenet40": densenet40,
    "unet": unet,
}


def build(config: Mapping[str, Any]) -> Model:
    """Rebuild a model from its ``config`` (``{"arch": name, **builder_kwargs}``).

    Args:
        config: a ``Model.config``; ``arch`` is a key of ``ARCHITECTURES``.

    Returns:
        The ``Model`` (equal to the one the config came from).

    Raises:
        InvalidArgumentError: an unknown architecture or invalid builder arguments.

    Example:
        >>> build({"arch": "mlp", "in_dim": 3, "widths": [4], "out_dim": 2}) == mlp(3, [4], 2)
        True
    """
    config = dict(config)
    arch = config.pop("arch", None)
    if arch not in ARCHITECTURES:
        raise InvalidArgumentError(
            f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}"
        )
    try:
        return ARCHITECTURES[arch](**config)
    except TypeError as exc:
        raise InvalidArgumentError(f"invalid config for architecture {arch!r}: {exc}") from exc


__all__ = [
    "ARCHITECTURES",
    "PARAMETERIZATIONS",
    "GraphBuilder",
    "Model",
    "Node",
    "build",
    "cifar_resnet",
    "cnn",
    "densenet",
    "densenet40",
    "densenet121",
    "from_torch",
    "layer_scales",
    "lr_multipliers",
    "merge_params",
    "mlp",
    "residual_mlp",
    "resnet",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet44",
    "resnet50",
    "resnet56",
    "resnet101",
    "resnet110",
    "resnet152",
    "split_params",
    "trainable_mask",
    "unet",
    "vgg",
    "vgg11",
    "wrn",
]
