"""A model is explicit data: a topologically ordered list of ``Node``s plus pure functions.

Analyses walk ``Model.nodes`` (path-norms rewrite the network, mode connectivity derives
permutation specs from it), so every layer is a plain record ``Node(name, op, inputs, attrs)``.

Parameters are a nested dict ``{node_name: {param_name: array}}``:

* ``dense``: ``w`` of shape ``(in, out)``, ``b`` of shape ``(out,)`` (if ``attrs["bias"]``);
* ``conv``: ``w`` of shape ``(*kernel, in / groups, out)`` (HWIO; inputs are NHWC / NWC), ``b``;
  attrs ``stride``, ``padding`` (``"SAME"``, ``"VALID"``, an int or one int per axis),
  ``dilation``, ``groups`` (as in PyTorch);
* ``conv_transpose``: ``w`` of shape ``(*kernel, in, out)``, ``b`` (``dynkit.models.ops``);
* ``batchnorm``: trainable ``scale``, ``bias``; running statistics ``mean``, ``var``;
* ``layernorm`` / ``groupnorm``: trainable ``scale``, ``bias`` (if ``attrs["affine"]``).

Parameter-free ops: ``relu``, ``act``, pools, ``flatten``, ``add``, ``scale`` (multiplication
by a constant), ``concat`` (channel axis) and ``upsample`` (``dynkit.models.ops``).

Dense and conv layers compute ``w_mult * (x @ w) + b_mult * b``; the multipliers come from the
parameterization (standard: 1; NTK: ``W_std / sqrt(fan_in)``, Jacot et al. 2018; mean-field:
``1 / fan_in`` on the read-out, Mei et al. 2018). The *effective* weight is ``w_mult * w``.

Node names mirror the module names of the PyTorch counterpart (``layer1.0.conv1``, ``fc``),
so state_dict conversion is a rename plus a transpose.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dynkit.errors import InvalidArgumentError, ShapeMismatchError, UnsupportedLayerError
from dynkit.models.ops import ACTIVATIONS, OPS, batchnorm, conv_linear, norm_param_shapes
from dynkit.models.params import (
    STAT_KEYS,
    Params,
    is_stat_path,
    merge_params,
    split_params,
    trainable_mask,
)

__all__ = [
    "ACTIVATIONS",
    "LINEAR_OPS",
    "PARAM_OPS",
    "STAT_KEYS",
    "Model",
    "Node",
    "Params",
    "conv_linear",
    "is_stat_path",
    "merge_params",
    "split_params",
    "trainable_mask",
]


#: Ops with parameters ``params[node]`` (the others map their inputs only).
PARAM_OPS = ("dense", "conv", "conv_transpose", "batchnorm", "layernorm", "groupnorm", "gate")
#: Affine layers ``w_mult * linear(x, w) + b_mult * b`` (``multipliers``, ``effective_affine``).
LINEAR_OPS = ("dense", "conv", "conv_transpose")


@dataclass(frozen=True)
class Node:
    """One layer of a model graph.

    Attributes:
        name: unique node name (mirrors the PyTorch module name, e.g. ``layer1.0.conv1``).
        op: one of ``input, dense, conv, conv_transpose, batchnorm, layernorm, groupnorm,
            relu, act, maxpool, avgpool, global_avgpool, flatten, add, scale, concat,
            upsample``.
        inputs: names of the nodes feeding it.
        attrs: shapes and hyper-parameters (all JSON-serializable).

    Example:
        >>> Node("fc0", "dense", ("input",), {"in_dim": 3, "out_dim": 4}).inputs
        ('input',)
    """

    name: str
    op: str
    inputs: tuple[str, ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Model:
    """A pure-JAX network: graph data plus ``init``/``apply``/``features``.

    ``config`` is the JSON-serializable recipe (``{"arch": "mlp", ...}``) from which
    ``dynkit.models.build(config)`` rebuilds the same model; checkpoints store it.

    Two models are equal, and hash alike, when their config and graph (nodes with their
    attributes, output, feature, input shape) are: a model rebuilt from a checkpoint's config
    is the same key for every cache of compiled programs (``functools.lru_cache`` on the
    model), so a run compiles each program once.

    Args:
        config: the recipe of ``dynkit.models.build``.
        nodes: the ``Node``s in topological order, starting with the ``input`` node.
        output: name of the node that gives the logits.
        feature: name of the node that gives the penultimate representation.
        input_shape: input shape without the batch axis (images channels-last).

    Example:
        >>> import dynkit as dk
        >>> model = dk.models.mlp(3, [4], 2)
        >>> [n.op for n in model.nodes], model.output, model.feature
        (['input', 'dense', 'relu', 'dense'], 'head', 'act0')
        >>> model == dk.models.build(model.config)
        True
    """

    config: Mapping[str, Any]
    nodes: tuple[Node, ...]
    output: str
    feature: str
    input_shape: tuple[int, ...]

    # ----------------------------------------------------------------- identity
    def _key(self) -> str:
        """The canonical form of the graph (sorted JSON), computed once."""
        key = self.__dict__.get("_canonical")
        if key is None:
            graph = {"config": self.config, "output": self.output, "feature": self.feature,
                     "input_shape": list(self.input_shape),
                     "nodes": [[n.name, n.op, list(n.inputs), n.attrs] for n in self.nodes]}
            key = json.dumps(graph, sort_keys=True, default=_json_default)
            object.__setattr__(self, "_canonical", key)
        return key

    def __eq__(self, other) -> bool:
        if not isinstance(other, Model):
            return NotImplemented
        return self is other or self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    # ----------------------------------------------------------------- structure
    @property
    def arch(self) -> str:
        """The architecture name, ``config["arch"]``."""
        return self.config["arch"]

    def node(self, name: str) -> Node:
        """The node named ``name``.

        Raises:
            KeyError: there is no such node.
        """
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"model {self.arch!r} has no node named {name!r}")

    @property
    def has_batchnorm(self) -> bool:
        """Whether any node is a BatchNorm."""
        return any(n.op == "batchnorm" for n in self.nodes)

    def multipliers(self, name: str) -> tuple[float, float]:
        """``(w_mult, b_mult)`` of dense/conv/conv_transpose node ``name``: the layer computes
        ``w_mult * (x @ w) + b_mult * b`` (1 and 1 in the standard parameterization)."""
        node = self.node(name)
        if node.op not in LINEAR_OPS:
            raise InvalidArgumentError(f"node {name!r} of model {self.arch!r} is a {node.op!r} "
                                       f"node; multipliers exist for {', '.join(LINEAR_OPS)} "
                                       "nodes only")
        return float(node.attrs.get("w_mult", 1.0)), float(node.attrs.get("b_mult", 1.0))

    def effective_affine(self, params: Params, name: str, dtype=None):
        """The effective affine map ``(w_mult * w, b_mult * b)`` of dense/conv/conv_transpose
        node ``name``, in the stored layout (dense ``(in, out)``, conv HWIO); ``b`` is None without a bias.
        With ``dtype`` (e.g. ``numpy.float64``) the parameters are converted to numpy arrays of
        that type before the multipliers are applied.

        >>> import jax, dynkit as dk
        >>> m = dk.models.mlp(in_dim=3, widths=[4], out_dim=2, parameterization="ntk")
        >>> w, b = m.effective_affine(m.init(jax.random.PRNGKey(0)), m.readout()[0])
        >>> w.shape, b.shape
        ((4, 2), (2,))
        """
        w_mult, b_mult = self.multipliers(name)
        p = params[name]
        if dtype is not None:
            p = {k: np.asarray(v, dtype) for k, v in p.items()}
        return w_mult * p["w"], (b_mult * p["b"] if "b" in p else None)

    def readout(self) -> tuple[str, float]:
        """``(name, factor)`` of the read-out: the dense node that maps the ``feature``
        representation to the logits, and the product of the ``scale`` factors (output scale
        α) between it and the output. Raises ``UnsupportedLayerError`` if the logits are not a
        (scaled) dense map of the features."""
        node, factor = self.node(self.output), 1.0
        while node.op == "scale":
            factor *= float(node.attrs["factor"])
            node = self.node(node.inputs[0])
        if node.op != "dense":
            raise UnsupportedLayerError(
                f"the read-out of model {self.arch!r} is a {node.op!r} node ({node.name}); "
                "a final dense layer is needed")
        src = node.inputs[0]
        while src != self.feature and self.node(src).op == "flatten":
            src = self.node(src).inputs[0]
        if src != self.feature:
            raise UnsupportedLayerError(
                f"read-out {node.name!r} is fed by {node.inputs[0]!r}, not by the feature node "
                f"{self.feature!r}")
        return node.name, factor

    def layer_names(self) -> list[str]:
        """Names of the nodes whose outputs are the model's layer representations.

        These are the post-activation outputs and block outputs, marked ``attrs["tap"]``, in graph
        order.

        Returns:
            A list of node names.

        Example:
            >>> import dynkit as dk
            >>> dk.models.mlp(3, [4, 4], 2).layer_names()
            ['act0', 'act1']
        """
        return [n.name for n in self.nodes if n.attrs.get("tap")]

    def param_shapes(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """``{node: {param: shape}}`` for every parameter, without allocating arrays.

        Example:
            >>> import dynkit as dk
            >>> dk.models.mlp(3, [4], 2).param_shapes()
            {'fc0': {'w': (3, 4), 'b': (4,)}, 'head': {'w': (4, 2), 'b': (2,)}}
        """
        shapes: dict[str, dict[str, tuple[int, ...]]] = {}
        for n in self.nodes:
            a = n.attrs
            if n.op == "dense":
                shapes[n.name] = {"w": (a["in_dim"], a["out_dim"])}
                if a.get("bias", True):
                    shapes[n.name]["b"] = (a["out_dim"],)
            elif n.op in ("conv", "conv_transpose"):
                groups = int(a.get("groups", 1))
                if a["in_ch"] % groups or a["out_ch"] % groups:
                    raise InvalidArgumentError(
                        f"node {n.name!r}: in_ch={a['in_ch']} and out_ch={a['out_ch']} must be "
                        f"multiples of groups={groups}")
                shapes[n.name] = {"w": (*a["kernel"], a["in_ch"] // groups, a["out_ch"])}
                if a.get("bias", True):
                    shapes[n.name]["b"] = (a["out_ch"],)
            elif n.op == "batchnorm":
                c = a["num_features"]
                shapes[n.name] = {k: (c,) for k in ("scale", "bias", "mean", "var")}
            elif n.op in ("layernorm", "groupnorm") and a.get("affine", True):
                if "num_features" not in a:
                    raise InvalidArgumentError(
                        f"node {n.name!r} ({n.op}) of model {self.arch!r} needs "
                        "attrs['num_features'] (its channels) for its scale and bias")
                shapes[n.name] = norm_param_shapes(a)
            elif n.op == "gate":
                shapes[n.name] = {"alpha": ()}
        return shapes

    def check_params(self, *param_sets: Params) -> None:
        """Raise ``ShapeMismatchError`` naming the first parameter of any of ``param_sets``
        whose shape differs from ``param_shapes()`` (or that is missing)."""
        expected = self.param_shapes()
        for i, params in enumerate(param_sets):
            for node, shapes in expected.items():
                for k, shape in shapes.items():
                    got = tuple(np.shape(params.get(node, {}).get(k, ())))
                    if got != tuple(shape):
                        raise ShapeMismatchError(
                            f"params #{i + 1} do not fit {self.arch!r}: {node}.{k} has shape "
                            f"{got}, expected {tuple(shape)}")

    def node_shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shape (without the batch axis) of every node, by abstract evaluation."""
        x = jax.ShapeDtypeStruct((1, *self.input_shape), jnp.float32)
        params = jax.eval_shape(self.init, jax.random.PRNGKey(0))
        names = [n.name for n in self.nodes]
        out = jax.eval_shape(lambda p, v: self._run(p, v, False, names, None)[0], params, x)
        return {k: tuple(v.shape[1:]) for k, v in out.items()}

    def num_params(self, trainable_only: bool = True) -> int:
        """Number of scalar parameters.

        Args:
            trainable_only: leave out the running BatchNorm statistics (default).

        Returns:
            The count.

        Example:
            >>> import dynkit as dk
            >>> dk.models.mlp(3, [4], 2).num_params()   # 3·4 + 4 + 4·2 + 2
            26
        """
        total = 0
        for pname in self.param_shapes().values():
            for k, shape in pname.items():
                if trainable_only and k in STAT_KEYS:
                    continue
                total += int(np.prod(shape))
        return total

    # ----------------------------------------------------------------- init
    def init(self, key: jax.Array, dtype=jnp.float32) -> Params:
        """Sample parameters (one compiled call).

        ``w ~ N(0, init_std²)``, ``b ~ N(0, b_init_std²)`` with the stds of the parameterization;
        BatchNorm ``scale=1, bias=0, mean=0, var=1``; layer/group norm ``scale=1, bias=0``.

        Args:
            key: a ``jax.random`` key.
            dtype: floating dtype of the parameters.

        Returns:
            Parameters ``{node: {param: array}}``.

        Example:
            >>> import dynkit as dk
            >>> model = dk.models.mlp(3, [4], 2)
            >>> params = model.init(jax.random.PRNGKey(0))
            >>> params["fc0"]["w"].shape, params["fc0"]["w"].dtype
            ((3, 4), dtype('float32'))
        """
        compiled = self.__dict__.get("_init_jit")
        if compiled is None:  # a fresh jax.jit wrapper per call would recompile every time
            compiled = jax.jit(self._init, static_argnums=1)
            object.__setattr__(self, "_init_jit", compiled)
        return compiled(key, jnp.dtype(dtype))

    def _init(self, key: jax.Array, dtype) -> Params:
        # One normal draw for every weight and bias, sliced: a single RNG op compiles in a
        # fraction of the time of one op per array.
        shapes = self.param_shapes()
        random = [(n, k, shape) for n, ps in shapes.items() for k, shape in ps.items()
                  if k in ("w", "b")]
        sizes = [math.prod(shape) for _, _, shape in random]
        z = jax.random.normal(key, (max(sum(sizes), 1),), dtype)
        params: Params = {}
        offset = 0
        for (name, k, shape), size in zip(random, sizes):
            a = self.node(name).attrs
            std = a["init_std"] if k == "w" else a.get("b_init_std", 0.0)
            params.setdefault(name, {})[k] = std * z[offset:offset + size].reshape(shape)
            offset += size
        for name, ps in shapes.items():
            if self.node(name).op in ("batchnorm", "layernorm", "groupnorm"):
                params[name] = {k: (jnp.ones if k in ("scale", "var") else jnp.zeros)(c, dtype)
                                for k, c in ps.items()}
            elif self.node(name).op == "gate":  # ReZero: the branch starts switched off
                params[name] = {"alpha": jnp.zeros((), dtype)}
        return params

    # ----------------------------------------------------------------- forward
    def _check_input(self, x) -> None:
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ShapeMismatchError(
                f"model {self.arch!r} expects inputs of shape (batch, "
                f"{', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}"
            )

    def forward(self, params: Params, x, *, keep: Sequence[str] = (), train: bool = False,
                perturb: Mapping[str, Any] | None = None):
        """Evaluate the graph, keeping the activations of some nodes.

        Args:
            params: the parameters.
            x: inputs ``(batch, *input_shape)``.
            keep: names of the nodes whose outputs are returned (besides the output node).
            train: BatchNorm in train mode (batch statistics).
            perturb: ``perturb[name]`` is added to node ``name``'s output (probes for per-layer
                gradients, e.g. the structured empirical NTK).

        Returns:
            ``{name: activation}`` for the ``keep`` nodes and the output node.

        Example:
            >>> import dynkit as dk
            >>> model = dk.models.mlp(3, [4], 2)
            >>> params = model.init(jax.random.PRNGKey(0))
            >>> out = model.forward(params, jnp.ones((5, 3)), keep=["fc0"])
            >>> {k: v.shape for k, v in out.items()}
            {'fc0': (5, 4), 'head': (5, 2)}
        """
        out, _ = self._run(params, x, train, keep, None, perturb)
        return out

    def _run(self, params: Params, x, train: bool, keep: Sequence[str] | None, stop: str | None,
             perturb: Mapping[str, Any] | None = None):
        """Evaluate the graph. Returns ``(outputs, batch_stats)`` where ``outputs`` maps the
        requested node names to activations and ``batch_stats`` the BatchNorm batch moments
        (train mode only)."""
        self._check_input(x)
        env: dict[str, Any] = {}
        stats: dict[str, tuple] = {}
        wanted = set(keep or ())
        out: dict[str, Any] = {}
        consumers = _last_use(self.nodes)
        for i, n in enumerate(self.nodes):
            ins = [env[s] for s in n.inputs]
            if n.op == "input":
                y = x
            elif n.op == "batchnorm":
                y, moments = batchnorm(params[n.name], ins[0], n.attrs, train)
                if moments is not None:
                    stats[n.name] = moments
            elif n.op in PARAM_OPS:
                y = OPS[n.op](params.get(n.name, {}), ins[0], n.attrs)
            elif n.op in OPS:
                y = OPS[n.op](ins, n.attrs)
            else:
                raise UnsupportedLayerError(f"node {n.name!r} of model {self.arch!r} has the "
                                            f"unknown op {n.op!r}; known ops: "
                                            f"input, batchnorm, {', '.join(OPS)}")
            if perturb is not None and n.name in perturb:
                y = y + perturb[n.name]
            env[n.name] = y
            if n.name in wanted:
                out[n.name] = y
            if n.name == stop:
                break
            for s in n.inputs:  # free activations nobody needs any more
                if consumers[s] == i and s not in wanted:
                    env.pop(s, None)
        out.setdefault(stop or self.output, env.get(stop or self.output))
        return out, stats

    def apply(self, params: Params, x, *, train: bool = False):
        """Logits of the network.

        Args:
            params: the parameters.
            x: inputs ``(batch, *input_shape)``.
            train: ``True`` normalizes BatchNorm with batch statistics (no update); ``False`` uses
                the running statistics stored in ``params``.

        Returns:
            ``(batch, out_dim)`` logits.

        Raises:
            ShapeMismatchError: ``x`` does not have the model's input shape.

        Example:
            >>> import dynkit as dk
            >>> model = dk.models.mlp(3, [4], 2)
            >>> params = model.init(jax.random.PRNGKey(0))
            >>> model.apply(params, jnp.ones((5, 3))).shape
            (5, 2)
        """
        out, _ = self._run(params, x, train, None, self.output)
        return out[self.output]

    def apply_train(self, params: Params, x, momentum: float | None = None):
        """Train-mode forward pass: ``(logits, params_with_updated_running_stats)``.

        Running statistics follow PyTorch: ``r <- (1 - momentum) r + momentum * batch``, with the
        unbiased batch variance.

        Args:
            params: the parameters.
            x: a batch of inputs.
            momentum: overrides every BatchNorm node's own ``attrs["momentum"]`` (0.1 by default,
                as in PyTorch).

        Returns:
            ``(logits, params)``; ``params`` is returned unchanged without BatchNorm.

        Example:
            >>> import dynkit as dk
            >>> model = dk.models.mlp(3, [4], 2)
            >>> params = model.init(jax.random.PRNGKey(0))
            >>> logits, new = model.apply_train(params, jnp.ones((5, 3)))
            >>> new is params                       # no BatchNorm: nothing to update
            True
        """
        out, stats = self._run(params, x, True, None, self.output)
        if not stats:
            return out[self.output], params
        new = dict(params)
        for name, (mean, var, count) in stats.items():
            m = momentum if momentum is not None else self.node(name).attrs.get("momentum", 0.1)
            unbiased = var * count / max(count - 1, 1)
            p = dict(params[name])
            p["mean"] = (1 - m) * p["mean"] + m * jax.lax.stop_gradient(mean)
            p["var"] = (1 - m) * p["var"] + m * jax.lax.stop_gradient(unbiased)
            new[name] = p
        return out[self.output], new

    def features(self, params: Params, x, *, train: bool = False):
        """The penultimate representation (input of the read-out layer).

        Args:
            params: the parameters.
            x: inputs.
            train: BatchNorm in train mode.

        Returns:
            ``(batch, D)`` features (flattened).

        Example:
            >>> import dynkit as dk
            >>> model = dk.models.mlp(3, [4], 2)
            >>> params = model.init(jax.random.PRNGKey(0))
            >>> model.features(params, jnp.ones((5, 3))).shape
            (5, 4)
        """
        out, _ = self._run(params, x, train, [self.feature], self.feature)
        f = out[self.feature]
        return f.reshape(f.shape[0], -1)

    def intermediates(self, params: Params, x, names: Sequence[str] | None = None, *, train=False):
        """Outputs of the named nodes, each flattened to ``(batch, D)``, in graph order.

        Args:
            params: the parameters.
            x: inputs.
            names: node names (default: :meth:`layer_names`).
            train: BatchNorm in train mode.

        Returns:
            ``{name: (batch, D) array}``.

        Raises:
            InvalidArgumentError: an unknown node name.

        Example:
            >>> import dynkit as dk
            >>> model = dk.models.mlp(3, [4], 2)
            >>> params = model.init(jax.random.PRNGKey(0))
            >>> {k: v.shape for k, v in model.intermediates(params, jnp.ones((5, 3))).items()}
            {'act0': (5, 4)}
        """
        names = list(names) if names is not None else self.layer_names()
        unknown = [s for s in names if s not in {n.name for n in self.nodes}]
        if unknown:
            raise InvalidArgumentError(f"unknown layer name(s) {unknown}; see model.layer_names()")
        out, _ = self._run(params, x, train, names, None)
        return {s: out[s].reshape(out[s].shape[0], -1) for s in names}


def _json_default(value):
    """JSON form of the non-JSON values attrs may hold (numpy scalars and arrays, tuples
    inside sets, ...): numbers as numbers, anything else by its type and ``repr``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return f"<{type(value).__qualname__}>{value!r}"


# --------------------------------------------------------------------- helpers
def _last_use(nodes: Sequence[Node]) -> dict[str, int]:
    last = {n.name: len(nodes) for n in nodes}
    for i, n in enumerate(nodes):
        for s in n.inputs:
            last[s] = i
    return last
