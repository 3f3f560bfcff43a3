"""Permutation symmetry of a dynkit graph: the permutation spec, weight and activation matching.

Hidden units of a ReLU network can be permuted without changing its function. Git Re-Basin
(Ainsworth, Hayase & Srinivasa 2023) aligns network B to network A by choosing, for every
permutable channel group, the permutation that maximizes the summed inner products of the
weights touching it (weight matching), or the similarity of the units' activations on data
(activation matching; the similarity is a parameter, ``ACTIVATION_OBJECTIVES``).

The spec is derived from the layer graph:

* each dense/conv/conv_transpose node not feeding the logits opens a *group* (its output
  channels);
* channel-preserving ops (relu, act, batchnorm, layernorm, pools, global pooling, upsample,
  scale) pass the group on (batchnorm and layernorm permute their per-channel parameters);
* ``add`` ties the groups of its inputs (residual streams share one permutation);
* ``flatten`` passes the group on with a repeat factor: channel-last flattening sends index
  ``s·C + c`` to ``s·C + π(c)``;
* ``concat`` stacks its inputs' channels: the concatenated tensor's permutation is the
  block-diagonal union ``diag(π_1, π_2, ...)`` of its parts' permutations, each part a
  *segment* at its channel offset. Every consumer (a BatchNorm, the next convolution's input
  axis) is permuted blockwise, one ``Axis`` per segment with its ``offset`` and ``period`` (the
  tensor's channel count). So DenseNet features keep one group per layer that produced them,
  and a U-Net long skip ties the decoder's input axis to the encoder's output channels.

A tensor made of several segments is carried through channel-preserving ops segment by
segment; ``add`` of two such tensors ties their segments pairwise (same layout needed). Only
nodes that carry exactly one whole group are its ``members`` (activation matching measures
them); a concatenation is not a member of its parts' groups.

Not supported (``UnsupportedLayerError`` naming the node): grouped convolutions (a permutation
must keep each channel in its group), ``groupnorm`` (a permutation across groups changes the
group statistics), the concatenation of flattened tensors and the sum of tensors with
different segment layouts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from scipy.optimize import linear_sum_assignment

from dynkit.errors import InvalidArgumentError, UnsupportedLayerError
from dynkit.models.graph import LINEAR_OPS, Model

__all__ = [
    "ACTIVATION_OBJECTIVES", "Axis", "Permutation", "PermutationSpec", "activation_matching",
    "activation_similarity", "apply_permutation", "permutation_spec", "weight_matching",
]

#: Ops whose output channels are their input channels.
_CHANNEL_PRESERVING = ("relu", "act", "batchnorm", "layernorm", "maxpool", "avgpool",
                       "global_avgpool", "upsample", "scale")
#: Why an op has no permutation rule.
_UNSUPPORTED = {
    "groupnorm": "a channel permutation across its groups changes the group statistics",
}
#: Ops whose outputs are post-activation (post-ReLU in a ReLU network) unit values.
_ACTIVATIONS = ("relu", "act")
#: Similarities that ``activation_matching`` can maximize, named after their source.
ACTIVATION_OBJECTIVES = ("repair", "rebasin", "pearson_all_nodes")


@dataclass(frozen=True)
class Axis:
    """One parameter axis permuted by a group.

    ``params[node][param]`` is permuted along ``axis``, whose length is ``repeat × period``
    (channel-last blocks after a flatten): in each block of ``period`` channels the group's
    units are ``offset .. offset + size - 1`` (a segment of a concatenation; ``period=None``
    means the block is the group itself, ``offset`` 0).

    Attributes:
        node: the node name.
        param: the parameter name (``"w"``, ``"b"``, ``"mean"``, ...).
        axis: the permuted axis.
        repeat: number of channel blocks along the axis.
        offset: first channel of the group in each block.
        period: channels per block (``None``: the group size).

    References:
        Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin: merging models modulo permutation
        symmetries" (ICLR).

    Example:
        >>> Axis("fc1", "w", -2)
        Axis(node='fc1', param='w', axis=-2, repeat=1, offset=0, period=None)
    """

    node: str
    param: str
    axis: int
    repeat: int = 1
    offset: int = 0
    period: int | None = None

    def expand(self, values, fill) -> np.ndarray:
        """The vector along the whole axis holding ``values`` (one per unit of the group) at
        the group's positions of every block and ``fill`` elsewhere.

        Example:
            >>> Axis("fc1", "w", -2, repeat=2, offset=1, period=3).expand([5, 6], 0).tolist()
            [0, 5, 6, 0, 5, 6]
        """
        values = np.asarray(values)
        period = self.period or len(values)
        block = np.full(period, fill, dtype=np.result_type(values, np.asarray(fill)))
        block[self.offset:self.offset + len(values)] = values
        return np.tile(block, self.repeat)


@dataclass(frozen=True)
class PermutationSpec:
    """The permutation symmetry of a network, derived by :func:`permutation_spec`.

    The mappings are read-only: a spec is cached and shared by every caller.

    Attributes:
        groups: group name -> the parameter axes it permutes.
        members: group name -> nodes whose outputs carry the group's channels (for activation
            matching).
        sizes: group name -> number of channels.

    References:
        Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin: merging models modulo permutation
        symmetries" (ICLR).

    Example:
        >>> import dynkit as dk
        >>> spec = permutation_spec(dk.models.mlp(4, [8], 3))
        >>> [(a.node, a.param, a.axis) for a in spec.groups["fc0"]]
        [('fc0', 'w', -1), ('fc0', 'b', 0), ('head', 'w', -2)]
    """

    groups: dict[str, tuple[Axis, ...]]
    members: dict[str, tuple[str, ...]]
    sizes: dict[str, int]


class _UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


@functools.lru_cache(maxsize=64)
def permutation_spec(model: Model) -> PermutationSpec:
    """Derive the permutation spec of ``model`` from its layer graph (module docstring).

    The spec is computed once per model and cached (keyed by ``model``: equal models share
    it); ``permutation_spec.cache_info()`` reports the hits.

    Args:
        model: the network; its ops must be dense, conv (``groups=1``), conv_transpose,
            channel-preserving ops, flatten, add.

    Returns:
        PermutationSpec: the groups, the nodes carrying each, and the group sizes.

    Raises:
        UnsupportedLayerError: naming the first node without a permutation rule (module
            docstring).

    References:
        Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin", Sec. 3 (permutation specs).

    Example:
        >>> import dynkit as dk
        >>> spec = permutation_spec(dk.models.mlp(4, [8, 6], 3))
        >>> dict(spec.sizes), spec.members["fc0"]
        ({'fc0': 8, 'fc1': 6}, ('fc0', 'act0'))
    """
    shapes = model.node_shapes()
    uf = _UnionFind()
    # node -> (segments ((group seed, offset, size), ...), repeat, period) or None (the input)
    carried: dict[str, tuple | None] = {}
    for n in model.nodes:
        if n.op in _UNSUPPORTED or int(n.attrs.get("groups", 1)) != 1:
            why = _UNSUPPORTED.get(n.op, "a permutation must keep each channel in its group")
            raise UnsupportedLayerError(f"permutation spec: node {n.name!r} ({n.op}, "
                                        f"groups={n.attrs.get('groups', 1)}) of model "
                                        f"{model.arch!r} is not supported: {why}")
        if n.op == "input":
            carried[n.name] = None
        elif n.op in LINEAR_OPS:
            size = shapes[n.name][-1]
            carried[n.name] = (((n.name, 0, size),), 1, size)
            uf.find(n.name)
        elif n.op in _CHANNEL_PRESERVING:
            carried[n.name] = carried[n.inputs[0]]
        elif n.op == "flatten":
            src = carried[n.inputs[0]]
            if src is None:
                carried[n.name] = None
            else:
                spatial = int(np.prod(shapes[n.inputs[0]][:-1]))
                carried[n.name] = (src[0], src[1] * spatial, src[2])
        elif n.op == "add":
            ins = [carried[s] for s in n.inputs]
            if any(c is None for c in ins):
                if not all(c is None for c in ins):
                    raise InvalidArgumentError(f"add node {n.name!r} mixes the input with "
                                               "hidden units")
                carried[n.name] = None
                continue
            layout = [tuple((o, k) for _, o, k in c[0]) + c[1:] for c in ins]
            if any(lay != layout[0] for lay in layout[1:]):
                raise UnsupportedLayerError(
                    f"permutation spec: add node {n.name!r} of model {model.arch!r} sums "
                    f"tensors with different concatenation layouts {layout}; a permutation "
                    "would have to split a layer's channels")
            for c in ins[1:]:
                for (g0, _, _), (g1, _, _) in zip(ins[0][0], c[0]):
                    uf.union(g0, g1)
            carried[n.name] = ins[0]
        elif n.op == "concat":
            carried[n.name] = _concat_segments(n, [carried[s] for s in n.inputs],
                                               [shapes[s][-1] for s in n.inputs], model.arch)
        else:
            raise UnsupportedLayerError(f"permutation spec: unsupported op {n.op!r} "
                                        f"at node {n.name!r}")

    # The groups reaching the logits are not permutable, nor anything tied to them.
    blocked = set()
    if carried[model.output] is not None:
        blocked.update(uf.find(seed) for seed, _, _ in carried[model.output][0])

    groups: dict[str, list[Axis]] = {}
    members: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    param_shapes = model.param_shapes()
    for n in model.nodes:
        c = carried[n.name]
        for seed, offset, size in (c[0] if c is not None else ()):
            g = uf.find(seed)
            if g in blocked:
                continue
            block = {"offset": offset, "period": None if c[2] == size else c[2]}
            if block["period"] is None:
                members.setdefault(g, []).append(n.name)
            if n.op in LINEAR_OPS:
                sizes[g] = param_shapes[n.name]["w"][-1]
                groups.setdefault(g, []).append(Axis(n.name, "w", -1))
                if "b" in param_shapes[n.name]:
                    groups.setdefault(g, []).append(Axis(n.name, "b", 0))
            elif n.op in ("batchnorm", "layernorm"):
                groups.setdefault(g, []).extend(
                    Axis(n.name, k, 0, **block) for k in param_shapes.get(n.name, {}))
        src = carried[n.inputs[0]] if n.op in LINEAR_OPS else None
        for seed, offset, size in (src[0] if src is not None else ()):
            if uf.find(seed) not in blocked:
                groups.setdefault(uf.find(seed), []).append(
                    Axis(n.name, "w", -2, src[1], offset, None if src[2] == size else src[2]))
    return PermutationSpec(MappingProxyType({g: tuple(a) for g, a in groups.items()}),
                           MappingProxyType({g: tuple(m) for g, m in members.items()}),
                           MappingProxyType(sizes))


def _concat_segments(n, ins, channels, arch):
    """The segments of ``concat`` node ``n``: its inputs' segments at their channel offsets."""
    segments, offset = [], 0
    for c, ch in zip(ins, channels):
        if c is not None:
            if c[1] != 1:
                raise UnsupportedLayerError(
                    f"permutation spec: concat node {n.name!r} of model {arch!r} concatenates "
                    "flattened tensors; only channel concatenation of feature maps is supported")
            segments.extend((seed, offset + o, k) for seed, o, k in c[0])
        offset += ch
    return (tuple(segments), 1, offset) if segments else None


@dataclass(frozen=True)
class Permutation:
    """Result of a matching.

    Attributes:
        perms: ``perms[group][i]`` is the unit of B matched to unit ``i`` of A.
        sweeps: the coordinate-descent sweeps (weight matching) that were run.

    References:
        Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin: merging models modulo permutation
        symmetries" (ICLR).

    Example:
        >>> Permutation({"fc0": np.array([1, 0])}).is_identity()
        False
    """

    perms: dict[str, np.ndarray]
    sweeps: int = 0

    def is_identity(self) -> bool:
        """``True`` when every group's permutation is the identity."""
        return all(np.array_equal(p, np.arange(len(p))) for p in self.perms.values())


def _take(array: np.ndarray, perm: np.ndarray, ax: Axis) -> np.ndarray:
    """Permute the group's units of ``array`` along ``ax`` (``repeat`` blocks of ``period``
    channels, the group at ``offset`` in each)."""
    a = np.moveaxis(np.asarray(array), ax.axis, 0)
    n = len(perm)
    blocks = a.reshape(ax.repeat, ax.period or n, *a.shape[1:]).copy()
    seg = slice(ax.offset, ax.offset + n)
    blocks[:, seg] = blocks[:, seg][:, perm]
    return np.moveaxis(blocks.reshape(a.shape), 0, ax.axis)


def _as_perms(perm) -> dict[str, np.ndarray]:
    return perm.perms if isinstance(perm, Permutation) else dict(perm)


def apply_permutation(model: Model, params, perm) -> dict:
    """Permute the hidden units of ``params`` by ``perm``.

    Every axis of the spec (:func:`permutation_spec`) is reindexed, ``new[..., i] =
    old[..., perm[i]]``; the network's function is unchanged (up to float rounding).

    Args:
        model: the network.
        params: its parameters.
        perm: a ``Permutation`` or a dict group -> index array.

    Returns:
        dict: the permuted parameters.

    References:
        Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin: merging models modulo permutation
        symmetries" (ICLR).

    Example:
        >>> import jax, dynkit as dk
        >>> model = dk.models.mlp(2, [3], 2)
        >>> params, x = model.init(jax.random.PRNGKey(0)), np.ones((1, 2))
        >>> permuted = apply_permutation(model, params, {"fc0": np.array([2, 0, 1])})
        >>> np.allclose(model.apply(permuted, x), model.apply(params, x))
        True
    """
    spec = permutation_spec(model)
    perms = _as_perms(perm)
    unknown = set(perms) - set(spec.groups)
    if unknown:
        raise InvalidArgumentError(f"permutation has groups {sorted(unknown)} that "
                                   f"{model.arch!r} does not have; groups: {sorted(spec.groups)}")
    out = {n: {k: np.asarray(v) for k, v in p.items()} for n, p in params.items()}
    for g, p in perms.items():
        if sorted(np.asarray(p).tolist()) != list(range(spec.sizes[g])):
            raise InvalidArgumentError(f"perm for group {g!r} is not a permutation of "
                                       f"range({spec.sizes[g]})")
        for ax in spec.groups[g]:
            out[ax.node][ax.param] = _take(out[ax.node][ax.param], np.asarray(p), ax)
    return out


def _effective(model: Model, params) -> dict:
    """float64 copies of the trained parameters, weights and biases times their multipliers."""
    eff = {}
    for n in model.nodes:
        if n.name in params:
            p = {k: np.asarray(v, np.float64) for k, v in params[n.name].items()
                 if k not in ("mean", "var")}
            if "w" in p:
                p["w"], b = model.effective_affine(params, n.name, dtype=np.float64)
                if b is not None:
                    p["b"] = b
            eff[n.name] = p
    return eff


def weight_matching(model: Model, params_a, params_b, *, max_sweeps: int = 100,
                    seed: int = 0) -> Permutation:
    """Align B to A by weight matching (Ainsworth et al. 2023, Algorithm 1).

    Maximize ``Σ_l ⟨W_l^A, P_l W_l^B P_{l-1}^T⟩`` over the permutations of every group by
    coordinate descent: visit the groups in random order, solve each linear assignment
    ``max_P Σ_{axes of g} ⟨W^A_{(g)}, P W^B_{(g)}⟩`` with
    ``scipy.optimize.linear_sum_assignment`` with the other permutations fixed, and stop after a
    sweep that improves nothing. Effective weights (multiplier × stored weight) are matched;
    running BatchNorm statistics are permuted but not matched.

    Args:
        model: the common architecture.
        params_a: the reference network A.
        params_b: the network B to align.
        max_sweeps: upper limit on the sweeps.
        seed: seed of the visiting order.

    Returns:
        ``Permutation``; apply it to B with :func:`apply_permutation`.

    References:
        Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin: merging models modulo permutation
        symmetries" (ICLR).

    Example:
        >>> import jax, dynkit as dk
        >>> model = dk.models.mlp(2, [4, 4], 2)
        >>> pa = model.init(jax.random.PRNGKey(0))
        >>> pb = apply_permutation(model, pa, {"fc0": np.array([3, 1, 0, 2]),
        ...                                    "fc1": np.array([1, 0, 3, 2])})
        >>> aligned = apply_permutation(model, pb, weight_matching(model, pa, pb))
        >>> all(np.allclose(aligned[k]["w"], pa[k]["w"]) for k in pa)
        True
    """
    model.check_params(params_a, params_b)
    spec = permutation_spec(model)
    a, b = _effective(model, params_a), _effective(model, params_b)
    owners: dict[tuple[str, str], list[tuple[str, Axis]]] = {}
    for g, axes in spec.groups.items():
        for ax in axes:
            if ax.param in a.get(ax.node, {}):
                owners.setdefault((ax.node, ax.param), []).append((g, ax))
    perms = {g: np.arange(n) for g, n in spec.sizes.items()}
    rng = np.random.default_rng(seed)
    sweeps = 0
    for sweeps in range(1, max_sweeps + 1):
        improved = False
        for g in rng.permutation(sorted(spec.groups)):
            n = spec.sizes[g]
            cost = np.zeros((n, n))
            for ax in spec.groups[g]:
                if (ax.node, ax.param) not in owners:
                    continue
                wb = b[ax.node][ax.param]
                for other, oax in owners[(ax.node, ax.param)]:
                    if other != g:
                        wb = _take(wb, perms[other], oax)
                cost += _unit_matrix(a[ax.node][ax.param], ax, n) @ _unit_matrix(wb, ax, n).T
            _, cols = linear_sum_assignment(cost, maximize=True)
            gain = cost[np.arange(n), cols].sum() - cost[np.arange(n), perms[g]].sum()
            if gain > 1e-12 * max(1.0, abs(cost).max()):
                improved = True
                perms[g] = cols
        if not improved:
            break
    return Permutation(perms, sweeps)


def _unit_matrix(w: np.ndarray, ax: Axis, n: int) -> np.ndarray:
    """``(n, rest)``: row ``i`` holds every weight attached to unit ``i`` along ``ax``."""
    moved = np.moveaxis(w, ax.axis, 0).reshape(ax.repeat, ax.period or n, -1)
    moved = moved[:, ax.offset:ax.offset + n]
    return np.moveaxis(moved, 1, 0).reshape(n, -1)


def activation_similarity(model: Model, params_a, params_b, x, *, objective: str = "repair",
                          batch_size: int = 512) -> dict[str, np.ndarray]:
    """The unit-similarity matrix of every permutation group that activation matching maximizes.

    Entry ``(i, j)`` of group ``g``'s matrix scores unit ``i`` of A against unit ``j`` of B;
    channel-last spatial positions count as samples, moments are population moments (1/n):

    * ``"repair"`` (default): Pearson correlation of post-activation (post-ReLU) values,
      ``Cov(a_i, b_j) / (σ(a_i) σ(b_j))``, as REPAIR (Jordan et al. 2023) matches units; a dead
      unit (zero variance) correlates 0 with everything. The notebooks average per-batch
      standard deviations and add 1e-4 to the denominator; here the moments are exact.
    * ``"rebasin"``: Git Re-Basin's (Ainsworth et al. 2023, Eq. 1) un-normalized cross inner
      product of post-activation values, ``E[a_i b_j]`` (its code forms
      ``Cov/(n − 1) + μ_a μ_bᵀ``; the 1/n moment here is the paper's ``Z_Aᵀ Z_B / n``).
    * ``"pearson_all_nodes"``: the Pearson correlation summed over every node that carries the
      group (pre- and post-activation outputs, BatchNorm, pooling, flatten, residual sums), with
      1e-12 added to each standard deviation; dynkit's objective before the published ones
      were offered.

    ``"repair"`` and ``"rebasin"`` sum their matrix over the group's post-activation nodes:
    one node per group in an MLP or plain CNN, every block output of a residual stream
    (REPAIR's ResNet notebooks match a stream on its last block output only).

    Args:
        model: the common architecture of both networks.
        params_a, params_b: the two networks' parameters.
        x: inputs on which the activations are measured.
        objective: one of ``ACTIVATION_OBJECTIVES``.
        batch_size: inputs per forward pass (moments are streamed in float64).

    Returns:
        dict: group name -> ``(C, C)`` float64 matrix.

    Raises:
        InvalidArgumentError: unknown ``objective``, or a group without a post-activation node
            for ``"repair"``/``"rebasin"``.

    References:
        Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin", Sec. 3.1; Jordan, Sedghi, Saukh,
        Entezari & Neyshabur 2023, "REPAIR", Sec. 3; Li et al. 2016, "Convergent learning".

    Example:
        >>> import jax, numpy as np, dynkit as dk
        >>> model = dk.models.mlp(4, [8], 3)
        >>> p = model.init(jax.random.PRNGKey(0))
        >>> x = np.random.default_rng(0).normal(size=(64, 4))
        >>> sim = activation_similarity(model, p, p, x)  # a network against itself
        >>> bool(np.allclose(np.diag(sim["fc0"]), 1.0))
        True
    """
    if objective not in ACTIVATION_OBJECTIVES:
        raise InvalidArgumentError(f"objective must be one of {ACTIVATION_OBJECTIVES}, "
                                   f"got {objective!r}")
    model.check_params(params_a, params_b)
    spec = permutation_spec(model)
    ops = {n.name: n.op for n in model.nodes}
    used = {}
    for g, members in spec.members.items():
        used[g] = (members if objective == "pearson_all_nodes"
                   else tuple(m for m in members if ops[m] in _ACTIVATIONS))
        if not used[g]:
            raise InvalidArgumentError(
                f"group {g!r} of {model.arch!r} has no post-activation node; objective "
                f"{objective!r} needs one (use objective='pearson_all_nodes')")
    width = {m: spec.sizes[g] for g, ms in used.items() for m in ms}
    names = sorted(width)
    stats = {m: _CrossMoments(width[m]) for m in names}
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        za = model.intermediates(params_a, xb, names)
        zb = model.intermediates(params_b, xb, names)
        for m in names:  # channel-last: (batch, ..., C) flattens to rows of C units
            stats[m].update(np.asarray(za[m], np.float64).reshape(-1, width[m]),
                            np.asarray(zb[m], np.float64).reshape(-1, width[m]))
    score = {"rebasin": _CrossMoments.inner, "repair": _CrossMoments.correlation,
             "pearson_all_nodes": lambda s: s.correlation(eps=1e-12)}[objective]
    return {g: sum(score(stats[m]) for m in ms) for g, ms in used.items()}


def activation_matching(model: Model, params_a, params_b, x, *, objective: str = "repair",
                        batch_size: int = 512) -> Permutation:
    """Align B to A by activation matching (Ainsworth et al. 2023; Li et al. 2016).

    For each group ``g``, ``π_g = argmax_π Σ_i S_g[i, π(i)]`` with ``S_g`` the similarity of
    ``activation_similarity`` (``objective``: ``"repair"`` Pearson correlation, the default;
    ``"rebasin"`` ``E[a bᵀ]``; ``"pearson_all_nodes"``), solved exactly with
    ``scipy.optimize.linear_sum_assignment``. Groups are matched independently. The default
    ``"repair"`` is scale-invariant like dynkit's earlier objective and is what REPAIR's
    notebooks use for every architecture (Git Re-Basin's code uses ``E[a bᵀ]`` for its MLPs and
    the Pearson correlation for its VGG).

    Args:
        model: the common architecture of both networks.
        params_a, params_b: the two networks' parameters; B is aligned to A.
        x: inputs on which the activations are measured.
        objective: one of ``ACTIVATION_OBJECTIVES`` (see ``activation_similarity``).
        batch_size: inputs per forward pass.

    Returns:
        Permutation: ``perms[g][i]`` is the unit of B matched to unit ``i`` of A.

    References:
        Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin", Sec. 3.1; Jordan et al. 2023,
        "REPAIR"; Li, Yosinski, Clune, Lipson & Hopcroft 2016, "Convergent learning".

    Example:
        >>> import jax, numpy as np, dynkit as dk
        >>> model = dk.models.mlp(4, [8], 3)
        >>> p = model.init(jax.random.PRNGKey(0))
        >>> shuffled = apply_permutation(model, p, {"fc0": np.roll(np.arange(8), 1)})
        >>> x = np.random.default_rng(0).normal(size=(64, 4))
        >>> activation_matching(model, p, shuffled, x, objective="rebasin").perms["fc0"]
        array([1, 2, 3, 4, 5, 6, 7, 0])
    """
    sim = activation_similarity(model, params_a, params_b, x, objective=objective,
                                batch_size=batch_size)
    return Permutation({g: linear_sum_assignment(s, maximize=True)[1] for g, s in sim.items()},
                       0)


class _CrossMoments:
    """Streaming first and second moments of paired unit activations (float64)."""

    def __init__(self, c: int):
        self.n = 0
        self.sa, self.sb = np.zeros(c), np.zeros(c)
        self.saa, self.sbb, self.sab = np.zeros(c), np.zeros(c), np.zeros((c, c))

    def update(self, za: np.ndarray, zb: np.ndarray) -> None:
        self.n += len(za)
        self.sa += za.sum(0)
        self.sb += zb.sum(0)
        self.saa += (za**2).sum(0)
        self.sbb += (zb**2).sum(0)
        self.sab += za.T @ zb

    def inner(self) -> np.ndarray:
        return self.sab / self.n

    def correlation(self, eps: float = 0.0) -> np.ndarray:
        """Pearson correlation ``Cov(a_i, b_j) / ((σ_i + eps)(σ_j + eps))``. With ``eps = 0`` a
        unit that is constant up to rounding (variance ≤ 1e-12 × its second moment, e.g. a
        dead ReLU) correlates 0 with every unit."""
        ma, mb = self.sa / self.n, self.sb / self.n
        cov = self.sab / self.n - np.outer(ma, mb)
        va = np.maximum(self.saa / self.n - ma**2, 0)
        vb = np.maximum(self.sbb / self.n - mb**2, 0)
        if eps == 0:
            va = np.where(va > 1e-12 * self.saa / self.n, va, np.inf)
            vb = np.where(vb > 1e-12 * self.sbb / self.n, vb, np.inf)
        return cov / np.outer(np.sqrt(va) + eps, np.sqrt(vb) + eps)
