"""Model parameters as pytrees ``{node_name: {param_name: array}}``: the split between trained
weights and BatchNorm running statistics, and the mask optimizers use for it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["STAT_KEYS", "Params", "is_stat_path", "merge_params", "split_params",
           "trainable_mask"]

Params = dict[str, dict[str, Any]]

#: Parameter entries that are running statistics, not trained by gradient descent.
STAT_KEYS = ("mean", "var")


def is_stat_path(path) -> bool:
    """True for a pytree path ending in a running-statistics key (``mean``/``var``).

    Example:
        >>> from jax.tree_util import DictKey
        >>> is_stat_path((DictKey("bn"), DictKey("var"))), is_stat_path((DictKey("w"),))
        (True, False)
    """
    last = path[-1]
    return getattr(last, "key", None) in STAT_KEYS


def split_params(params: Params) -> tuple[Params, Params]:
    """Separate BatchNorm running statistics from the trained parameters.

    Args:
        params: parameters ``{node: {param: array}}``.

    Returns:
        ``(trainable, stats)``; ``stats`` holds only the nodes with running statistics.

    Example:
        >>> p = {"bn": {"scale": 1.0, "bias": 0.0, "mean": 0.0, "var": 1.0}, "fc": {"w": 2.0}}
        >>> split_params(p)
        ({'bn': {'scale': 1.0, 'bias': 0.0}, 'fc': {'w': 2.0}}, {'bn': {'mean': 0.0, 'var': 1.0}})
    """
    trainable = {n: {k: v for k, v in p.items() if k not in STAT_KEYS} for n, p in params.items()}
    stats = {n: {k: v for k, v in p.items() if k in STAT_KEYS} for n, p in params.items()}
    return trainable, {n: p for n, p in stats.items() if p}


def merge_params(trainable: Params, stats: Params) -> Params:
    """Inverse of :func:`split_params`.

    Args:
        trainable: the trained parameters.
        stats: the running statistics.

    Returns:
        The merged parameters.

    Example:
        >>> p = {"bn": {"scale": 1.0, "mean": 0.0}}
        >>> merge_params(*split_params(p)) == p
        True
    """
    merged = {n: dict(p) for n, p in trainable.items()}
    for n, p in stats.items():
        merged.setdefault(n, {}).update(p)
    return merged


def trainable_mask(params: Params):
    """Pytree of bools: True for trained leaves, False for running statistics (for optax.masked).

    Example:
        >>> trainable_mask({"bn": {"scale": 1.0, "mean": 0.0}})
        {'bn': {'scale': True, 'mean': False}}
    """
    return {n: {k: k not in STAT_KEYS for k in p} for n, p in params.items()}
