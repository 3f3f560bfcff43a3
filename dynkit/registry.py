"""Named registries of metrics (``dynkit metrics``) and figures (``dynkit figures``).

One entry = one callable plus its name and one line of help. Entries come from the entry
points of an ``importlib.metadata`` group: an installed distribution declares, in its
``pyproject.toml``,

.. code-block:: toml

    [project.entry-points."dynkit.metrics"]
    my-metric = "my_package.metrics:my_metric"      # func(model, params, data) -> DataFrame

    [project.entry-points."dynkit.figures"]
    my-figure = "my_package.figures:my_figure"      # a dynkit.figures.common.PaperFigure

and the registry loads those objects the first time it is asked for its names or an entry.
The entry point's name is the entry's name; the help is the object's ``help`` attribute, else
the first line of its docstring (``Registry.register`` sets a help for functions registered
in-process). dynkit itself registers its own metrics and figures the same way, so the core
never names a plugin. A plugin that fails to load is reported by a ``PluginWarning`` naming
the plugin and its distribution; the other entries stay usable.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from dynkit.errors import InvalidArgumentError

__all__ = ["FIGURES", "METRICS", "Entry", "PluginWarning", "Registry"]


class PluginWarning(UserWarning):
    """An entry point of a ``dynkit.*`` group could not be loaded or does not fit the group."""


@dataclass(frozen=True)
class Entry:
    """One registered callable: its ``name``, the callable ``func`` and one line of ``help``."""

    name: str
    func: Callable
    help: str


def _summary(obj) -> str:
    help_ = getattr(obj, "help", None)
    if isinstance(help_, str) and help_:
        return help_
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def _origin(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f"distribution {dist.name} {dist.version}" if dist is not None else "unknown dist"
    return f"plugin {ep.name!r} = {ep.value!r} ({where})"


class Registry:
    """A name -> ``Entry`` map filled from the entry-point ``group`` (and ``register``).

    Args:
        kind: what an entry is, for messages (``"metric"``).
        group: the ``importlib.metadata`` entry-point group (``"dynkit.metrics"``).

    Example:
        >>> from dynkit.registry import Registry
        >>> r = Registry("widget", group="dynkit.no-such-group")
        >>> @r.register("double", "twice the input")
        ... def double(x):
        ...     return 2 * x
        >>> r.names(), r.get("double").func(21), r.get("double").help
        (['double'], 42, 'twice the input')
    """

    def __init__(self, kind: str, group: str):
        self.kind = kind
        self.group = group
        self._entries: dict[str, Entry] = {}
        self._failed: dict[str, str] = {}
        self._loaded = False

    def register(self, name: str, help: str) -> Callable[[Callable], Callable]:
        """Decorator registering ``func`` as ``name`` in this process (returns ``func``).

        An installed entry point of the same name that loads this very function adopts this
        entry, with its ``help``."""
        def deco(func: Callable) -> Callable:
            self._entries[name] = Entry(name, func, help)
            return func

        return deco

    def _load(self) -> None:
        """Load every entry point of ``group`` once; a failure warns and skips the plugin."""
        if self._loaded:
            return
        self._loaded = True
        for ep in metadata.entry_points(group=self.group):
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - any plugin error must not stop the CLI
                self._fail(ep, f"failed to load: {type(exc).__name__}: {exc}")
                continue
            known = self._entries.get(ep.name)
            if not callable(obj):
                self._fail(ep, f"names a {type(obj).__name__}, not a callable {self.kind}")
            elif known is None:
                self._entries[ep.name] = Entry(ep.name, obj, _summary(obj))
            elif known.func is not obj:
                self._fail(ep, f"clashes with the {self.kind} {ep.name!r} already registered "
                               f"({known.func!r})")

    def _fail(self, ep: metadata.EntryPoint, why: str) -> None:
        message = f"{self.kind} {_origin(ep)} {why}"
        self._failed[ep.name] = message
        warnings.warn(message, PluginWarning, stacklevel=3)

    def get(self, name: str) -> Entry:
        """The entry ``name``; ``InvalidArgumentError`` listing the available names if unknown
        (and why, if a plugin of that name failed to load)."""
        self._load()
        if name not in self._entries:
            why = f" ({self._failed[name]})" if name in self._failed else ""
            raise InvalidArgumentError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or 'none'}"
                + why
            )
        return self._entries[name]

    def names(self) -> list[str]:
        """Sorted names of every registered entry (loads the plugins on first use)."""
        self._load()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """Every entry, sorted by name."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries


#: Checkpoint metrics (entry-point group ``dynkit.metrics``): ``func(model, params, data) ->
#: pandas.DataFrame`` with columns ``metric, value`` (plus ``layer`` / ``split`` where
#: meaningful).
METRICS = Registry("metric", group="dynkit.metrics")

#: Paper figures (entry-point group ``dynkit.figures``): ``PaperFigure`` objects, called as
#: ``func(out_dir: Path, quick: bool) -> list[Path]`` they write ``<name>.png`` and
#: ``<name>.csv``.
FIGURES = Registry("figure", group="dynkit.figures")
