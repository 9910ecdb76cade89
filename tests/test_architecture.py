"""The layering is checked, not hoped for: import-linter contracts hold and catch a
forbidden import; no function is longer than 60 lines; no module reaches into another
module's private names."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("fl_sim", "strategies", "clients", "attacks")
MAX_LINES = 60


def _sources():
    for pkg in PACKAGES:
        yield from sorted((REPO / pkg).rglob("*.py"))


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--config", str(root / "pyproject.toml")], cwd=root,
                          capture_output=True, text=True, timeout=120)


def test_import_contracts_hold():
    res = _lint_imports(REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "broken" in res.stdout and "0 broken" in res.stdout


@pytest.mark.parametrize("module, line", [
    ("attacks/metrics.py", "import flwr"),                      # attacks must not see Flower
    ("strategies/attacker.py", "import clients.common"),        # strategies must not see clients
    ("fl_sim/training.py", "import fl_sim.scenarios"),          # lower layers never look up
])
def test_a_forbidden_import_breaks_the_contracts(tmp_path, module, line):
    root = tmp_path / "tree"
    root.mkdir()
    for name in (*PACKAGES, "pyproject.toml"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, root / name)
    target = root / module
    target.write_text(target.read_text() + f"\n{line}  # added by the test\n")
    res = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=root,
                         capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert res.returncode != 0, res.stdout[-2000:]
    assert "BROKEN" in res.stdout


def test_no_function_longer_than_60_lines():
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "\n".join(long)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_imports_another_modules_private_names():
    bad = []
    for path in _sources():
        tree = ast.parse(path.read_text())
        modules = set()  # names bound to project modules by plain imports
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                own = node.level > 0 or (node.module or "").split(".")[0] in PACKAGES
                if own:
                    bad += [f"{path.relative_to(REPO)}: from {node.module} import {a.name}"
                            for a in node.names if _private(a.name)]
            elif isinstance(node, ast.Import):
                modules |= {(a.asname or a.name).split(".")[0] for a in node.names
                            if a.name.split(".")[0] in PACKAGES}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and _private(node.attr)
                    and isinstance(node.value, ast.Name) and node.value.id in modules):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)
