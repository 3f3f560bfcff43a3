"""Curvature of the loss: Hessian spectra, sharpness, traces and the edge of stability.

One namespace for the curvature tools (each lives in its own module):

* ``hessian_ops``: ``hessian_operator`` — Hessian (or GGN) vector products of any model's
  loss, forward-over-reverse, jit-compiled, accumulated over minibatches, of all
  parameters, one layer or a block; ``share_primal`` (one linearization per block of
  probes) and ``quadratic_forms`` (``vᵀHv`` forward-over-forward, no backward pass);
* ``hessian_spectrum``: ``top_eigenvalues`` (Lanczos), ``trace`` (Hutchinson, optionally
  deflated by the top eigenvectors), ``density``
  (stochastic Lanczos quadrature), ``gradient_overlap`` (Gur-Ari et al. 2018),
  ``layer_spectra``;
* ``hessian_classes``: ``class_mean_eigenvalues``, the class-mean part of the GGN (Papyan 2019);
* ``hessian_series``: ``hessian_series`` over a training run and the ``"hessian"`` entry of
  ``dynkit metrics``.

Example:
    >>> import jax, dynkit as dk
    >>> from dynkit.analyses import hessian
    >>> model = dk.models.mlp(3, [4], 2)
    >>> params = model.init(jax.random.PRNGKey(0))
    >>> x = jax.random.normal(jax.random.PRNGKey(1), (16, 3)); y = (x[:, 0] > 0).astype(int)
    >>> eig = hessian.top_eigenvalues(model, params, x, y, k=2, loss="cross_entropy")
    >>> bool(eig.eigenvalues[0] >= eig.eigenvalues[1]), eig.converged
    (True, True)
"""

from dynkit.analyses.hessian_classes import class_mean_eigenvalues
from dynkit.analyses.hessian_ops import (
    HessianOperator,
    hessian_operator,
    resolve_loss,
    select_layers,
)
from dynkit.analyses.hessian_series import hessian_metric, hessian_metrics, hessian_series
from dynkit.analyses.hessian_spectrum import (
    OUTLIER_GAP,
    Density,
    Eigen,
    Overlap,
    TraceEstimate,
    density,
    gradient_overlap,
    lanczos,
    layer_spectra,
    outlier_ritz,
    top_eigenvalues,
    trace,
)

__all__ = [
    "OUTLIER_GAP",
    "Density",
    "Eigen",
    "HessianOperator",
    "Overlap",
    "TraceEstimate",
    "class_mean_eigenvalues",
    "density",
    "gradient_overlap",
    "hessian_metric",
    "hessian_metrics",
    "hessian_operator",
    "hessian_series",
    "lanczos",
    "layer_spectra",
    "outlier_ritz",
    "resolve_loss",
    "select_layers",
    "top_eigenvalues",
    "trace",
]
