"""Permutation symmetry of a dynkit graph: the permutation spec, weight and activation matching.

Hidden units of a ReLU network can be permuted without changing its function. Git Re-Basin
(Ainsworth, Hayase & Srinivasa 2023) aligns network B to network A by choosing, for every
permutable channel group, the permutation that maximises the summed inner products of the
weights touching it (weight matching), or the correlation of the units' activations on data
(activation matching).

The spec is derived from the layer graph:

* each dense/conv node not feeding the logits opens a *group* (its output channels);
* channel-preserving ops (relu, act, batchnorm, pools, global pooling, scale) pass the group on;
* ``add`` ties the groups of its inputs (residual streams share one permutation);
* ``flatten`` passes the group on with a repeat factor: channel-last flattening sends index
  ``s·C + c`` to ``s·C + π(c)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.models.graph import Model

#: Ops whose output channels are their input channels.
_CHANNEL_PRESERVING = ("relu", "act", "batchnorm", "maxpool", "avgpool", "global_avgpool", "scale")


@dataclass(frozen=True)
class Axis:
    """One parameter axis permuted by a group: ``params[node][param]`` along ``axis``, whose
    length is ``repeat × group size`` (channel-last blocks after a flatten)."""

    node: str
    param: str
    axis: int
    repeat: int = 1


@dataclass(frozen=True)
class PermutationSpec:
    """``groups``: group name -> the parameter axes it permutes; ``members``: group name ->
    nodes whose outputs carry the group's channels (for activation matching);
    ``sizes``: group name -> number of channels."""

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


def permutation_spec(model: Model) -> PermutationSpec:
    """Derive the permutation spec of ``model`` from its layer graph (module docstring)."""
    shapes = model.node_shapes()
    uf = _UnionFind()
    carried: dict[str, tuple[str, int] | None] = {}  # node -> (group seed, repeat) or None
    for n in model.nodes:
        if n.op == "input":
            carried[n.name] = None
        elif n.op in ("dense", "conv"):
            carried[n.name] = (n.name, 1)
            uf.find(n.name)
        elif n.op in _CHANNEL_PRESERVING:
            carried[n.name] = carried[n.inputs[0]]
        elif n.op == "flatten":
            src = carried[n.inputs[0]]
            if src is None:
                carried[n.name] = None
            else:
                spatial = int(np.prod(shapes[n.inputs[0]][:-1]))
                carried[n.name] = (src[0], src[1] * spatial)
        elif n.op == "add":
            ins = [carried[s] for s in n.inputs]
            if any(c is None for c in ins):
                if not all(c is None for c in ins):
                    raise InvalidArgumentError(f"add node {n.name!r} mixes the input with "
                                               "hidden units")
                carried[n.name] = None
                continue
            for c in ins[1:]:
                uf.union(ins[0][0], c[0])
            carried[n.name] = ins[0]
        else:
            raise InvalidArgumentError(f"permutation spec: unsupported op {n.op!r} "
                                       f"at node {n.name!r}")

    # The group reaching the logits is not permutable, nor anything tied to it.
    blocked = set()
    if carried[model.output] is not None:
        blocked.add(uf.find(carried[model.output][0]))

    groups: dict[str, list[Axis]] = {}
    members: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for n in model.nodes:
        c = carried[n.name]
        if c is not None and uf.find(c[0]) not in blocked:
            g = uf.find(c[0])
            members.setdefault(g, []).append(n.name)
            if n.op in ("dense", "conv"):
                sizes[g] = n.attrs["out_dim" if n.op == "dense" else "out_ch"]
                groups.setdefault(g, []).append(Axis(n.name, "w", -1))
                if n.attrs.get("bias", True):
                    groups.setdefault(g, []).append(Axis(n.name, "b", 0))
            elif n.op == "batchnorm":
                groups.setdefault(g, []).extend(
                    Axis(n.name, k, 0) for k in ("scale", "bias", "mean", "var"))
        if n.op in ("dense", "conv"):
            src = carried[n.inputs[0]]
            if src is not None and uf.find(src[0]) not in blocked:
                groups.setdefault(uf.find(src[0]), []).append(Axis(n.name, "w", -2, src[1]))
    return PermutationSpec({g: tuple(a) for g, a in groups.items()},
                           {g: tuple(m) for g, m in members.items()}, sizes)


@dataclass(frozen=True)
class Permutation:
    """Result of a matching: ``perms[group][i]`` is the unit of B matched to unit ``i`` of A;
    ``sweeps`` counts the coordinate-descent sweeps (weight matching) that were run."""

    perms: dict[str, np.ndarray]
    sweeps: int = 0

    def is_identity(self) -> bool:
        return all(np.array_equal(p, np.arange(len(p))) for p in self.perms.values())


def _take(array: np.ndarray, perm: np.ndarray, axis: int, repeat: int) -> np.ndarray:
    """Permute ``array`` along ``axis``, whose length is ``repeat`` blocks of ``len(perm)``."""
    a = np.moveaxis(np.asarray(array), axis, 0)
    n = len(perm)
    blocks = a.reshape(repeat, n, *a.shape[1:])
    return np.moveaxis(blocks[:, perm].reshape(a.shape), 0, axis)


def _as_perms(perm) -> dict[str, np.ndarray]:
    return perm.perms if isinstance(perm, Permutation) else dict(perm)


def apply_permutation(model: Model, params, perm) -> dict:
    """Permute the hidden units of ``params`` by ``perm`` (a ``Permutation`` or a dict
    group -> index array). The network's function is unchanged (up to float rounding)."""
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
            out[ax.node][ax.param] = _take(out[ax.node][ax.param], np.asarray(p), ax.axis,
                                           ax.repeat)
    return out


def _check_compatible(model: Model, *param_sets) -> None:
    expected = model.param_shapes()
    for i, params in enumerate(param_sets):
        for node, shapes in expected.items():
            for k, shape in shapes.items():
                got = tuple(np.shape(params.get(node, {}).get(k, ())))
                if got != tuple(shape):
                    raise ShapeMismatchError(
                        f"params #{i + 1} do not fit {model.arch!r}: {node}.{k} has shape {got}, "
                        f"expected {tuple(shape)}")


def _effective(model: Model, params) -> dict:
    """float64 copies of the trained parameters, weights times their multipliers."""
    eff = {}
    for n in model.nodes:
        if n.name in params:
            p = {k: np.asarray(v, np.float64) for k, v in params[n.name].items()
                 if k not in ("mean", "var")}
            if "w" in p:
                p["w"] = p["w"] * n.attrs["w_mult"]
            if "b" in p:
                p["b"] = p["b"] * n.attrs.get("b_mult", 1.0)
            eff[n.name] = p
    return eff


def weight_matching(model: Model, params_a, params_b, *, max_sweeps: int = 100,
                    seed: int = 0) -> Permutation:
    """Align B to A by weight matching (Ainsworth et al. 2023, Algorithm 1).

    Maximise ``Σ_l ⟨W_l^A, P_l W_l^B P_{l-1}^T⟩`` over the permutations of every group by
    coordinate descent: visit the groups in random order, solve each linear assignment
    ``max_P Σ_{axes of g} ⟨W^A_{(g)}, P W^B_{(g)}⟩`` with ``scipy.optimize.linear_sum_assignment``
    with the other permutations fixed, and stop after a sweep that improves nothing.
    Effective weights (multiplier × stored weight) are matched; running BatchNorm statistics
    are permuted but not matched."""
    _check_compatible(model, params_a, params_b)
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
                        wb = _take(wb, perms[other], oax.axis, oax.repeat)
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
    moved = np.moveaxis(w, ax.axis, 0).reshape(ax.repeat, n, -1)
    return np.moveaxis(moved, 1, 0).reshape(n, -1)


def activation_matching(model: Model, params_a, params_b, x, *,
                        batch_size: int = 512) -> Permutation:
    """Align B to A by activation matching (Ainsworth et al. 2023; Li et al. 2016).

    For each group, ``P = argmax_P Σ_{i} Corr(Z^A, Z^B)_{i, P(i)}``, where the correlation of
    every unit pair is summed over the nodes carrying the group (spatial positions count as
    samples); solved with ``linear_sum_assignment``."""
    _check_compatible(model, params_a, params_b)
    spec = permutation_spec(model)
    width = {m: spec.sizes[g] for g, ms in spec.members.items() for m in ms}
    names = sorted(width)
    stats = {m: _CrossMoments(width[m]) for m in names}
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        za = model.intermediates(params_a, xb, names)
        zb = model.intermediates(params_b, xb, names)
        for m in names:  # channel-last: (batch, ..., C) flattens to rows of C units
            stats[m].update(np.asarray(za[m], np.float64).reshape(-1, width[m]),
                            np.asarray(zb[m], np.float64).reshape(-1, width[m]))
    perms = {}
    for g, members in spec.members.items():
        corr = sum(stats[m].correlation() for m in members)
        perms[g] = linear_sum_assignment(corr, maximize=True)[1]
    return Permutation(perms, 0)


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

    def correlation(self) -> np.ndarray:
        ma, mb = self.sa / self.n, self.sb / self.n
        cov = self.sab / self.n - np.outer(ma, mb)
        sa = np.sqrt(np.maximum(self.saa / self.n - ma**2, 0)) + 1e-12
        sb = np.sqrt(np.maximum(self.sbb / self.n - mb**2, 0)) + 1e-12
        return cov / np.outer(sa, sb)
