"""Representation similarity across layers, networks and training time.

* ``layer_similarity``: the layer x layer matrix between two networks (or one network with
  itself, the "block structure" of Nguyen, Raghu & Kornblith 2021);
* ``similarity_series``: each layer at each checkpoint of a run against the same layer of a
  reference checkpoint (Raghu et al. 2017, Fig. 4: "lower layers converge first");
* ``similarity_metric``: the registered ``similarity`` metric of ``dynkit metrics``.

Activations come from ``model.intermediates`` (jit-compiled once per graph, batch by batch,
``dynkit.evaluate.compiled_intermediates``), once per checkpoint. The default measure
``"minibatch_cka"`` streams them: each batch's Gram matrices are U-centered and folded into
the layer x layer HSIC sums (``similarity_stream.MinibatchCKA``), memory ``O(L B²)``
independent of ``N``. Every other measure (``MEASURES``) gathers each layer's full ``N x D``
activations and compares them pair by pair.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from dynkit.checkpoints.run import iterate, load_run
from dynkit.errors import DynkitError, InvalidArgumentError
from dynkit.evaluate import compiled_intermediates
from dynkit.registry import METRICS
from dynkit.schema import step_epoch, tidy
from dynkit.validation import check_integer

from . import similarity as sim
from .similarity_stream import MinibatchCKA

__all__ = ["MEASURES", "layer_activations", "layer_similarity", "similarity_metric",
           "similarity_series"]

#: Measures on full activation matrices, by name (``minibatch_cka`` is streamed instead).
MEASURES = {
    "cka": sim.cka,
    "cka_debiased": lambda X, Y: sim.cka(X, Y, debiased=True),
    "cka_rbf": lambda X, Y: sim.cka(X, Y, kernel="rbf"),
    "svcca": sim.svcca,
    "pwcca": sim.pwcca,
    "procrustes": sim.procrustes,
    "rsa": sim.rsa,
}
STREAMED = "minibatch_cka"


def _measure(measure: str):
    if measure != STREAMED and measure not in MEASURES:
        raise InvalidArgumentError(f"measure must be one of {[STREAMED, *MEASURES]}, "
                                   f"got {measure!r}")


def _layers(model, layers) -> list[str]:
    names = list(model.layer_names()) if layers is None else list(layers)
    if not names:
        raise InvalidArgumentError(f"model {model.arch!r} has no tapped layers; pass layers=")
    return names


def _batches(model, params, x, names, batch_size):
    fwd = compiled_intermediates(model, tuple(names))
    x = np.asarray(x)
    n = len(x)
    for s in range(0, n, batch_size):
        if 0 < n - s - batch_size < 4:  # a tail < 4 rows joins this batch
            out = fwd(params, x[s:])
            yield [np.asarray(out[k]) for k in names]
            return
        out = fwd(params, x[s:s + batch_size])
        yield [np.asarray(out[k]) for k in names]


def layer_activations(model, params, x, layers=None, batch_size: int = 512) -> dict:
    """``{layer: (N, D) float32 numpy activations}`` of the tapped layers (default
    ``model.layer_names()``), computed in batches of ``batch_size`` inputs.

    Example:
        >>> import jax, dynkit as dk
        >>> m = dk.models.mlp(3, [4, 5], 2)
        >>> acts = layer_activations(m, m.init(jax.random.PRNGKey(0)), np.ones((7, 3)))
        >>> {k: v.shape for k, v in acts.items()}
        {'act0': (7, 4), 'act1': (7, 5)}
    """
    names = _layers(model, layers)
    batch_size = check_integer("batch_size", batch_size)
    parts = list(_batches(model, params, x, names, batch_size))
    return {k: np.concatenate([p[i] for p in parts]) for i, k in enumerate(names)}


def layer_similarity(model_a, params_a, model_b=None, params_b=None, x=None, layers=None, *,
                     measure: str = STREAMED, batch_size: int = 256) -> pd.DataFrame:
    """Layer x layer similarity of two networks on the inputs ``x``.

    ``S[i, j] = measure(A_i(x), B_j(x))`` with ``A_i`` the ``i``-th tapped layer of network A
    (activations flattened to ``(N, D)``). ``model_b=None`` compares network A with itself.
    ``measure="minibatch_cka"`` (default) is the minibatch linear CKA of Nguyen et al. 2021,
    streamed over batches of ``batch_size`` inputs; the other names of ``MEASURES``
    (``cka``, ``cka_debiased``, ``cka_rbf``, ``svcca``, ``pwcca``, ``procrustes``, ``rsa``; see
    ``analyses.similarity`` for their centering and normalization) gather full activations.
    Each network's activations are computed once, never once per pair.

    Args:
        model_a, params_a: network A.
        model_b, params_b: network B (``None``: A itself).
        x: inputs ``(N, ...)``.
        layers: layer names for both networks, a pair ``(layers_a, layers_b)``, or ``None``
            (each model's ``layer_names()``).
        measure: a name from ``MEASURES`` or ``"minibatch_cka"``.
        batch_size: inputs per forward pass (and per CKA minibatch, ``>= 4``).

    Returns:
        DataFrame, rows A's layers, columns B's layers; ``attrs["measure"]``.

    References:
        Kornblith et al. 2019 (ICML); Nguyen, Raghu & Kornblith 2021 (ICLR).

    Example:
        >>> import jax, dynkit as dk
        >>> m = dk.models.mlp(3, [8, 8], 2)
        >>> x = np.random.default_rng(0).normal(size=(32, 3))
        >>> S = layer_similarity(m, m.init(jax.random.PRNGKey(0)), x=x, batch_size=16)
        >>> S.shape, bool(np.allclose(np.diag(S), 1.0))
        ((2, 2), True)
    """
    _measure(measure)
    if x is None:
        raise InvalidArgumentError("layer_similarity needs the inputs x")
    batch_size = check_integer("batch_size", batch_size, 4)
    same = model_b is None
    model_b, params_b = (model_a, params_a) if same else (model_b, params_b)
    pair = (isinstance(layers, tuple) and len(layers) == 2
            and not any(isinstance(part, str) for part in layers))
    la, lb = layers if pair else (layers, layers)
    la, lb = _layers(model_a, la), _layers(model_b, lb)
    if measure == STREAMED:
        acc = MinibatchCKA(len(la), len(lb), labels=([f"A:{k}" for k in la],
                                                     [f"B:{k}" for k in lb]))
        if same and la == lb:
            for acts in _batches(model_a, params_a, x, la, batch_size):
                acc.update(acts, acts)
        else:
            for xa, xb in zip(_batches(model_a, params_a, x, la, batch_size),
                              _batches(model_b, params_b, x, lb, batch_size)):
                acc.update(xa, xb)
        values = acc.result()
    else:
        fn = MEASURES[measure]
        A = layer_activations(model_a, params_a, x, la, batch_size)
        B = A if same and la == lb else layer_activations(model_b, params_b, x, lb, batch_size)
        values = np.array([[_compare(fn, A[a], B[b], f"A:{a}", f"B:{b}") for b in lb]
                           for a in la])
    out = pd.DataFrame(values, index=pd.Index(la, name="layer_a"),
                       columns=pd.Index(lb, name="layer_b"))
    out.attrs["measure"] = measure
    return out


def similarity_series(run, x, reference="final", *, measure: str = "svcca", layers=None,
                      every: int = 1, batch_size: int = 256, progress: bool = False
                      ) -> pd.DataFrame:
    """Each layer at each checkpoint of a run compared with the same layer of a reference
    checkpoint (Raghu et al. 2017, Sec. 4.1: SVCCA of each layer to its final state).

    ``value(step, l) = measure(A_l^{step}(x), A_l^{ref}(x))``. The reference's activations are
    computed once (streamed per batch for ``minibatch_cka``); each checkpoint's once.

    Args:
        run: a run folder, a ``Run`` or an iterable of checkpoints
            (``dynkit.checkpoints.iterate``).
        x: inputs ``(N, ...)``.
        reference: ``"final"`` (the last checkpoint), ``"init"`` (the first), an ``int`` step,
            or a checkpoint object.
        measure: a name of ``MEASURES`` or ``"minibatch_cka"`` (default ``"svcca"``).
        layers: layer names (default ``layer_names()``).
        every: keep every ``every``-th checkpoint (and the last).
        batch_size: inputs per forward pass / CKA minibatch.
        progress: a progress bar over checkpoints.

    Returns:
        The tidy series ``step, epoch, metric, value, layer`` (``dynkit.schema``), metric the
        measure's name, sorted by step.

    References:
        Raghu, Gilmer, Yosinski & Sohl-Dickstein 2017 (NeurIPS).

    Example:
        >>> import jax
        >>> from types import SimpleNamespace
        >>> from dynkit.models import mlp
        >>> m = mlp(3, [6], 2)
        >>> run = [SimpleNamespace(model=m, params=m.init(jax.random.PRNGKey(s)), step=s, meta={})
        ...        for s in (0, 10)]
        >>> x = np.random.default_rng(0).normal(size=(40, 3))
        >>> df = similarity_series(run, x)
        >>> df[["step", "layer", "value"]].round(6).values.tolist()[-1]
        [10, 'act0', 1.0]
    """
    from tqdm.auto import tqdm

    _measure(measure)
    batch_size = check_integer("batch_size", batch_size, 4)
    if isinstance(run, (str, os.PathLike)):
        run = load_run(run)  # so that reference=<step> may be a step that `every` skips
    ckpts = list(iterate(run, every, True, indexed=True))
    if not ckpts:
        raise InvalidArgumentError("similarity_series: the run holds no checkpoints")
    ref = _reference(run, ckpts, reference)
    names = _layers(ref.model, layers)
    ref_acts = None if measure == STREAMED else layer_activations(ref.model, ref.params, x,
                                                                  names, batch_size)
    rows = []
    for i, ckpt in tqdm(ckpts, desc="similarity series", disable=not progress, leave=False):
        if measure == STREAMED:
            acc = MinibatchCKA(len(names), len(names), labels=(
                [f"step {ckpt.step}: {k}" for k in names], [f"reference: {k}" for k in names]))
            for xa, xr in zip(_batches(ckpt.model, ckpt.params, x, names, batch_size),
                              _batches(ref.model, ref.params, x, names, batch_size)):
                acc.update(xa, xr)
            vals = np.diag(acc.result())
        else:
            acts = layer_activations(ckpt.model, ckpt.params, x, names, batch_size)
            vals = [_compare(MEASURES[measure], acts[k], ref_acts[k], f"step {ckpt.step}: {k}",
                             f"reference: {k}") for k in names]
        keys = step_epoch(ckpt, i)
        rows += [{**keys, "metric": measure, "value": float(v), "layer": k}
                 for k, v in zip(names, vals)]
    df = tidy(rows)
    return df.iloc[np.argsort(df["step"].to_numpy(), kind="stable")].reset_index(drop=True)


def _compare(fn, a, b, name_a: str, name_b: str) -> float:
    """``fn(a, b)``, an error naming the two layers compared."""
    try:
        return fn(a, b)
    except DynkitError as exc:
        raise type(exc)(f"{name_a} vs {name_b}: {exc}") from exc


def _reference(run, ckpts, reference):
    if reference == "final":
        return ckpts[-1][1]
    if reference == "init":
        return ckpts[0][1]
    if isinstance(reference, (int, np.integer)) and not isinstance(reference, bool):
        if hasattr(run, "at"):
            return run.at(int(reference))
        for _, c in ckpts:
            if c.step == reference:
                return c
        raise InvalidArgumentError(f"similarity_series: no checkpoint at step {reference}; "
                                   f"steps: {[c.step for _, c in ckpts]}")
    if hasattr(reference, "params") and hasattr(reference, "model"):
        return reference
    raise InvalidArgumentError("reference must be 'final', 'init', a step (int) or a "
                               f"checkpoint, got {reference!r}")


@METRICS.register("similarity", "layer x layer minibatch linear CKA (Nguyen et al. 2021), test "
                                "split")
def similarity_metric(model, params, data, max_inputs: int = 1024) -> pd.DataFrame:
    """Registry metric ``"similarity"``: minibatch linear CKA (batches of 256) between every
    pair of representations of one network, its tapped layers and its output node, on the
    first ``max_inputs`` test inputs (train when there is no test split); one row per pair
    ``i < j``, ``metric="cka"``, ``layer="<a>|<b>"``.

    Example:
        >>> import jax, dynkit as dk
        >>> data = dk.data.load("gaussian_mixture", n_train=16, n_test=40, num_classes=2, dim=3)
        >>> m = dk.models.mlp(3, [6, 6], 2)
        >>> similarity_metric(m, m.init(jax.random.PRNGKey(0)), data).layer.tolist()
        ['act0|act1', 'act0|head', 'act1|head']
    """
    x = data.x_test if getattr(data, "x_test", None) is not None and len(data.x_test) else \
        data.x_train
    names = list(dict.fromkeys([*model.layer_names(), model.nodes[-1].name]))
    if len(names) < 2:
        raise InvalidArgumentError(f"similarity: model {model.arch!r} has one representation "
                                   f"({names}); nothing to compare")
    S = layer_similarity(model, params, x=np.asarray(x)[:max_inputs], layers=names)
    names: Sequence[str] = list(S.index)
    return pd.DataFrame([{"metric": "cka", "layer": f"{a}|{b}", "value": float(S.iloc[i, j])}
                         for i, a in enumerate(names) for j, b in enumerate(names) if i < j])
