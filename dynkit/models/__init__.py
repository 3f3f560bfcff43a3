"""Pure-JAX models whose layer graph is explicit data (see ``dynkit.models.graph``)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from dynkit.errors import InvalidArgumentError
from dynkit.models.builder import PARAMETERIZATIONS, GraphBuilder, layer_scales
from dynkit.models.graph import (
    Model,
    Node,
    merge_params,
    split_params,
    trainable_mask,
)
from dynkit.models.mlp import mlp

#: Architecture name -> builder; ``build({"arch": name, **kwargs})`` calls it.
ARCHITECTURES: dict[str, Callable[..., Model]] = {"mlp": mlp}


def build(config: Mapping[str, Any]) -> Model:
    """Rebuild a model from its ``config`` (``{"arch": name, **builder_kwargs}``)."""
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
    "ARCHITECTURES", "PARAMETERIZATIONS", "GraphBuilder", "Model", "Node", "build",
    "layer_scales", "merge_params", "mlp", "split_params", "trainable_mask",
]
