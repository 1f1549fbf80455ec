"""The tree's layers: import-linter's contract in pyproject.toml, and an independent scan of the engine core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_layers_contract_holds():
    done = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                           "sys.exit(lint_imports(no_cache=True, no_logo=True))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports (at the top or inside functions), absolute names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.append(node.module or "")
    return names


def test_the_core_imports_nothing_above_itself():
    """framefusion.core may import the standard library, torch, transformers and itself; nothing of the
    adapters, methods, pipeline, CLI or the plugin."""
    offending = []
    for path in sorted((ROOT / "framefusion" / "core").glob("*.py")):
        for module in imported_modules(path):
            if (module.startswith("framefusion") and not module.startswith("framefusion.core")) or \
                    module.startswith("ffcli"):
                offending.append(f"{path.name}: {module}")
    assert not offending, offending


def test_the_adapters_import_nothing_above_themselves():
    above = ("framefusion.methods", "framefusion.api", "framefusion.pipeline", "framefusion.lmms", "framefusion.demo",
             "ffcli")
    offending = [f"{path.name}: {module}" for path in sorted((ROOT / "framefusion" / "adapters").glob("*.py"))
                 for module in imported_modules(path) if module.startswith(above)]
    assert not offending, offending
