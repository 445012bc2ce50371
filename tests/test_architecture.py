"""Rules of the codebase that a reviewer would otherwise have to remember."""

from __future__ import annotations

import ast
from pathlib import Path

from heliograph.settings import SETTINGS

SRC = Path(__file__).parent.parent / "src" / "heliograph"
README = Path(__file__).parent.parent / "README.md"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


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
