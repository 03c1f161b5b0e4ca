"""Who may import whom (docs/architecture.md): the package's imports walked with ast, every direction checked.

Every ``import`` and ``from ... import`` counts, including those inside functions (lazy imports are
still dependencies) and relative ones.  The run ends at the store; aggregation reads the store;
the report writes what people read; only the two front doors run the engine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gazebench"
FRONT_DOORS = {"gazebench.cli", "gazebench.api"}
GROUND_FLOOR = {"gazebench", "gazebench.registry", "gazebench.errors", "gazebench.paths", "gazebench.atomic", "gazebench.outputs", "gazebench.protocol", "gazebench.device", "gazebench.bootstrap", "gazebench.resources"}
ROOMS = ("data", "models", "methods", "metrics", "run", "aggregate", "report")
ENGINE = "gazebench.run.engine"
STORE = "gazebench.run.store"

# room -> rooms (or front doors) it must never import; see docs/architecture.md
FORBIDDEN = {
    "ground": {"models", "methods", "metrics", "run", "aggregate", "report", "front door"},
    "data": {"models", "methods", "metrics", "run", "aggregate", "report", "front door"},
    "models": {"methods", "run", "aggregate", "report", "front door"},
    "methods": {"metrics", "run", "aggregate", "report", "front door"},
    "metrics": {"models", "methods", "run", "aggregate", "report", "front door"},
    "run": {"aggregate", "report", "front door"},
    "aggregate": {"data", "models", "methods", "metrics", "report", "front door"},  # and of run, the store only
    "report": {"data", "models", "methods", "metrics", "run", "front door"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """Every gazebench module ``source`` imports (``from a import b`` counts as ``a.b`` when that may be a module)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "gazebench" or name.startswith("gazebench.")}


def room_of(module: str) -> str:
    if module in FRONT_DOORS:
        return "front door"
    if module in GROUND_FLOOR or module.count(".") == 1 and module.split(".")[1] not in ROOMS:
        return "ground"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ground"


def violations(module: str, imports: set[str], known: set[str]) -> list[str]:
    """The forbidden imports of ``module`` (only imports of real modules of the package count)."""
    room = room_of(module)
    found = []
    for target in sorted(imports & known):
        target_room = room_of(target)
        if target == ENGINE and module not in FRONT_DOORS and module != ENGINE:
            found.append(f"{module} imports the engine {target}: only {sorted(FRONT_DOORS)} may")
        elif target_room in FORBIDDEN.get(room, set()) and target_room != room:
            found.append(f"{module} ({room}) imports {target} ({target_room})")
        elif room == "aggregate" and target_room == "run" and target != STORE:
            found.append(f"{module} (aggregate) imports {target}: aggregation reads the store ({STORE}) only")
    return found


def package_imports() -> dict[str, set[str]]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        modules[name] = imported_modules(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")
    return modules


def test_no_import_goes_the_wrong_way():
    modules = package_imports()
    known = set(modules)
    problems = [problem for module, imports in modules.items() for problem in violations(module, imports, known)]
    assert not problems, "forbidden imports (see docs/architecture.md):\n" + "\n".join(problems)


def test_every_module_has_a_room():
    rooms = {room_of(module) for module in package_imports()}
    assert rooms <= {"ground", "front door", *ROOMS}, rooms


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("gazebench.run.engine", "from gazebench.aggregate.leaderboard import rank", "imports gazebench.aggregate.leaderboard (aggregate)"),
        ("gazebench.run.rows", "import gazebench.report.leaderboard", "(run) imports gazebench.report.leaderboard (report)"),
        ("gazebench.metrics.auc", "def f():\n    from gazebench.models import base", "(metrics) imports gazebench.models.base (models)"),
        ("gazebench.methods.cam", "from gazebench.metrics.ops import flat", "(methods) imports gazebench.metrics.ops (metrics)"),
        ("gazebench.run.sanity", "from gazebench.run.engine import benchmark", "imports the engine gazebench.run.engine"),
        ("gazebench.report.leaderboard", "from gazebench.run.engine import benchmark", "imports the engine gazebench.run.engine"),
        ("gazebench.aggregate.leaderboard", "from gazebench.run.pairs import true_label", "aggregation reads the store"),
        ("gazebench.aggregate.regions", "from ..run import rows", "aggregation reads the store"),
    ],
)
def test_the_check_catches_each_forbidden_direction(module, source, expected):
    known = set(package_imports())
    found = violations(module, imported_modules(source, module, False), known)
    assert any(expected in problem for problem in found), found


def test_allowed_directions_pass():
    known = set(package_imports())
    for module, source in [
        ("gazebench.cli", "from gazebench.run.engine import benchmark"),
        ("gazebench.api", "from gazebench.run.engine import benchmark\nfrom gazebench.report.run_outputs import write_run_outputs"),
        ("gazebench.aggregate.runs", "from gazebench.run.store import RunStore"),
        ("gazebench.report.run_outputs", "from gazebench.aggregate.leaderboard import rank"),
        ("gazebench.run.rows", "from gazebench.metrics.scoring import score_maps\nfrom gazebench.models.base import ModelAdapter"),
    ]:
        assert violations(module, imported_modules(source, module, False), known) == []
