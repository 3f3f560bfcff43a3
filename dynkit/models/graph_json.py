"""A model's graph as plain JSON data, for imported models that no builder can rebuild.

A built model (``mlp``, ``resnet``, ...) is stored in a checkpoint by its config alone:
``dynkit.models.build(config)`` rebuilds it. A model imported from PyTorch
(``dynkit.models.from_torch``, ``config = {"arch": "torch", "class": ...}``) has no builder, so
its checkpoint stores the graph itself:

    {"nodes": [[name, op, [inputs...], {attrs}], ...], "output": name, "feature": name,
     "input_shape": [...]}

which ``graph_from_dict`` turns back into an equal ``Model``. It is data only (JSON, never
pickle): loading it runs no code from the file, and the torch class is not needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dynkit.errors import CheckpointError
from dynkit.models.graph import Model, Node
from dynkit.models.ops import OPS

__all__ = ["STORED_GRAPH_ARCHS", "graph_from_dict", "graph_to_dict", "needs_graph"]

_OPS = frozenset({"input", "batchnorm", *OPS})


#: Architectures whose checkpoints store their graph: graph import (``from_torch``) has no
#: builder. Hand-built graphs (``GraphBuilder`` with an arch of their own) are not included:
#: they load with ``model=``.
STORED_GRAPH_ARCHS = ("torch",)


def needs_graph(model: Model) -> bool:
    """Whether a checkpoint of ``model`` stores its graph: an imported model (arch ``torch``),
    which ``dynkit.models.build(config)`` cannot rebuild.

    Example:
        >>> import dynkit as dk
        >>> needs_graph(dk.models.mlp(3, [4], 2))
        False
    """
    return model.arch in STORED_GRAPH_ARCHS


def graph_to_dict(model: Model) -> dict[str, Any]:
    """The graph of ``model`` (nodes, output, feature, input shape) as JSON-ready data.

    Args:
        model: the ``Model``.

    Returns:
        ``{"nodes": [[name, op, inputs, attrs], ...], "output", "feature", "input_shape"}``.

    Example:
        >>> import dynkit as dk
        >>> graph = graph_to_dict(dk.models.mlp(3, [4], 2))
        >>> [node[:3] for node in graph["nodes"]], graph["output"], graph["input_shape"]
        ([['input', 'input', []], ['fc0', 'dense', ['input']], ['act0', 'relu', ['fc0']], \
['head', 'dense', ['act0']]], 'head', [3])
    """
    return {"nodes": [[n.name, n.op, list(n.inputs), dict(n.attrs)] for n in model.nodes],
            "output": model.output, "feature": model.feature,
            "input_shape": list(model.input_shape)}


def graph_from_dict(graph: Mapping[str, Any], config: Mapping[str, Any],
                    source: str = "graph") -> Model:
    """The ``Model`` of a stored graph (the inverse of ``graph_to_dict``), checked first: every
    node is ``[name, op, inputs, attrs]`` with a known op, reads only earlier nodes, and the
    output and feature nodes exist.

    Args:
        graph: the output of ``graph_to_dict`` (after a JSON round trip).
        config: the model's config.
        source: the file the graph came from, for error messages.

    Returns:
        The ``Model``; it equals (and hashes like) the model that was stored.

    Raises:
        CheckpointError: the graph is malformed.

    Example:
        >>> import json, dynkit as dk
        >>> model = dk.models.mlp(3, [4], 2)
        >>> stored = json.loads(json.dumps(graph_to_dict(model)))
        >>> graph_from_dict(stored, model.config) == model
        True
    """
    def bad(what: str):
        raise CheckpointError(f"{source}: the stored model graph is malformed: {what}")

    if not isinstance(graph, Mapping) or not isinstance(graph.get("nodes"), list):
        bad("no node list")
    nodes, seen = [], set()
    for entry in graph["nodes"]:
        if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str)
                and isinstance(entry[1], str) and isinstance(entry[2], list)
                and isinstance(entry[3], dict)):
            bad(f"node {entry!r:.80} is not [name, op, inputs, attrs]")
        name, op, inputs, attrs = entry
        if op not in _OPS:
            bad(f"node {name!r} has the unknown op {op!r}")
        missing = [s for s in inputs if s not in seen]
        if missing or name in seen:
            bad(f"node {name!r} reads {missing} before they are defined" if missing
                else f"node name {name!r} is repeated")
        seen.add(name)
        nodes.append(Node(name, op, tuple(inputs), attrs))
    if not nodes or nodes[0].op != "input":
        bad("the first node must be the input")
    for key in ("output", "feature"):
        if graph.get(key) not in seen:
            bad(f"its {key} node {graph.get(key)!r} is not in the graph")
    shape = graph.get("input_shape")
    if not (isinstance(shape, list) and shape
            and all(isinstance(d, int) and d > 0 for d in shape)):
        bad(f"input_shape {shape!r} is not a list of positive integers")
    return Model(dict(config), tuple(nodes), graph["output"], graph["feature"], tuple(shape))
