"""Empirical (finite-width) neural tangent kernel of a network at given parameters.

The empirical NTK of ``f(θ, x) ∈ R^{O}`` (Jacot, Gabriel & Hongler 2018) is

    Θ(x, x')_{ab} = Σ_p ∂f_a(θ, x)/∂θ_p · ∂f_b(θ, x')/∂θ_p = [J(x) J(x')ᵀ]_{ab}.

``ntk_fn(apply_fn, method)`` returns ``kernel(x1, x2, params)`` following the conventions of
neural-tangents' ``empirical_ntk_fn`` (Novak et al. 2022, "Fast Finite Width Neural Tangent
Kernel"), so that its numbers match the golden files in ``tests/data/neural_tangents``:

* ``trace_axes``: output axes (of ``f(x)``, batch axis included, default ``(-1,)`` = logits)
  over which the kernel is *traced*, i.e. **averaged**: ``Θ(x, x') = (1/O) Σ_a Θ_aa``;
* ``diagonal_axes``: output axes over which only the diagonal ``a = b`` is kept (``(0,)``
  gives ``Θ(x_i, x_i)`` only);
* other axes appear in pairs, zipped: ``trace_axes=()`` gives shape ``(N1, N2, O, O)``.

Methods (all exact; they differ in cost only; ``P`` = number of trained parameters,
``N`` = inputs per tile, ``O`` = logits, ``O_c`` = ``O`` if traced else ``O²``):

* ``"jacobian"``: per-example Jacobians with ``jax.jacrev`` (``vmap`` over examples) contracted
  leaf by leaf. Time ``~ N O P + N² O_c P``, memory ``N O P``.
* ``"ntvp"``: NTK-vector products: for every basis cotangent ``e_{m,b}`` of ``f(x2)`` the VJP
  ``v = J(x2)ᵀ e`` followed by the JVP ``J(x1) v`` gives one kernel column. Time ``~ N² O P``.
  Columns are computed ``chunk`` at a time (``jax.lax.map``), and each JVP runs over ``rows``
  inputs of ``x1`` at a time, both sized by ``ntvp_plan`` so that the working set

      chunk · (P + A_b + rows · A) · itemsize  ≤  NTVP_MEMORY_BYTES

  holds, ``A`` = the *activation footprint* of one example (total size of every intermediate
  value of ``f`` on one input, from its jaxpr: an upper bound on what a batched JVP/VJP
  keeps per example and tangent) and ``A_b = A`` (``vmap_axes=0``: one example per VJP) or
  ``N2 · A`` (``vmap_axes=None``). The bound holds for any model; only a single example whose
  own footprint exceeds the budget can go over it.
* ``"structured"``: for ``dynkit`` graph models only. One forward pass records each
  dense/conv layer's input ``a`` (conv: its patches, ``jax.lax.conv_general_dilated_patches``),
  and ``O`` VJPs with respect to zero *probes* added to every layer output give the output
  cotangents ``g`` of each logit. A layer ``y = w_mult · (a @ w) + b_mult · b`` contributes

      Θ_ab(x, x') += w_mult² Σ_{s,t} ⟨a_s, a'_t⟩ ⟨g_{a,s}, g'_{b,t}⟩
                     + b_mult² ⟨Σ_s g_{a,s}, Σ_t g'_{b,t}⟩

  (``s, t`` spatial positions; a dense layer has one), evaluated either in this Gram form or
  through the layer's own Jacobian ``Σ_s a_s ⊗ g_{a,s}``, whichever costs fewer flops.
  BatchNorm (eval mode) adds ``⟨Σ_s x̂_s g_s, Σ_t x̂'_t g'_t⟩ + ⟨Σ_s g_s, Σ_t g'_t⟩`` for its
  ``scale`` and ``bias``. No derivative with respect to θ is taken: a layer in the Jacobian
  form holds its per-example Jacobian ``(N, O, K, C)``, one in the Gram form only ``a, g``.
* ``"auto"`` (see ``choose_method``): ``"structured"`` for dynkit models; otherwise
  ``"jacobian"`` when it costs fewer flops than ``"ntvp"`` by the estimates above (with a
  forward pass at ``2P`` flops per example) and its Jacobians fit in ``JACOBIAN_MEMORY_BYTES``,
  else ``"ntvp"``. So: traced kernels and few logits use the Jacobian, full kernels with more
  than about three logits use NTK-vector products.

Tiling (``batch_size``): every method is split into ``prep`` (per tile of inputs: the
per-example Jacobians, the structured layer factors, or the inputs themselves for ``"ntvp"``)
and ``pair`` (two tiles' factors -> a kernel block). ``prep`` runs once per row tile and once
per column tile of that row, and only one block is in flight at a time, so memory is that of
two tiles' factors. With ``x2 = None`` only the blocks on and above the diagonal are computed
(a diagonal block reuses its row's factors). Compiled programs are shared by every kernel made
from the same model or ``apply_fn`` (``_programs``).

``"structured"`` asked for an arbitrary ``apply_fn`` (no layer graph to read) falls back to the
``"auto"`` choice between ``"jacobian"`` and ``"ntvp"`` with a ``UserWarning``.

For dynkit models (pass the ``Model``, ``model.apply`` or use ``model_ntk_fn``) the kernel is
taken in eval mode with respect to the *trainable* parameters only: BatchNorm running
statistics are split off with ``dynkit.models.split_params`` and held fixed.
"""

from __future__ import annotations

import math
import string
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from typing import Any

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.models.graph import Model, merge_params, split_params
from dynkit.validation import check_finite

METHODS = ("auto", "jacobian", "ntvp", "structured")

#: Largest total size of the per-tile Jacobians ``"auto"`` accepts for ``"jacobian"``.
JACOBIAN_MEMORY_BYTES = 2**30
#: Working-set budget of one chunk of NTK-vector products (``ntvp_plan``).
NTVP_MEMORY_BYTES = 2**30


# ============================================================================ public API
def ntk_fn(
    apply_fn: Callable | Model,
    method: str = "auto",
    trace_axes: Sequence[int] = (-1,),
    diagonal_axes: Sequence[int] = (),
    vmap_axes: int | None = 0,
    batch_size: int | None = None,
) -> Callable:
    """Empirical NTK function ``kernel(x1, x2=None, params)`` of ``apply_fn(params, x)``.

    ``Θ(x1, x2) = J(x1) J(x2)ᵀ`` with ``J = ∂f/∂θ`` (Jacot et al. 2018), traced/diagonalised
    over output axes as in neural-tangents (module docstring; "traced" means the mean).

    ``apply_fn``: any ``f(params, x)`` on a batch ``x`` (params any pytree), or a dynkit
    ``Model`` / bound ``model.apply`` (then ``model_ntk_fn`` is used: eval mode, trainable
    parameters only, ``"structured"`` available). ``vmap_axes=0`` declares that examples are
    independent along axis 0 (per-example Jacobians are used); ``None`` differentiates the
    whole batch (for functions that mix examples). ``batch_size`` tiles ``x1`` and ``x2`` so
    that at most ``batch_size`` inputs of each are processed at once (memory bound).
    ``x2=None`` means ``x2 = x1`` (symmetric tiles are computed once).
    """
    model = _as_model(apply_fn)
    if model is not None:
        return model_ntk_fn(model, method, trace_axes, diagonal_axes, vmap_axes, batch_size)
    _check_options(method, vmap_axes, batch_size)
    if method == "structured":
        warnings.warn(
            "method='structured' needs a dynkit Model (its layer graph); got an arbitrary "
            "apply_fn, so falling back to the 'auto' choice between 'jacobian' and 'ntvp'",
            UserWarning, stacklevel=2,
        )
        method = "auto"

    shapes: dict = {}

    def prepare(params, x1, x2):
        key = _signature(params, x1, x2)
        if key not in shapes:
            out = _generic_output_shape(apply_fn, params, x1)
            if x2 is not None:
                _generic_output_shape(apply_fn, params, x2)
            shapes[key] = out
        return params, None, shapes[key]

    return _kernel_fn(apply_fn, prepare, method, trace_axes, diagonal_axes, vmap_axes,
                      batch_size)


def model_ntk_fn(
    model: Model,
    method: str = "auto",
    trace_axes: Sequence[int] = (-1,),
    diagonal_axes: Sequence[int] = (),
    vmap_axes: int | None = 0,
    batch_size: int | None = None,
) -> Callable:
    """Empirical NTK ``kernel(x1, x2=None, params)`` of a dynkit ``Model`` in eval mode.

    ``params`` is the model's full parameter dict; the kernel is taken with respect to its
    trainable part only (``split_params``: BatchNorm ``mean``/``var`` are held fixed), i.e.
    ``Θ = Σ_{θ trainable} ∂f(x1)/∂θ ∂f(x2)/∂θ``. Arguments as in ``ntk_fn``; all four methods
    are available and ``"auto"`` means ``"structured"``.
    """
    if not isinstance(model, Model):
        raise InvalidArgumentError(f"model_ntk_fn needs a dynkit Model, got {type(model)}")
    _check_options(method, vmap_axes, batch_size)

    shapes: dict = {}

    def prepare(params, x1, x2):
        for name, x in (("x1", x1), ("x2", x2)):
            if x is not None and tuple(x.shape[1:]) != tuple(model.input_shape):
                raise ShapeMismatchError(
                    f"{name} has shape {tuple(x.shape)} but model {model.arch!r} expects "
                    f"inputs of shape (batch, {', '.join(map(str, model.input_shape))})"
                )
        _check_model_params(model, params)
        trainable, stats = split_params(params)
        key = _signature(params, x1, None)
        if key not in shapes:
            shapes[key] = jax.eval_shape(partial(model.apply, params), x1)
        return trainable, stats, shapes[key]

    return _kernel_fn(model, prepare, method, trace_axes, diagonal_axes, vmap_axes,
                      batch_size)


def choose_method(num_params: int, n1: int, n2: int, out_size: int, traced: bool,
                  itemsize: int = 4, structured: bool = False) -> str:
    """The method ``"auto"`` picks (see the module docstring for the cost model).

    ``structured=True`` (a dynkit model) always gives ``"structured"``. Otherwise, with
    ``F = 2P`` flops per example and ``O_c = O`` (traced) or ``O²``:
    ``cost_jacobian = 3F (N1 + N2) O + 2 N1 N2 O_c P`` and ``cost_ntvp = 3F N2 O (1 + N1)``;
    ``"jacobian"`` if it is not dearer and ``(N1 + N2) O P · itemsize`` fits in
    ``JACOBIAN_MEMORY_BYTES``, else ``"ntvp"``.
    """
    if structured:
        return "structured"
    p, o = float(num_params), float(out_size)
    oc = o if traced else o * o
    f = 2.0 * p
    cost_jac = 3 * f * (n1 + n2) * o + 2.0 * n1 * n2 * oc * p
    cost_ntvp = 3 * f * n2 * o * (1 + n1)
    fits = (n1 + n2) * o * p * itemsize <= JACOBIAN_MEMORY_BYTES
    return "jacobian" if cost_jac <= cost_ntvp and fits else "ntvp"


def ntvp_plan(num_params: int, footprint: int, n1: int, n2: int, out_size: int,
              itemsize: int = 4, whole_batch: bool = False,
              budget: int | None = None) -> tuple[int, int]:
    """``(chunk, rows)`` for ``"ntvp"``: ``chunk`` kernel columns per step, each JVP over
    ``rows`` inputs of ``x1`` at a time, so that (module docstring)

        chunk · (P + A_b + rows · A) · itemsize  ≤  budget  (default ``NTVP_MEMORY_BYTES``),

    ``A = footprint`` (elements per example, ``activation_footprint``), ``A_b = A`` or, with
    ``whole_batch`` (``vmap_axes=None``: the VJP runs on all ``N2`` inputs and the JVP cannot
    split ``x1``), ``A_b = N2 · A`` and ``rows = N1``. Otherwise the JVP gets at most half the
    budget: ``rows = min(N1, ⌊budget / (2 A itemsize)⌋)``. Both are at least 1 and
    ``chunk ≤ N2 · O`` (the number of columns)."""
    budget = NTVP_MEMORY_BYTES if budget is None else budget
    a = max(1, int(footprint))
    if whole_batch:
        rows, a_b = n1, n2 * a
    else:
        rows, a_b = max(1, min(n1, budget // (2 * a * itemsize))), a
    per_column = (num_params + a_b + rows * a) * itemsize
    chunk = max(1, min(n2 * out_size, budget // per_column))
    return int(chunk), int(rows)


def activation_footprint(fn: Callable, *args) -> int:
    """Total number of elements of every intermediate value of ``fn(*args)``: the outputs of
    all equations of its jaxpr, nested jaxprs (``jit``, ``custom_jvp``, ...) included. It
    bounds what a forward pass, and so a JVP or a VJP, holds at once (per tangent)."""
    return _jaxpr_size(jax.make_jaxpr(fn)(*args).jaxpr)


def _jaxpr_size(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += sum(math.prod(getattr(v.aval, "shape", ())) for v in eqn.outvars)
        total += sum(_jaxpr_size(sub) for sub in jax.extend.core.jaxprs_in_params(eqn.params))
    return total


# ============================================================================ driver
@lru_cache(maxsize=8)
def _programs(owner, vmap_axes):
    """Jitted programs for ``owner`` (a dynkit Model or an ``apply_fn``), built once and shared
    by every kernel made from it (the 8 most recent owners are kept): XLA compiling the
    differentiated network dominates the cost of small kernels, and kernels made in a loop, or
    a traced and a full ``"ntvp"`` kernel, reuse one compilation. Returns
    ``apply(p, const, x)``, the ``"ntvp"`` block, and per factor method (``"jacobian"``,
    ``"structured"`` for a Model) a pair ``(prep, block)``: ``prep(x, p, const)`` gives a tile's
    factors and ``block(xa, xb, p, const)`` the whole single-tile kernel in one program (XLA
    then frees factors layer by layer)."""
    if isinstance(owner, Model):
        def apply(p, const, x):
            return owner.apply(merge_params(p, const), x)
    else:
        def apply(p, const, x):
            return owner(p, x)

    factors = {"jacobian": (partial(_jacobian_factors, apply, vmap_axes), vmap_axes == 0)}
    if isinstance(owner, Model):  # its factors depend on the tile sizes and on tracing
        factors["structured"] = (partial(_structured_factors, owner), True)
    programs = {}
    for name, (fn, joint) in factors.items():
        static = ("pair_sizes", "traced") if name == "structured" else ()
        programs[name] = (jax.jit(fn, static_argnames=static),
                          jax.jit(partial(_single_block, fn, joint, name == "structured"),
                                  static_argnames=("traced", "pair_sizes")))
    ntvp = jax.jit(partial(_ntvp_block, apply, vmap_axes), static_argnames=("chunk", "rows"))
    return apply, ntvp, programs


def _single_block(factors, joint, structured, xa, xb, p, const, *, traced, pair_sizes=None):
    """``_contract`` of the factors of ``xa`` and ``xb`` (``None``: ``xa``) in one program;
    ``joint``: examples are independent, so both batches are factored in one pass;
    ``structured``: the factor function takes ``pair_sizes`` and ``traced``."""
    kw = {"pair_sizes": pair_sizes, "traced": traced} if structured else {}
    if xb is None:
        fa = factors(xa, p, const, **kw)
        return _contract(fa, fa, traced=traced)
    if not joint:
        return _contract(factors(xa, p, const, **kw), factors(xb, p, const, **kw), traced=traced)
    both, n = factors(jnp.concatenate([xa, xb]), p, const, **kw), xa.shape[0]
    return _contract(jax.tree.map(lambda f: f[:n], both), jax.tree.map(lambda f: f[n:], both),
                     traced=traced)


def _kernel_fn(owner, prepare, method, trace_axes, diagonal_axes, vmap_axes, batch_size):
    """Shared driver: validate, choose a method, loop over tiles, trace/diagonalise. Every
    method is a pair ``prep(x) -> factors`` of a tile, ``pair(fa, fb) -> block``."""
    model = owner if isinstance(owner, Model) else None
    try:
        apply, ntvp_core, programs = _programs(owner, vmap_axes)
    except TypeError:  # an unhashable apply_fn: programs for this kernel only
        apply, ntvp_core, programs = _programs.__wrapped__(owner, vmap_axes)
    trace_axes, diagonal_axes = tuple(trace_axes), tuple(diagonal_axes)
    footprints: dict = {}

    def kernel(x1, x2=None, params=None):
        if params is None:
            raise InvalidArgumentError("kernel(x1, x2, params): params is required")
        x1 = _as_input(x1, "x1")
        x2 = None if x2 is None else _as_input(x2, "x2")
        if x2 is not None and x1.shape[1:] != x2.shape[1:]:
            raise ShapeMismatchError(
                f"x1 and x2 must have the same feature shape; got x1 {tuple(x1.shape)} and "
                f"x2 {tuple(x2.shape)}"
            )
        check_finite("params", params)
        p, const, out = prepare(params, x1, x2)
        if out.ndim < 1 or out.shape[0] != x1.shape[0]:
            raise ShapeMismatchError(
                f"apply_fn must return an array with the batch on axis 0; for x1 of shape "
                f"{tuple(x1.shape)} it returned shape {tuple(out.shape)}"
            )
        d = tuple(out.shape[1:])
        o = math.prod(d)
        r = 1 + len(d)
        tr, dg = _canonical_axes(trace_axes, diagonal_axes, r)
        traced = set(tr) == set(range(1, r)) and not dg and r > 1
        n1 = x1.shape[0]
        n2 = n1 if x2 is None else x2.shape[0]
        if (0 in tr or 0 in dg) and n1 != n2:
            raise ShapeMismatchError(
                f"tracing or taking the diagonal over the batch axis needs as many x1 as x2 "
                f"inputs; got {n1} and {n2}"
            )
        chosen = method
        itemsize = jnp.dtype(out.dtype).itemsize
        nparams = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(p))
        bs = batch_size or max(n1, n2)
        n1t, n2t = min(bs, n1), min(bs, n2)  # inputs per tile
        if chosen == "auto":
            chosen = choose_method(nparams, n1t, n2t, o, traced, itemsize,
                                   structured=model is not None)
        if chosen == "ntvp":
            key = (_signature(p, x1, x2), bs)
            if key not in footprints:  # activations of one example (the whole tile if mixed)
                k = 1 if vmap_axes == 0 else n1t
                a = activation_footprint(partial(apply, p, const), x1[:k])
                footprints[key] = -(-a // k)
            chunk, rows = ntvp_plan(nparams, footprints[key], n1t, n2t, o, itemsize,
                                    vmap_axes is None)

            def pair(xa, xb):  # the full block is computed either way; trace it per tile
                block = ntvp_core(xa, xb, p, const, chunk=chunk, rows=rows)
                return _trace_block(block) if traced else block

            def prep(x):
                return x

            def single(xa, xb):
                return pair(xa, xa if xb is None else xb)
        else:
            prep_fn, block_fn = programs[chosen]
            sizes = tuple(sorted((n1t, n2t)))
            kw = {"pair_sizes": sizes, "traced": traced} if chosen == "structured" else {}

            def prep(x):
                return prep_fn(x, p, const, **kw)

            def pair(fa, fb):
                return _contract(fa, fb, traced=traced)

            def single(xa, xb):
                return block_fn(xa, xb, p, const, traced=traced, pair_sizes=sizes)

        K = _tiled(single, prep, pair, x1, x2, bs, traced)
        return _finalize(K, traced, d, tr, dg)

    return kernel


def _tiled(single, prep, pair, x1, x2, bs, traced):
    """``single(x1, x2)`` if both fit in one tile, else the kernel from ``bs x bs`` tiles:
    ``block = pair(prep(x1 tile), prep(x2 tile))``.

    ``prep`` (per-example Jacobians or layer factors) runs once per row tile and once per
    column tile of that row; a ragged last tile is padded to ``bs`` inputs and cut back. For
    ``x2 = None`` only the tiles on and above the diagonal are computed (a diagonal tile
    reuses its row's factors); those below are their transposes."""
    sym = x2 is None
    if x1.shape[0] <= bs and (sym or x2.shape[0] <= bs):
        return single(x1, x2)
    tiles1, tiles2 = _split(x1, bs), _split(x1 if sym else x2, bs)
    blocks: dict[tuple[int, int], Any] = {}
    rows = []
    for i, (xa, na) in enumerate(tiles1):
        fa = prep(xa)
        row = []
        for j, (xb, nb) in enumerate(tiles2):
            if sym and j < i:
                b = blocks[(j, i)]
                b = b.T if traced else jnp.transpose(b, (1, 0, 3, 2))
            else:
                # one tile in flight at a time: its factors are freed before the next ones
                b = jax.block_until_ready(pair(fa, fa if sym and i == j else prep(xb)))[:na, :nb]
            blocks[(i, j)] = b
            row.append(b)
        rows.append(jnp.concatenate(row, axis=1))
    return jnp.concatenate(rows, axis=0)


def _split(x, bs):
    """``(tile, true length)`` pairs of ``bs`` inputs, the last one zero-padded."""
    out = []
    for s in range(0, x.shape[0], bs):
        t = x[s:s + bs]
        n = t.shape[0]
        if n < bs:
            t = jnp.concatenate([t, jnp.zeros((bs - n, *t.shape[1:]), t.dtype)])
        out.append((t, n))
    return out


def _finalize(K, traced, d, tr, dg):
    """From ``(N1, N2, O, O)`` to the neural-tangents layout: pairs zipped, ``trace_axes``
    averaged out, ``diagonal_axes`` kept once, in output-axis order."""
    if traced:
        return K
    n1, n2 = K.shape[:2]
    raw = K.reshape(n1, n2, *d, *d)
    r = 1 + len(d)
    letters = iter(string.ascii_letters)
    left = [next(letters) for _ in range(r)]
    right = [left[a] if (a in tr or a in dg) else next(letters) for a in range(r)]
    sub_in = left[0] + right[0] + "".join(left[1:]) + "".join(right[1:])
    sub_out = ""
    for a in range(r):
        if a in dg:
            sub_out += left[a]
        elif a not in tr:
            sub_out += left[a] + right[a]
    sizes = (n1, *d)
    denom = math.prod(sizes[a] for a in tr)
    return jnp.einsum(f"{sub_in}->{sub_out}", raw) / denom


# ============================================================================ jacobian
def _jacobians(apply, vmap_axes, p, const, x):
    """Per-parameter-leaf Jacobians, each reshaped to ``(N, O, leaf size)``."""
    n = x.shape[0]
    if vmap_axes is None:
        jac = jax.jacrev(lambda q: apply(q, const, x))(p)
    else:
        jac = jax.vmap(lambda xi: jax.jacrev(lambda q: apply(q, const, xi[None])[0])(p))(x)
    leaves = jax.tree.leaves(jac)
    out_ndim = leaves[0].ndim - jax.tree.leaves(p)[0].ndim  # batch + output axes
    o = math.prod(leaves[0].shape[1:out_ndim])
    return [leaf.reshape(n, o, -1) for leaf in leaves]


def _jacobian_factors(apply, vmap_axes, x, p, const):
    """Per-example Jacobians of ``x``, one ``{"j": (N, O, leaf size)}`` per parameter leaf;
    ``_contract`` then gives ``Θ = Σ_leaves J(x1) J(x2)ᵀ``."""
    return [{"j": j} for j in _jacobians(apply, vmap_axes, p, const, x)]


@partial(jax.jit, static_argnames=("traced",))
def _contract(fa, fb, *, traced):
    """``Σ_terms ⟨A_a(x), B_b(x')⟩`` over the factors of two tiles (lists of dicts of
    ``(N, O, ...)`` arrays, contracted over their trailing axes), and the Gram form
    ``Σ_{s,t} ⟨u_s, u'_t⟩ ⟨g_{a,s}, g'_{b,t}⟩`` for entries holding ``u`` (N, S, K) and
    ``g`` (N, O, S, C). Traced: the mean over ``a = b``."""
    total = 0.0
    for da, db in zip(fa, fb):
        for name, a in da.items():
            if name not in ("u", "g"):
                total = total + _pair(a, db[name], traced)
        if "u" in da:
            gram = jnp.einsum("nsk,mtk->nmst", da["u"], db["u"])
            if traced:
                gg = jnp.einsum("nosc,motc->nmst", da["g"], db["g"])
                total = total + jnp.sum(gram * gg, axis=(2, 3))
            else:
                gg = jnp.einsum("nasc,mbtc->nmabst", da["g"], db["g"])
                total = total + jnp.einsum("nmst,nmabst->nmab", gram, gg)
    if traced:
        return total / next(iter(fa[0].values())).shape[1]
    return total


def _pair(a, b, traced):
    """Contract per-example factors ``(N, O, ...)`` over their trailing (parameter) axes."""
    sub = string.ascii_lowercase[:a.ndim - 2]
    if traced:
        return jnp.einsum(f"No{sub},Mo{sub}->NM", a, b)
    return jnp.einsum(f"NA{sub},MB{sub}->NMAB", a, b)


@jax.jit
def _trace_block(block):
    """``(N1, N2, O, O) -> (N1, N2)``: the mean of ``Θ_aa`` over logits."""
    return jnp.einsum("nmaa->nm", block) / block.shape[-1]


# ============================================================================ ntvp
def _ntvp_block(apply, vmap_axes, xa, xb, p, const, *, chunk, rows):
    """Θ block column by column: ``Θ[:, m, :, b] = J(xa) (J(xb)ᵀ e_{m,b})`` (VJP then JVP),
    ``chunk`` columns at a time, each JVP over ``rows`` inputs of ``xa`` at a time."""
    xb = xa if xb is None else xb
    na, nb = xa.shape[0], xb.shape[0]
    out = jax.eval_shape(lambda q: apply(q, const, xb), p)
    o = math.prod(out.shape[1:])
    eye = jnp.eye(o, dtype=out.dtype)
    tiles = -(-na // rows)
    # xa as (tiles, rows, ...), the last tile padded by repeating the last input
    xt = jnp.concatenate([xa, jnp.repeat(xa[-1:], tiles * rows - na, axis=0)])
    xt = xt.reshape(tiles, rows, *xa.shape[1:])

    def jvp_a(v):
        def jvp_rows(x):
            return jax.jvp(lambda q: apply(q, const, x), (p,), (v,))[1].reshape(rows, o)

        if tiles == 1:
            return jvp_rows(xt[0])
        return jax.lax.map(jvp_rows, xt).reshape(tiles * rows, o)[:na]

    if vmap_axes is None:
        _, vjp_b = jax.vjp(lambda q: apply(q, const, xb).reshape(nb * o), p)

        def column(e):
            return jvp_a(vjp_b(e)[0])

        basis = jnp.eye(nb * o, dtype=eye.dtype)
    else:
        def column(args):
            xm, e = args
            _, vjp_m = jax.vjp(lambda q: apply(q, const, xm[None]).reshape(o), p)
            return jvp_a(vjp_m(e)[0])

        basis = (jnp.repeat(xb, o, axis=0), jnp.tile(eye, (nb, 1)))
    cols = jax.lax.map(column, basis, batch_size=chunk)  # (nb * o, na, o)
    return cols.reshape(nb, o, na, o).transpose(2, 0, 3, 1)


# ============================================================================ structured
def _probe_forward(model: Model, params, x, probes):
    """Eval-mode forward pass of the graph that adds ``probes[name]`` to the output of every
    dense/conv/batchnorm node. Returns ``(logits, record, outputs)``: ``record`` holds each
    such node's input (BatchNorm: its normalised input x̂), ``outputs`` their outputs."""
    layers = [n for n in model.nodes if n.op in ("dense", "conv", "batchnorm")]
    keep = {n.inputs[0] for n in layers} | {n.name for n in layers}
    env = model.forward(params, x, keep=sorted(keep), perturb=probes)
    record: dict[str, Any] = {}
    for n in layers:
        h = env[n.inputs[0]]
        if n.op == "batchnorm":
            p = params[n.name]
            h = (h - p["mean"]) * jax.lax.rsqrt(p["var"] + n.attrs.get("eps", 1e-5))
        record[n.name] = h
    outputs = {n.name: env[n.name] for n in layers}
    return env[model.output], record, outputs


def _patches(node, a):
    """Inputs of a dense/conv layer as ``(N, S, K)``: ``S`` output positions, ``K`` fan-in."""
    n = a.shape[0]
    if node.op == "dense":
        return a.reshape(n, -1, a.shape[-1])
    attrs = node.attrs
    nd = len(attrs["kernel"])
    spatial = "HW"[:nd] if nd <= 2 else "DHW"
    pad = attrs.get("padding", "SAME")
    if isinstance(pad, int):
        pad = [(pad, pad)] * nd
    stride = attrs.get("stride", 1)
    stride = tuple(stride) if isinstance(stride, (list, tuple)) else (stride,) * nd
    pt = jax.lax.conv_general_dilated_patches(
        a, tuple(attrs["kernel"]), stride, pad,
        dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"),
    )
    return pt.reshape(n, -1, pt.shape[-1])


def _layer_factors(model: Model, trainable, stats, x):
    """Per-layer factors: ``(node, P (N,S,K), g (N,O,S,C))`` for dense/conv and
    ``(node, x̂ (N,S,C), g)`` for BatchNorm, ``g`` the cotangent of each logit."""
    params = merge_params(trainable, stats)
    shapes = jax.eval_shape(lambda: _probe_forward(model, params, x, None)[2])
    probes = {k: jnp.zeros(s.shape, s.dtype) for k, s in shapes.items()}
    logits, vjp_fn, record = jax.vjp(
        lambda pr: _probe_forward(model, params, x, pr)[:2], probes, has_aux=True
    )
    n = x.shape[0]
    o = math.prod(logits.shape[1:])
    cot = jnp.broadcast_to(jnp.eye(o, dtype=logits.dtype).reshape(o, 1, *logits.shape[1:]),
                           (o, *logits.shape))
    grads = jax.vmap(vjp_fn)(cot)[0]
    factors = []
    for name, g in grads.items():
        node = model.node(name)
        c = g.shape[-1]
        g = jnp.moveaxis(g.reshape(o, n, -1, c), 0, 1)  # (N, O, S, C)
        if node.op == "batchnorm":
            factors.append((node, record[name].reshape(n, -1, c), g))
        else:
            factors.append((node, _patches(node, record[name]), g))
    return factors


def _structured_factors(model, x, p, const, *, pair_sizes, traced):
    """Per-layer factors of a tile for ``_contract`` (module docstring): a dense/conv layer
    gives its per-example Jacobian ``{"j": w_mult Σ_s a_s ⊗ g_{·,s}}`` (N, O, K, C) or, when
    the Gram form costs fewer flops for tiles of ``pair_sizes`` inputs, ``{"u": w_mult a,
    "g": g}``; its bias ``{"b": b_mult Σ_s g_s}``. BatchNorm gives ``{"s": Σ_s x̂_s g_s,
    "b": Σ_s g_s}`` for its scale and bias."""
    na, nb = pair_sizes
    out = []
    for node, u, g in _layer_factors(model, p, const, x):
        if node.op == "batchnorm":
            out.append({"s": jnp.einsum("nsc,nosc->noc", u, g), "b": g.sum(2)})
            continue
        _, o, s, c = g.shape
        k = u.shape[-1]
        oc = o if traced else o * o
        cost_jac = (na + nb) * o * s * k * c + na * nb * oc * k * c
        cost_gram = na * nb * s * s * k + na * nb * oc * s * s * c
        w_mult = node.attrs["w_mult"]
        if cost_jac < cost_gram:
            d = {"j": w_mult * jnp.einsum("nsk,nosc->nokc", u, g)}
        else:
            d = {"u": w_mult * u, "g": g}
        if "b" in p[node.name]:
            d["b"] = node.attrs.get("b_mult", 1.0) * g.sum(2)
        out.append(d)
    return out


# ============================================================================ validation
def _as_model(apply_fn) -> Model | None:
    if isinstance(apply_fn, Model):
        return apply_fn
    owner = getattr(apply_fn, "__self__", None)
    if isinstance(owner, Model) and getattr(apply_fn, "__name__", "") == "apply":
        return owner
    return None


def _check_options(method, vmap_axes, batch_size):
    if method not in METHODS:
        raise InvalidArgumentError(f"method must be one of {METHODS}, got {method!r}")
    if vmap_axes not in (0, None):
        raise InvalidArgumentError(
            f"vmap_axes must be 0 (examples independent along axis 0) or None, got {vmap_axes!r}"
        )
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise InvalidArgumentError(f"batch_size must be a positive int or None, got {batch_size!r}")


def _canonical_axes(trace_axes, diagonal_axes, r):
    def canon(axes, name):
        out = []
        for a in axes:
            if not -r <= int(a) < r:
                raise InvalidArgumentError(
                    f"{name} entry {a} is out of range for an output with {r} axes "
                    f"(batch axis included)"
                )
            out.append(int(a) % r)
        if len(set(out)) != len(out):
            raise InvalidArgumentError(f"{name} has repeated axes: {tuple(axes)}")
        return tuple(sorted(out))

    tr, dg = canon(trace_axes, "trace_axes"), canon(diagonal_axes, "diagonal_axes")
    if set(tr) & set(dg):
        raise InvalidArgumentError(
            f"trace_axes {tuple(trace_axes)} and diagonal_axes {tuple(diagonal_axes)} overlap"
        )
    return tr, dg


def _as_input(x, name):
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ShapeMismatchError(f"{name} must be a batch of inputs (ndim >= 1), got a scalar")
    if x.shape[0] == 0:
        raise ShapeMismatchError(f"{name} is an empty batch (shape {tuple(x.shape)})")
    check_finite(name, x)
    return x


def _signature(params, x1, x2):
    """Hashable shapes/dtypes of the arguments (caches the traced output shape)."""
    def sig(a):
        return (tuple(np.shape(a)), str(getattr(a, "dtype", type(a))))

    return (jax.tree.structure(params), tuple(sig(a) for a in jax.tree.leaves(params)),
            sig(x1), None if x2 is None else sig(x2))


def _generic_output_shape(apply_fn, params, x):
    try:
        out = jax.eval_shape(apply_fn, params, x)
    except Exception as exc:  # any failure here means params/x do not fit apply_fn
        shapes = jax.tree.map(lambda leaf: tuple(np.shape(leaf)), params)
        raise ShapeMismatchError(
            f"apply_fn(params, x) failed for x of shape {tuple(x.shape)} and params of shapes "
            f"{shapes}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ShapeMismatchError(
            f"apply_fn must return a single array, got a {type(out).__name__}"
        )
    return out


def _check_model_params(model: Model, params):
    expected = model.param_shapes()
    if not isinstance(params, dict):
        raise ShapeMismatchError(
            f"params must be a dict {{node: {{param: array}}}} for model {model.arch!r}, "
            f"got {type(params).__name__}"
        )
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise ShapeMismatchError(
            f"params do not fit model {model.arch!r}: missing layers {missing}, "
            f"unexpected layers {extra}"
        )
    for node, shapes in expected.items():
        got = params[node]
        if set(got) != set(shapes):
            raise ShapeMismatchError(
                f"params[{node!r}] has entries {sorted(got)}, model {model.arch!r} expects "
                f"{sorted(shapes)}"
            )
        for k, shape in shapes.items():
            if tuple(np.shape(got[k])) != tuple(shape):
                raise ShapeMismatchError(
                    f"params[{node!r}][{k!r}] has shape {tuple(np.shape(got[k]))}, model "
                    f"{model.arch!r} expects {tuple(shape)}"
                )
