"""Rules of the codebase that a reviewer would otherwise have to remember."""

from __future__ import annotations

import ast
from pathlib import Path

from heliograph.settings import SETTINGS

SRC = Path(__file__).parent.parent / "src" / "heliograph"
README = Path(__file__).parent.parent / "README.md"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, absolute, `from x import y` counted as `x.y` too (y may be a module)."""
    names: set[str] = set()
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def unit(module: str) -> str | None:
    """The layer a module belongs to: its first name below `heliograph` (None outside it)."""
    parts = module.split(".")
    if parts[0] != "heliograph":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


# What each part of the package may import, besides itself. Lower layers first: a part may only
# use parts above it in this table. A new module or import that breaks the order fails here;
# a new part must be placed in the table.
LAYERS: dict[str, set[str]] = {
    "__init__": set(),
    "errors": set(),
    "settings": set(),
    "usage": set(),
    "bodies": set(),
    "auth": {"errors"},
    "pricing": {"usage"},
    "testing": set(),
    "state": {"errors"},
    "controls": {"errors", "state"},
    "recording": {"bodies", "errors", "pricing", "usage"},
    "storage": {"bodies", "settings"},
    "budgets": set(),
    "prompts": set(),
    "alerts": {"budgets", "settings", "storage"},
    "proxy": {"auth", "budgets", "controls", "errors", "pricing", "prompts", "recording", "settings", "state", "usage"},
    "api": {"bodies", "__init__", "alerts", "auth", "budgets", "errors", "keys", "pricing", "prompts", "recording", "storage", "usage", "vault"},
    "dashboard": {"bodies", "__init__", "alerts", "api", "auth", "budgets", "errors", "export", "keys", "pricing", "prompts", "recording", "settings", "storage", "usage"},
    "keys": {"auth", "storage"},
    "ops": {"__init__", "recording", "settings", "storage"},
    "vault": {"proxy", "storage"},
    "export": {"api", "storage"},
    "retention": {"storage"},
    "synthetic": {"bodies", "storage"},
    "writer": {"ops", "pricing", "recording", "storage"},
    "app": {"writer", "alerts", "api", "auth", "budgets", "dashboard", "errors", "ops", "pricing", "prompts", "proxy", "recording", "retention", "settings", "state", "storage", "vault"},
    "server": {"app", "errors", "ops", "settings"},
    "demo": {"alerts", "app", "auth", "export", "keys", "proxy", "server", "settings", "storage", "testing"},
    "cli": {"__init__", "alerts", "budgets", "demo", "ops", "proxy", "export", "keys", "prompts", "retention", "server", "settings", "storage", "synthetic", "vault"},
}


def test_every_import_runs_down_the_layer_table() -> None:
    wrong = []
    for path in SRC.rglob("*.py"):
        here = unit(".".join(path.relative_to(SRC.parent).with_suffix("").parts))
        assert here in LAYERS, f"{path.relative_to(SRC)}: place '{here}' in LAYERS"
        for module in imported_modules(path):
            there = unit(module)
            if there is not None and there != here and there not in LAYERS[here] and there in LAYERS:
                wrong.append(f"{path.relative_to(SRC)} imports {module}")
    assert not wrong, "imports against the layer table:\n" + "\n".join(sorted(wrong))


def test_the_layer_table_has_no_cycle() -> None:
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in trail, f"cycle: {' -> '.join((*trail, name))}"
        if name not in done:
            for lower in LAYERS.get(name, ()):
                visit(lower, (*trail, name))
            done.add(name)
    for name in LAYERS:
        visit(name, ())


def test_no_module_import_cycle_inside_a_package() -> None:
    """Module by module (type-only imports included), so a package cannot knot itself either."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = imported_modules(path)
    for name in graph:
        graph[name] = {m for m in graph[name] if m in graph and m != name
                       and m.rsplit(".", 1)[0] == name.rsplit(".", 1)[0]}   # siblings in one package
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        assert state.get(name) != 1, "import cycle: " + " -> ".join([*trail[trail.index(name):], name])
        state[name] = 1
        for module in sorted(graph[name]):
            visit(module, [*trail, name])
        state[name] = 2
    for name in sorted(graph):
        visit(name, [])


def test_the_hot_path_never_imports_storage_api_or_dashboard() -> None:
    forbidden = ("heliograph.storage", "heliograph.api", "heliograph.dashboard", "heliograph.app")
    for path in (SRC / "proxy").rglob("*.py"):
        bad = [m for m in imported_modules(path) if m.startswith(forbidden)]
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = README.read_text()
    missing = [s.name for s in SETTINGS if s.env not in readme and f"`{s.name}`" not in readme]
    assert not missing, f"settings without documentation in README.md: {missing}"
    assert all(s.help for s in SETTINGS)
