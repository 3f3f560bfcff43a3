"""The one tidy schema of every series: one row per observation of one metric at one step.

Required columns ``step, epoch, metric, value``; optional ``split, layer, q, seed``, in that
order. ``step`` is an integer (the training step of the checkpoint), ``epoch`` a float (NaN
when the run does not say), ``metric`` a name, ``value`` a float; ``split``/``layer`` are
names (or missing), ``q`` a float, ``seed`` an integer. ``metrics_over_run``,
``collapse_series``, ``ntk_series`` and ``path_norm_series`` all return it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from dynkit.errors import InvalidArgumentError

#: Columns every series has.
REQUIRED = ("step", "epoch", "metric", "value")
#: Columns a series may add, after the required ones.
OPTIONAL = ("split", "layer", "q", "seed")
#: All columns, in their order.
COLUMNS = REQUIRED + OPTIONAL

_DTYPES = {"step": "int64", "epoch": "float64", "value": "float64", "q": "float64"}
_NAMES = ("metric", "split", "layer")

__all__ = ["COLUMNS", "OPTIONAL", "REQUIRED", "check_tidy", "step_epoch", "tidy"]


def step_epoch(ckpt, index: int) -> dict:
    """``{"step": ..., "epoch": ...}`` of a checkpoint at position ``index`` of its run.

    ``step``: the checkpoint's own ``step``, else ``index``. ``epoch``: ``meta["epoch"]``
    (``dynkit.train.fit`` stores ``step / steps_per_epoch`` there), else NaN.

    Args:
        ckpt: a ``Checkpoint`` (or any object with ``step`` and ``meta``).
        index: its position in the run, used when it has no step.

    Returns:
        A dict with an ``int`` step and a ``float`` epoch.

    Example:
        >>> from types import SimpleNamespace
        >>> step_epoch(SimpleNamespace(step=30, meta={"epoch": 1.5}), 3)
        {'step': 30, 'epoch': 1.5}
        >>> step_epoch(SimpleNamespace(step=None, meta=None), 3)
        {'step': 3, 'epoch': nan}
    """
    step = getattr(ckpt, "step", None)
    meta = getattr(ckpt, "meta", None) or {}
    epoch = meta.get("epoch") if isinstance(meta, Mapping) else None
    return {"step": int(index if step is None else step),
            "epoch": float(epoch) if isinstance(epoch, (int, float)) else math.nan}


def tidy(rows: Iterable[Mapping] | pd.DataFrame) -> pd.DataFrame:
    """A series in the tidy schema: the columns in their order, with their dtypes, checked.

    Optional columns are kept when present in ``rows``; any other column is an error.

    Args:
        rows: dicts (or a DataFrame) with the required columns and any optional ones.

    Returns:
        The ``DataFrame`` (index ``0..n-1``); ``check_tidy`` holds for it.

    Example:
        >>> tidy([{"step": 0, "epoch": 0.0, "metric": "loss", "value": 1.0}])
           step  epoch metric  value
        0     0    0.0   loss    1.0
    """
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    _check_columns(df)
    df = df[[c for c in COLUMNS if c in df.columns]].reset_index(drop=True)
    try:
        df = df.astype({c: t for c, t in _DTYPES.items() if c in df})
        if "seed" in df:
            df = df.astype({"seed": "int64"})
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"a series column has values of the wrong type: {exc}") from exc
    check_tidy(df)
    return df


def check_tidy(df: pd.DataFrame, *, finite: bool = False) -> pd.DataFrame:
    """Check that ``df`` follows the tidy schema (module docstring).

    Args:
        df: the table to check.
        finite: also require every ``value`` to be finite.

    Returns:
        ``df`` itself.

    Raises:
        InvalidArgumentError: naming the column that breaks the schema.

    Example:
        >>> df = tidy([{"step": 0, "epoch": 0.0, "metric": "nc1", "value": 0.5}])
        >>> check_tidy(df, finite=True) is df
        True
    """
    if not isinstance(df, pd.DataFrame):
        raise InvalidArgumentError(f"a series must be a pandas DataFrame, got {type(df).__name__}")
    _check_columns(df)
    order = list(df.columns)
    if order != [c for c in COLUMNS if c in df.columns]:
        raise InvalidArgumentError(f"series columns must come in the order {list(COLUMNS)}; "
                                   f"got {order}")
    for c in ("step", "seed"):
        if c in df and not pd.api.types.is_integer_dtype(df[c]):
            raise InvalidArgumentError(f"series column {c!r} must be integer, got {df[c].dtype}")
    for c in ("epoch", "value", "q"):
        if c in df and not pd.api.types.is_float_dtype(df[c]):
            raise InvalidArgumentError(f"series column {c!r} must be float, got {df[c].dtype}")
    for c in _NAMES:
        if c in df and not all(isinstance(v, str) for v in df[c].dropna()):
            raise InvalidArgumentError(f"series column {c!r} must hold names (str) or be "
                                       "missing")
    if df["metric"].isna().any():
        raise InvalidArgumentError("series column 'metric' has missing names")
    if finite and not np.all(np.isfinite(df["value"].to_numpy())):
        bad = sorted(set(df.loc[~np.isfinite(df["value"].to_numpy()), "metric"]))
        raise InvalidArgumentError(f"series values of metric(s) {bad} are not finite")
    return df


def _check_columns(df: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED if c not in df.columns]
    extra = [c for c in df.columns if c not in COLUMNS]
    if missing or extra:
        raise InvalidArgumentError(
            f"a series has the columns {list(REQUIRED)} and optionally {list(OPTIONAL)}; "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unknown {extra}" if extra else ""))
