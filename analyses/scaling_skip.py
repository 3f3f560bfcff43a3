"""Long-skip stability of U-Nets (Huang et al. 2023, "ScaleLong: towards more stable training
of diffusion model via scaling network long skip connection").

Per stage ``s`` of a ``dynkit.models.unet`` (encoder levels ``enc{i}``, ``bottleneck``,
decoder levels ``dec{i}``) and checkpoint ``t``, on a batch ``(x, y)``:

* ``feature_norm``: ``RMS(h_s)`` of the stage output (its tapped ``relu2``);
* ``grad_norm``: ``‖∂L/∂W_s‖_F`` over the stage's conv weights (biases left out), ``L = (1/2B) Σ‖f(x) − y‖²``;

and their oscillation over training, ``std_t(log v_{t+1} − log v_t)``: the spread of the
relative change between consecutive checkpoints (ScaleLong's measure of unstable features).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dynkit.checkpoints.run import iterate
from dynkit.errors import InvalidArgumentError
from dynkit.models.graph import Model, Params, split_params

__all__ = ["oscillation", "skip_stability", "stage_norms"]


def _stages(model: Model) -> list[str]:
    stages = [t for t in model.layer_names() if t.split(".")[0].startswith(("enc", "dec"))
              or t.startswith("bottleneck")]
    if model.arch != "unet" or not stages:
        raise InvalidArgumentError(f"skip_stability needs a dynkit.models.unet model, got "
                                   f"{model.arch!r}")
    return stages


def stage_norms(model: Model, params: Params, x, y) -> pd.DataFrame:
    """``stage, feature_norm, grad_norm`` of one U-Net checkpoint (module docstring).

    Example:
        >>> import jax, numpy as np
        >>> from dynkit.models import unet
        >>> m = unet(1, 2, input_shape=(4, 4, 1))
        >>> x = np.ones((2, 4, 4, 1), np.float32)
        >>> stage_norms(m, m.init(jax.random.PRNGKey(0)), x, x)["stage"].tolist()
        ['enc1', 'bottleneck', 'dec1']
    """
    taps = _stages(model)
    x, y = jnp.asarray(x), jnp.asarray(y)
    acts = model.forward(params, x, keep=taps)
    trainable, _ = split_params(params)

    def loss(p):
        return 0.5 * jnp.sum((model.apply(p, x) - y) ** 2) / x.shape[0]

    grads = jax.grad(loss)(trainable)
    rows = []
    for tap in taps:
        stage = tap.split(".")[0]
        g = [np.asarray(v, np.float64).ravel() for n, e in grads.items()
             if n.split(".")[0] == stage for k, v in e.items() if k == "w"]
        rows.append({"stage": stage,
                     "feature_norm": float(np.sqrt(np.mean(np.asarray(acts[tap], np.float64) ** 2))),
                     "grad_norm": float(np.linalg.norm(np.concatenate(g)))})
    return pd.DataFrame(rows)


def oscillation(values) -> float:
    """``std(diff(log v))``: the spread of the relative changes of a positive series.

    Example:
        >>> bool(abs(oscillation([1.0, 2.0, 1.0, 2.0]) - np.log(2) * np.sqrt(8) / 3) < 1e-12)
        True
    """
    v = np.asarray(values, np.float64)
    if len(v) < 3 or np.any(v <= 0):
        raise InvalidArgumentError("oscillation needs >= 3 positive values (checkpoints)")
    return float(np.std(np.diff(np.log(v))))


def skip_stability(run, x, y, every: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-stage feature and gradient norms of a U-Net over a run and their oscillation.

    Args:
        run: a run folder, ``Run`` or iterable of checkpoints (``dynkit.checkpoints.iterate``)
            of a ``dynkit.models.unet``; or one ``(model, params)`` pair.
        x, y: the batch (noisy inputs and clean targets for a denoiser).
        every: every k-th checkpoint.

    Returns:
        ``(series, summary)``: ``step, stage, feature_norm, grad_norm`` per checkpoint, and per
        stage ``feature_oscillation, grad_oscillation`` (NaN with fewer than 3 checkpoints).

    Raises:
        InvalidArgumentError: a model that is not a U-Net.

    References:
        Huang et al. 2023, "ScaleLong" (NeurIPS), Sec. 3-4 (feature/gradient oscillation under
        long-skip coefficients κ).
    """
    if isinstance(run, tuple) and len(run) == 2 and isinstance(run[0], Model):
        frames = [stage_norms(run[0], run[1], x, y).assign(step=0)]
    else:
        frames = [stage_norms(c.model, c.params, x, y).assign(step=c.step if c.step is not None
                                                                 else i)
                  for i, c in iterate(run, every, indexed=True)]
    series = pd.concat(frames, ignore_index=True)[["step", "stage", "feature_norm",
                                                    "grad_norm"]]
    steps = series["step"].nunique()
    summary = series.groupby("stage", sort=False).agg(
        feature_oscillation=("feature_norm", lambda v: oscillation(v) if steps >= 3 else np.nan),
        grad_oscillation=("grad_norm", lambda v: oscillation(v) if steps >= 3 else np.nan),
    ).reset_index()
    return series, summary
