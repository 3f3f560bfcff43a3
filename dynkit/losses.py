"""Losses and accuracy shared by the trainer, the metrics and the analyses."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dynkit.errors import InvalidArgumentError

__all__ = [
    "LOSSES", "accuracy", "cross_entropy", "loss_fn", "mse",
]

LOSSES = ("cross_entropy", "mse")


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy ``-(1/n) Σ_i log softmax(z_i)[y_i]`` for integer labels."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1))


def mse(outputs, targets, num_classes: int | None = None):
    """Mean squared error ``(1/2n) Σ_i ‖f(x_i) − y_i‖²``; integer labels become one-hot targets."""
    if num_classes is not None and targets.ndim == 1 and outputs.ndim == 2 and outputs.shape[1] > 1:
        targets = jax.nn.one_hot(targets, num_classes, dtype=outputs.dtype)
    targets = targets.reshape(outputs.shape)
    return 0.5 * jnp.mean(jnp.sum((outputs - targets).reshape(outputs.shape[0], -1) ** 2, axis=-1))


def loss_fn(name: str, num_classes: int | None):
    """``(outputs, targets) -> scalar`` for a loss name in ``LOSSES``."""
    if name == "cross_entropy":
        return cross_entropy
    if name == "mse":
        return lambda out, y: mse(out, y, num_classes)
    raise InvalidArgumentError(f"loss must be one of {LOSSES}, got {name!r}")


def accuracy(logits, labels):
    """Fraction of ``argmax(logits) == labels``."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)
