"""Neural-collapse metrics NC1-NC4 (Papyan, Han & Donoho 2020), dense, streamed and per layer.

Notation: ``N`` samples ``h_i ∈ R^D`` with labels ``y_i`` in ``C`` classes, class counts ``n_c``,
class means ``μ_c``, global mean ``μ_G`` (``global_mean="samples"``: ``Σ_c n_c μ_c / N``, Papyan
et al.; ``"classes"``: ``Σ_c μ_c / C``, the balanced-data convention), centred means
``m_c = μ_c - μ_G`` stacked as the rows of ``M`` (``C x D``), classifier ``W`` (``C x D``),
bias ``b``.

* ``nc1 = Tr(Σ_W Σ_B^†) / C`` with ``Σ_W = (1/N) Σ_i (h_i - μ_{y_i})(h_i - μ_{y_i})ᵀ`` and
  ``Σ_B = (1/C) Σ_c m_c m_cᵀ`` (Papyan et al. 2020, Fig. 6). ``nc1_variant="trace_ratio"``:
  ``Tr(Σ_W) / Tr(Σ_B)``, the pseudo-inverse-free within/between variance ratio (robust when
  ``Σ_B`` is ill-conditioned).
* ``nc2_equinorm = std_c ‖m_c‖ / mean_c ‖m_c‖`` and ``nc2_equinorm_W`` the same for ``‖w_c‖``;
  ``nc2_equiangle = std_{c≠c'} cos(m_c, m_c')``, ``nc2_equiangle_shift = mean_{c≠c'} |cos(m_c,
  m_c') + 1/(C-1)|`` (Papyan et al. 2020, Fig. 3-4), ``nc2_equiangle_W`` for the rows of ``W``;
  ``nc2_etf = ‖MMᵀ/‖MMᵀ‖_F - (I - 11ᵀ/C)/‖I - 11ᵀ/C‖_F‖_F`` (Zhu et al. 2021, "A geometric
  analysis of neural collapse with unconstrained features").
  ``nc2_variant="uncentred"`` uses the raw means ``μ_c`` instead of ``m_c`` (bias-free models,
  Dang et al. 2023); it applies to NC2 and NC3.
* ``nc3 = ‖W/‖W‖_F - M/‖M‖_F‖_F²`` (self-duality, Papyan et al. 2020, Fig. 5).
* ``nc4`` = fraction of samples whose nearest class centre ``argmin_c ‖h - μ_c‖`` differs from the
  network's prediction ``argmax_c (Wh + b)_c`` (or the given ``predictions``) (Papyan et al. 2020).

Classes with no sample are left out of every metric (and their rows of ``W`` with them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

from dynkit.errors import InvalidArgumentError, ShapeMismatchError, UnsupportedLayerError
from dynkit.registry import METRICS
from dynkit.validation import check_finite

from .collapse_stream import ClassStats, CollapseAccumulator, check_batch

NC1_VARIANTS = ("pinv", "trace_ratio")
NC2_VARIANTS = ("centred", "uncentred")
GLOBAL_MEANS = ("samples", "classes")
METHODS = ("subspace", "dense")


@dataclass(frozen=True)
class CollapseResult(Mapping):
    """Frozen mapping ``metric -> float``; ``res["nc1"]``, ``res.nc1``, ``res.to_frame()``."""

    metrics: Mapping[str, float]

    def __post_init__(self):
        object.__setattr__(
            self, "metrics", MappingProxyType({k: float(v) for k, v in self.metrics.items()})
        )

    def __getitem__(self, key: str) -> float:
        return self.metrics[key]

    def __iter__(self):
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    def __getattr__(self, name: str) -> float:
        metrics = self.__dict__.get("metrics", {})
        if name in metrics:
            return metrics[name]
        raise AttributeError(f"no metric {name!r}; available: {', '.join(metrics)}")

    def to_frame(self) -> pd.DataFrame:
        """Tidy table with columns ``metric, value``."""
        return pd.DataFrame({"metric": list(self.metrics), "value": list(self.metrics.values())})


# --------------------------------------------------------------------- metrics from statistics
def _choice(name, value, allowed):
    if value not in allowed:
        raise InvalidArgumentError(f"{name} must be one of {allowed}; got {value!r}")


def check_classifier(W, b, num_classes: int, dim: int):
    """Validate a read-out ``W`` of shape ``(C, D)`` and bias ``b`` of shape ``(C,)``."""
    W = np.asarray(W, dtype=np.float64)
    if W.shape != (num_classes, dim):
        raise ShapeMismatchError(
            f"classifier W must have shape (num_classes, dim) = ({num_classes}, {dim}); "
            f"got {W.shape} (a dense kernel stored (in, out) must be transposed)"
        )
    check_finite("classifier W", W)
    if b is None:
        return W, np.zeros(num_classes)
    b = np.asarray(b, dtype=np.float64)
    if b.shape != (num_classes,):
        raise ShapeMismatchError(f"bias b must have shape ({num_classes},); got {b.shape}")
    return W, b


def _cv(v):
    return float(np.std(v) / np.mean(v))


def _cosines(V):
    u = V / np.linalg.norm(V, axis=1, keepdims=True)
    iu = np.triu_indices(len(V), 1)
    return (u @ u.T)[iu]


def _etf_distance(V):
    C = len(V)
    G = V @ V.T
    target = np.eye(C) - np.ones((C, C)) / C
    return float(np.linalg.norm(G / np.linalg.norm(G) - target / np.sqrt(C - 1)))


def collapse_from_stats(
    stats: ClassStats,
    W=None,
    b=None,
    *,
    nc1_variant: str = "pinv",
    nc2_variant: str = "centred",
    global_mean: str = "samples",
    rtol: float = 1e-10,
) -> CollapseResult:
    """NC1-NC4 from accumulated ``ClassStats`` (formulas in the module docstring).

    ``Σ_B^†`` drops eigenvalues below ``rtol * λ_max(Σ_B)``; NC1 is evaluated in the span of the
    class means, ``Tr((QᵀΣ_W Q)(QᵀΣ_B Q)^†)/C``, which equals the ``D``-dimensional value.
    """
    _choice("nc1_variant", nc1_variant, NC1_VARIANTS)
    _choice("nc2_variant", nc2_variant, NC2_VARIANTS)
    _choice("global_mean", global_mean, GLOBAL_MEANS)
    present = stats.counts > 0
    C = int(present.sum())
    if C < 2:
        raise InvalidArgumentError(
            f"neural collapse needs samples of at least 2 classes; got {C} class(es) with samples"
        )
    n = stats.counts[present].astype(np.float64)
    N = n.sum()
    mu = stats.means[present]
    mu_g = n @ mu / N if global_mean == "samples" else mu.mean(axis=0)
    M = mu - mu_g
    A = M @ stats.basis
    sigma_b = A.T @ A / C
    if np.trace(sigma_b) <= 0:
        raise InvalidArgumentError("all class means coincide: Σ_B = 0 and NC1 is undefined")
    out: dict[str, float] = {}
    if nc1_variant == "pinv":
        lam, U = np.linalg.eigh(sigma_b)
        keep = lam > rtol * lam.max()
        U, lam = U[:, keep], lam[keep]
        sigma_w = stats.within_proj / N
        out["nc1"] = float(np.trace(U.T @ sigma_w @ U / lam[None, :]) / C)
    else:
        out["nc1"] = float(stats.within_trace / N / np.trace(sigma_b))
    V = M if nc2_variant == "centred" else mu
    out["nc2_equinorm"] = _cv(np.linalg.norm(V, axis=1))
    cos = _cosines(V)
    out["nc2_equiangle"] = float(np.std(cos))
    out["nc2_equiangle_shift"] = float(np.mean(np.abs(cos + 1.0 / (C - 1))))
    out["nc2_etf"] = _etf_distance(V)
    if W is not None:
        W, b = check_classifier(W, b, len(stats.counts), stats.dim)
        Wp = W[present]
        out["nc2_equinorm_W"] = _cv(np.linalg.norm(Wp, axis=1))
        out["nc2_equiangle_W"] = float(np.std(_cosines(Wp)))
        out["nc3"] = float(
            np.linalg.norm(Wp / np.linalg.norm(Wp) - V / np.linalg.norm(V)) ** 2
        )
    if stats.ncc_disagreements is not None:
        out["nc4"] = stats.ncc_disagreements / N
    return CollapseResult(out)


# --------------------------------------------------------------------- drivers
def _unpack(batch):
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise InvalidArgumentError(
            "each batch must be a tuple (features, labels) or (features, labels, logits); "
            f"got {type(batch).__name__}"
        )
    return (*batch, None) if len(batch) == 2 else tuple(batch)


def _predictions(x, extra, W, b):
    if extra is not None:
        extra = np.asarray(extra)
        return np.argmax(extra, axis=1) if extra.ndim == 2 else extra
    if W is not None:
        return np.argmax(x @ W.T + b, axis=1)
    return None


def neural_collapse_stream(
    batches_fn: Callable[[], Iterable],
    W=None,
    b=None,
    *,
    num_classes: int | None = None,
    method: str = "subspace",
    nc1_variant: str = "pinv",
    nc2_variant: str = "centred",
    global_mean: str = "samples",
    rtol: float = 1e-10,
) -> CollapseResult:
    """NC1-NC4 over batches, memory independent of N (see ``analyses.collapse_stream``).

    ``batches_fn()`` returns a fresh iterator of ``(features, labels)`` or ``(features, labels,
    logits_or_predicted_classes)``; it is called twice (pass 2 projects on the class-mean span,
    ``method="subspace"``, and counts NC4) or once (``method="dense"`` keeps a ``D x D``
    scatter; a second call only when NC4 is wanted). NC4 uses the third batch entry when present,
    else ``argmax(h Wᵀ + b)``. Metric definitions: module docstring.
    """
    _choice("method", method, METHODS)
    _choice("nc1_variant", nc1_variant, NC1_VARIANTS)
    _choice("nc2_variant", nc2_variant, NC2_VARIANTS)
    _choice("global_mean", global_mean, GLOBAL_MEANS)
    if not callable(batches_fn):
        raise InvalidArgumentError("batches_fn must be a function returning a fresh iterator")
    if W is not None:
        W = np.asarray(W, dtype=np.float64)
        if W.ndim != 2:
            raise ShapeMismatchError(f"classifier W must be 2-D (num_classes, dim); got {W.shape}")
        num_classes = W.shape[0] if num_classes is None else num_classes
    acc = CollapseAccumulator(num_classes, dense=method == "dense")
    has_extra = False
    for batch in batches_fn():
        x, y, extra = _unpack(batch)
        acc.update(x, y)
        has_extra |= extra is not None
    if acc.dim is None:
        raise InvalidArgumentError("batches_fn() yielded no samples")
    if W is not None:
        W, b = check_classifier(W, b, num_classes, acc.dim)
    if method == "subspace" or W is not None or has_extra:
        acc.close_first_pass()
        for batch in batches_fn():
            x, y, extra = _unpack(batch)
            x, y = check_batch(x, y, dim=acc.dim)
            acc.update_second(x, y, _predictions(x, extra, W, b))
    return collapse_from_stats(
        acc.stats(), W, b, nc1_variant=nc1_variant, nc2_variant=nc2_variant,
        global_mean=global_mean, rtol=rtol,
    )


def neural_collapse(
    features,
    labels,
    W=None,
    b=None,
    predictions=None,
    *,
    num_classes: int | None = None,
    method: str = "subspace",
    nc1_variant: str = "pinv",
    nc2_variant: str = "centred",
    global_mean: str = "samples",
    rtol: float = 1e-10,
) -> CollapseResult:
    """NC1-NC4 of in-memory features ``(N, D)``, labels ``(N,)`` and an optional read-out.

    ``W`` is ``(C, D)`` (rows = class weight vectors), ``b`` is ``(C,)``; ``predictions`` (class
    indices, or logits ``(N, C)``) override ``argmax(h Wᵀ + b)`` for NC4. Returns a
    ``CollapseResult`` with ``nc1, nc2_equinorm, nc2_equiangle, nc2_equiangle_shift, nc2_etf``
    and, given ``W``, ``nc2_equinorm_W, nc2_equiangle_W, nc3``, and, given ``W`` or
    ``predictions``, ``nc4``. Definitions and papers: module docstring.
    """
    x, y = check_batch(features, labels)
    if predictions is not None and np.shape(predictions)[0] != x.shape[0]:
        raise ShapeMismatchError(
            f"predictions must have one entry per sample ({x.shape[0]}); "
            f"got shape {np.shape(predictions)}"
        )
    batch = (x, y) if predictions is None else (x, y, predictions)
    return neural_collapse_stream(
        lambda: iter([batch]), W, b, num_classes=num_classes, method=method,
        nc1_variant=nc1_variant, nc2_variant=nc2_variant, global_mean=global_mean, rtol=rtol,
    )


# --------------------------------------------------------------------- models
def readout(model, params):
    """Effective read-out ``(W (C, D), b (C,))`` of a ``dynkit`` model, as numpy float64.

    Walks back from ``model.output`` through ``scale`` nodes (their factors multiply in) to the
    dense node fed by ``model.feature``; ``W = factor * w_mult * wᵀ``, ``b = factor * b_mult * b``.
    """
    node = model.node(model.output)
    factor = 1.0
    while node.op == "scale":
        factor *= float(node.attrs["factor"])
        node = model.node(node.inputs[0])
    if node.op != "dense":
        raise UnsupportedLayerError(
            f"the read-out of model {model.arch!r} is a {node.op!r} node ({node.name}); "
            "neural-collapse metrics need a final dense layer"
        )
    src = node.inputs[0]
    while src != model.feature and model.node(src).op == "flatten":
        src = model.node(src).inputs[0]
    if src != model.feature:
        raise UnsupportedLayerError(
            f"read-out {node.name!r} is fed by {node.inputs[0]!r}, not by the feature node "
            f"{model.feature!r}"
        )
    p, a = params[node.name], node.attrs
    W = factor * a.get("w_mult", 1.0) * np.asarray(p["w"], dtype=np.float64).T
    if "b" in p:
        b = factor * a.get("b_mult", 1.0) * np.asarray(p["b"], dtype=np.float64)
    else:
        b = np.zeros(W.shape[0])
    return W, b


def _check_xy(x, y):
    if len(x) != len(y):
        raise ShapeMismatchError(f"x has {len(x)} samples but y has {len(y)}")


def _batched(fn, x, y, batch_size, progress, desc):
    if int(batch_size) < 1:
        raise InvalidArgumentError(f"batch_size must be >= 1; got {batch_size}")
    from tqdm.auto import tqdm

    def gen():
        starts = range(0, len(x), batch_size)
        for i in tqdm(starts, desc=desc, disable=not progress, leave=False):
            yield fn(x[i:i + batch_size]), np.asarray(y[i:i + batch_size])

    return gen


def collapse_of_model(
    model, params, x, y, *, batch_size: int = 512, progress: bool = False, **options
) -> CollapseResult:
    """NC1-NC4 of ``model.features(params, x)`` with the model's own read-out (``readout``).

    Features are computed batch by batch (jit-compiled) and streamed twice through
    ``neural_collapse_stream``; ``options`` are its keyword arguments (method, variants).
    ``progress`` shows a tqdm bar per pass.
    """
    import jax

    _check_xy(x, y)
    W, b = readout(model, params)
    feats = jax.jit(model.features)
    gen = _batched(lambda xb: np.asarray(feats(params, xb)), x, y, batch_size, progress,
                   "collapse")
    return neural_collapse_stream(gen, W, b, num_classes=W.shape[0], **options)


def collapse_by_layer(
    model,
    params,
    x,
    y,
    layers: Sequence[str] | None = None,
    *,
    batch_size: int = 512,
    progress: bool = False,
    **options,
) -> pd.DataFrame:
    """Neural collapse of every layer's representation (Rangamani et al. 2023, "Feature learning
    in deep classifiers through intermediate neural collapse"; Dang et al. 2023).

    For each layer in ``layers`` (default ``model.layer_names()``) the flattened activations are
    streamed (two passes, subspace NC1, so no ``D x D`` matrix even for wide conv layers) and
    NC1/NC2 computed; ``nc4`` compares the layer's nearest-class-centre rule with the network's
    prediction; the feature layer (``model.feature``) also gets the read-out metrics (NC3, W).
    Options: ``nc1_variant, nc2_variant, global_mean, rtol``; ``progress`` shows tqdm bars.
    Returns columns ``layer, metric, value`` in layer order.
    """
    import jax

    _check_xy(x, y)
    names = list(layers) if layers is not None else model.layer_names()
    if not names:
        raise InvalidArgumentError(f"model {model.arch!r} has no tapped layers; pass layers=[...]")
    W, b = readout(model, params)
    C = W.shape[0]
    wanted = names + ([model.output] if model.output not in names else [])
    fwd = jax.jit(lambda p, xb: model.intermediates(p, xb, wanted))
    gen = _batched(lambda xb: {k: np.asarray(v) for k, v in fwd(params, xb).items()}, x, y,
                   batch_size, progress, "collapse by layer")
    accs = {name: CollapseAccumulator(C) for name in names}
    for acts, yb in gen():
        for name in names:
            accs[name].update(acts[name], yb)
    for acts, yb in gen():
        pred = np.argmax(acts[model.output], axis=1)
        for name in names:
            accs[name].update_second(acts[name], yb, pred)
    rows = []
    for name in names:
        wb = (W, b) if name == model.feature else (None, None)
        res = collapse_from_stats(accs[name].stats(), *wb, **options)
        rows += [(name, k, v) for k, v in res.items()]
    return pd.DataFrame(rows, columns=["layer", "metric", "value"])


@METRICS.register("collapse", help="neural collapse NC1-NC4 (Papyan et al. 2020), train/test")
def collapse_metric(model, params, data) -> pd.DataFrame:
    """Registry entry: ``collapse_of_model`` on the train and test splits of a ``Dataset``;
    columns ``metric, value, split``."""
    frames = []
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}", None), getattr(data, f"y_{split}", None)
        if x is None or y is None or len(x) == 0:
            continue
        df = collapse_of_model(model, params, x, y).to_frame()
        df["split"] = split
        frames.append(df)
    if not frames:
        raise InvalidArgumentError("the dataset has neither a train nor a test split")
    return pd.concat(frames, ignore_index=True)
