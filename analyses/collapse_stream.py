"""Streaming sufficient statistics for neural-collapse metrics, with memory independent of N.

Pass 1 merges per-batch class moments with the pairwise update of Chan, Golub & LeVeque (1979):
for a class with running count ``n``, mean ``μ`` and a batch of ``m`` samples with mean ``ν`` and
centered scatter ``S_b``, ``δ = ν - μ``, ``μ <- μ + δ m / (n + m)`` and
``S <- S + S_b + (n m / (n + m)) δ δᵀ``. Summed over classes the within-class scatter needs one
``D x D`` matrix (``dense=True``) or only its trace (always kept).

Pass 2 (subspace method) avoids any ``D x D`` matrix: the between-class covariance ``Σ_B`` has
rank ``<= C - 1`` and its range lies in ``span{μ_1..μ_C}``; with ``Q`` an orthonormal basis of that
span (``D x r``, ``r <= C``), ``Tr(Σ_W Σ_B^†) = Tr((QᵀΣ_W Q)(QᵀΣ_B Q)^†)`` because
``Σ_B^† = Q (QᵀΣ_B Q)^† Qᵀ``. Pass 2 accumulates ``Qᵀ S_W Q = Σ_i (Qᵀ(h_i - μ_{y_i}))(…)ᵀ``
(an ``r x r`` matrix) and the nearest-class-center disagreements for NC4.
All arithmetic is float64 numpy; a batch is converted to float64 one batch at a time, and
``blocks`` cuts an in-memory feature matrix into views of about ``BLOCK_BYTES`` each, so no
float64 copy of the whole matrix is ever made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.validation import check_finite

__all__ = ["BLOCK_BYTES", "ClassStats", "CollapseAccumulator", "blocks", "check_batch",
           "check_shapes"]

#: Size (in float64 bytes) of the row blocks an in-memory feature matrix is streamed in.
BLOCK_BYTES = 8 * 2**20


@dataclass(frozen=True)
class ClassStats:
    """Sufficient statistics of labeled features for the neural-collapse metrics.

    With ``S_W = Σ_i (h_i - μ_{y_i})(h_i - μ_{y_i})ᵀ`` the within-class scatter:

    Attributes:
        counts: ``(C,)`` samples per class.
        means: ``(C, D)`` class means ``μ_c`` (zero rows for classes without samples).
        within_trace: ``Tr S_W``.
        class_within_trace: ``(C,)``, ``Σ_{i: y_i = c} ‖h_i - μ_c‖²``.
        basis: ``Q`` (``D x r``, orthonormal, spans the class means).
        within_proj: ``Qᵀ S_W Q`` (``r x r``).
        scatter: ``S_W`` itself (``dense=True`` only, else ``None``).
        ncc_disagreements: samples whose nearest class center differs from the supplied
            prediction (``None`` when no predictions were given).
        num_samples, dim: ``N`` and ``D`` (properties).

    Example:
        >>> acc = CollapseAccumulator(2, dense=True)
        >>> acc.update(np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]), np.array([0, 0, 1]))
        >>> st = acc.stats()
        >>> st.num_samples, st.dim, st.within_trace
        (3, 2, 2.0)
    """

    counts: np.ndarray
    means: np.ndarray
    within_trace: float
    class_within_trace: np.ndarray
    basis: np.ndarray
    within_proj: np.ndarray
    scatter: np.ndarray | None = None
    ncc_disagreements: int | None = None

    @property
    def num_samples(self) -> int:
        """Number of samples ``N = Σ_c counts[c]``."""
        return int(self.counts.sum())

    @property
    def dim(self) -> int:
        """Feature dimension ``D``."""
        return int(self.means.shape[1])


def check_shapes(features, labels, *, dim=None, num_classes=None, name="features"):
    """Validate shapes, dtypes and labels of one batch without copying the features.

    Finiteness is checked by :func:`check_batch`.

    Args:
        features: ``(B, D)`` real array.
        labels: ``(B,)`` integer labels ``>= 0``.
        dim: expected ``D`` (from earlier batches), or ``None``.
        num_classes: labels must be ``< num_classes`` when given.
        name: the name used in error messages.

    Returns:
        ``(x, y)``: ``x`` the features as given (no copy), ``y`` int64 labels.

    Raises:
        ShapeMismatchError: wrong number of dimensions or rows, or ``D != dim``.
        InvalidArgumentError: non-real features, non-integer or out-of-range labels.

    Example:
        >>> x, y = check_shapes(np.zeros((2, 3), np.float32), [0, 1])
        >>> x.dtype, y.dtype
        (dtype('float32'), dtype('int64'))
    """
    x = np.asarray(features)
    y = np.asarray(labels)
    if x.ndim != 2:
        raise ShapeMismatchError(f"{name} must be a 2-D array (samples, dim); got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise InvalidArgumentError(f"{name} must be real numbers; got dtype {x.dtype}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ShapeMismatchError(
            f"labels must be a 1-D array with one entry per row of {name}: {name} has "
            f"{x.shape[0]} rows, labels have shape {y.shape}"
        )
    if dim is not None and x.shape[1] != dim:
        raise ShapeMismatchError(
            f"{name} of dimension {x.shape[1]} after earlier batches of dimension {dim}"
        )
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise InvalidArgumentError(f"labels must be integer class indices; got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise InvalidArgumentError(f"labels must be >= 0; found {y.min()}")
    if num_classes is not None and y.size and y.max() >= num_classes:
        raise InvalidArgumentError(
            f"label {y.max()} out of range for num_classes={num_classes}"
        )
    return x, y


def check_batch(features, labels, *, dim=None, num_classes=None, name="features"):
    """Validate one batch (:func:`check_shapes` and finite values) and convert it to float64.

    Args:
        features, labels, dim, num_classes, name: as in :func:`check_shapes`.

    Returns:
        ``(x float64 (B, D), y int64 (B,))``.

    Raises:
        InvalidArgumentError: NaN or infinite features, or any error of ``check_shapes``.

    Example:
        >>> x, y = check_batch(np.ones((2, 3), np.float32), [0, 1])
        >>> x.dtype, x.shape
        (dtype('float64'), (2, 3))
    """
    x, y = check_shapes(features, labels, dim=dim, num_classes=num_classes, name=name)
    x = np.asarray(x, dtype=np.float64)
    check_finite(name, x)
    return x, y


def blocks(x, *arrays):
    """Consecutive row blocks of ``x`` (and of the aligned ``arrays``) as views, not copies.

    Each block has about ``BLOCK_BYTES`` of float64 rows; ``None`` entries of ``arrays`` stay
    ``None``.

    Args:
        x: ``(N, D)`` array.
        *arrays: arrays with ``N`` rows (or ``None``).

    Returns:
        A generator of tuples ``(x[s], *(a[s] for a in arrays))`` over row slices ``s``.

    Example:
        >>> [b[0].shape for b in blocks(np.zeros((5, 2)), None)]
        [(5, 2)]
    """
    rows = max(1, BLOCK_BYTES // (8 * max(1, x.shape[1])))
    for i in range(0, x.shape[0], rows):
        s = slice(i, i + rows)
        yield (x[s], *(None if a is None else a[s] for a in arrays))


def _batch_moments(x, y):
    """Per-class counts, means, the rows centered at their batch class mean (sorted by class,
    one batch-sized copy) and the per-class sums of squared centered norms."""
    order = np.argsort(y, kind="stable")
    ys, centered = y[order], x[order]
    cls, starts, cnt = np.unique(ys, return_index=True, return_counts=True)
    bmeans = np.add.reduceat(centered, starts, axis=0) / cnt[:, None]
    centered -= np.repeat(bmeans, cnt, axis=0)
    sq = np.add.reduceat(np.einsum("ij,ij->i", centered, centered), starts)
    return cls, cnt, bmeans, centered, sq


class CollapseAccumulator:
    """Accumulate class statistics over batches in one or two passes (float64).

    Usage::

        acc = CollapseAccumulator(num_classes)          # dense=True keeps a D x D scatter
        for x, y in batches(): acc.update(x, y)          # pass 1
        acc.close_first_pass()
        for x, y in batches(): acc.update_second(x, y, predictions)   # pass 2
        stats = acc.stats()

    Pass 1 merges batch moments with the pairwise update of Chan et al. (module docstring).
    Pass 2 is needed for the subspace NC1 (``dense=False``) and for NC4; it must see the same
    samples as pass 1. Memory: ``O(C D)`` (+ ``D²`` when ``dense``), independent of N.

    Args:
        num_classes: ``C``; ``None`` grows the class count with the largest label seen.
        dense: keep the ``D x D`` within-class scatter (pass 2 then only needed for NC4).

    References:
        Chan, Golub & LeVeque 1979, "Updating formulae and a pairwise algorithm for
            computing sample variances" (Stanford CS tech. report STAN-CS-79-773).

    Example:
        >>> x, y = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]), np.array([0, 0, 1])
        >>> acc = CollapseAccumulator(2)
        >>> for xb, yb in ((x[:2], y[:2]), (x[2:], y[2:])):
        ...     acc.update(xb, yb)
        >>> acc.update_second(x, y, predictions=np.array([0, 1, 1]))
        >>> acc.means.tolist(), acc.stats().ncc_disagreements
        ([[2.0, 0.0], [0.0, 2.0]], 1)
    """

    def __init__(self, num_classes: int | None = None, *, dense: bool = False):
        if num_classes is not None and int(num_classes) < 1:
            raise InvalidArgumentError(f"num_classes must be >= 1; got {num_classes}")
        self.num_classes = None if num_classes is None else int(num_classes)
        self.dense = bool(dense)
        self._counts = np.zeros(self.num_classes or 0, np.int64)
        self._means: np.ndarray | None = None
        self._class_trace = np.zeros(len(self._counts))
        self._scatter: np.ndarray | None = None
        self._basis: np.ndarray | None = None
        self._proj = None
        self._mean_proj = None
        self._seen2 = 0
        self._disagree: int | None = None

    @property
    def dim(self) -> int | None:
        """Feature dimension ``D`` (``None`` before the first batch)."""
        return None if self._means is None else self._means.shape[1]

    @property
    def counts(self) -> np.ndarray:
        """Samples per class seen in pass 1."""
        return self._counts.copy()

    @property
    def means(self) -> np.ndarray:
        """Class means ``(C, D)`` after pass 1 (zero rows for classes without samples)."""
        if self._means is None:
            raise InvalidArgumentError("no samples were seen in the first pass")
        return self._means.copy()

    def _grow(self, c: int, d: int) -> None:
        if self._means is None:
            self._means = np.zeros((max(c, len(self._counts)), d))
            self._counts = np.zeros(self._means.shape[0], np.int64)
            self._class_trace = np.zeros(self._means.shape[0])
            if self.dense:
                self._scatter = np.zeros((d, d))
        extra = c - len(self._counts)
        if extra > 0:
            self._counts = np.concatenate([self._counts, np.zeros(extra, np.int64)])
            self._means = np.concatenate([self._means, np.zeros((extra, d))])
            self._class_trace = np.concatenate([self._class_trace, np.zeros(extra)])

    def update(self, features, labels) -> None:
        """Pass 1: merge a batch into counts, means and within-class scatter (Chan et al.)."""
        if self._basis is not None:
            raise InvalidArgumentError("update() after close_first_pass(); use update_second()")
        x, y = check_batch(features, labels, dim=self.dim, num_classes=self.num_classes)
        if not y.size:
            return
        self._grow(int(y.max()) + 1, x.shape[1])
        cls, cnt, bmeans, centered, sq = _batch_moments(x, y)
        n_old = self._counts[cls].astype(np.float64)
        n_new = n_old + cnt
        delta = bmeans - self._means[cls]
        self._means[cls] += delta * (cnt / n_new)[:, None]
        w = n_old * cnt / n_new
        self._class_trace[cls] += sq + w * np.sum(delta * delta, axis=1)
        if self.dense:
            self._scatter += centered.T @ centered + (delta * w[:, None]).T @ delta
        self._counts[cls] += cnt

    def close_first_pass(self) -> None:
        """Fix the class means and the orthonormal basis ``Q`` of their span."""
        if self._means is None:
            raise InvalidArgumentError("no samples were seen in the first pass")
        if self._basis is None:
            present = self._counts > 0
            self._basis = np.linalg.qr(self._means[present].T)[0]
            self._mean_proj = self._means @ self._basis
            self._proj = np.zeros((self._basis.shape[1],) * 2)

    def update_second(self, features, labels, predictions=None) -> None:
        """Pass 2: accumulate ``Qᵀ S_W Q`` and, given predicted classes, NC4 disagreements."""
        self.close_first_pass()
        x, y = check_batch(features, labels, dim=self.dim, num_classes=len(self._counts))
        if y.size and np.any(self._counts[y] == 0):
            raise InvalidArgumentError(
                "the second pass returned a class the first pass never saw; the batch "
                "iterator must yield the same samples on every call"
            )
        self._seen2 += y.size
        xq = x @ self._basis
        if not self.dense:
            pc = xq - self._mean_proj[y]
            self._proj += pc.T @ pc
        if predictions is None:
            return
        pred = np.asarray(predictions)
        if pred.shape != y.shape:
            raise ShapeMismatchError(
                f"predictions must have shape {y.shape} (one class per sample); got {pred.shape}"
            )
        # nearest class center: argmin_c ‖h - μ_c‖² = argmax_c 2 h·μ_c - ‖μ_c‖², μ_c ∈ span(Q)
        sq = np.sum(self._means * self._means, axis=1)
        scores = 2.0 * xq @ self._mean_proj.T - sq
        scores[:, self._counts == 0] = -np.inf
        ncc = np.argmax(scores, axis=1)
        self._disagree = (self._disagree or 0) + int(np.sum(ncc != pred))

    def stats(self) -> ClassStats:
        """The accumulated ``ClassStats`` (closes pass 1 if needed)."""
        self.close_first_pass()
        n = int(self._counts.sum())
        two_pass = self._seen2 > 0 or self._disagree is not None
        if two_pass and self._seen2 != n:
            raise InvalidArgumentError(
                f"the second pass saw {self._seen2} samples but the first saw {n}; the batch "
                "iterator must yield the same samples on every call"
            )
        if self.dense:
            proj = self._basis.T @ self._scatter @ self._basis
        elif self._seen2 == 0:
            raise InvalidArgumentError(
                "the subspace method needs a second pass over the data, which saw no samples; "
                "the batch iterator must yield the same samples on every call"
            )
        else:
            proj = self._proj
        return ClassStats(
            counts=self._counts.copy(),
            means=self._means.copy(),
            within_trace=float(self._class_trace.sum()),
            class_within_trace=self._class_trace.copy(),
            basis=self._basis,
            within_proj=proj,
            scatter=None if self._scatter is None else self._scatter.copy(),
            ncc_disagreements=self._disagree,
        )
