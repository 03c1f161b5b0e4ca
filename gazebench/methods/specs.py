"""What ``--methods`` and experiment files ask for: method names, named sets and parameters.

The command-line form is a comma list whose items are method names or set names; a method may
carry parameters after a colon, and further ``key=value`` items belong to the method before them::

    smoothgrad:nt_samples=25,stdevs=0.1,gradcam     # smoothgrad with two parameters, then gradcam
    kim2022,lime:n_samples=1000                     # the six methods of Kim et al., then LIME

Experiment files give the same as a list whose items are such strings or ``{name: {param: value}}``.
Values are read as int, float, true/false or text.  A method that comes from a set (``all``,
``kim2022``, ...) is *optional*: a run leaves it out, and logs why, when it cannot explain the
model (``Method.check_model``); a method named on its own is refused instead.  Parameters are
checked when the selection is made (``Method.__init__``), before any work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gazebench.errors import UserError
from gazebench.registry import METHODS

# named sets besides ``all`` (every registered method) and the families (``cam``: the CAM family)
STUDY_SETS = {
    "kim2022": ("saliency", "gradcam", "deeplift", "conductance", "gradshap", "smoothgrad"),  # the poster's six (SL GC DL LC GS NT)
    "shamsul2023": ("lime", "kernelshap", "gradcam", "lrp"),  # SHAMSUL: LIME, SHAP, Grad-CAM, LRP
}
FAMILY_SETS = ("cam",)  # set name = the ``family`` of its methods


@dataclass(frozen=True)
class MethodSelection:
    """Method names in order, the parameters the user gave for each, and which came from a set."""

    names: list[str]
    params: dict[str, dict] = field(default_factory=dict)
    optional: frozenset[str] = frozenset()


def set_names() -> list[str]:
    return ["all", *STUDY_SETS, *FAMILY_SETS]


def set_members(name: str) -> list[str]:
    """The registered methods of set ``name`` (``all``: every registered method)."""
    if name == "all":
        return METHODS.fixed_names()
    if name in STUDY_SETS:
        return list(STUDY_SETS[name])
    return [method for method in METHODS.fixed_names() if METHODS.get(method).family == name]


def parse_value(text: str):
    """``"25"`` -> 25, ``"0.1"`` -> 0.1, ``"true"`` -> True, anything else -> the text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def split_items(spec: str) -> list[tuple[str, dict]]:
    """``"a:k=1,j=2,b"`` -> ``[("a", {"k": 1, "j": 2}), ("b", {})]``."""
    items: list[tuple[str, dict]] = []
    for part in (piece.strip() for piece in spec.split(",")):
        if not part:
            continue
        name, colon, first = part.partition(":")
        if "=" in name:  # a parameter of the method before it
            if not items:
                raise UserError(f"--methods: parameter {part!r} comes before any method; write METHOD:{part}")
            key, _, value = part.partition("=")
            add_param(items[-1], key, value)
            continue
        items.append((name.strip(), {}))
        if colon:
            if "=" not in first:
                raise UserError(f"--methods: {part!r} is not METHOD:key=value")
            key, _, value = first.partition("=")
            add_param(items[-1], key, value)
    return items


def add_param(item: tuple[str, dict], key: str, value: str) -> None:
    name, params = item
    key = key.strip()
    if not key:
        raise UserError(f"--methods: a parameter of {name} has no name (write {name}:key=value)")
    if key in params:
        raise UserError(f"--methods: parameter {key} of {name} is given twice")
    params[key] = parse_value(value)


def file_items(entries: Sequence) -> list[tuple[str, dict]]:
    """An experiment file's ``methods:`` list (strings in the command-line form, or {name: params})."""
    items: list[tuple[str, dict]] = []
    for entry in entries:
        if isinstance(entry, str):
            items += split_items(entry)
        elif isinstance(entry, Mapping) and len(entry) == 1:
            (name, params), = entry.items()
            if params is not None and not isinstance(params, Mapping):
                raise UserError(f"methods: the parameters of {name} must be a mapping of name: value, got {params!r}")
            items.append((str(name), dict(params or {})))
        else:
            raise UserError(f"methods: each entry is a name, 'name:key=value' or {{name: {{key: value}}}}; got {entry!r}")
    return items


def select_methods(spec: str | Sequence) -> MethodSelection:
    """The checked selection for ``spec`` (command-line string, list of names or experiment-file list)."""
    items = split_items(spec) if isinstance(spec, str) else file_items(spec)
    if not items:
        raise UserError(f"no methods given; use 'all', a set ({', '.join(set_names()[1:])}) or a comma list of: {', '.join(METHODS.names())}")
    names: list[str] = []
    params: dict[str, dict] = {}
    explicit: set[str] = set()
    for name, given in items:
        if name in set_names():
            if given:
                raise UserError(f"--methods: set {name} takes no parameters; give them to one of its methods, e.g. {set_members(name)[0]}:key=value")
            names += [member for member in set_members(name) if member not in names]
            continue
        if name in explicit:
            raise UserError(f"--methods: method {name} is given twice; give it once with all its parameters")
        if name not in METHODS:
            raise UserError(f"unknown method {name!r}; choose one of: {', '.join(METHODS.names())}; or a set: {', '.join(set_names())}")
        explicit.add(name)
        if name not in names:
            names.append(name)
        if given:
            params[name] = given
    for name in names:
        METHODS.get(name)(**params.get(name, {}))  # parameters checked now, before any work
    return MethodSelection(names, params, frozenset(set(names) - explicit))


def describe(spec_names: list[str], params: dict[str, dict]) -> str:
    """The command-line form of a selection (stored so that a run can be repeated exactly)."""
    parts = []
    for name in spec_names:
        given = params.get(name) or {}
        parts.append(name + (":" + ",".join(f"{key}={value}" for key, value in given.items()) if given else ""))
    return ",".join(parts)
