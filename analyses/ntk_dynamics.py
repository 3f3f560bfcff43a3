"""How the empirical NTK of a network moves during training, and what it says about the data.

Kernels are ``(n, n)`` arrays (the logit-traced empirical NTK of ``dynkit.theory.empirical``;
any PSD Gram matrix works). Targets ``y`` are integer class labels (turned into one-hot
``Y ∈ {0,1}^{n×C}``) or real targets of shape ``(n,)`` / ``(n, k)``.

* ``kernel_distance``: ``1 − ⟨K1, K2⟩_F / (‖K1‖_F ‖K2‖_F)`` (Fort et al. 2020, "Deep learning
  versus kernel learning"), to initialization and between consecutive checkpoints (velocity);
* ``centered_alignment``: kernel-target alignment of the centered kernels (Cortes, Mohri &
  Rostamizadeh 2012; used for NTKs by Baratin et al. 2021);
* ``spectrum``, ``effective_rank`` (Roy & Vetterli 2007), ``label_power_fraction``;
* ``linearized_predictions``: the first-order Taylor model ``f(θ0) + J(θ0)(θt − θ0)``
  against the trained network; ``ntk_regression``: kernel (ridge) regression with an NTK;
* ``ntk_series``: all of the above along a training run, as a tidy DataFrame;
* the ``"ntk"`` entry of ``dynkit.registry.METRICS`` (metrics of one checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dynkit.checkpoints.run import iterate
from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.models.graph import Model, merge_params, split_params
from dynkit.registry import METRICS
from dynkit.schema import step_epoch, tidy
from dynkit.theory.empirical import model_ntk_fn, ntk_fn
from dynkit.validation import check_finite

#: Points of ``data.x_train`` the ``"ntk"`` registry metric uses (the first ones).
METRIC_POINTS = 128


# ============================================================================ kernel metrics
def kernel_distance(K1, K2) -> float:
    """Kernel distance between two kernels (Fort et al. 2020):

        d(K1, K2) = 1 − ⟨K1, K2⟩_F / (‖K1‖_F ‖K2‖_F).

    0 for kernels equal up to a positive factor; 1 for orthogonal ones.

    Args:
        K1, K2: arrays of the same shape (traced ``(n, n)`` or full ``(n, n, O, O)`` kernels),
            both nonzero.

    Returns:
        ``d`` as a float in ``[0, 2]``.

    References:
        Fort, Dziugaite, Paul, Kharaghani, Roy & Ganguli 2020, "Deep learning versus kernel
            learning: an empirical study of loss landscape geometry and the time evolution of the
            Neural Tangent Kernel" (NeurIPS).

    Example:
        >>> K = np.eye(3)
        >>> abs(kernel_distance(K, 2 * K)) < 1e-12, round(kernel_distance(K, np.ones((3, 3))), 6)
        (True, 0.42265)
    """
    if np.shape(K1) != np.shape(K2):
        raise ShapeMismatchError(
            f"K1 and K2 must have the same shape, got {np.shape(K1)} and {np.shape(K2)}"
        )
    a = _finite(K1, "K1").astype(np.float64).ravel()
    b = _finite(K2, "K2").astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise InvalidArgumentError("kernel_distance is undefined for a zero kernel")
    return float(1.0 - np.dot(a, b) / (na * nb))


def centered_alignment(K, y, num_classes: int | None = None) -> float:
    """Centered kernel-target alignment (Cortes, Mohri & Rostamizadeh 2012, Def. 3):

        A(K, Y) = ⟨K_c, Y Yᵀ⟩_F / (‖K_c‖_F ‖Y_c Y_cᵀ‖_F),   K_c = H K H,  H = I − 11ᵀ/n,

    with ``Y`` the one-hot labels (or the real targets); ``⟨K_c, YYᵀ⟩ = ⟨K_c, (YYᵀ)_c⟩`` since
    ``H`` is idempotent. In ``[-1, 1]``; 1 iff ``K_c ∝ (YYᵀ)_c``. Baratin et al. (2021) track
    it for the NTK during training.

    Args:
        K: ``(n, n)`` kernel.
        y: ``n`` integer labels or real targets ``(n,)`` / ``(n, k)``.
        num_classes: classes for integer labels (default ``max(y) + 1``).

    Returns:
        The alignment, a float in ``[-1, 1]``.

    References:
        Cortes, Mohri & Rostamizadeh 2012, "Algorithms for learning kernels based on centered
        alignment" (JMLR); Baratin et al. 2021, "Implicit regularization via neural feature
        alignment" (AISTATS).

    Example:
        >>> y = np.array([0, 0, 1, 1])
        >>> Y = np.eye(2)[y]
        >>> round(centered_alignment(Y @ Y.T, y), 6)   # the label kernel itself
        1.0
    """
    K = _square(K, "K")
    Y = targets(y, num_classes, len(K))
    Kc = _center(K)
    T = _center(Y @ Y.T)
    nk, nt = np.linalg.norm(Kc), np.linalg.norm(T)
    if nk == 0 or nt == 0:
        raise InvalidArgumentError(
            "centered_alignment is undefined when the centered kernel or the centered target "
            "Gram matrix is zero (constant kernel or a single class)"
        )
    return float(np.sum(Kc * T) / (nk * nt))


def spectrum(K, k: int | None = None) -> np.ndarray:
    """The ``k`` largest eigenvalues of the symmetric kernel ``K``, in decreasing order.

    Args:
        K: ``(n, n)`` symmetric kernel (symmetrized as ``(K + Kᵀ)/2``).
        k: number of eigenvalues (all ``n`` for ``None``).

    Returns:
        ``(min(k, n),)`` array of eigenvalues, largest first.

    Example:
        >>> spectrum(np.diag([1.0, 3.0, 2.0]), 2)
        array([3., 2.])
    """
    K = _square(K, "K")
    k = _k(k, len(K))
    return np.linalg.eigvalsh(_sym(K))[::-1][:k]


def effective_rank(K) -> float:
    """Entropy effective rank (Roy & Vetterli 2007):

        erank(K) = exp(−Σ_i p_i log p_i),   p_i = σ_i / Σ_j σ_j,

    with ``σ_i`` the singular values (eigenvalues for a PSD kernel) and ``0 log 0 = 0``. Between 1
    and ``rank(K)``; ``n`` for the identity.

    Args:
        K: ``(n, n)`` nonzero kernel.

    Returns:
        The effective rank, a float.

    References:
        Roy & Vetterli 2007, "The effective rank: a measure of effective dimensionality"
        (EUSIPCO).

    Example:
        >>> effective_rank(np.eye(4)), effective_rank(np.diag([2.0, 2.0, 0.0]))
        (4.0, 2.0)
    """
    K = _square(K, "K")
    s = np.linalg.svd(K, compute_uv=False)
    total = s.sum()
    if total == 0:
        raise InvalidArgumentError("effective_rank is undefined for a zero kernel")
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def label_power_fraction(K, y, k: int, num_classes: int | None = None) -> float:
    """Fraction of the target power in the top-``k`` eigenvectors of ``K``:

        Σ_{i ≤ k} ‖v_iᵀ Y‖² / ‖Y‖_F²,

    ``v_i`` the eigenvectors of the ``k`` largest eigenvalues, ``Y`` the one-hot labels or
    targets (uncentered). 1 for ``k = n``. Large values mean the kernel's leading directions
    carry the labels (the NTK aligning with the task; Kopitkov & Indelman 2020, Baratin et
    al. 2021).

    Args:
        K: ``(n, n)`` symmetric kernel.
        y: ``n`` integer labels or real targets ``(n,)`` / ``(n, k)``, not all zero.
        k: number of leading eigenvectors (``>= 1``; capped at ``n``).
        num_classes: classes for integer labels (default ``max(y) + 1``).

    Returns:
        The fraction, a float in ``[0, 1]``.

    References:
        Kopitkov & Indelman 2020, "Neural spectrum alignment: empirical study" (ICANN); Baratin
        et al. 2021, "Implicit regularization via neural feature alignment" (AISTATS).

    Example:
        >>> y = np.array([0, 0, 1, 1])
        >>> Y = np.eye(2)[y]
        >>> round(label_power_fraction(Y @ Y.T + 0.1 * np.eye(4), y, 2), 6)
        1.0
    """
    K = _square(K, "K")
    Y = targets(y, num_classes, len(K))
    k = _k(k, len(K))
    _, vecs = np.linalg.eigh(_sym(K))
    top = vecs[:, ::-1][:, :k]
    power = np.sum(Y * Y)
    if power == 0:
        raise InvalidArgumentError("label_power_fraction is undefined for all-zero targets")
    return float(np.sum((top.T @ Y) ** 2) / power)


def ntk_regression(k_train_train, k_test_train, y_train, diag_reg: float = 0.0,
                   diag_reg_absolute_scale: bool = False,
                   num_classes: int | None = None) -> np.ndarray:
    """Kernel ridge regression with an (empirical) NTK:

        f(x_test) = K(x_test, X) (K(X, X) + diag_reg · s · I)⁻¹ Y,

    with ``s = tr K(X, X) / n`` (relative regularizer, the default, as in
    ``dynkit.theory.predict`` and neural-tangents) or ``s = 1`` when
    ``diag_reg_absolute_scale=True``. This is the ``t → ∞`` prediction of the linearized network
    trained by gradient flow on the MSE from zero output (Jacot et al. 2018; Lee et al. 2019,
    Eq. 9). ``diag_reg = 0`` needs an invertible ``k_train_train`` (a least-squares solve is
    used).

    Args:
        k_train_train: ``(n, n)`` kernel on the training inputs.
        k_test_train: ``(n_test, n)`` kernel between test and training inputs.
        y_train: ``n`` integer class labels (one-hot encoded) or real targets ``(n,)`` /
            ``(n, k)``.
        diag_reg: regularizer strength ``>= 0``, relative to ``tr K / n`` unless
            ``diag_reg_absolute_scale``.
        diag_reg_absolute_scale: add ``diag_reg · I`` instead of ``diag_reg · (tr K / n) · I``.
        num_classes: number of classes for integer labels (default ``max(y) + 1``).

    Returns:
        ``(n_test, C)`` predictions (``C`` = classes for integer labels, else target columns).

    References:
        Jacot, Gabriel & Hongler 2018, "Neural Tangent Kernel"; Lee et al. 2019, "Wide neural
        networks of any depth evolve as linear models under gradient descent".

    Example:
        >>> K = np.array([[2.0, 0.0], [0.0, 2.0]])
        >>> ntk_regression(K, K, np.array([0, 1]), diag_reg=1.0)   # K (K + 2 I)^-1 = I / 2
        array([[0.5, 0. ],
               [0. , 0.5]])
    """
    k_train_train = _square(k_train_train, "k_train_train")
    n = len(k_train_train)
    kxt = _finite(k_test_train, "k_test_train")
    if kxt.ndim != 2 or kxt.shape[1] != n:
        raise ShapeMismatchError(f"k_test_train must have shape (n_test, {n}), got {kxt.shape}")
    if not np.isfinite(diag_reg) or diag_reg < 0:
        raise InvalidArgumentError(f"diag_reg must be a finite number >= 0, got {diag_reg}")
    Y = targets(y_train, num_classes, n)
    scale = 1.0 if diag_reg_absolute_scale else np.trace(k_train_train) / n
    reg = diag_reg * scale
    A = _sym(k_train_train) + reg * np.eye(n)
    coef = np.linalg.lstsq(A, Y, rcond=None)[0] if reg == 0 else np.linalg.solve(A, Y)
    return kxt @ coef


# ============================================================================ linearization
@dataclass(frozen=True)
class LinearizedPredictions:
    """Outputs of the network and of its first-order Taylor model on the same inputs.

    Attributes:
        initial: ``f(θ0, x)``.
        linear: ``f(θ0, x) + J(θ0, x)(θt − θ0)``.
        network: ``f(θt, x)``.
        error: RMS difference ``‖linear − network‖_F / sqrt(size)`` (a property).

    Example:
        >>> p = LinearizedPredictions(np.zeros(2), np.array([1.0, 1.0]), np.array([1.0, 3.0]))
        >>> round(p.error, 6)
        1.414214
    """

    initial: np.ndarray
    linear: np.ndarray
    network: np.ndarray

    @property
    def error(self) -> float:
        """RMS difference ``sqrt(mean((linear − network)²))``."""
        return float(np.sqrt(np.mean((self.linear - self.network) ** 2)))


def linearized_predictions(model: Model | Callable, params0, params_t, x) -> LinearizedPredictions:
    """Linearized network against the trained network (Lee et al. 2019):

        f_lin(x) = f(θ0, x) + ∂f(θ0, x)/∂θ · (θt − θ0),

    computed with one ``jax.jvp``. The difference ``linear − network`` is ``O(‖θt − θ0‖²)``.

    Args:
        model: a dynkit ``Model`` (eval mode; Taylor expansion in the trainable parameters,
            BatchNorm running statistics held at those of ``params0``) or any
            ``apply_fn(params, x)``.
        params0: parameters ``θ0`` of the expansion point.
        params_t: parameters ``θt`` (same tree and shapes).
        x: inputs.

    Returns:
        ``LinearizedPredictions`` (``initial``, ``linear``, ``network``, ``error``).

    References:
        Lee, Xiao, Schoenholz, Bahri, Novak, Sohl-Dickstein & Pennington 2019, "Wide neural
        networks of any depth evolve as linear models under gradient descent" (NeurIPS).

    Example:
        >>> f = lambda w, x: x @ w                     # linear in w: the Taylor model is exact
        >>> out = linearized_predictions(f, jnp.ones(2), jnp.array([2.0, 0.0]), jnp.eye(2))
        >>> out.linear.tolist(), out.error
        ([2.0, 0.0], 0.0)
    """
    x = jnp.asarray(_finite(x, "x"))
    if isinstance(model, Model):
        t0, stats = split_params(params0)
        tt, _ = split_params(params_t)

        def f(q):
            return model.apply(merge_params(q, stats), x)

        network = model.apply(params_t, x)
    elif callable(model):
        t0, tt = params0, params_t

        def f(q):
            return model(q, x)

        network = model(params_t, x)
    else:
        raise InvalidArgumentError(f"model must be a dynkit Model or apply_fn, got {type(model)}")
    if jax.tree.structure(t0) != jax.tree.structure(tt):
        raise ShapeMismatchError("params0 and params_t have different tree structures")
    for a, b in zip(jax.tree.leaves(t0), jax.tree.leaves(tt)):
        if np.shape(a) != np.shape(b):
            raise ShapeMismatchError(
                f"params0 and params_t differ in shape: {np.shape(a)} vs {np.shape(b)}"
            )
    delta = jax.tree.map(lambda a, b: b - a, t0, tt)
    f0, df = jax.jvp(f, (t0,), (delta,))
    return LinearizedPredictions(np.asarray(f0), np.asarray(f0 + df), np.asarray(network))


# ============================================================================ series
def kernel_metrics(K, y=None, *, k: int | None = None, num_classes: int | None = None) -> dict:
    """Scalar summaries of one traced kernel.

    ``trace`` (mean eigenvalue ``tr K / n``), ``lambda_max``, ``effective_rank``, and with
    targets ``centered_alignment`` and ``label_power_fraction`` (top ``k`` eigenvectors).

    Args:
        K: ``(n, n)`` kernel.
        y: optional ``n`` integer labels or real targets.
        k: eigenvectors for ``label_power_fraction`` (default: number of classes / target
            columns).
        num_classes: classes for integer labels (default ``max(y) + 1``).

    Returns:
        A dict ``metric -> float``.

    References:
        Roy & Vetterli 2007 (effective rank); Cortes, Mohri & Rostamizadeh 2012 (centered
        alignment); Baratin et al. 2021 (label power).

    Example:
        >>> {k: round(v, 4) for k, v in kernel_metrics(np.diag([3.0, 1.0])).items()}
        {'trace': 2.0, 'lambda_max': 3.0, 'effective_rank': 1.7548}
    """
    K = _square(K, "K")
    out = {
        "trace": float(np.trace(K) / len(K)),
        "lambda_max": float(spectrum(K, 1)[0]),
        "effective_rank": effective_rank(K),
    }
    if y is not None:
        Y = targets(y, num_classes, len(K))
        out["centered_alignment"] = centered_alignment(K, Y)
        out["label_power_fraction"] = label_power_fraction(K, Y, k or Y.shape[1])
    return out


def ntk_series(
    run,
    x,
    y=None,
    *,
    every: int = 1,
    include_last: bool = True,
    k: int | None = None,
    num_classes: int | None = None,
    method: str = "auto",
    batch_size: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Empirical-NTK metrics along a training run.

    At each checkpoint used (``dynkit.checkpoints.iterate``) the logit-traced NTK ``K_t`` on
    ``x`` gives ``kernel_metrics`` plus ``kernel_distance_init = d(K_0, K_t)`` (``K_0`` of the
    first checkpoint used), ``kernel_distance_prev = d(K_prev, K_t)`` and ``kernel_velocity`` =
    that distance per step, the last two from the second checkpoint on.

    Args:
        run: a run directory, a ``Run`` or any iterable of checkpoints (objects with
            ``model``, ``params``, ``step``).
        x: inputs of the kernel.
        y: optional labels / targets for the label metrics.
        every: use every ``every``-th checkpoint.
        include_last: also use the last checkpoint when ``every`` skips it.
        k, num_classes: as in :func:`kernel_metrics`.
        method: empirical-NTK method of ``dynkit.theory.empirical`` (``"auto"``, ...).
        batch_size: batch size of the kernel computation (``None``: one batch).
        progress: show a progress bar.

    Returns:
        The tidy series ``step, epoch, metric, value`` (``dynkit.schema``).

    References:
        Fort, Dziugaite, Paul, Kharaghani, Roy & Ganguli 2020, "Deep learning versus kernel
            learning: an empirical study of loss landscape geometry and the time evolution of the
            Neural Tangent Kernel" (NeurIPS).

    Example:
        >>> from types import SimpleNamespace
        >>> from dynkit.models import mlp
        >>> model = mlp(2, [4], 1)
        >>> run = [SimpleNamespace(model=model, params=model.init(jax.random.PRNGKey(s)), step=s,
        ...                        meta=None) for s in (0, 10)]
        >>> df = ntk_series(run, np.eye(2), progress=False)
        >>> df[df.metric == "kernel_distance_init"].step.tolist()
        [0, 10]
    """
    from tqdm.auto import tqdm

    ckpts = iterate(run, every, include_last, indexed=True)
    x = _finite(x, "x")
    rows: list[dict] = []
    K0 = K_prev = step_prev = None
    for i, ckpt in tqdm(ckpts, disable=not progress, desc="ntk", leave=False):
        K = np.asarray(model_ntk_fn(ckpt.model, method, batch_size=batch_size)(
            x, None, ckpt.params), dtype=np.float64)
        keys = step_epoch(ckpt, i)
        step = keys["step"]
        vals = kernel_metrics(K, y, k=k, num_classes=num_classes)
        vals["kernel_distance_init"] = 0.0 if K0 is None else kernel_distance(K0, K)
        if K_prev is not None:
            d = kernel_distance(K_prev, K)
            vals["kernel_distance_prev"] = d
            if step != step_prev:
                vals["kernel_velocity"] = d / (step - step_prev)
        rows += [{**keys, "metric": m, "value": v} for m, v in vals.items()]
        K0 = K if K0 is None else K0
        K_prev, step_prev = K, step
    if not rows:
        raise InvalidArgumentError("ntk_series got no checkpoints")
    return tidy(rows)


@METRICS.register(
    "ntk",
    f"empirical NTK (logit-traced) on the first {METRIC_POINTS} training points: trace, "
    "lambda_max, effective rank, centered alignment, label power fraction",
)
def ntk_metric(model: Model, params, data) -> pd.DataFrame:
    """Registry metric ``"ntk"``: ``kernel_metrics`` of the empirical NTK of one checkpoint.

    The kernel is taken on the first ``METRIC_POINTS`` training points of ``data``; label
    metrics use ``data.num_classes`` (classification) or the regression targets.

    Args:
        model: a dynkit ``Model``.
        params: its parameters.
        data: a ``dynkit.data.Dataset``.

    Returns:
        DataFrame with columns ``metric, value``.

    Example:
        >>> import dynkit as dk
        >>> data = dk.data.load("gaussian_mixture", n_train=8, n_test=4)
        >>> model = dk.models.mlp(2, [4], 3)
        >>> ntk_metric(model, model.init(jax.random.PRNGKey(0)), data).metric.tolist()
        ['trace', 'lambda_max', 'effective_rank', 'centered_alignment', 'label_power_fraction']
    """
    x = np.asarray(data.x_train[:METRIC_POINTS])
    y = np.asarray(data.y_train[:METRIC_POINTS])
    K = np.asarray(ntk_fn(model)(x, None, params), dtype=np.float64)
    vals = kernel_metrics(K, y, num_classes=getattr(data, "num_classes", None))
    return pd.DataFrame({"metric": list(vals), "value": list(vals.values())})


# ============================================================================ helpers
def targets(y, num_classes: int | None, n: int) -> np.ndarray:
    """Targets as an ``(n, C)`` float matrix.

    One-hot for integer labels (``C = num_classes`` or ``max(y) + 1``); the targets themselves
    (as a column if 1-D) otherwise.

    Args:
        y: ``n`` integer labels in ``[0, C)`` or real targets.
        num_classes: classes for integer labels (``None``: ``max(y) + 1``).
        n: expected number of rows.

    Returns:
        ``(n, C)`` float array.

    Example:
        >>> targets(np.array([1, 0]), 3, 2)
        array([[0., 1., 0.],
               [1., 0., 0.]])
    """
    y = np.asarray(y)
    if y.shape[0] != n:
        raise ShapeMismatchError(f"y has {y.shape[0]} entries but the kernel is {n} x {n}")
    if np.issubdtype(y.dtype, np.integer):
        if y.ndim != 1:
            raise ShapeMismatchError(f"integer labels must be 1-D, got shape {y.shape}")
        c = int(num_classes) if num_classes is not None else int(y.max()) + 1
        if y.min() < 0 or y.max() >= c:
            raise InvalidArgumentError(f"labels must lie in [0, {c}), got [{y.min()}, {y.max()}]")
        return np.eye(c)[y]
    y = _finite(y, "y").astype(np.float64)
    return y[:, None] if y.ndim == 1 else y.reshape(n, -1)


def _finite(a, name) -> np.ndarray:
    a = np.asarray(a)
    check_finite(name, a)
    return a


def _square(K, name) -> np.ndarray:
    K = _finite(K, name).astype(np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ShapeMismatchError(
            f"{name} must be a square (n, n) kernel, got shape {K.shape} (trace a full "
            f"(n, n, O, O) NTK over its logits first, e.g. trace_axes=(-1,))"
        )
    return K


def _sym(K) -> np.ndarray:
    return 0.5 * (K + K.T)


def _center(K) -> np.ndarray:
    return K - K.mean(0, keepdims=True) - K.mean(1, keepdims=True) + K.mean()


def _k(k, n) -> int:
    if k is None:
        return n
    if int(k) < 1:
        raise InvalidArgumentError(f"k must be >= 1, got {k}")
    return min(int(k), n)


__all__ = [
    "LinearizedPredictions", "centered_alignment", "effective_rank", "kernel_distance",
    "kernel_metrics", "label_power_fraction", "linearized_predictions", "ntk_metric",
    "ntk_regression", "ntk_series", "spectrum", "targets",
]
