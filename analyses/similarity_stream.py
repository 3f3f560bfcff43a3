"""Streaming CKA: memory independent of the number of inputs ``N``.

Two estimators, both fed one batch of inputs at a time:

* ``MinibatchCKA`` / ``minibatch_cka`` (Nguyen, Raghu & Kornblith 2021, Sec. 3.1): for ``k``
  minibatches of ``B`` inputs, ``CKA_mb = Σ_b HSIC_1(K_b, L_b) / sqrt(Σ_b HSIC_1(K_b, K_b)
  Σ_b HSIC_1(L_b, L_b))`` with ``HSIC_1`` the unbiased estimator of Song et al. 2012 on each
  batch's Gram matrices. Each batch's ``HSIC_1`` is unbiased for the population HSIC, so with
  many batches ``CKA_mb`` converges to the population CKA, which the debiased full CKA also
  estimates; with one batch it *is* the debiased full CKA. Any kernel of ``B x B`` Gram
  matrices works; many layers at once cost one Gram per layer and one matrix product for all
  pairs (``⟨U(K_a), U(L_b)⟩``, ``U`` the U-centering below), the layer x layer form.
* ``LinearCKAStream`` / ``streamed_linear_cka``: the *exact* full-data linear CKA (biased or
  debiased) from feature-space moments ``Σ x_i y_iᵀ``, ``Σ x_i``, ``Σ ‖x_i‖² y_i``, ...,
  ``O(D₁² + D₂² + D₁D₂)`` memory, one pass. Each batch is shifted by the first batch's mean
  (both estimators are invariant to a constant shift of the features), which keeps the float64
  sums well conditioned for activations with large means.

U-centering (Székely & Rizzo 2014): for ``i ≠ j``, ``U(K)_ij = K_ij - K_i·/(n-2) - K_·j/(n-2)
+ K_··/((n-1)(n-2))`` with the sums over the zero-diagonal ``K``, and ``U(K)_ii = 0``; then
``HSIC_1(K, L) = ⟨U(K), U(L)⟩ / (n(n-3))``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.validation import check_integer

from .similarity import _ratio, as_matrix, as_pair

__all__ = ["LinearCKAStream", "MinibatchCKA", "batches", "minibatch_cka", "streamed_linear_cka",
           "u_center"]


def u_center(K) -> np.ndarray:
    """U-centered Gram matrix (module docstring); ``⟨U(K), U(L)⟩/(n(n-3))`` is ``HSIC_1``.

    Example:
        >>> from dynkit.analyses.similarity import gram_linear, hsic
        >>> K = gram_linear(np.random.default_rng(0).normal(size=(6, 3)))
        >>> bool(np.isclose(np.sum(u_center(K) ** 2) / (6 * 3), hsic(K, K, debiased=True)))
        True
    """
    K = np.array(K, dtype=np.float64)
    n = K.shape[-1]
    if n < 4:
        raise InvalidArgumentError(f"the unbiased HSIC estimator needs batches of at least 4 "
                                   f"inputs, got {n}")
    idx = np.arange(n)
    K[..., idx, idx] = 0.0
    row = K.sum(-1, keepdims=True) / (n - 2)
    tot = K.sum((-2, -1), keepdims=True) / ((n - 1) * (n - 2))
    U = K - row - np.swapaxes(row, -1, -2) + tot
    U[..., idx, idx] = 0.0
    return U


def batches(X, Y, batch_size: int):
    """Row slices ``(X[i:i+B], Y[i:i+B])`` of two arrays over the same inputs (lazily, so a
    ``np.memmap`` is read one batch at a time). A last batch shorter than 4 rows is merged
    into the previous one.

    Example:
        >>> [a.shape[0] for a, _ in batches(np.zeros((10, 2)), np.zeros((10, 3)), 4)]
        [4, 6]
    """
    batch_size = check_integer("batch_size", batch_size, 4)
    n = len(X)
    if len(Y) != n:
        raise ShapeMismatchError(f"X and Y must hold the same inputs: {n} vs {len(Y)} rows")
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 4:
        starts.pop()
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else n
        yield X[s:e], Y[s:e]


class MinibatchCKA:
    """Accumulator of minibatch CKA (Nguyen et al. 2021) between ``num_x`` representations of
    one network and ``num_y`` of another (layer x layer), one batch of inputs at a time.

    ``update(xs, ys)`` takes the batch's activations, lists of ``(B, D)`` arrays (``B >= 4``);
    ``gram`` maps an activation matrix to its Gram matrix (default linear ``X Xᵀ``);
    ``labels`` (two lists of names) name the representations in error messages.
    ``result()`` is the ``(num_x, num_y)`` CKA matrix. Memory: ``(num_x + num_y) B²``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> acc = MinibatchCKA(2, 1)
        >>> for _ in range(3):
        ...     x = rng.normal(size=(8, 4))
        ...     acc.update([x, rng.normal(size=(8, 2))], [2 * x])
        >>> np.round(acc.result()[0], 6).tolist()
        [1.0]
    """

    def __init__(self, num_x: int, num_y: int, gram=None, labels=None):
        self.num_x, self.num_y = check_integer("num_x", num_x), check_integer("num_y", num_y)
        self.labels = labels or ([f"x[{i}]" for i in range(self.num_x)],
                                 [f"y[{j}]" for j in range(self.num_y)])
        self.gram = gram if gram is not None else (lambda a: a @ a.T)
        self.xy = np.zeros((self.num_x, self.num_y))
        self.xx, self.yy = np.zeros(self.num_x), np.zeros(self.num_y)
        self.batches = 0
        self.first, self.varies = {}, {}

    def _centered_grams(self, name: str, acts: Sequence, count: int) -> np.ndarray:
        if len(acts) != count:
            raise ShapeMismatchError(f"MinibatchCKA.update: expected {count} {name} "
                                     f"representations, got {len(acts)}")
        names = self.labels[0 if name == "x" else 1]
        mats = [as_matrix(names[i], a, 4) for i, a in enumerate(acts)]
        if len({m.shape[0] for m in mats}) > 1:
            raise ShapeMismatchError(f"MinibatchCKA.update: the {name} representations of one "
                                     "batch must hold the same inputs")
        B = mats[0].shape[0]
        first = self.first.setdefault(name, [m[0].copy() for m in mats])
        varies = self.varies.setdefault(name, np.zeros(count, bool))
        varies |= [bool(np.any(m != f)) for m, f in zip(mats, first)]
        return u_center(np.stack([self.gram(m) for m in mats])).reshape(count, -1) / \
            np.sqrt(B * (B - 3))

    def update(self, xs: Sequence, ys: Sequence) -> None:
        """Add one batch: ``xs`` the ``num_x`` activation matrices, ``ys`` the ``num_y`` ones
        (``ys is xs``: one network with itself, each Gram computed once)."""
        ux = self._centered_grams("x", xs, self.num_x)
        if ys is xs and self.num_x == self.num_y:
            uy = ux
            self.varies.setdefault("y", self.varies["x"])
        else:
            uy = self._centered_grams("y", ys, self.num_y)
        if ux.shape[1] != uy.shape[1]:
            raise ShapeMismatchError("MinibatchCKA.update: xs and ys must hold the same inputs")
        self.xy += ux @ uy.T
        self.xx += np.einsum("ij,ij->i", ux, ux)
        self.yy += np.einsum("ij,ij->i", uy, uy)
        self.batches += 1

    def result(self) -> np.ndarray:
        """The ``(num_x, num_y)`` minibatch CKA matrix."""
        if self.batches == 0:
            raise InvalidArgumentError("MinibatchCKA: no batch was added")
        for name, v in (("x", self.xx), ("y", self.yy)):
            bad = np.flatnonzero(~self.varies[name] | (v <= 0))
            if bad.size:
                names = [self.labels[0 if name == "x" else 1][i] for i in bad]
                raise InvalidArgumentError(
                    f"MinibatchCKA: representation(s) {names} are constant over the inputs "
                    "(zero variance): CKA is undefined")
        return self.xy / np.sqrt(np.outer(self.xx, self.yy))


def minibatch_cka(X, Y, batch_size: int = 256, kernel_gram=None) -> float:
    """Minibatch CKA of two representations (Nguyen et al. 2021; module docstring):
    ``Σ_b HSIC_1(K_b, L_b) / sqrt(Σ_b HSIC_1(K_b, K_b) Σ_b HSIC_1(L_b, L_b))`` over consecutive
    batches of ``batch_size`` inputs (``batches``).

    Centering/normalization: U-centering of each batch's Gram matrix (``u_center``), the ratio
    normalizes scale. One batch (``batch_size >= N``) gives ``cka(X, Y, debiased=True)``.

    Args:
        X, Y: ``(N, D₁)``, ``(N, D₂)`` activations (arrays or memmaps; read batch by batch).
        batch_size: inputs per batch (``>= 4``).
        kernel_gram: ``(B, D) -> (B, B)`` Gram function (default linear).

    Returns:
        The minibatch CKA estimate.

    References:
        Nguyen, Raghu & Kornblith 2021, "Do wide and deep networks learn the same things?"
            (ICLR), Eq. (3); Song et al. 2012 (JMLR).

    Example:
        >>> from dynkit.analyses.similarity import cka
        >>> rng = np.random.default_rng(0)
        >>> X, Y = rng.normal(size=(64, 5)), rng.normal(size=(64, 3))
        >>> bool(np.isclose(minibatch_cka(X, Y, batch_size=64), cka(X, Y, debiased=True)))
        True
    """
    acc = MinibatchCKA(1, 1, kernel_gram)
    for x, y in batches(X, Y, batch_size):
        acc.update([x], [y])
    return float(acc.result()[0, 0])


class LinearCKAStream:
    """Exact linear CKA (biased and debiased) over all inputs, from feature-space moments
    accumulated one batch at a time (module docstring); memory independent of ``N``.

    With ``a_i = ‖x_i‖²``, ``b_i = ‖y_i‖²``, ``s_x = Σ x_i``: biased HSIC ``∝ ‖C_xy - s_x
    s_yᵀ/N‖²_F``; for the debiased one (Song et al. 2012) ``tr(K̃L̃) = ‖C_xy‖² - Σ a_i b_i``,
    ``1ᵀK̃1 = ‖s_x‖² - Σ a_i``, ``1ᵀK̃L̃1 = s_xᵀC_xy s_y - s_xᵀΣ x_i b_i - s_yᵀΣ y_i a_i +
    Σ a_i b_i``, with ``C_xy = Σ x_i y_iᵀ``.

    Example:
        >>> from dynkit.analyses.similarity import cka
        >>> rng = np.random.default_rng(0)
        >>> X, Y = rng.normal(size=(40, 3)), rng.normal(size=(40, 2))
        >>> s = LinearCKAStream()
        >>> for x, y in batches(X, Y, 16):
        ...     s.update(x, y)
        >>> bool(np.isclose(s.result(debiased=True), cka(X, Y, debiased=True)))
        True
    """

    def __init__(self):
        self.n = 0
        self.shift = None

    def update(self, x, y) -> None:
        """Add a batch of rows ``x (B, D₁)``, ``y (B, D₂)`` (same inputs)."""
        x, y = as_pair(x, y, 1)
        if self.shift is None:
            self.shift = (x.mean(0), y.mean(0))
            d1, d2 = x.shape[1], y.shape[1]
            z = np.zeros
            self.cxy, self.cxx, self.cyy = z((d1, d2)), z((d1, d1)), z((d2, d2))
            self.sx, self.sy, self.xa, self.xb, self.ya, self.yb = (
                z(d1), z(d2), z(d1), z(d1), z(d2), z(d2))
            self.sa = self.sb = self.saa = self.sbb = self.sab = 0.0
        elif (x.shape[1], y.shape[1]) != (self.sx.size, self.sy.size):
            raise ShapeMismatchError(f"LinearCKAStream.update: batch features {x.shape[1]}, "
                                     f"{y.shape[1]} differ from the first batch's "
                                     f"{self.sx.size}, {self.sy.size}")
        x, y = x - self.shift[0], y - self.shift[1]
        a, b = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
        self.n += x.shape[0]
        self.cxy += x.T @ y
        self.cxx += x.T @ x
        self.cyy += y.T @ y
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.xa += x.T @ a
        self.xb += x.T @ b
        self.ya += y.T @ a
        self.yb += y.T @ b
        self.sa += a.sum()
        self.sb += b.sum()
        self.saa += a @ a
        self.sbb += b @ b
        self.sab += a @ b

    def _hsic(self, c, s1, s2, s1a2, s2a1, s12, sa1, sa2, debiased):
        n = self.n
        if not debiased:
            return float(np.sum((c - np.outer(s1, s2) / n) ** 2)) / (n - 1) ** 2
        val = (np.sum(c * c) - s12 + (s1 @ s1 - sa1) * (s2 @ s2 - sa2) / ((n - 1) * (n - 2))
               - 2.0 / (n - 2) * (s1 @ c @ s2 - s1 @ s1a2 - s2 @ s2a1 + s12))
        return float(val / (n * (n - 3)))

    def result(self, debiased: bool = False) -> float:
        """Linear CKA of everything added so far (``cka(X, Y, debiased=...)`` of all rows)."""
        if self.n < (4 if debiased else 2):
            raise InvalidArgumentError(f"LinearCKAStream: {self.n} inputs added; need at least "
                                       f"{4 if debiased else 2}")
        kl = self._hsic(self.cxy, self.sx, self.sy, self.xb, self.ya, self.sab, self.sa,
                        self.sb, debiased)
        kk = self._hsic(self.cxx, self.sx, self.sx, self.xa, self.xa, self.saa, self.sa,
                        self.sa, debiased)
        ll = self._hsic(self.cyy, self.sy, self.sy, self.yb, self.yb, self.sbb, self.sb,
                        self.sb, debiased)
        return _ratio(kl, kk, ll)


def streamed_linear_cka(pairs: Iterable, debiased: bool = False) -> float:
    """Exact linear CKA over an iterable of ``(x_batch, y_batch)`` pairs (``LinearCKAStream``),
    e.g. ``batches(X, Y, 4096)`` over memmaps or activations computed on the fly.

    Equals ``cka(X, Y, debiased=debiased)`` of the stacked batches; memory
    ``O(D₁² + D₂² + D₁D₂)``, independent of ``N``.

    References:
        Kornblith et al. 2019 (ICML); Song et al. 2012 (JMLR).

    Example:
        >>> from dynkit.analyses.similarity import cka
        >>> rng = np.random.default_rng(1)
        >>> X = rng.normal(size=(30, 4))
        >>> Y = X @ np.diag([1, 2, 3, 4.0])
        >>> bool(np.isclose(streamed_linear_cka(batches(X, Y, 8)), cka(X, Y)))
        True
    """
    s = LinearCKAStream()
    for x, y in pairs:
        s.update(x, y)
    return s.result(debiased)
