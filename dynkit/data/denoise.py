"""Denoising tasks built from the bundled image data: noisy inputs, clean targets."""

from __future__ import annotations

import numpy as np

from dynkit.data.dataset import Dataset
from dynkit.data.real import digits, mnist1d
from dynkit.errors import InvalidArgumentError

__all__ = ["DENOISE_SOURCES", "denoise"]

#: Clean-image sources of :func:`denoise` (loaded with ``image=True``).
DENOISE_SOURCES = {"digits": digits, "mnist1d": mnist1d}


def denoise(*, seed: int = 0, source: str = "digits", noise_std: float = 0.5,
            **kwargs) -> Dataset:
    """Gaussian denoising of images: inputs ``x + σ ε``, targets the clean ``x``.

    The clean images are ``source``'s channels-last images (``digits``: ``(8, 8, 1)``,
    standardized per pixel; ``mnist1d``: ``(40, 1)``), split as that source splits them with
    ``seed``; the noise ``ε ~ N(0, I)`` is drawn from ``default_rng((seed, 1))``, first for the
    training then for the test images. It is a regression ``Dataset`` (``num_classes=None``),
    so ``fit(..., loss="mse")`` trains a network (e.g. ``dynkit.models.unet``) to minimize
    ``(1/2n) Σ_i ‖f(x_i + σ ε_i) − x_i‖²``. The labels of the clean images are kept in
    ``meta["labels_train"]``/``meta["labels_test"]``.

    Args:
        seed: seed of the split and of the noise.
        source: a key of ``DENOISE_SOURCES``.
        noise_std: ``σ >= 0``.
        **kwargs: arguments of the source (``test_fraction``, ...).

    Returns:
        The regression ``Dataset`` named ``"{source}_denoise"``.

    Raises:
        InvalidArgumentError: an unknown source or a negative ``noise_std``.

    References:
        Vincent, Larochelle, Bengio & Manzagol 2008, "Extracting and composing robust features
        with denoising autoencoders" (ICML).

    Example:
        >>> d = denoise(noise_std=0.5)
        >>> d.x_train.shape, d.y_train.shape, d.task
        ((1438, 8, 8, 1), (1438, 8, 8, 1), 'regression')
    """
    if source not in DENOISE_SOURCES:
        raise InvalidArgumentError(f"denoise: source must be one of {sorted(DENOISE_SOURCES)}, "
                                   f"got {source!r}")
    if not float(noise_std) >= 0:
        raise InvalidArgumentError(f"denoise: noise_std must be >= 0, got {noise_std}")
    clean = DENOISE_SOURCES[source](seed=seed, image=True, **kwargs)
    rng = np.random.default_rng((int(seed), 1))
    noisy_tr = clean.x_train + noise_std * rng.standard_normal(clean.x_train.shape)
    noisy_te = clean.x_test + noise_std * rng.standard_normal(clean.x_test.shape)
    meta = {"source": source, "noise_std": float(noise_std), "labels_train": clean.y_train,
            "labels_test": clean.y_test}
    return Dataset(f"{source}_denoise", noisy_tr, clean.x_train, noisy_te, clean.x_test, None,
                   "regression", meta)
