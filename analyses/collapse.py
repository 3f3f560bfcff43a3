"""Neural-collapse metrics NC1-NC4 (Papyan, Han & Donoho 2020) and their published variants,
dense, streamed and per layer.

Notation: ``N`` samples ``h_i ∈ R^D`` with labels ``y_i`` in ``C`` classes, class counts ``n_c``,
class means ``μ_c``, global mean ``μ_G`` (``global_mean="samples"``: ``Σ_c n_c μ_c / N``, Papyan
et al.; ``"classes"``: ``Σ_c μ_c / C``, the balanced-data convention), centered means
``m_c = μ_c - μ_G`` stacked as the rows of ``M`` (``C x D``), classifier ``W`` (``C x D``, rows
``w_c``), bias ``b``, and the simplex-ETF Gram target ``P = (I - 11ᵀ/C)/√(C-1)``
(``‖I - 11ᵀ/C‖_F = √(C-1)``). ``nc2_variant="uncentered"`` uses the raw means ``μ_c`` in place of
``m_c`` wherever ``M`` appears below (bias-free models, Dang et al. 2023).

Keys of the result (the defaults of the original papers; each variant is its own key):

* ``nc1 = Tr(Σ_W Σ_B^†) / C`` with ``Σ_W = (1/N) Σ_i (h_i - μ_{y_i})(h_i - μ_{y_i})ᵀ`` and
  ``Σ_B = (1/C) Σ_c m_c m_cᵀ`` (Papyan et al. 2020, Fig. 6). ``Σ_B^†`` keeps the eigenvalues
  ``λ > rcond · λ_max``; the default ``rcond = 1e-15`` is ``numpy.linalg.pinv``'s, so ``nc1``
  equals ``np.trace(Σ_W @ np.linalg.pinv(Σ_B)) / C`` (scipy and torch use ``max(D, C) · eps``,
  the same order). ``nc1_variant="trace_ratio"``: ``Tr(Σ_W) / Tr(Σ_B)``, the pseudo-inverse-free
  within/between variance ratio (robust when ``Σ_B`` is ill-conditioned).
* ``nc1_cdnv = mean_{c<c'} (σ_c² + σ_{c'}²) / (2 ‖μ_c - μ_{c'}‖²)``, ``σ_c² = (1/n_c)
  Σ_{y_i=c} ‖h_i - μ_c‖²``: class-distance normalized variance (Galanti, György & Hutter 2022,
  "On the role of neural collapse in transfer learning", Def. 1).
* ``nc2_equinorm = std_c ‖m_c‖ / mean_c ‖m_c‖`` (population std, ``ddof=0``), ``nc2_equiangle
  = std_{c<c'} cos(m_c, m_c')``, ``nc2_equiangle_shift = mean_{c<c'} |cos(m_c, m_c') + 1/(C-1)|``
  (Papyan et al. 2020, Fig. 3-4).
* ``nc2_etf = ‖MMᵀ/‖MMᵀ‖_F - P‖_F`` (Zhu et al. 2021, "A geometric analysis of neural collapse
  with unconstrained features", NC2).
* ``gnc2_log`` and ``gnc2_log_energy``: hyperspherical uniformity (Wu & Papyan 2024,
  "Linguistic collapse: neural collapse in (large) language models", GNC2, after Liu et al.
  2023): with ``u_c = m_c / ‖m_c‖`` and the logarithmic inverse-distance kernel
  ``k_{cc'} = log(1 / ‖u_c - u_{c'}‖)`` over the ``C(C-1)/2`` pairs ``c < c'``,
  ``gnc2_log_energy = mean k`` (the log energy; ``>= -½ log(2C/(C-1))``, with equality exactly
  for a simplex ETF) and ``gnc2_log = var k`` (population variance over the pairs, the
  "variation" Wu & Papyan report; 0 when all pairs are equidistant).
* Given ``W`` (rows of absent classes dropped): ``nc2_equinorm_W``, ``nc2_equiangle_W``,
  ``nc2_equiangle_shift_W`` (the three NC2 statistics above for the rows ``w_c``; Papyan et al.
  2020, Fig. 3-4), ``nc2_etf_W = ‖WWᵀ/‖WWᵀ‖_F - P‖_F`` (Zhu et al. 2021, NC2 of the
  classifier), ``nc3 = ‖W/‖W‖_F - M/‖M‖_F‖_F²`` (self-duality, Papyan et al. 2020, Fig. 5) and
  ``nc3_etf = ‖WH/‖WH‖_F - P‖_F`` with ``H = Mᵀ`` (``D x C``, columns ``m_c``), so
  ``(WH)_{cc'} = w_c·m_{c'}`` (Zhu et al. 2021, NC3). Given ``W`` and ``b``:
  ``nc3_bias = ‖W μ_G + b‖`` (bias collapse ``b → -W μ_G``; Papyan et al. 2020, Zhu et al. 2021's
  code; cross-entropy is blind to a common shift of ``b``, so only weight decay on ``b`` drives
  the common part to 0).
* ``nc4`` = fraction of samples whose nearest class center ``argmin_c ‖h - μ_c‖`` (over the
  classes with samples) differs from the network's prediction ``argmax_c (Wh + b)_c`` (over
  *all* ``C`` rows of ``W``, absent classes included: a sample predicted as a class without
  samples counts as a disagreement) or the given ``predictions`` (Papyan et al. 2020, Fig. 7).

Classes with no sample are left out of every metric except the network's prediction in NC4.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from dynkit.errors import InvalidArgumentError, ShapeMismatchError, UnsupportedLayerError
from dynkit.evaluate import compiled_features, compiled_intermediates
from dynkit.registry import METRICS

from .collapse_metrics import (
    GLOBAL_MEANS,
    NC1_VARIANTS,
    NC2_VARIANTS,
    CollapseResult,
    check_classifier,
    check_options,
    collapse_from_stats,
)
from .collapse_stream import CollapseAccumulator, blocks, check_batch, check_shapes

__all__ = [
    "GLOBAL_MEANS",
    "METHODS",
    "NC1_VARIANTS",
    "NC2_VARIANTS",
    "CollapseResult",
    "check_classifier",
    "collapse_by_layer",
    "collapse_from_stats",
    "collapse_metric",
    "collapse_of_model",
    "neural_collapse",
    "neural_collapse_stream",
    "readout",
]

METHODS = ("subspace", "dense")


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
    nc2_variant: str = "centered",
    global_mean: str = "samples",
    rcond: float = 1e-15,
) -> CollapseResult:
    """Neural-collapse metrics over batches, memory independent of N (``analyses.collapse_stream``).

    ``batches_fn()`` returns a fresh iterator of ``(features, labels)`` or ``(features, labels,
    logits_or_predicted_classes)``; it is called twice (pass 2 projects on the class-mean span,
    ``method="subspace"``, and counts NC4) or once (``method="dense"`` keeps a ``D x D``
    scatter; a second call only when NC4 is wanted). NC4 uses the third batch entry when present,
    else ``argmax(h Wᵀ + b)``. Each batch is converted to float64 on its own.

    Args:
        batches_fn: function returning a fresh iterator of batches (see above).
        W, b: optional read-out ``(C, D)`` and bias ``(C,)``.
        num_classes: number of classes ``C`` (default: ``W.shape[0]``, else the largest label
            seen plus one).
        method: ``"subspace"`` (default, two passes, no ``D x D`` matrix) or ``"dense"``.
        nc1_variant, nc2_variant, global_mean, rcond: as in ``collapse_from_stats``.

    Returns:
        A ``CollapseResult`` (keys in the module docstring).

    References:
        Papyan, Han & Donoho (2020); Chan, Golub & LeVeque (1979) for the merge.

    Example:
        >>> import numpy as np
        >>> h, y = np.eye(3).repeat(2, axis=0), np.arange(3).repeat(2)
        >>> res = neural_collapse_stream(lambda: iter([(h[:3], y[:3]), (h[3:], y[3:])]))
        >>> abs(res["nc1"]) < 1e-12
        True
    """
    if method not in METHODS:
        raise InvalidArgumentError(f"method must be one of {METHODS}; got {method!r}")
    check_options(nc1_variant, nc2_variant, global_mean, rcond)
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
        W, b_full = check_classifier(W, b, num_classes, acc.dim)
    if method == "subspace" or W is not None or has_extra:
        acc.close_first_pass()
        for batch in batches_fn():
            x, y, extra = _unpack(batch)
            x, y = check_batch(x, y, dim=acc.dim)
            acc.update_second(x, y, _predictions(x, extra, W, None if W is None else b_full))
    return collapse_from_stats(
        acc.stats(), W, b, nc1_variant=nc1_variant, nc2_variant=nc2_variant,
        global_mean=global_mean, rcond=rcond,
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
    nc2_variant: str = "centered",
    global_mean: str = "samples",
    rcond: float = 1e-15,
) -> CollapseResult:
    """Neural-collapse metrics of in-memory features ``(N, D)``, labels ``(N,)`` and an optional
    read-out.

    The matrix is streamed through ``neural_collapse_stream`` in row blocks (views of about
    ``collapse_stream.BLOCK_BYTES``), so no float64 copy of it is made: the features may be
    float32 or a memory map.

    Args:
        features: ``(N, D)`` array (any real dtype).
        labels: ``(N,)`` integer class indices.
        W: optional read-out ``(C, D)`` (rows = class weight vectors).
        b: optional bias ``(C,)``.
        predictions: class indices ``(N,)`` or logits ``(N, C)``; override ``argmax(h Wᵀ + b)``
            for NC4.
        num_classes, method, nc1_variant, nc2_variant, global_mean, rcond: as in
            ``neural_collapse_stream`` and ``collapse_from_stats``.

    Returns:
        A ``CollapseResult`` with ``nc1, nc1_cdnv, nc2_equinorm, nc2_equiangle,
        nc2_equiangle_shift, nc2_etf, gnc2_log, gnc2_log_energy``; given ``W`` also
        ``nc2_equinorm_W, nc2_equiangle_W, nc2_equiangle_shift_W, nc2_etf_W, nc3, nc3_etf``;
        given ``W`` and ``b``, ``nc3_bias``; given ``W`` or ``predictions``, ``nc4``.

    References:
        Papyan, Han & Donoho (2020); Zhu et al. (2021); Galanti, György & Hutter (2022);
        Wu & Papyan (2024). Definitions: module docstring.

    Example:
        >>> import numpy as np
        >>> h = np.array([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]])
        >>> res = neural_collapse(h, np.array([0, 0, 1, 1]))
        >>> round(res["nc1"], 6)  # Σ_W = diag(0, 0.01), Σ_B = diag(1, 0): Σ_W ⟂ Σ_B
        0.0
        >>> round(res["nc1_cdnv"], 6)  # (0.01 + 0.01) / (2 * 2²)
        0.0025
    """
    x, y = check_shapes(features, labels)
    if predictions is not None:
        predictions = np.asarray(predictions)
        if predictions.shape[:1] != x.shape[:1]:
            raise ShapeMismatchError(
                f"predictions must have one entry per sample ({x.shape[0]}); "
                f"got shape {predictions.shape}"
            )

    def batches():
        for xb, yb, pb in blocks(x, y, predictions):
            yield (xb, yb) if pb is None else (xb, yb, pb)

    return neural_collapse_stream(
        batches, W, b, num_classes=num_classes, method=method, nc1_variant=nc1_variant,
        nc2_variant=nc2_variant, global_mean=global_mean, rcond=rcond,
    )


# --------------------------------------------------------------------- models
def _check_feature_node(model) -> None:
    """Refuse a model whose feature node is a map-valued output (a U-Net's image, a
    segmentation map: a graph imported by ``dk.models.from_torch`` without a ``Linear`` and
    without ``feature=``): neural collapse needs an explicit feature representation.

    Raises:
        UnsupportedLayerError: naming the model, its output and how to name a feature node.
    """
    if model.feature != model.output:
        return
    shape = model.node_shapes()[model.output]
    if len(shape) > 1:
        raise UnsupportedLayerError(
            f"neural collapse needs an explicit feature node: model {model.arch!r} has none "
            f"(its feature node is its output {model.output!r}, a {shape} map, as in a U-Net); "
            "import it with dk.models.from_torch(module, x, feature='<module path>'), e.g. the "
            "bottleneck, and give model.features(params, x) to neural_collapse")


def readout(model, params):
    """Effective read-out ``(W, b)`` of a ``dynkit`` model, as numpy float64.

    ``model.readout()`` names the dense node fed by ``model.feature`` and the product of the
    ``scale`` factors after it; then ``W = factor · w_mult · wᵀ`` and ``b = factor · b_mult · b``
    (``w_mult``, ``b_mult`` the parameterization's forward multipliers), so that
    ``logits = W h + b`` for the features ``h = model.features(params, x)``.

    Args:
        model: a dynkit ``Model``.
        params: its parameters.

    Returns:
        ``(W (C, D), b (C,))``; ``b`` is zeros for a bias-free read-out.

    Example:
        >>> import jax
        >>> from dynkit.models import mlp
        >>> model = mlp(3, [4], 2)
        >>> params = model.init(jax.random.PRNGKey(0))
        >>> W, b = readout(model, params)
        >>> x = np.ones((1, 3))
        >>> np.allclose(np.asarray(model.features(params, x)) @ W.T + b, model.apply(params, x))
        True
    """
    name, factor = model.readout()
    w_mult, b_mult = model.multipliers(name)
    p = params[name]
    W = factor * w_mult * np.asarray(p["w"], dtype=np.float64).T
    if "b" in p:
        b = factor * b_mult * np.asarray(p["b"], dtype=np.float64)
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
    """NC1-NC4 of ``model.features(params, x)`` with the model's own read-out (:func:`readout`).

    Features are computed batch by batch (jit-compiled) and streamed twice through
    ``neural_collapse_stream``, so no ``(N, D)`` feature matrix is held.

    Args:
        model: a dynkit ``Model``.
        params: its parameters.
        x: inputs ``(N, ...)``.
        y: ``N`` integer labels.
        batch_size: samples per forward pass.
        progress: show a tqdm bar per pass.
        **options: keyword arguments of ``neural_collapse_stream`` (``method``, ``nc1_variant``,
            ``nc2_variant``, ``global_mean``, ``rcond``).

    Returns:
        ``CollapseResult`` (keys as in :func:`neural_collapse`, with ``W``, ``b`` and ``nc4``).

    References:
        Papyan, Han & Donoho 2020, "Prevalence of neural collapse during the terminal phase
            of deep learning training" (PNAS).

    Example:
        >>> import jax
        >>> from dynkit.models import mlp
        >>> model = mlp(2, [8], 2)
        >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> y = np.array([0, 0, 1, 1])
        >>> res = collapse_of_model(model, model.init(jax.random.PRNGKey(0)), x, y)
        >>> {"nc1", "nc3", "nc4"} <= set(res)
        True
    """
    _check_xy(x, y)
    _check_feature_node(model)
    W, b = readout(model, params)
    feats = compiled_features(model)
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
    """Neural collapse of every layer's representation.

    For each layer in ``layers`` the flattened activations are streamed (two passes, subspace
    NC1, so no ``D x D`` matrix even for wide conv layers) and NC1/NC2 computed; ``nc4``
    compares the layer's nearest-class-center rule with the network's prediction; the feature
    layer (``model.feature``) also gets the read-out metrics (NC3, W).

    Args:
        model: a dynkit ``Model``.
        params: its parameters.
        x: inputs ``(N, ...)``.
        y: ``N`` integer labels.
        layers: node names (default ``model.layer_names()``, the tapped layers).
        batch_size: samples per forward pass.
        progress: show tqdm bars.
        **options: ``nc1_variant, nc2_variant, global_mean, rcond`` of
            :func:`collapse_from_stats`.

    Returns:
        DataFrame with columns ``layer, metric, value``, in layer order.

    References:
        Rangamani, Lindegaard, Galanti & Poggio 2023, "Feature learning in deep classifiers
        through intermediate neural collapse" (ICML); Dang et al. 2023, "Neural collapse in deep
        linear networks: from balanced to imbalanced data" (ICML).

    Example:
        >>> import jax
        >>> from dynkit.models import mlp
        >>> model = mlp(2, [8, 8], 2)
        >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> y = np.array([0, 0, 1, 1])
        >>> df = collapse_by_layer(model, model.init(jax.random.PRNGKey(0)), x, y)
        >>> df.layer.unique().tolist() == model.layer_names()
        True
    """
    _check_xy(x, y)
    names = list(layers) if layers is not None else model.layer_names()
    if not names:
        raise InvalidArgumentError(f"model {model.arch!r} has no tapped layers; pass layers=[...]")
    _check_feature_node(model)
    W, b = readout(model, params)
    C = W.shape[0]
    wanted = names + ([model.output] if model.output not in names else [])
    fwd = compiled_intermediates(model, tuple(wanted))
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
    """Registry metric ``"collapse"``: :func:`collapse_of_model` on the train and test splits.

    Args:
        model: a dynkit ``Model``.
        params: its parameters.
        data: a ``dynkit.data.Dataset`` (a split that is missing or empty is left out).

    Returns:
        DataFrame with columns ``metric, value, split``.

    References:
        Papyan, Han & Donoho 2020, "Prevalence of neural collapse during the terminal phase
            of deep learning training" (PNAS).

    Example:
        >>> import jax
        >>> import dynkit as dk
        >>> data = dk.data.load("gaussian_mixture", n_train=12, n_test=6)
        >>> model = dk.models.mlp(2, [4], 3)
        >>> df = collapse_metric(model, model.init(jax.random.PRNGKey(0)), data)
        >>> df.split.unique().tolist()
        ['train', 'test']
    """
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
