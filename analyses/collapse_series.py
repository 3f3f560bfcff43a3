"""Neural collapse across training: NC1-NC4 of every checkpoint of a run, as one tidy table.

Papyan, Han & Donoho (2020), "Prevalence of neural collapse during the terminal phase of deep
learning training", plot each metric against the epoch: past zero training error NC1
(``Tr(Σ_W Σ_B^†)/C``), the distance of the class means to a simplex ETF (NC2), the
classifier-to-means distance (NC3) and the nearest-class-center disagreement (NC4) keep falling.
``collapse_series`` evaluates ``collapse.collapse_of_model`` (definitions in
``analyses.collapse``) on each checkpoint, one row per (step, metric).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dynkit.checkpoints.run import iterate
from dynkit.errors import InvalidArgumentError
from dynkit.schema import step_epoch, tidy

from .collapse import collapse_of_model

__all__ = [
    "collapse_series",
]


def collapse_series(
    run,
    x,
    y,
    *,
    every: int = 1,
    include_last: bool = True,
    batch_size: int = 512,
    progress: bool = False,
    **options,
) -> pd.DataFrame:
    """NC metrics versus training step for a run (Papyan et al. 2020, Fig. 2-7).

    Each checkpoint used (``dynkit.checkpoints.iterate``) is evaluated with
    ``collapse_of_model(model, params, x, y, **options)``: features streamed in batches, the
    model's own read-out for NC3/NC4; definitions in ``analyses.collapse``.

    Args:
        run: a folder of checkpoints (``dynkit.load_run``), a ``Run``, or any iterable of
            ``Checkpoint``-like objects (``.model``, ``.params``, ``.step``, ``.meta``).
        x: inputs ``(N, ...)``.
        y: ``N`` integer labels.
        every: keep every ``every``-th checkpoint.
        include_last: also keep the last checkpoint when ``every`` skips it.
        batch_size: samples per forward pass.
        progress: show a progress bar over the checkpoints.
        **options: ``method, nc1_variant, nc2_variant, global_mean, rcond`` of
            ``collapse_of_model``.

    Returns:
        The tidy series ``step, epoch, metric, value`` (``dynkit.schema``; ``epoch`` from the
        checkpoint's ``meta["epoch"]``, NaN when absent), sorted by step.

    References:
        Papyan, Han & Donoho 2020, "Prevalence of neural collapse during the terminal phase
            of deep learning training" (PNAS).

    Example:
        >>> import jax
        >>> from types import SimpleNamespace
        >>> from dynkit.models import mlp
        >>> model = mlp(2, [8], 2)
        >>> run = [SimpleNamespace(model=model, params=model.init(jax.random.PRNGKey(s)), step=s,
        ...                        meta={"epoch": s / 10}) for s in (0, 5)]
        >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> y = np.array([0, 0, 1, 1])
        >>> df = collapse_series(run, x, y)
        >>> df[df.metric == "nc1"][["step", "epoch"]].to_numpy().tolist()
        [[0.0, 0.0], [5.0, 0.5]]
    """
    from tqdm.auto import tqdm

    rows = []
    for i, ckpt in tqdm(iterate(run, every, include_last, indexed=True),
                        desc="collapse series", disable=not progress, leave=False):
        res = collapse_of_model(ckpt.model, ckpt.params, x, y, batch_size=batch_size, **options)
        keys = step_epoch(ckpt, i)
        rows += [{**keys, "metric": k, "value": v} for k, v in res.items()]
    if not rows:
        raise InvalidArgumentError("collapse_series: the run holds no checkpoints")
    df = tidy(rows)
    order = np.argsort(df["step"].to_numpy(), kind="stable")
    return df.iloc[order].reset_index(drop=True)
