"""Neural collapse with imbalanced classes: orthogonal frames and minority collapse.

With class counts ``n_k`` the simplex ETF is no longer the optimal geometry.

* Dang et al. 2023, "Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced Data"
  (bias-free MSE unconstrained-features model): features collapse to class means that are
  *orthogonal* (uncentered), classifier rows are orthogonal and aligned with them, and the lengths
  depend on ``n_k``. For the one-layer model
  ``min_{W,H} 1/(2N) ‖WH - Y‖_F² + λ_W/2 ‖W‖_F² + λ_H/2 ‖H‖_F²`` the global minimizer has
  ``p_k = (1 - N √(λ_W λ_H / n_k))_+``, ``‖w_k‖² = √(n_k λ_H / λ_W) p_k`` and
  ``‖h_k‖² = √(λ_W / (n_k λ_H)) p_k``, so ``‖w_k‖ / ‖h_k‖ = √(n_k λ_H / λ_W)`` for every surviving
  class, and classes with ``n_k <= N² λ_W λ_H`` collapse to zero. (Derived here from the
  nuclear-norm form ``min_Z 1/(2N)‖Z - Y‖² + √(λ_Wλ_H)‖Z‖_*``, whose solution soft-thresholds the
  singular values ``√n_k`` of ``Y`` at ``N√(λ_Wλ_H)``; it is the one-layer case of Dang et al.'s
  imbalanced theorem, whose deep-linear version is ``deep_linear_norms``.)
* Fang et al. 2021, "Exploring deep neural networks via layer-peeled model: minority collapse in
  imbalanced training" (PNAS): as the imbalance ratio grows the classifier rows of the minority
  classes converge to one vector; ``minority_collapse`` is their mean pairwise cosine (-> 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from dynkit.errors import InvalidArgumentError

from .collapse import CollapseResult, check_classifier
from .collapse_stream import CollapseAccumulator, blocks, check_shapes

__all__ = [
    "class_norms",
    "deep_linear_norms",
    "imbalanced_collapse",
    "minority_collapse",
    "orthogonality",
    "ufm_imbalanced_norms",
]


def _class_means(features, labels, num_classes):
    acc = CollapseAccumulator(num_classes)
    for xb, yb in blocks(*check_shapes(features, labels)):
        acc.update(xb, yb)
    return acc.counts, acc.means


def class_norms(features, labels, W=None, *, num_classes: int | None = None) -> pd.DataFrame:
    """Per-class norms of the class means and classifier rows.

    ``mean_norm = ‖μ_k‖`` (uncentered), ``centered_mean_norm = ‖μ_k - μ_G‖`` with the
    sample-weighted global mean ``μ_G = Σ_k n_k μ_k / N``, and ``w_norm = ‖w_k‖``.

    Args:
        features: ``(N, D)`` features.
        labels: ``N`` integer labels.
        W: optional ``(C, D)`` classifier; adds the ``w_norm`` column.
        num_classes: number of classes ``C`` (default: rows of ``W``, else ``max(labels) + 1``).

    Returns:
        DataFrame, one row per class with samples: ``class, count, mean_norm,
        centered_mean_norm`` and, given ``W``, ``w_norm``.

    References:
        Dang et al. 2023, "Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced
        Data" (ICML), where these norms depend on the class counts.

    Example:
        >>> h = np.array([[3.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
        >>> class_norms(h, np.array([0, 0, 1]))[["count", "mean_norm"]].to_numpy().tolist()
        [[2.0, 3.0], [1.0, 1.0]]
    """
    if W is not None:
        num_classes = np.shape(W)[0] if num_classes is None else num_classes
    counts, means = _class_means(features, labels, num_classes)
    mu_g = counts @ means / counts.sum()
    df = pd.DataFrame({
        "class": np.arange(len(counts)),
        "count": counts,
        "mean_norm": np.linalg.norm(means, axis=1),
        "centered_mean_norm": np.linalg.norm(means - mu_g, axis=1),
    })
    if W is not None:
        W, _ = check_classifier(W, None, len(counts), means.shape[1])
        df["w_norm"] = np.linalg.norm(W, axis=1)
    return df[counts > 0].reset_index(drop=True)


def orthogonality(V) -> float:
    """Mean absolute pairwise cosine of the rows of ``V``:

        mean_{k<l} |cos(v_k, v_l)|,

    0 exactly for an orthogonal frame (the imbalanced-MSE optimum), ``1/(C-1)`` for a simplex
    ETF.

    Args:
        V: ``(C, D)`` array of nonzero rows (class means or classifier rows).

    Returns:
        The mean ``|cos|`` over the ``C(C-1)/2`` pairs, a float in ``[0, 1]``.

    References:
        Dang et al. 2023, "Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced
        Data" (ICML).

    Example:
        >>> orthogonality(np.eye(3))
        0.0
        >>> round(orthogonality(np.eye(3) - 1 / 3), 6)   # simplex ETF: 1 / (C - 1)
        0.5
    """
    V = np.asarray(V, dtype=np.float64)
    u = V / np.linalg.norm(V, axis=1, keepdims=True)
    iu = np.triu_indices(len(V), 1)
    return float(np.mean(np.abs((u @ u.T)[iu])))


def ufm_imbalanced_norms(counts, weight_decay_w: float, weight_decay_h: float) -> pd.DataFrame:
    """Predicted norms at the global minimizer of the bias-free MSE unconstrained-features model
    ``min_{W,H} 1/(2N) ‖WH - Y‖_F² + λ_W/2 ‖W‖_F² + λ_H/2 ‖H‖_F²`` (module docstring):

        ‖w_k‖² = √(n_k λ_H/λ_W) p_k,  ‖h_k‖² = √(λ_W/(n_k λ_H)) p_k,
        p_k = (1 - N √(λ_W λ_H / n_k))_+ .

    Args:
        counts: class counts ``n_k``, a 1-D array of positive numbers (``N = Σ n_k``).
        weight_decay_w: weight decay ``λ_W > 0`` of the classifier ``W``.
        weight_decay_h: weight decay ``λ_H > 0`` of the features ``H``.

    Returns:
        DataFrame, one row per class: ``class, count, w_norm`` (``‖w_k‖``), ``h_norm``
        (``‖h_k‖``, the class-mean norm); both 0 for a collapsed minority class.

    References:
        Dang et al. 2023, "Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced
        Data" (ICML).

    Example:
        >>> df = ufm_imbalanced_norms([4, 1], 0.1, 0.1)   # p = (1 - 5·0.1/√n_k)_+
        >>> np.round(df["w_norm"].to_numpy() ** 2, 6).tolist()
        [1.5, 0.5]
    """
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or np.any(n <= 0) or weight_decay_w <= 0 or weight_decay_h <= 0:
        raise InvalidArgumentError(
            "counts must be a 1-D array of positive class counts and weight_decay_w, "
            "weight_decay_h > 0"
        )
    p = np.maximum(1.0 - n.sum() * np.sqrt(weight_decay_w * weight_decay_h / n), 0.0)
    return pd.DataFrame({
        "class": np.arange(len(n)),
        "count": n.astype(np.int64),
        "w_norm": np.sqrt(np.sqrt(n * weight_decay_h / weight_decay_w) * p),
        "h_norm": np.sqrt(np.sqrt(weight_decay_w / (n * weight_decay_h)) * p),
    })


def deep_linear_norms(counts, weight_decay: float, depth: int) -> pd.DataFrame:
    """Predicted per-class norms at the global minimizer of the depth-``L`` bias-free linear
    unconstrained-features model with MSE loss and weight decay (Dang et al. 2023):

        min_{W_1..W_L} 1/(2N) ‖W_L ⋯ W_1 - Y‖_F² + λ/2 Σ_l ‖W_l‖_F²,

    ``W_1`` (``D x N``) holding the free features of the ``N`` samples, ``Y`` the one-hot labels,
    ``n_k`` samples in class ``k``.

    ``min Σ_l ‖W_l‖²/2`` over factorizations of ``Z = W_L⋯W_1`` equals ``(L/2) Σ_i σ_i(Z)^{2/L}``
    and the optimum is balanced, ``W_l = U_l diag(s)^{1/L} U_{l-1}ᵀ``; by von Neumann's trace
    inequality ``Z`` shares the singular vectors of ``Y`` (values ``√n_k``, right vectors
    ``1_k/√n_k``), so ``s_k = argmin_{s≥0} (s - √n_k)²/(2N) + (Lλ/2) s^{2/L}`` (for ``L = 2``:
    ``s_k = (√n_k - Nλ)_+``, :func:`ufm_imbalanced_norms` with ``λ_W = λ_H = λ``). Then
    ``w_k = s_k^{1/L} u_k`` and every sample of class ``k`` has feature
    ``s_k^{(L-1)/L} u_k / √n_k`` with orthonormal ``u_k``: ``‖w_k‖ = s_k^{1/L}``,
    ``‖μ_k‖ = s_k^{(L-1)/L} / √n_k``. The scalar problem is non-convex for ``L > 2``: it is
    solved on a grid of 2001 points in ``[0, √n_k]``, refined by a bounded scalar minimization
    around the best grid point, and compared with ``s = 0``.

    Args:
        counts: class counts ``n_k``, a 1-D array of positive numbers.
        weight_decay: weight decay ``λ > 0``.
        depth: number of weight matrices ``L >= 2``.

    Returns:
        DataFrame, one row per class: ``class, count, w_norm`` (``‖w_k‖``), ``mean_norm``
        (``‖μ_k‖``, uncentered class mean); both 0 for a collapsed minority class.

    References:
        Dang, Tran, Osher, Tran-The, Ho & Nguyen 2023, "Neural Collapse in Deep Linear
        Networks: From Balanced to Imbalanced Data" (ICML).

    Example:
        >>> df = deep_linear_norms([4, 1], weight_decay=0.1, depth=2)   # s_k = (√n_k - Nλ)_+
        >>> np.round(df["w_norm"].to_numpy() ** 2, 6).tolist()
        [1.5, 0.5]
    """
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or np.any(n <= 0) or weight_decay <= 0 or int(depth) < 2:
        raise InvalidArgumentError(
            "counts must be positive, weight_decay > 0 and depth >= 2 (matrices)"
        )
    N, L = n.sum(), int(depth)

    def best(nk):
        f = lambda s: (s - np.sqrt(nk)) ** 2 / (2 * N) + L * weight_decay / 2 * s ** (2 / L)
        grid = np.linspace(0.0, np.sqrt(nk), 2001)
        i = int(np.argmin(f(grid)))
        if i == 0:
            return 0.0
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        s = minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12}).x
        return s if f(s) < f(0.0) else 0.0

    s = np.array([best(nk) for nk in n])
    return pd.DataFrame({"class": np.arange(len(n)), "count": n.astype(np.int64),
                         "w_norm": s ** (1 / L), "mean_norm": s ** ((L - 1) / L) / np.sqrt(n)})


def minority_collapse(W, counts, minority=None) -> float:
    """Minority collapse: mean pairwise cosine between the classifier rows of the minority
    classes,

        mean_{k<l ∈ minority} cos(w_k, w_l),

    1 when they have collapsed onto one direction.

    Args:
        W: ``(C, D)`` classifier.
        counts: ``C`` class counts.
        minority: class indices of the minority classes (default: the classes with fewer
            samples than the largest class); at least two.

    Returns:
        The mean cosine, a float in ``[-1, 1]``.

    References:
        Fang, He, Long & Su 2021, "Exploring deep neural networks via layer-peeled model:
        minority collapse in imbalanced training" (PNAS).

    Example:
        >>> W = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
        >>> minority_collapse(W, [10, 1, 1])   # rows 1 and 2 point the same way
        1.0
    """
    W = np.asarray(W, dtype=np.float64)
    counts = np.asarray(counts)
    idx = np.flatnonzero(counts < counts.max()) if minority is None else np.asarray(minority)
    if len(idx) < 2:
        raise InvalidArgumentError(
            f"minority collapse needs at least 2 minority classes; got {list(idx)}"
        )
    u = W[idx] / np.linalg.norm(W[idx], axis=1, keepdims=True)
    iu = np.triu_indices(len(idx), 1)
    return float(np.mean((u @ u.T)[iu]))


def imbalanced_collapse(
    features,
    labels,
    W=None,
    *,
    num_classes: int | None = None,
    weight_decay_w: float | None = None,
    weight_decay_h: float | None = None,
    minority=None,
) -> CollapseResult:
    """Compare measured geometry with the imbalanced-class predictions.

    Keys: ``orthogonality`` (of the uncentered class means, 0 predicted); given ``W``:
    ``orthogonality_W``, ``alignment`` (``‖W/‖W‖_F - Γ/‖Γ‖_F‖_F²`` with rows ``γ_k = √n_k μ_k``),
    ``norm_ratio_cv`` (coefficient of variation over classes of ``‖w_k‖ / (√n_k ‖μ_k‖)``) and,
    with at least two minority classes, ``minority_collapse``; given ``weight_decay_w,
    weight_decay_h``:
    ``mean_norm_error`` / ``w_norm_error`` (largest relative deviation from
    ``ufm_imbalanced_norms``; needs every class above the collapse threshold).

    At the minimizer ``w_k = √(λ_H/λ_W) √n_k μ_k`` for every class, so ``orthogonality``,
    ``orthogonality_W``, ``alignment`` and ``norm_ratio_cv`` are all predicted to be 0 whatever
    λ_W, λ_H are. Classes without samples are left out.

    Args:
        features: ``(N, D)`` features.
        labels: ``N`` integer labels.
        W: optional ``(C, D)`` classifier.
        num_classes: number of classes ``C`` (default: rows of ``W``, else ``max(labels) + 1``).
        weight_decay_w, weight_decay_h: the weight decays ``λ_W``, ``λ_H`` of the model; with
            both, the norms are compared with :func:`ufm_imbalanced_norms`.
        minority: class indices for ``minority_collapse`` (default: classes with fewer samples
            than the largest one).

    Returns:
        ``CollapseResult`` with the keys above.

    References:
        Dang et al. 2023, "Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced
        Data" (ICML); Fang, He, Long & Su 2021, "Exploring deep neural networks via
        layer-peeled model: minority collapse in imbalanced training" (PNAS).

    Example:
        >>> h = np.array([[2.0, 0.0], [0.0, 1.0]])   # orthogonal class means, W ∝ √n_k μ_k
        >>> res = imbalanced_collapse(h, np.array([0, 1]), W=h)
        >>> print(res["orthogonality"], round(res["norm_ratio_cv"], 6))
        0.0 0.0
    """
    if W is not None:
        num_classes = np.shape(W)[0] if num_classes is None else num_classes
    counts, means = _class_means(features, labels, num_classes)
    present = counts > 0
    n, mu = counts[present].astype(np.float64), means[present]
    out = {"orthogonality": orthogonality(mu)}
    if W is not None:
        W, _ = check_classifier(W, None, len(counts), means.shape[1])
        Wp = W[present]
        out["orthogonality_W"] = orthogonality(Wp)
        gamma = np.sqrt(n)[:, None] * mu
        out["alignment"] = float(
            np.linalg.norm(Wp / np.linalg.norm(Wp) - gamma / np.linalg.norm(gamma)) ** 2
        )
        ratio = np.linalg.norm(Wp, axis=1) / (np.sqrt(n) * np.linalg.norm(mu, axis=1))
        out["norm_ratio_cv"] = float(np.std(ratio) / np.mean(ratio))
        if minority is None:
            minority = np.flatnonzero(present & (counts < counts.max()))
        if len(minority) >= 2:
            out["minority_collapse"] = minority_collapse(W, counts, minority)
    if weight_decay_w is not None and weight_decay_h is not None:
        pred = ufm_imbalanced_norms(n, weight_decay_w, weight_decay_h)
        h = pred["h_norm"].to_numpy()
        out["mean_norm_error"] = float(np.max(np.abs(np.linalg.norm(mu, axis=1) - h) / h))
        if W is not None:
            w = pred["w_norm"].to_numpy()
            out["w_norm_error"] = float(np.max(np.abs(np.linalg.norm(Wp, axis=1) - w) / w))
    return CollapseResult(out)
