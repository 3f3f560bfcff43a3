"""Knots (breakpoints) of univariate piecewise-linear functions, e.g. a two-layer ReLU net
``f(x) = sum_i a_i relu(w_i x + b_i)`` on a line.

Used for the claim of "Mean-field analysis of piecewise linear solutions for wide ReLU
networks" (Shevchenko, Kungurtsev & Mondelli 2022): with small L2 regularization, the
mean-field network fitted to univariate data has at most three knots between consecutive
training inputs. A knot is a point where the slope changes by more than a tolerance; knots
closer than a merge distance count once (a mean-field solution concentrates neurons whose
breakpoints nearly coincide).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dynkit.errors import InvalidArgumentError, ShapeMismatchError

__all__ = ["Knots", "knots_between", "knots_of_network", "knots_of_samples"]


@dataclass(frozen=True)
class Knots:
    """Knots of a piecewise-linear function.

    Args:
        positions: the sorted knot positions.
        jumps: the slope change at each.

    References:
        Shevchenko, Kungurtsev & Mondelli 2022, "Mean-field analysis of piecewise linear
        solutions for wide ReLU networks".

    Example:
        >>> Knots(positions=[0.0], jumps=[1.0]).jumps
        [1.0]
    """

    positions: np.ndarray
    jumps: np.ndarray


def _merge(pos, jump, tol, merge):
    order = np.argsort(pos)
    pos, jump = pos[order], jump[order]
    out_p, out_j, group = [], [], []
    for p, j in zip(pos, jump):
        if group and p - group[-1][0] > merge:
            _flush(group, out_p, out_j, tol)
            group = []
        group.append((p, j))
    if group:
        _flush(group, out_p, out_j, tol)
    return Knots(np.asarray(out_p, float), np.asarray(out_j, float))


def _flush(group, out_p, out_j, tol):
    p = np.array([g[0] for g in group])
    j = np.array([g[1] for g in group])
    total = j.sum()
    if abs(total) > tol:
        weights = np.abs(j)
        out_p.append(float(np.sum(weights * p) / np.sum(weights)))
        out_j.append(float(total))


def knots_of_network(a, w, b, scale: float = 1.0, tol: float = 1e-9,
                     merge: float = 0.0) -> Knots:
    """Knots of ``f(x) = scale * sum_i a_i relu(w_i x + b_i)``: neuron i breaks at
    ``-b_i / w_i`` with slope change ``scale * a_i |w_i|``; breakpoints within ``merge`` of
    the previous one are merged (jumps summed) and kept if ``|jump| > tol``.

    Args:
        a, w, b: the output weights, input weights and biases of the neurons (same length).
        scale: the output prefactor (e.g. ``TwoLayer.scale``).
        tol: the smallest kept slope change.
        merge: the distance under which consecutive breakpoints merge (position: the
            ``|jump|``-weighted mean).

    Returns:
        The :class:`Knots`.

    References:
        Shevchenko, Kungurtsev & Mondelli 2022, "Mean-field analysis of piecewise linear
        solutions for wide ReLU networks".

    Example:
        >>> k = knots_of_network([1.0, 1.0, -2.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0])
        >>> k.positions.tolist(), k.jumps.tolist()   # the two neurons at -1 merge exactly
        ([-1.0, 0.0], [2.0, -2.0])
    """
    a, w, b = (np.asarray(v, float).ravel() for v in (a, w, b))
    if not (a.shape == w.shape == b.shape):
        raise ShapeMismatchError(f"knots_of_network: a, w, b must have the same length, got "
                                 f"{a.shape}, {w.shape}, {b.shape}")
    live = w != 0
    return _merge(-b[live] / w[live], scale * a[live] * np.abs(w[live]), tol, merge)


def knots_of_samples(x, y, tol: float, merge: float = 0.0) -> Knots:
    """Knots of the piecewise-linear interpolant of samples ``(x, y)`` (``x`` increasing):
    the slope change at every interior sample, kept where above ``tol`` after merging changes
    closer than ``merge`` (adjacent samples with slope changes belong to one knot when
    ``merge`` is at least the grid step).

    Args:
        x, y: 1-D samples of equal length >= 3, ``x`` finite and strictly increasing.
        tol: the smallest kept slope change.
        merge: the distance under which consecutive changes merge.

    Returns:
        The :class:`Knots`.

    References:
        Shevchenko, Kungurtsev & Mondelli 2022, "Mean-field analysis of piecewise linear
        solutions for wide ReLU networks".

    Example:
        >>> import numpy as np
        >>> x = np.linspace(-1.0, 1.0, 5)
        >>> k = knots_of_samples(x, np.abs(x), tol=1e-6)
        >>> k.positions.tolist(), k.jumps.tolist()
        ([0.0], [2.0])
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.ndim != 1 or x.shape != y.shape or x.size < 3:
        raise ShapeMismatchError(f"knots_of_samples: x and y must be 1-D of equal length >= 3, "
                                 f"got {x.shape}, {y.shape}")
    if np.any(np.diff(x) <= 0) or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise InvalidArgumentError("knots_of_samples: x must be finite and strictly increasing "
                                   "and y finite")
    slopes = np.diff(y) / np.diff(x)
    change = np.diff(slopes)
    small = np.abs(change) <= tol * 1e-3          # exact zeros / rounding: not candidate knots
    return _merge(x[1:-1][~small], change[~small], tol, merge)


def knots_between(knots: Knots, x_train) -> pd.DataFrame:
    """Number of knots in each interval ``[x_(j), x_(j+1))`` between consecutive sorted
    training inputs.

    Args:
        knots: the :class:`Knots`.
        x_train: the training inputs (any order, duplicates allowed).

    Returns:
        DataFrame, one row per interval: ``left, right, knots``.

    References:
        Shevchenko, Kungurtsev & Mondelli 2022, "Mean-field analysis of piecewise linear
        solutions for wide ReLU networks" (at most three knots per interval).

    Example:
        >>> import numpy as np
        >>> df = knots_between(Knots(np.array([0.5, 0.7, 1.5]), np.ones(3)), [2.0, 0.0, 1.0])
        >>> df["left"].tolist(), df["knots"].tolist()
        ([0.0, 1.0], [2, 1])
    """
    xs = np.unique(np.asarray(x_train, float))
    counts = [int(np.sum((knots.positions >= lo) & (knots.positions < hi)))
              for lo, hi in itertools.pairwise(xs)]
    return pd.DataFrame({"left": xs[:-1], "right": xs[1:], "knots": counts})
