"""A run: the checkpoints of one training run, ordered by step, loaded lazily.

* ``load_run(directory)``: index a folder of checkpoints;
* ``iterate(run, every, include_last)``: the one way to walk a run (a folder, a ``Run`` or
  any iterable of checkpoints), lazily, with one ``Model`` shared by the whole run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dynkit.checkpoints.load import Checkpoint, load_checkpoint, load_into, resolve_template
from dynkit.checkpoints.native import SUFFIXES, peek_step
from dynkit.errors import CheckpointError, InvalidArgumentError

__all__ = [
    "METRICS_FILE",
    "TRAINER_STATE",
    "Run",
    "iterate",
    "load_run",
    "step_from_filename",
]

METRICS_FILE = "metrics.csv"


@dataclass(frozen=True, eq=False)
class Run:
    """Checkpoints of one run, sorted by step. ``run[i]`` and iteration load lazily (a
    checkpoint without a stored step gets the one from its file name);
    ``run[::10]`` is a sub-run. ``metrics`` is ``metrics.csv`` of the folder (or None).

    Checkpoints of one architecture share one ``Model`` object (the first one rebuilt), so
    the caches that hold per-model state keep it across the run.

    Attributes:
        directory: the run folder.
        steps: the steps, sorted.
        paths: the checkpoint files, in step order.
        metrics: ``metrics.csv`` of the folder as a DataFrame, or ``None``.
        model: the ``Model`` passed to ``load_checkpoint``, or ``None``.
        module: the torch module ``model`` was traced from (``load_run(model=<torch module>,
            example_input=...)``), or ``None``.

    Example:
        >>> import tempfile, jax, dynkit as dk
        >>> model, folder = dk.models.mlp(2, [3], 2), tempfile.mkdtemp()
        >>> for s in (0, 10, 20):
        ...     _ = dk.save_checkpoint(f"{folder}/step_{s}.safetensors", model,
        ...                            model.init(jax.random.PRNGKey(s)), step=s)
        >>> run = load_run(folder)
        >>> run.steps, [c.step for c in run[::2]], run.at(10).step
        ((0, 10, 20), [0, 20], 10)
    """

    directory: Path
    steps: tuple[int, ...]
    paths: tuple[Path, ...]
    metrics: Any = None
    model: Any = None
    module: Any = None
    _models: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Run(self.directory, self.steps[index], self.paths[index], self.metrics,
                       self.model, self.module, self._models)
        return self._load(index)

    def __iter__(self) -> Iterator[Checkpoint]:
        for i in range(len(self)):
            yield self._load(i)

    def _load(self, i: int) -> Checkpoint:
        if self.module is None:
            ckpt = load_checkpoint(self.paths[i], model=self.model)
        else:  # traced once in load_run
            ckpt = load_into(self.paths[i], self.model, self.module)
        if ckpt.step is None:  # step known from the file name only
            ckpt = replace(ckpt, step=self.steps[i])
        shared = self._models.setdefault(ckpt.model, ckpt.model)  # equal graphs: one Model
        return ckpt if shared is ckpt.model else replace(ckpt, model=shared)

    def at(self, step: int) -> Checkpoint:
        """The checkpoint saved at ``step``.

        Raises:
            CheckpointError: the run has no such step.
        """
        if step not in self.steps:
            raise CheckpointError(f"run {str(self.directory)!r} has no step {step}; steps: "
                                  f"{list(self.steps)}")
        return self[self.steps.index(step)]


def step_from_filename(path: Path) -> int | None:
    """The last group of digits in the file name (``step_000100.safetensors`` -> 100).

    Example:
        >>> step_from_filename(Path("step_000100.safetensors")), step_from_filename(Path("x.pt"))
        (100, None)
    """
    groups = re.findall(r"\d+", path.stem)
    return int(groups[-1]) if groups else None


#: The trainer's resume state (optimizer state, step), kept beside the checkpoints of a run.
TRAINER_STATE = "trainer_state.npz"


def load_run(directory, *, model=None, example_input=None) -> Run:
    """Index the checkpoints (``*.safetensors``, ``*.npz``, ``*.pt``, ``*.pth``) in
    ``directory``, ordered by step.

    The step of a file is the one stored in its dynkit header (read without loading the
    tensors), else the last number in its file name. ``model=`` is passed on to
    ``load_checkpoint`` (needed for foreign files); a torch module as ``model=`` is traced
    once, with ``example_input=``, for the whole run. ``metrics.csv`` in the folder, if any, is
    read into ``run.metrics`` (a pandas DataFrame); the trainer's ``trainer_state.npz`` is not
    a checkpoint and is skipped.

    Args:
        directory: the run folder.
        model: the ``Model`` for foreign checkpoint files, or a torch module to trace.
        example_input: with a torch module as ``model``, an input batch to trace it with.

    Returns:
        A ``Run``.

    Raises:
        CheckpointError: no such folder, no checkpoints, a file without a step, or two files
            for one step.

    Example:
        >>> import tempfile, jax, dynkit as dk
        >>> model, folder = dk.models.mlp(2, [3], 2), tempfile.mkdtemp()
        >>> for s in (5, 1):
        ...     _ = dk.save_checkpoint(f"{folder}/ckpt_{s}.npz", model,
        ...                            model.init(jax.random.PRNGKey(s)), step=s)
        >>> load_run(folder).steps
        (1, 5)
    """
    directory = Path(directory)
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is a file, not a directory"
        raise CheckpointError(f"run directory {str(directory)!r} {what}")
    files = sorted(p for p in directory.iterdir()
                   if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith(".")
                   and p.name != TRAINER_STATE)
    if not files:
        raise CheckpointError(
            f"no checkpoint files ({', '.join('*' + s for s in SUFFIXES)}) in {str(directory)!r}"
        )
    by_step: dict[int, Path] = {}
    for p in files:
        step = peek_step(p)
        if step is None:
            step = step_from_filename(p)
        if step is None:
            raise CheckpointError(
                f"cannot tell the step of {str(p)!r}: no step in its metadata and no number "
                f"in its file name (save with step=, or name it like step_000100.safetensors)"
            )
        if step in by_step:
            raise CheckpointError(
                f"two checkpoints for step {step} in {str(directory)!r}: "
                f"{by_step[step].name} and {p.name}"
            )
        by_step[step] = p
    steps = tuple(sorted(by_step))
    metrics = None
    if (directory / METRICS_FILE).is_file():
        import pandas as pd

        metrics = pd.read_csv(directory / METRICS_FILE)
    module, model = resolve_template(model, example_input)
    return Run(directory, steps, tuple(by_step[s] for s in steps), metrics, model, module)


class _Selection(Iterator):
    """A lazy iterator over checkpoints that knows its length when the run does."""

    def __init__(self, items: Iterator, length: int | None):
        self._items, self._length = items, length

    def __next__(self):
        return next(self._items)

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("the length of an iteration over a plain iterable is unknown")
        return self._length


def iterate(run, every: int = 1, include_last: bool = True, *, indexed: bool = False):
    """The checkpoints ``0, every, 2 every, ...`` of a run (and the last one), loaded lazily.

    The one way to walk a run: every series over checkpoints (``metrics_over_run``,
    ``collapse_series``, ``ntk_series``, ``path_norm_series``) uses it.

    Args:
        run: a run folder (read with ``load_run``), a ``Run``, or any iterable of
            checkpoints (objects with ``model``, ``params``, ``step``, ``meta``).
        every: keep every ``every``-th checkpoint (``>= 1``).
        include_last: also yield the last checkpoint when ``every`` skips it.
        indexed: yield ``(index, checkpoint)`` pairs, ``index`` the position in the run.

    Returns:
        An iterator (with ``len()`` for a folder or a ``Run``). The checkpoints of a folder or
        ``Run`` share one ``Model`` per architecture.

    Raises:
        InvalidArgumentError: ``every < 1``, or ``run`` is none of the above.

    Example:
        >>> import tempfile, jax, dynkit as dk
        >>> model = dk.models.mlp(2, [3], 2)
        >>> folder = tempfile.mkdtemp()
        >>> for s in range(5):
        ...     _ = dk.save_checkpoint(f"{folder}/step_{s}.safetensors", model,
        ...                            model.init(jax.random.PRNGKey(s)), step=s)
        >>> [c.step for c in iterate(folder, every=3)]
        [0, 3, 4]
        >>> [c.step for c in iterate(folder, every=3, include_last=False)]
        [0, 3]
        >>> len({id(c.model) for c in iterate(folder)})
        1
    """
    if isinstance(every, bool) or int(every) != every or every < 1:
        raise InvalidArgumentError(f"every must be an integer >= 1, got {every!r}")
    every = int(every)
    if isinstance(run, (str, os.PathLike)):
        run = load_run(run)
    if isinstance(run, Run):
        picked = list(range(0, len(run), every))
        if include_last and picked and picked[-1] != len(run) - 1:
            picked.append(len(run) - 1)
        pairs = ((i, run[i]) for i in picked)
        length = len(picked)
    elif isinstance(run, Iterable) and not isinstance(run, (bytes, Mapping)):
        pairs, length = _every(run, every, include_last), None
    else:
        raise InvalidArgumentError(
            "run must be a run folder, a dynkit Run or an iterable of checkpoints; "
            f"got {type(run).__name__}")
    return _Selection(pairs if indexed else (c for _, c in pairs), length)


def _every(items: Iterable, every: int, include_last: bool) -> Iterator:
    """``(index, item)`` for every ``every``-th item, and the last one if ``include_last``."""
    last = None
    for i, item in enumerate(items):
        if i % every == 0:
            yield i, item
            last = None
        else:
            last = (i, item)
    if include_last and last is not None:
        yield last
