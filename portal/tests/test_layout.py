"""The house rules a newcomer relies on: arrows run one way, and files live where the README says."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_finance_and_messaging_never_import_the_portal():
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for package in ("finance", "messaging")
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
        for name in imported_modules(path)
        if name == "portal" or name.startswith("portal.")
    ]
    assert offenders == []


def test_templates_and_static_files_live_at_the_top_level():
    assert (ROOT / "templates" / "portal" / "base_ops.html").exists()
    assert (ROOT / "static" / "portal" / "portal.css").exists()
    for app in ("portal", "finance", "messaging"):
        assert not (ROOT / app / "templates").exists(), f"{app}/templates"
        assert not (ROOT / app / "static").exists(), f"{app}/static"
