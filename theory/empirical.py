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
* ``"auto"`` (see ``choose_method``): ``"structured"`` for dynkit models it covers; otherwise
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

``"structured"`` asked for an arbitrary ``apply_fn`` (no layer graph to read), or for a model
with layers the structured factors do not cover (grouped or transposed convolutions:
``empirical_structured.structured_unsupported``), falls back to the ``"auto"`` choice between
``"jacobian"`` and ``"ntvp"`` with a ``UserWarning``; ``"auto"`` makes that choice silently.

For dynkit models (pass the ``Model``, ``model.apply`` or use ``model_ntk_fn``) the kernel is
taken in eval mode with respect to the *trainable* parameters only: BatchNorm running
statistics are split off with ``dynkit.models.split_params`` and held fixed.

This module holds the public functions and the driver; the methods live in
:mod:`~dynkit.theory.empirical_jacobian`, :mod:`~dynkit.theory.empirical_ntvp` and
:mod:`~dynkit.theory.empirical_structured`, the tiling in :mod:`~dynkit.theory.empirical_tiles`
and the input checks in :mod:`~dynkit.theory.empirical_checks`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.models.graph import Model, merge_params, split_params
from dynkit.theory.empirical_checks import (
    as_input,
    as_model,
    canonical_axes,
    check_model_params,
    generic_output_shape,
    signature,
)
from dynkit.theory.empirical_jacobian import contract, jacobian_factors, trace_block
from dynkit.theory.empirical_ntvp import activation_footprint, ntvp_block
from dynkit.theory.empirical_structured import structured_factors, structured_unsupported
from dynkit.theory.empirical_tiles import finalize, tiled

__all__ = [
    "JACOBIAN_MEMORY_BYTES",
    "METHODS",
    "NTVP_MEMORY_BYTES",
    "activation_footprint",
    "choose_method",
    "model_ntk_fn",
    "ntk_fn",
    "ntvp_plan",
]
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

    ``Θ(x1, x2) = J(x1) J(x2)ᵀ`` with ``J = ∂f/∂θ`` (Jacot et al. 2018), traced/diagonalized
    over output axes as in neural-tangents (module docstring; "traced" means the mean).

    ``apply_fn``: any ``f(params, x)`` on a batch ``x`` (params any pytree), or a dynkit
    ``Model`` / bound ``model.apply`` (then ``model_ntk_fn`` is used: eval mode, trainable
    parameters only, ``"structured"`` available). ``vmap_axes=0`` declares that examples are
    independent along axis 0 (per-example Jacobians are used); ``None`` differentiates the
    whole batch (for functions that mix examples). ``batch_size`` tiles ``x1`` and ``x2`` so
    that at most ``batch_size`` inputs of each are processed at once (memory bound).
    ``x2=None`` means ``x2 = x1`` (symmetric tiles are computed once).

    Args:
        apply_fn: ``f(params, x)``, a dynkit ``Model`` or a bound ``model.apply``.
        method: one of ``METHODS`` (module docstring).
        trace_axes: output axes averaged over.
        diagonal_axes: output axes of which only the diagonal is kept.
        vmap_axes: 0 (examples independent along axis 0) or ``None``.
        batch_size: the most inputs of ``x1`` and of ``x2`` processed at once.

    Returns:
        ``kernel(x1, x2=None, params)``, the kernel as an array: ``(N1, N2)`` followed by the
        zipped untraced output axes.

    References:
        Jacot, Gabriel & Hongler 2018, "Neural tangent kernel"; Novak et al. 2022, "Fast
        finite width neural tangent kernel" (``empirical_ntk_fn``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> def f(p, x):
        ...     return jnp.tanh(x @ p["w"]) @ p["v"]
        >>> p = {"w": jnp.ones((2, 3)) / 2, "v": jnp.ones((3, 1))}
        >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> k = ntk_fn(f)(x, None, p)
        >>> jac = jax.jacrev(lambda q: f(q, x)[:, 0])(p)
        >>> flat = jnp.concatenate([jac["w"].reshape(3, -1), jac["v"].reshape(3, -1)], axis=1)
        >>> k.shape, bool(jnp.allclose(k, flat @ flat.T, atol=1e-5))
        ((3, 3), True)
    """
    model = as_model(apply_fn)
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
        key = signature(params, x1, x2)
        if key not in shapes:
            out = generic_output_shape(apply_fn, params, x1)
            if x2 is not None:
                generic_output_shape(apply_fn, params, x2)
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

    Args:
        model: the dynkit ``Model``.
        method, trace_axes, diagonal_axes, vmap_axes, batch_size: as in :func:`ntk_fn`.

    Returns:
        ``kernel(x1, x2=None, params)``.

    References:
        Jacot, Gabriel & Hongler 2018, "Neural tangent kernel"; Novak et al. 2022, "Fast
        finite width neural tangent kernel" (``empirical_ntk_fn``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from dynkit.models.mlp import mlp
        >>> model = mlp(2, [4], 3)
        >>> params = model.init(jax.random.PRNGKey(0))
        >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
        >>> k = model_ntk_fn(model)(x, None, params)
        >>> k_jac = model_ntk_fn(model, method="jacobian")(x, None, params)
        >>> k.shape, bool(jnp.allclose(k, k_jac, atol=1e-5))
        ((2, 2), True)
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
        check_model_params(model, params)
        trainable, stats = split_params(params)
        key = signature(params, x1, None)
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

    Args:
        num_params: the number ``P`` of trained parameters.
        n1, n2: the numbers of inputs in ``x1`` and ``x2`` (per tile).
        out_size: the number ``O`` of logits per example.
        traced: whether the logit axis is traced.
        itemsize: bytes per element.
        structured: whether the function is a dynkit model.

    Returns:
        ``"structured"``, ``"jacobian"`` or ``"ntvp"``.

    References:
        Novak et al. 2022, "Fast finite width neural tangent kernel" (cost estimates).

    Example:
        >>> choose_method(100, 8, 8, 1, traced=True), choose_method(10**6, 8, 8, 10, traced=False)
        ('jacobian', 'ntvp')
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
    ``chunk ≤ N2 · O`` (the number of columns).

    Args:
        num_params: the number ``P`` of trained parameters.
        footprint: ``A``, elements per example (:func:`activation_footprint`).
        n1, n2: the numbers of inputs in ``x1`` and ``x2`` (per tile).
        out_size: the number ``O`` of logits per example.
        itemsize: bytes per element.
        whole_batch: the VJP runs on the whole batch (``vmap_axes=None``).
        budget: the working-set bound in bytes (default ``NTVP_MEMORY_BYTES``).

    Returns:
        ``(chunk, rows)``.

    References:
        Novak et al. 2022, "Fast finite width neural tangent kernel" (NTK-vector products).

    Example:
        >>> ntvp_plan(1000, 50, 8, 8, 10, budget=10**5)   # 10**5 // ((1000 + 50 + 8 * 50) * 4)
        (17, 8)
    """
    budget = NTVP_MEMORY_BYTES if budget is None else budget
    a = max(1, int(footprint))
    if whole_batch:
        rows, a_b = n1, n2 * a
    else:
        rows, a_b = max(1, min(n1, budget // (2 * a * itemsize))), a
    per_column = (num_params + a_b + rows * a) * itemsize
    chunk = max(1, min(n2 * out_size, budget // per_column))
    return int(chunk), int(rows)


def _check_options(method, vmap_axes, batch_size):
    """The options of ``ntk_fn`` / ``model_ntk_fn`` that need no inputs."""
    if method not in METHODS:
        raise InvalidArgumentError(f"method must be one of {METHODS}, got {method!r}")
    if vmap_axes not in (0, None):
        raise InvalidArgumentError(
            f"vmap_axes must be 0 (examples independent along axis 0) or None, got {vmap_axes!r}"
        )
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise InvalidArgumentError(f"batch_size must be a positive int or None, got {batch_size!r}")


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

    factors = {"jacobian": (partial(jacobian_factors, apply, vmap_axes), vmap_axes == 0)}
    if isinstance(owner, Model):  # its factors depend on the tile sizes and on tracing
        factors["structured"] = (partial(structured_factors, owner), True)
    programs = {}
    for name, (fn, joint) in factors.items():
        static = ("pair_sizes", "traced") if name == "structured" else ()
        programs[name] = (jax.jit(fn, static_argnames=static),
                          jax.jit(partial(_single_block, fn, joint, name == "structured"),
                                  static_argnames=("traced", "pair_sizes")))
    ntvp = jax.jit(partial(ntvp_block, apply, vmap_axes), static_argnames=("chunk", "rows"))
    return apply, ntvp, programs


def _single_block(factors, joint, structured, xa, xb, p, const, *, traced, pair_sizes=None):
    """``contract`` of the factors of ``xa`` and ``xb`` (``None``: ``xa``) in one program;
    ``joint``: examples are independent, so both batches are factored in one pass;
    ``structured``: the factor function takes ``pair_sizes`` and ``traced``."""
    kw = {"pair_sizes": pair_sizes, "traced": traced} if structured else {}
    if xb is None:
        fa = factors(xa, p, const, **kw)
        return contract(fa, fa, traced=traced)
    if not joint:
        return contract(factors(xa, p, const, **kw), factors(xb, p, const, **kw), traced=traced)
    both, n = factors(jnp.concatenate([xa, xb]), p, const, **kw), xa.shape[0]
    return contract(jax.tree.map(lambda f: f[:n], both), jax.tree.map(lambda f: f[n:], both),
                     traced=traced)


def _kernel_fn(owner, prepare, method, trace_axes, diagonal_axes, vmap_axes, batch_size):
    """Shared driver: validate, choose a method, loop over tiles, trace/diagonalize. Every
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
        x1 = as_input(x1, "x1")
        x2 = None if x2 is None else as_input(x2, "x2")
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
        tr, dg = canonical_axes(trace_axes, diagonal_axes, r)
        traced = set(tr) == set(range(1, r)) and not dg and r > 1
        n1 = x1.shape[0]
        n2 = n1 if x2 is None else x2.shape[0]
        if (0 in tr or 0 in dg) and n1 != n2:
            raise ShapeMismatchError(
                f"tracing or taking the diagonal over the batch axis needs as many x1 as x2 "
                f"inputs; got {n1} and {n2}"
            )
        chosen = method
        uncovered = structured_unsupported(model) if model is not None else None
        if chosen == "structured" and uncovered:
            warnings.warn(f"method='structured' does not cover {uncovered} of model "
                          f"{model.arch!r}; falling back to the 'auto' choice between "
                          "'jacobian' and 'ntvp'", UserWarning, stacklevel=2)
            chosen = "auto"
        itemsize = jnp.dtype(out.dtype).itemsize
        nparams = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(p))
        bs = batch_size or max(n1, n2)
        n1t, n2t = min(bs, n1), min(bs, n2)  # inputs per tile
        if chosen == "auto":
            chosen = choose_method(nparams, n1t, n2t, o, traced, itemsize,
                                   structured=model is not None and not uncovered)
        if chosen == "ntvp":
            key = (signature(p, x1, x2), bs)
            if key not in footprints:  # activations of one example (the whole tile if mixed)
                k = 1 if vmap_axes == 0 else n1t
                a = activation_footprint(partial(apply, p, const), x1[:k])
                footprints[key] = -(-a // k)
            chunk, rows = ntvp_plan(nparams, footprints[key], n1t, n2t, o, itemsize,
                                    vmap_axes is None)

            def pair(xa, xb):  # the full block is computed either way; trace it per tile
                block = ntvp_core(xa, xb, p, const, chunk=chunk, rows=rows)
                return trace_block(block) if traced else block

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
                return contract(fa, fb, traced=traced)

            def single(xa, xb):
                return block_fn(xa, xb, p, const, traced=traced, pair_sizes=sizes)

        K = tiled(single, prep, pair, x1, x2, bs, traced)
        return finalize(K, traced, d, tr, dg)

    return kernel

