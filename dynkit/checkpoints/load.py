"""``load_checkpoint``: one entry point for native and foreign checkpoint files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from dynkit.checkpoints.native import (
    check_dtypes,
    check_params,
    read_npz,
    read_safetensors,
    sniff_format,
    unflatten_params,
    warn_nonfinite,
)
from dynkit.checkpoints.torch_import import convert_state_dict, read_pt
from dynkit.errors import CheckpointError, DynkitError, InvalidArgumentError

__all__ = [
    "Checkpoint", "load_checkpoint",
]


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A loaded checkpoint: the model, its params (``{node: {param: jax array}}``), the
    training step (or None), user metadata (or None) and the file it came from.

    Attributes:
        model: the ``Model``.
        params: its parameters.
        step: the training step, or ``None``.
        meta: user metadata, or ``None`` (``{"source": format}`` for foreign files).
        path: the file.

    Example:
        >>> import tempfile, jax, dynkit as dk
        >>> model = dk.models.mlp(3, [4], 2)
        >>> path = dk.save_checkpoint(f"{tempfile.mkdtemp()}/step_7.safetensors", model,
        ...                           model.init(jax.random.PRNGKey(0)), step=7, meta={"lr": 0.1})
        >>> ckpt = dk.load_checkpoint(path)
        >>> ckpt.step, ckpt.meta, ckpt.model == model
        (7, {'lr': 0.1}, True)
    """

    model: Any
    params: dict
    step: int | None
    meta: Mapping[str, Any] | None
    path: Path


def load_checkpoint(path, *, model=None, example_input=None) -> Checkpoint:
    """Load a checkpoint safely (no code from the file is ever executed).

    * dynkit safetensors/npz (written by ``save_checkpoint``): the model is rebuilt from the
      stored config, or from the stored graph of a model imported by ``from_torch`` (no torch
      class is needed); ``model=`` may be given to use that model instead (shapes are
      checked).
    * foreign files (a PyTorch ``.pt``/``.pth`` state_dict, a safetensors or npz file of
      torch-named tensors): ``model=`` is required; the tensors are converted with the name map
      of ``model.arch`` (``dynkit.checkpoints.convert_state_dict``). ``.pt`` files are read with
      ``torch.load(weights_only=True)`` and need the ``dynkit[torch]`` extra.
    * ``model=`` may also be a PyTorch module *instance* (eval mode) with ``example_input=``
      (an input batch): it is traced with ``dynkit.models.from_torch`` and the file's
      state_dict is loaded into the traced graph (its own weights are not used).

    The format is detected from the content, so a renamed file is never misread. Errors are
    ``CheckpointError`` (missing, truncated, corrupt, foreign, unsafe, wrong keys) or
    ``ShapeMismatchError``; NaN/Inf weights give a ``RuntimeWarning`` naming the tensors.

    Args:
        path: the checkpoint file.
        model: the ``Model`` to load into (required for foreign files), or a torch
            ``nn.Module`` instance to trace.
        example_input: with a torch module as ``model``, an input batch to trace it with
            (e.g. ``torch.zeros(1, 3, 32, 32)``).

    Returns:
        A ``Checkpoint``.

    Raises:
        CheckpointError: a missing, truncated, corrupt, foreign (without ``model=``) or unsafe
            file, or wrong keys.
        ShapeMismatchError: a tensor does not fit ``model``.

    Example:
        >>> import tempfile, jax, dynkit as dk
        >>> model = dk.models.mlp(3, [4], 2)
        >>> path = dk.save_checkpoint(f"{tempfile.mkdtemp()}/step_7.safetensors", model,
        ...                           model.init(jax.random.PRNGKey(0)), step=7, meta={"lr": 0.1})
        >>> ckpt = load_checkpoint(path)
        >>> ckpt.step, sorted(ckpt.params)
        (7, ['fc0', 'head'])
    """
    module, model = resolve_template(model, example_input)
    return load_into(path, model, module)


def resolve_template(model, example_input):
    """``(module, model)`` of ``load_checkpoint``'s ``model=``/``example_input=``: a torch
    module is traced (``trace_torch``) once, and kept to filter its unused submodules' entries
    out of the state_dicts loaded into it; a dynkit ``Model`` (or ``None``) passes through with
    ``module=None``."""
    if model is not None and _is_torch_module(model):
        if example_input is None:
            raise InvalidArgumentError(
                "load_checkpoint(model=<torch module>) traces the module and needs "
                "example_input=, an input batch such as torch.zeros(1, 3, 32, 32)")
        from dynkit.models.torch_graph import trace_torch

        return model, trace_torch(model, example_input)
    if example_input is not None:
        raise InvalidArgumentError("example_input= is used only with a torch module as model=")
    return None, model


def load_into(path, model, module=None) -> Checkpoint:
    """``load_checkpoint`` after ``resolve_template``: ``model`` a ``Model`` or ``None``,
    ``module`` the traced torch module (or ``None``)."""
    path = Path(path)
    fmt = sniff_format(path)
    source = repr(str(path))
    step = None
    if fmt == "pt":
        tensors, step = read_pt(path)
        header = None
    elif fmt == "safetensors":
        tensors, header = read_safetensors(path)
    else:
        tensors, header = read_npz(path)
    check_dtypes(tensors, source)
    warn_nonfinite(tensors, source)

    if header is not None:
        if model is None:
            model = _rebuild(header, source)
        params = unflatten_params(tensors)
        check_params(model, params, source)
        params = {n: {k: jnp.asarray(v) for k, v in e.items()} for n, e in params.items()}
        return Checkpoint(model, params, header.get("step"), header.get("meta"), path)

    if model is None:
        raise CheckpointError(
            f"{source} is a foreign {fmt} checkpoint (not written by dynkit), so it does not "
            f"say which architecture it holds: pass model=, e.g. "
            f"load_checkpoint(path, model=dynkit.models.resnet18(...))"
        )
    if module is not None:
        from dynkit.models.torch_graph import used_state_dict

        tensors = used_state_dict(model, module, tensors)
    try:
        params = convert_state_dict(model, tensors)
    except DynkitError as exc:
        raise type(exc)(f"{source}: {exc}") from exc
    return Checkpoint(model, params, step, {"source": fmt}, path)


def _is_torch_module(obj) -> bool:
    """Whether ``obj`` is a ``torch.nn.Module`` (without importing torch when it is absent)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _rebuild(header: Mapping[str, Any], source: str):
    """The model of a native checkpoint: from its stored graph if it has one (a model imported
    by ``from_torch``), else ``build(config)``."""
    from dynkit.models import build
    from dynkit.models.graph_json import graph_from_dict

    config = header["config"]
    if "graph" in header:
        return graph_from_dict(header["graph"], config, source)
    try:
        return build(config)
    except DynkitError as exc:
        raise CheckpointError(
            f"{source}: cannot rebuild the model from the stored config {dict(config)}: {exc}"
        ) from exc
