"""A user's own PyTorch class as a checkpoint template, named on the command line.

``dynkit info/metrics/lmc --torch-model module:Class --input-shape 3,32,32`` imports the class,
builds it (``--torch-kwargs`` JSON for its constructor), puts it in eval mode and traces it with
``dynkit.models.from_torch``; the checkpoint file (a torch state_dict) is then loaded into the
traced graph with ``torch.load(weights_only=True)``, so nothing in the file is ever executed.
The user's module *is* executed when it is imported: it is the user's own code.

``module`` is a dotted module name, importable from the current directory or ``sys.path``
(``mypkg.nets:ConvNet``), or the path of a ``.py`` file (``./nets.py:ConvNet``); ``Class`` may be
nested (``Outer.Inner``).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dynkit.errors import InvalidArgumentError, require

__all__ = ["import_object", "parse_input_shape", "torch_example_shape", "torch_template"]


def import_object(spec: str):
    """The object named by ``"module:attr"``, ``module`` a dotted name or a ``.py`` file.

    Args:
        spec: ``"package.module:Class"`` or ``"path/to/file.py:Class"`` (``Class`` may be
            dotted, ``Outer.Inner``).

    Returns:
        The object.

    Raises:
        InvalidArgumentError: a malformed spec, a module that cannot be imported (with the
            import's own error), or a missing attribute (naming the module's public names).

    Example:
        >>> import_object("collections:OrderedDict").__name__
        'OrderedDict'
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise InvalidArgumentError(f"--torch-model must be 'module:Class' (a dotted module or "
                                   f"a .py file, then the class), got {spec!r}")
    module = _import_module(module_name)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in vars(module) if not n.startswith("_"))
            raise InvalidArgumentError(
                f"--torch-model {spec!r}: module {module_name!r} has no {attr!r} "
                f"(its names: {public[:20]})")
        obj = getattr(obj, part)
    return obj


def _import_module(name: str):
    path = Path(name)
    is_file = name.endswith(".py") or "/" in name or "\\" in name
    try:
        if is_file:
            if not path.is_file():
                raise InvalidArgumentError(f"--torch-model: no such Python file {name!r}")
            key = path.stem  # the class's config then reads "<stem>.<Class>"
            if key in sys.modules or not key.isidentifier():
                key = f"dynkit_user_{abs(hash(str(path.resolve())))}_{path.stem}"
            spec = importlib.util.spec_from_file_location(key, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module  # dataclasses and torch.export look classes up here
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[key]
                raise
            return module
        added = "" not in sys.path and str(Path.cwd()) not in sys.path
        if added:  # as `python -m` does: the current directory is importable
            sys.path.insert(0, str(Path.cwd()))
        try:
            return importlib.import_module(name)
        finally:
            if added:
                sys.path.remove(str(Path.cwd()))
    except InvalidArgumentError:
        raise
    except Exception as exc:  # the user's module may raise anything on import
        kind = "found" if isinstance(exc, ModuleNotFoundError) and exc.name == name else "imported"
        raise InvalidArgumentError(
            f"--torch-model: module {name!r} could not be {kind} "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
        ) from exc


def parse_input_shape(text: str) -> tuple[int, ...]:
    """Parse ``--input-shape``: comma-separated positive integers, torch's layout
    (``C,H,W`` for images, ``D`` for vectors). Four or more numbers include the batch axis,
    which is dropped (dynkit imports 1-d and 2-d models, whose examples have at most 3 axes).

    Args:
        text: e.g. ``"3,32,32"``, ``"1,3,32,32"`` or ``"64"``.

    Returns:
        The shape of one example.

    Raises:
        InvalidArgumentError: anything but comma-separated positive integers.

    Example:
        >>> parse_input_shape("3,32,32"), parse_input_shape("8, 3, 32, 32"), parse_input_shape("64")
        ((3, 32, 32), (3, 32, 32), (64,))
    """
    try:
        shape = tuple(int(t) for t in text.replace(" ", "").split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape) or len(shape) > 5:
        raise InvalidArgumentError(
            f"--input-shape must be comma-separated positive integers in torch's layout, "
            f"e.g. 3,32,32 (C,H,W) or 1,3,32,32 (with the batch axis) or 64, got {text!r}")
    return shape[1:] if len(shape) >= 4 else shape


def torch_example_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """Torch's ``(C, *spatial)`` layout of a dynkit (channels-last) example shape.

    Example:
        >>> torch_example_shape((8, 8, 1)), torch_example_shape((64,))
        ((1, 8, 8), (64,))
    """
    shape = tuple(int(d) for d in input_shape)
    return (shape[-1], *shape[:-1]) if len(shape) > 1 else shape


def torch_template(spec: str, input_shape: Sequence[int], kwargs: dict[str, Any] | str | None
                   = None):
    """Build the template of ``--torch-model``: the class ``spec`` names, constructed with
    ``kwargs`` (a dict or its JSON text) and put in eval mode, and a zero example batch of one.

    Args:
        spec: ``"module:Class"`` (see ``import_object``).
        input_shape: the shape of one example in torch's layout (``parse_input_shape``).
        kwargs: keyword arguments of the constructor, or their JSON text.

    Returns:
        ``(module, example_input)``, ready for ``dynkit.load_checkpoint(path, model=module,
        example_input=example_input)``.

    Raises:
        InvalidArgumentError: the class is not an ``nn.Module`` subclass, the kwargs are not a
            JSON object, or the constructor fails (with its error).

    Example:
        >>> module, x = torch_template("torch.nn:Linear", (3,), '{"in_features": 3, "out_features": 2}')
        >>> type(module).__name__, module.training, tuple(x.shape)
        ('Linear', False, (1, 3))
    """
    torch = require("torch", "torch", "--torch-model (importing a PyTorch class)")
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except ValueError as exc:
            raise InvalidArgumentError(f"--torch-kwargs is not valid JSON: {exc}") from exc
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict):
        raise InvalidArgumentError(f"--torch-kwargs must be a JSON object of constructor "
                                   f"arguments, e.g. '{{\"width\": 16}}', got {kwargs!r}")
    cls = import_object(spec)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise InvalidArgumentError(f"--torch-model {spec!r} is {cls!r}, not a torch.nn.Module "
                                   "subclass")
    try:
        module = cls(**kwargs)
    except Exception as exc:
        raise InvalidArgumentError(f"--torch-model {spec!r}: {cls.__name__}(**{kwargs}) "
                                   f"failed: {type(exc).__name__}: {exc}") from exc
    return module.eval(), torch.zeros((1, *input_shape))
