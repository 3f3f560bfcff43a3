"""``load_run``: a folder of checkpoints of one training run, ordered by step, loaded lazily."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dynkit.checkpoints.load import Checkpoint, load_checkpoint
from dynkit.checkpoints.native import SUFFIXES, peek_step
from dynkit.errors import CheckpointError

METRICS_FILE = "metrics.csv"


@dataclass(frozen=True, eq=False)
class Run:
    """Checkpoints of one run, sorted by step. ``run[i]`` and iteration load lazily (a
    checkpoint without a stored step gets the one from its file name);
    ``run[::10]`` is a sub-run. ``metrics`` is ``metrics.csv`` of the folder (or None)."""

    directory: Path
    steps: tuple[int, ...]
    paths: tuple[Path, ...]
    metrics: Any = None
    model: Any = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Run(self.directory, self.steps[index], self.paths[index], self.metrics,
                       self.model)
        return self._load(index)

    def __iter__(self) -> Iterator[Checkpoint]:
        for i in range(len(self)):
            yield self._load(i)

    def _load(self, i: int) -> Checkpoint:
        ckpt = load_checkpoint(self.paths[i], model=self.model)
        if ckpt.step is None:  # step known from the file name only
            ckpt = replace(ckpt, step=self.steps[i])
        return ckpt

    def at(self, step: int) -> Checkpoint:
        """The checkpoint saved at ``step``."""
        if step not in self.steps:
            raise CheckpointError(f"run {str(self.directory)!r} has no step {step}; steps: "
                                  f"{list(self.steps)}")
        return self[self.steps.index(step)]


def step_from_filename(path: Path) -> int | None:
    """The last group of digits in the file name (``step_000100.safetensors`` -> 100)."""
    groups = re.findall(r"\d+", path.stem)
    return int(groups[-1]) if groups else None


#: The trainer's resume state (optimizer state, step), kept beside the checkpoints of a run.
TRAINER_STATE = "trainer_state.npz"


def load_run(directory, *, model=None) -> Run:
    """Index the checkpoints (``*.safetensors``, ``*.npz``, ``*.pt``, ``*.pth``) in
    ``directory``, ordered by step.

    The step of a file is the one stored in its dynkit header (read without loading the
    tensors), else the last number in its file name. ``model=`` is passed on to
    ``load_checkpoint`` (needed for foreign files). ``metrics.csv`` in the folder, if any, is
    read into ``run.metrics`` (a pandas DataFrame); the trainer's ``trainer_state.npz`` is not
    a checkpoint and is skipped."""
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
    return Run(directory, steps, tuple(by_step[s] for s in steps), metrics, model)
