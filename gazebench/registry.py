"""One Registry type for methods, models, metrics and datasets.

Entries register with a decorator (``@METHODS.register("saliency")``) or, from another
package, with an entry point in the group ``gazebench.methods`` (``.models``, ``.metrics``,
``.datasets``) whose value is the object to register.  Lookups by name go through ``get``;
an unknown name raises a UserError that lists the valid choices.

A *prefix family* stands for an open set of names, such as ``torchvision:resnet50`` or
``xrv:densenet121-res224-all``: ``register_prefix("torchvision", placeholder="name")(factory)``
makes ``get("torchvision:<rest>")`` return ``factory(rest)``, built once and cached.  A
factory refuses a name it cannot build by raising ``LookupError("why; choose one of: ...")``
(the registry turns it into a one-line UserError), and may raise a UserError itself.
``names()`` lists the fixed names and one ``prefix:<placeholder>`` pattern per family.
"""

from __future__ import annotations

import difflib
import warnings
from importlib import metadata
from typing import Any, Callable

from gazebench.errors import UserError

class PluginWarning(UserWarning):
    """A plugin (an entry point in a ``gazebench.*`` group) that could not be loaded; the others still are."""


SEPARATOR = ":"  # between a prefix family and the rest of a name: torchvision:resnet50


class Registry:
    """A name -> object mapping filled by decorators and entry points."""

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = ()):
        self.kind = kind
        self.entry_point_group = f"gazebench.{kind}"
        self._builtin_modules = builtin_modules
        self._entries: dict[str, Any] = {}
        self._prefixes: dict[str, tuple[str, Callable[[str], Any]]] = {}  # prefix -> (placeholder, factory)
        self._built: dict[str, Any] = {}  # "prefix:rest" -> what the factory built
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

    def register_prefix(self, prefix: str, placeholder: str = "name") -> Callable[[Callable[[str], Any]], Callable[[str], Any]]:
        """Decorator: ``factory(rest)`` builds the entry for every name ``prefix:rest``."""
        if not prefix or SEPARATOR in prefix:
            raise ValueError(f"{self.kind} prefix {prefix!r} must be non-empty and free of {SEPARATOR!r}")

        def decorator(factory: Callable[[str], Any]) -> Callable[[str], Any]:
            if prefix in self._prefixes and self._prefixes[prefix][1] is not factory:
                raise ValueError(f"{self.kind} prefix {prefix!r} is registered twice")
            self._prefixes[prefix] = (placeholder, factory)
            return factory

        return decorator

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        import importlib

        for module in self._builtin_modules:
            importlib.import_module(module)
        for entry_point in metadata.entry_points(group=self.entry_point_group):
            try:
                loaded = entry_point.load()
            except Exception as error:  # noqa: BLE001 - a broken plugin must not break the others
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                warnings.warn(f"{self.kind[:-1]} plugin {entry_point.name!r} ({entry_point.value}) failed to load and is left out: {type(error).__name__}: {first}", PluginWarning, stacklevel=2)
                continue
            if entry_point.name in self._entries and self._entries[entry_point.name] is not loaded:
                warnings.warn(f"{self.kind[:-1]} plugin {entry_point.name!r} ({entry_point.value}) has the name of a built-in {self.kind[:-1]} and is left out; register it under another name", PluginWarning, stacklevel=2)
                continue
            self._entries[entry_point.name] = loaded

    def names(self) -> list[str]:
        """The fixed names, sorted, then one ``prefix:<placeholder>`` pattern per prefix family, sorted."""
        self._load()
        patterns = sorted(f"{prefix}{SEPARATOR}<{placeholder}>" for prefix, (placeholder, _) in self._prefixes.items())
        return [*sorted(self._entries), *patterns]

    def fixed_names(self) -> list[str]:
        """The registered names without the prefix patterns (what ``all`` expands to)."""
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> Any:
        self._load()
        if name in self._entries:
            return self._entries[name]
        prefix, separator, rest = name.partition(SEPARATOR)
        if separator and prefix in self._prefixes:
            return self._from_family(name, prefix, rest)
        what = f"{self.kind[:-1]} prefix {prefix + SEPARATOR!r} in {name!r}" if separator else f"{self.kind[:-1]} {name!r}"
        raise UserError(f"unknown {what}; choose one of: {', '.join(self.names())}")

    def _from_family(self, name: str, prefix: str, rest: str) -> Any:
        """The cached entry of ``prefix:rest``, built by the family's factory on first use."""
        if name not in self._built:
            placeholder, factory = self._prefixes[prefix]
            if not rest.strip():
                raise UserError(f"{self.kind[:-1]} {name!r} names no {placeholder}; write {prefix}{SEPARATOR}<{placeholder}>")
            try:
                self._built[name] = factory(rest)
            except LookupError as refusal:
                reason = str(refusal.args[0]) if refusal.args else type(refusal).__name__
                raise UserError(f"unknown {self.kind[:-1]} {name!r}: {' '.join(reason.split())}") from None
        return self._built[name]

    def resolve_list(self, spec: str) -> list[str]:
        """``all`` -> every fixed name (not the prefix patterns); ``a,b`` -> checked names, in order."""
        if spec.strip() == "all":
            return self.fixed_names()
        names = [part.strip() for part in spec.split(",") if part.strip()]
        if not names:
            raise UserError(f"no {self.kind} given; use 'all' or a comma list of: {', '.join(self.names())}")
        for item in names:
            self.get(item)
        return names

    def __contains__(self, name: str) -> bool:
        """True for a fixed name, and for a family name whose factory accepts it."""
        self._load()
        if name in self._entries:
            return True
        try:
            self.get(name)
        except UserError:
            return False
        return True


def choices_phrase(names: list[str], wanted: str, limit: int = 60, listing: str = "") -> str:
    """``choose one of: a, b`` for up to ``limit`` names; otherwise close matches and how to list them all."""
    if len(names) <= limit:
        return f"choose one of: {', '.join(names)}"
    close = difflib.get_close_matches(wanted, names, n=8, cutoff=0.5)
    matches = f"close matches: {', '.join(close)}; " if close else ""
    return f"{matches}{len(names)} names in all" + (f" ({listing})" if listing else "")


METHODS = Registry("methods", (
    "gazebench.methods.gradient", "gazebench.methods.cam", "gazebench.methods.deeplift", "gazebench.methods.model_output",
    "gazebench.methods.cam_family", "gazebench.methods.integrated", "gazebench.methods.guided", "gazebench.methods.perturbation",
    "gazebench.methods.lrp",
))
MODELS = Registry(
    "models",
    (
        "gazebench.models.unet_gaze",
        "gazebench.models.effnet_baseline",
        "gazebench.models.temporal_gaze",
        "gazebench.models.heatmap_generator",
        "gazebench.models.densenet",
        "gazebench.models.mimic_guided",
        "gazebench.models.torchvision_family",
        "gazebench.models.timm_family",
        "gazebench.models.xrv",
    ),
)
METRICS = Registry("metrics", ("gazebench.metrics.map_metrics", "gazebench.metrics.ssim", "gazebench.metrics.auc", "gazebench.metrics.centre_bias", "gazebench.metrics.localisation"))
DATASETS = Registry("datasets", ("gazebench.data.datasets",))
