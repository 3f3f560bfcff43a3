"""Dask ``distributed`` clients for dynkit's many-task work (kernel tiles, per-checkpoint
metrics, sweep cells): connecting to a scheduler with a clear error, and running one task per
item in order. Start a cluster with the standard ``dask scheduler`` / ``dask worker
tcp://HOST:8786`` commands; nothing here is home-made."""

from __future__ import annotations

from dynkit.errors import DynkitError, require

__all__ = ["SchedulerUnreachableError", "connect", "map_ordered"]


class SchedulerUnreachableError(DynkitError, ConnectionError):
    """No Dask scheduler answered at the given address within the timeout."""


def connect(address: str, timeout: float = 10.0):
    """A ``dask.distributed.Client`` of the scheduler at ``address``, or a clear error.

    Args:
        address: e.g. ``"tcp://host:8786"`` (what ``dask scheduler`` prints).
        timeout: seconds to wait.

    Returns:
        The client.

    Raises:
        SchedulerUnreachableError: nothing answered within ``timeout``.
        MissingDependencyError: ``dask[distributed]`` is not installed.
    """
    distributed = require("distributed", "scale", "a Dask scheduler (client=/scheduler=)")
    try:
        return distributed.Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise SchedulerUnreachableError(
            f"no Dask scheduler answered at {address!r} within {timeout:g} s. Start one with "
            f"`dask scheduler` and workers with `dask worker {address}`, or pass client=None "
            f"to compute in-process") from exc


def map_ordered(client, func, items, *shared, bar=None, retries: int = 0) -> list:
    """``[func(item, *shared) for item in items]`` as one Dask task per item.

    ``shared`` (data sets, names) is scattered to the workers once and passed to every task.
    Results come back in the order of ``items`` whatever order the tasks finish in.

    Args:
        client: a ``dask.distributed.Client``.
        func: a picklable function (importable on the workers).
        items: one argument per task.
        *shared: arguments common to every task.
        bar: a tqdm bar, advanced as tasks finish.
        retries: reruns of a task that raised.

    Returns:
        The results, in the order of ``items``.
    """
    distributed = require("distributed", "scale", "a Dask client (client=)")
    shared_f = client.scatter(list(shared), broadcast=True) if shared else []
    futures = [client.submit(func, item, *shared_f, retries=retries, pure=False)
               for item in items]
    for fut in distributed.as_completed(futures):
        fut.result()  # a failed task raises its error here, at once
        if bar is not None:
            bar.update(1)
    return client.gather(futures)
