"""Curvature along a training run: sharpness, trace and gradient overlap vs step, and the
``"hessian"`` entry of ``dynkit metrics``.

Per checkpoint (``hessian_metrics``), on fixed data:

* ``sharpness``: ``λ_max(H)``, the top Hessian eigenvalue (Lanczos); gradient descent with
  step ``η`` is stable on a quadratic iff ``λ_max < 2/η``, and full-batch GD drives it up to
  ``2/η`` (Cohen et al. 2021);
* ``hessian_lambda_2 ..``: the next eigenvalues (with ``k > 1``);
* ``hessian_trace``, ``hessian_trace_se``: Hutchinson's ``tr H`` and its standard error
  (SGD's linear stability bounds it: Wu, Ma & E 2018; Ma & Ying 2021);
* ``gradient_overlap``: the gradient's fraction in the top-``overlap_k`` eigenspace (Gur-Ari,
  Roberts & Dyer 2018).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dynkit.analyses.hessian_ops import hessian_operator
from dynkit.analyses.hessian_spectrum import gradient_overlap, top_eigenvalues, trace
from dynkit.checkpoints.run import iterate
from dynkit.errors import InvalidArgumentError
from dynkit.registry import METRICS
from dynkit.schema import step_epoch, tidy
from dynkit.validation import check_integer

__all__ = ["METRIC_POINTS", "hessian_metric", "hessian_metrics", "hessian_series"]

#: Training points the ``"hessian"`` registry metric uses (the first ones).
METRIC_POINTS = 128


def hessian_metrics(model, params, x, y, *, k: int = 1, overlap_k: int | None = None,
                    rtol: float = 0.05, max_probes: int = 200, seed: int = 0,
                    trace_method: str = "hvp", **options) -> dict[str, float]:
    """Sharpness, top eigenvalues, trace (with standard error) and gradient overlap of one
    checkpoint.

    Args:
        model, params, x, y: as in ``hessian_operator``.
        k: top eigenvalues to report (``sharpness`` is the first).
        overlap_k: eigenspace dimension of ``gradient_overlap`` (default ``k``; ``0`` skips
            it).
        rtol: relative standard error of the Hutchinson trace.
        max_probes: most Hutchinson probes (the trace may stop short of ``rtol``).
        seed: seed of the Lanczos start and the probes.
        trace_method: how each probe value ``zᵀHz`` is computed, ``"hvp"`` (default) or
            ``"forward"`` (second directional derivatives, no backward pass; equal to
            rounding): ``trace(method=)``.
        **options: ``loss``, ``layers``, ``ggn``, ``batch_size``, ``dtype`` of
            ``hessian_operator``.

    Returns:
        ``{"sharpness", "hessian_lambda_2", ..., "hessian_trace", "hessian_trace_se",
        "gradient_overlap"}``.

    Example:
        >>> import jax.numpy as jnp, dynkit as dk
        >>> model = dk.models.mlp(2, [], 1, bias=False)
        >>> params = {"head": {"w": jnp.zeros((2, 1))}}
        >>> x = jnp.array([[2.0, 0.0], [0.0, 1.0]]); y = jnp.array([[1.0], [0.0]])
        >>> {m: round(v, 6) for m, v in hessian_metrics(model, params, x, y, loss="mse").items()}
        {'sharpness': 2.0, 'hessian_trace': 2.5, 'hessian_trace_se': 0.0, 'gradient_overlap': 1.0}
    """
    op = hessian_operator(model, params, x, y, **options)
    k = min(check_integer("k", k), op.dim)
    overlap_k = k if overlap_k is None else min(check_integer("overlap_k", overlap_k, 0), op.dim)
    eig = top_eigenvalues(op, k=max(k, overlap_k, 1), seed=seed)
    out = {"sharpness": float(eig.eigenvalues[0])}
    out.update({f"hessian_lambda_{i + 1}": float(v) for i, v in enumerate(eig.eigenvalues[1:k],
                                                                             start=1)})
    est = trace(op, rtol=rtol, max_probes=max_probes, seed=seed, method=trace_method)
    out.update(hessian_trace=est.value, hessian_trace_se=est.std_error)
    if overlap_k:
        try:
            out["gradient_overlap"] = gradient_overlap(op, eigen=eig.head(overlap_k)).value
        except InvalidArgumentError:  # a zero gradient: the overlap is undefined
            out["gradient_overlap"] = float("nan")
    return out


def _data(data, points: int | None):
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
    elif hasattr(data, "x_train") and hasattr(data, "y_train"):
        x, y = data.x_train, data.y_train
    else:
        raise InvalidArgumentError("data must be a dynkit Dataset or a pair (x, y), got "
                                   f"{type(data).__name__}")
    if points is not None:
        points = check_integer("points", points)
        x, y = x[:points], y[:points]
    return np.asarray(x), np.asarray(y)


def hessian_series(run, data, *, every: int = 1, include_last: bool = True,
                   points: int | None = None, k: int = 1, overlap_k: int | None = None,
                   rtol: float = 0.05, trace_method: str = "hvp", loss=None,
                   progress: bool = True, **options) -> pd.DataFrame:
    """``hessian_metrics`` at every ``every``-th checkpoint of a run, as the tidy series.

    The loss is each checkpoint's training loss (``meta["loss"]``, written by
    ``dynkit.train``) unless ``loss`` is given; without either, cross-entropy for integer
    labels and MSE otherwise.

    Args:
        run: a run folder, a ``Run`` or an iterable of checkpoints
            (``dynkit.checkpoints.iterate``).
        data: a ``Dataset`` (its training split) or a pair ``(x, y)``.
        every, include_last: which checkpoints (``iterate``).
        points: use the first ``points`` points only (default all).
        k, overlap_k, rtol, trace_method: as in ``hessian_metrics``.
        loss: the loss (overrides the checkpoints').
        progress: show a progress bar.
        **options: ``layers``, ``ggn``, ``batch_size``, ``dtype`` of ``hessian_operator``.

    Returns:
        The tidy series ``step, epoch, metric, value`` (``dynkit.schema``).

    References:
        Cohen, Kaur, Li, Kolter & Talwalkar 2021, "Gradient descent on neural networks
        typically occurs at the edge of stability" (ICLR); Gur-Ari, Roberts & Dyer 2018,
        "Gradient descent happens in a tiny subspace".

    Example:
        >>> from types import SimpleNamespace
        >>> import jax, dynkit as dk
        >>> model = dk.models.mlp(2, [3], 2)
        >>> run = [SimpleNamespace(model=model, params=model.init(jax.random.PRNGKey(s)),
        ...                        step=10 * s, meta={"loss": "cross_entropy"}) for s in (0, 1)]
        >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]); y = np.array([0, 1, 1])
        >>> df = hessian_series(run, (x, y), progress=False)
        >>> df[df.metric == "sharpness"].step.tolist()
        [0, 10]
    """
    from tqdm.auto import tqdm

    x, y = _data(data, points)
    rows: list[dict] = []
    for i, ckpt in tqdm(iterate(run, every, include_last, indexed=True), disable=not progress,
                        desc="hessian", leave=False):
        meta = ckpt.meta if isinstance(getattr(ckpt, "meta", None), dict) else {}
        values = hessian_metrics(ckpt.model, ckpt.params, x, y, k=k, overlap_k=overlap_k,
                                 rtol=rtol, trace_method=trace_method,
                                 loss=loss if loss is not None else meta.get("loss"),
                                 **options)
        keys = step_epoch(ckpt, i)
        rows += [{**keys, "metric": m, "value": v} for m, v in values.items()]
    if not rows:
        raise InvalidArgumentError("hessian_series: the run holds no checkpoints")
    return tidy(rows)


@METRICS.register("hessian", "sharpness (top Hessian eigenvalue), Hutchinson trace and "
                             "gradient overlap on training points")
def hessian_metric(model, params, data) -> pd.DataFrame:
    """Registry metric ``"hessian"``: ``hessian_metrics`` of one checkpoint on the first
    ``METRIC_POINTS`` training points (trace to 10% standard error, at most 100 probes), with
    cross-entropy for classification and MSE for
    regression, and the overlap with the top-``C`` eigenspace (``C`` classes; Gur-Ari et al.
    2018).

    Example:
        >>> import jax, dynkit as dk
        >>> data = dk.data.load("gaussian_mixture", n_train=16, n_test=4, num_classes=2)
        >>> model = dk.models.mlp(2, [4], 2)
        >>> hessian_metric(model, model.init(jax.random.PRNGKey(0)), data).metric.tolist()
        ['sharpness', 'hessian_trace', 'hessian_trace_se', 'gradient_overlap']
    """
    x, y = _data(data, METRIC_POINTS)
    classification = getattr(data, "task", None) == "classification"
    values = hessian_metrics(model, params, x, y,
                             overlap_k=(data.num_classes or 1) if classification else 1,
                             rtol=0.1, max_probes=100,
                             loss="cross_entropy" if classification else "mse")
    return pd.DataFrame({"metric": list(values), "value": list(values.values())})
