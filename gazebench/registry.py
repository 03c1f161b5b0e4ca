"""One Registry type for methods, models, metrics and datasets.

Entries register with a decorator (``@METHODS.register("saliency")``) or, from another
package, with an entry point in the group ``gazebench.methods`` (``.models``, ``.metrics``,
``.datasets``) whose value is the object to register.  Lookups by name go through ``get``;
an unknown name raises a UserError that lists the valid choices.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Callable

from gazebench.errors import UserError


class Registry:
    """A name -> object mapping filled by decorators and entry points."""

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = ()):
        self.kind = kind
        self.entry_point_group = f"gazebench.{kind}"
        self._builtin_modules = builtin_modules
        self._entries: dict[str, Any] = {}
        self._loaded = False

    def register(self, name: str | None = None) -> Callable[[Any], Any]:
        """Decorator: register ``obj`` under ``name`` (default: its ``name`` attribute or __name__)."""

        def decorator(obj: Any) -> Any:
            key = name or getattr(obj, "name", None) or obj.__name__
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = obj
            return obj

        return decorator

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        import importlib

        for module in self._builtin_modules:
            importlib.import_module(module)
        for entry_point in metadata.entry_points(group=self.entry_point_group):
            self._entries.setdefault(entry_point.name, entry_point.load())

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> Any:
        self._load()
        if name not in self._entries:
            raise UserError(
                f"unknown {self.kind[:-1]} {name!r}; choose one of: {', '.join(self.names())}"
            )
        return self._entries[name]

    def resolve_list(self, spec: str) -> list[str]:
        """``all`` -> every registered name; ``a,b`` -> checked names, in the given order."""
        if spec.strip() == "all":
            return self.names()
        names = [part.strip() for part in spec.split(",") if part.strip()]
        if not names:
            raise UserError(f"no {self.kind} given; use 'all' or a comma list of: {', '.join(self.names())}")
        for item in names:
            self.get(item)
        return names

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries


METHODS = Registry("methods", ("gazebench.methods.gradient", "gazebench.methods.cam", "gazebench.methods.deeplift"))
MODELS = Registry("models", ("gazebench.models.unet_gaze",))
METRICS = Registry("metrics", ("gazebench.metrics.map_metrics",))
DATASETS = Registry("datasets", ("gazebench.data.datasets",))
