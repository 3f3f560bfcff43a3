"""Neural-collapse metrics from class statistics: the ``CollapseResult`` mapping and
``collapse_from_stats``, which turns the per-class counts, means and within-class scatter that
``analyses.collapse_stream`` accumulates into NC1-NC4 and their published variants.

The definitions, with their sources, are in the docstring of :mod:`dynkit.analyses.collapse`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.validation import check_finite

from .collapse_stream import ClassStats

__all__ = ["GLOBAL_MEANS", "NC1_VARIANTS", "NC2_VARIANTS", "CollapseResult", "check_classifier",
           "check_options", "collapse_from_stats"]

NC1_VARIANTS = ("pinv", "trace_ratio")
NC2_VARIANTS = ("centered", "uncentered")
GLOBAL_MEANS = ("samples", "classes")


@dataclass(frozen=True)
class CollapseResult(Mapping):
    """Frozen mapping ``metric -> float``: ``res["nc1"]``, ``res.nc1``, ``res.to_frame()``.

    Args:
        metrics: the values by metric name (converted to floats, read-only).

    Example:
        >>> res = CollapseResult({"nc1": 0.5})
        >>> res.nc1, dict(res)
        (0.5, {'nc1': 0.5})
    """

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
        """Tidy table of the metrics.

        Returns:
            DataFrame with columns ``metric, value``.

        Example:
            >>> CollapseResult({"nc1": 0.5, "nc4": 0.0}).to_frame()
              metric  value
            0    nc1    0.5
            1    nc4    0.0
        """
        return pd.DataFrame({"metric": list(self.metrics), "value": list(self.metrics.values())})


# --------------------------------------------------------------------- metrics from statistics
def check_options(nc1_variant: str, nc2_variant: str, global_mean: str, rcond) -> float:
    """Validate the definition options of ``collapse_from_stats``; return ``rcond`` as a float.

    Example:
        >>> check_options("pinv", "centered", "samples", 1e-15)
        1e-15
    """
    for name, value, allowed in (("nc1_variant", nc1_variant, NC1_VARIANTS),
                                 ("nc2_variant", nc2_variant, NC2_VARIANTS),
                                 ("global_mean", global_mean, GLOBAL_MEANS)):
        if value not in allowed:
            raise InvalidArgumentError(f"{name} must be one of {allowed}; got {value!r}")
    rcond = float(rcond)
    if not (np.isfinite(rcond) and 0.0 <= rcond < 1.0):
        raise InvalidArgumentError(f"rcond must be a number in [0, 1); got {rcond}")
    return rcond


def check_classifier(W, b, num_classes: int, dim: int):
    """Validate a read-out ``W`` of shape ``(C, D)`` and bias ``b`` of shape ``(C,)``.

    Args:
        W: classifier ``(C, D)`` (rows = class weight vectors), finite.
        b: bias ``(C,)`` or ``None`` (zeros).
        num_classes: ``C``.
        dim: feature dimension ``D``.

    Returns:
        ``(W, b)`` as float64 arrays.

    Raises:
        ShapeMismatchError: a shape is not the expected one (e.g. a dense kernel stored
            ``(D, C)``).
        InvalidArgumentError: ``W`` has NaN or infinite entries.

    Example:
        >>> W, b = check_classifier(np.eye(2), None, 2, 2)
        >>> b
        array([0., 0.])
    """
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
    return float(np.std(v) / np.mean(v))  # population std (ddof=0)


def _pairs(G):
    return G[np.triu_indices(len(G), 1)]


def _cosines(V):
    u = V / np.linalg.norm(V, axis=1, keepdims=True)
    return _pairs(u @ u.T)


def _etf_distance(G):
    """``‖G/‖G‖_F - (I - 11ᵀ/C)/√(C-1)‖_F`` for a ``C x C`` matrix ``G``."""
    C = len(G)
    target = np.eye(C) - np.ones((C, C)) / C
    return float(np.linalg.norm(G / np.linalg.norm(G) - target / np.sqrt(C - 1)))


def _shape_metrics(V, suffix=""):
    """Equinorm, equiangularity, shifted equiangularity and ETF distance of the rows of V."""
    cos = _cosines(V)
    C = len(V)
    return {
        "nc2_equinorm" + suffix: _cv(np.linalg.norm(V, axis=1)),
        "nc2_equiangle" + suffix: float(np.std(cos)),
        "nc2_equiangle_shift" + suffix: float(np.mean(np.abs(cos + 1.0 / (C - 1)))),
        "nc2_etf" + suffix: _etf_distance(V @ V.T),
    }


def _nc1_pinv(stats, M, C, N, rcond):
    """``Tr(Σ_W Σ_B^†)/C`` in the span ``Q`` of the means: ``Σ_B = AᵀA/C`` with ``A = M Q``, whose
    eigenpairs come from the SVD of ``A`` (eigenvalues ``s²/C``, accurate to ``eps² λ_max``,
    so the rank deficit of ``Σ_B`` is never mistaken for an eigenvalue above the cut-off)."""
    _, s, Vt = np.linalg.svd(M @ stats.basis, full_matrices=False)
    lam = s * s / C
    keep = lam > rcond * lam[0]
    U = Vt[keep].T
    return float(np.trace(U.T @ (stats.within_proj / N) @ U / lam[keep][None, :]) / C)


def _pair_sqdist(V):
    """``‖v_c - v_c'‖²`` for ``c < c'`` in ``np.triu_indices`` order (row by row, no C x C x D
    array and no cancellation of ``‖v‖² - 2 v·v' + ‖v'‖²``)."""
    return np.concatenate([np.sum((V[c + 1:] - V[c]) ** 2, axis=1) for c in range(len(V) - 1)])


def _cdnv(mu, n, class_trace):
    var = class_trace / n
    iu = np.triu_indices(len(mu), 1)
    with np.errstate(divide="ignore", invalid="ignore"):  # coinciding means: inf
        return float(np.mean((var[iu[0]] + var[iu[1]]) / (2.0 * _pair_sqdist(mu))))


def _log_uniformity(V):
    u = V / np.linalg.norm(V, axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        k = -0.5 * np.log(_pair_sqdist(u))  # log(1 / ‖u_c - u_c'‖)
    return {"gnc2_log": float(np.var(k)), "gnc2_log_energy": float(np.mean(k))}


def collapse_from_stats(
    stats: ClassStats,
    W=None,
    b=None,
    *,
    nc1_variant: str = "pinv",
    nc2_variant: str = "centered",
    global_mean: str = "samples",
    rcond: float = 1e-15,
) -> CollapseResult:
    """Neural-collapse metrics from accumulated ``ClassStats`` (keys and formulas in the module
    docstring).

    NC1 is evaluated in the span ``Q`` of the class means, ``Tr((QᵀΣ_W Q)(QᵀΣ_B Q)^†)/C``,
    which equals the ``D``-dimensional value because ``Σ_B^† = Q (QᵀΣ_B Q)^† Qᵀ``.

    Args:
        stats: ``ClassStats`` of the features (``CollapseAccumulator.stats()``).
        W: optional read-out ``(C, D)``; adds the ``*_W`` and NC3 keys.
        b: optional bias ``(C,)``; with ``W`` adds ``nc3_bias``.
        nc1_variant: ``"pinv"`` (default, Papyan et al.) or ``"trace_ratio"``.
        nc2_variant: ``"centered"`` (default) or ``"uncentered"`` class means for NC2/GNC2/NC3.
        global_mean: ``"samples"`` (default) or ``"classes"``.
        rcond: relative eigenvalue cut-off of ``Σ_B^†`` (default ``1e-15``, numpy's ``pinv``).

    Returns:
        A ``CollapseResult``; ``nc4`` only when the statistics hold NCC disagreements.

    References:
        Papyan, Han & Donoho (2020); Zhu et al. (2021); Galanti, György & Hutter (2022);
        Wu & Papyan (2024).

    Example:
        >>> import numpy as np
        >>> from dynkit.analyses.collapse_stream import CollapseAccumulator
        >>> acc = CollapseAccumulator(3, dense=True)
        >>> acc.update(np.eye(3).repeat(2, axis=0), np.arange(3).repeat(2))
        >>> abs(collapse_from_stats(acc.stats())["nc2_etf"]) < 1e-12
        True
    """
    rcond = check_options(nc1_variant, nc2_variant, global_mean, rcond)
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
    if np.sum(M * M) <= 0:
        raise InvalidArgumentError("all class means coincide: Σ_B = 0 and NC1 is undefined")
    out: dict[str, float] = {}
    if nc1_variant == "pinv":
        out["nc1"] = _nc1_pinv(stats, M, C, N, rcond)
    else:
        out["nc1"] = float(stats.within_trace / N / (np.sum(M * M) / C))
    out["nc1_cdnv"] = _cdnv(mu, n, stats.class_within_trace[present])
    V = M if nc2_variant == "centered" else mu
    out.update(_shape_metrics(V))
    out.update(_log_uniformity(V))
    if W is not None:
        W, b_full = check_classifier(W, b, len(stats.counts), stats.dim)
        Wp = W[present]
        out.update(_shape_metrics(Wp, "_W"))
        out["nc3"] = float(
            np.linalg.norm(Wp / np.linalg.norm(Wp) - V / np.linalg.norm(V)) ** 2
        )
        out["nc3_etf"] = _etf_distance(Wp @ V.T)
        if b is not None:
            out["nc3_bias"] = float(np.linalg.norm(Wp @ mu_g + b_full[present]))
    if stats.ncc_disagreements is not None:
        out["nc4"] = stats.ncc_disagreements / N
    return CollapseResult(out)
