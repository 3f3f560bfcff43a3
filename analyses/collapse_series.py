"""Neural collapse across training: NC1-NC4 of every checkpoint of a run, as one tidy table.

Papyan, Han & Donoho (2020), "Prevalence of neural collapse during the terminal phase of deep
learning training", plot each metric against the epoch: past zero training error NC1
(``Tr(Σ_W Σ_B^†)/C``), the distance of the class means to a simplex ETF (NC2), the
classifier-to-means distance (NC3) and the nearest-class-centre disagreement (NC4) keep falling.
``collapse_series`` evaluates ``collapse.collapse_of_model`` (definitions in
``analyses.collapse``) on each checkpoint, one row per (step, metric).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from itertools import islice

import numpy as np
import pandas as pd

from dynkit.errors import InvalidArgumentError

from .collapse import collapse_of_model

COLUMNS = ["step", "epoch", "metric", "value"]


def _checkpoints(run_or_dir, every: int):
    if isinstance(run_or_dir, (str, os.PathLike)):
        from dynkit.checkpoints import load_run

        run_or_dir = load_run(run_or_dir)
    if hasattr(run_or_dir, "steps") and hasattr(run_or_dir, "paths"):  # a Run: slice lazily
        return iter(run_or_dir[::every])
    if not isinstance(run_or_dir, Iterable):
        raise InvalidArgumentError(
            "run_or_dir must be a run folder, a dynkit Run or an iterable of Checkpoints; "
            f"got {type(run_or_dir).__name__}"
        )
    return islice(run_or_dir, 0, None, every)


def collapse_series(
    run_or_dir,
    x,
    y,
    *,
    every: int = 1,
    batch_size: int = 512,
    progress: bool = False,
    **options,
) -> pd.DataFrame:
    """NC metrics versus training step for a run (Papyan et al. 2020, Fig. 2-7).

    ``run_or_dir`` is a folder of checkpoints (``dynkit.load_run``), a ``Run``, or any iterable
    of ``Checkpoint``-like objects (``.model``, ``.params``, ``.step``, ``.meta``); ``every``
    keeps every k-th checkpoint. Each is evaluated with ``collapse_of_model(model, params, x,
    y, **options)`` (features streamed in batches of ``batch_size``, the model's own read-out
    for NC3/NC4; ``options``: method, nc1_variant, nc2_variant, global_mean, rcond).
    Returns columns ``step, epoch, metric, value`` (``epoch`` from the checkpoint's
    ``meta["epoch"]``, NaN when absent), sorted by step.
    """
    if int(every) < 1:
        raise InvalidArgumentError(f"every must be >= 1; got {every}")
    from tqdm.auto import tqdm

    rows = []
    for i, ckpt in enumerate(tqdm(_checkpoints(run_or_dir, int(every)), desc="collapse series",
                                  disable=not progress, leave=False)):
        step = i * int(every) if ckpt.step is None else int(ckpt.step)
        epoch = (ckpt.meta or {}).get("epoch", math.nan)
        res = collapse_of_model(ckpt.model, ckpt.params, x, y, batch_size=batch_size, **options)
        rows += [(step, float(epoch), k, v) for k, v in res.items()]
    if not rows:
        raise InvalidArgumentError("collapse_series: the run holds no checkpoints")
    df = pd.DataFrame(rows, columns=COLUMNS)
    order = np.argsort(df["step"].to_numpy(), kind="stable")
    return df.iloc[order].reset_index(drop=True)
