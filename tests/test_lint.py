"""Lint over the whole repo: ruff (rules in pyproject.toml), so a dead import fails CI, and no
import circle among the repo's own modules, deferred imports included (STYLE.md)."""

import ast
import subprocess
import sys
from pathlib import Path

from harness import REPO


def test_python_passes_ruff():
    result = subprocess.run([str(Path(sys.executable).parent / "ruff"), "check", "--output-format", "concise", "."],
                            cwd=REPO, capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr


def import_graph(root: Path) -> dict[str, set[str]]:
    """Each module under `root` (tests and the virtualenv aside) and the modules of the same tree
    it imports, at the top or inside a function alike."""
    modules = {}
    for path in root.rglob("*.py"):
        if {".venv", ".git", "tests"} & set(path.relative_to(root).parts):
            continue
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                submodules = {f"{base}.{alias.name}" for alias in node.names} & modules.keys()
                # `from . import metrics` imports the submodule; `from .x import name`, module x
                imported.update(submodules if len(submodules) == len(node.names) else submodules | {base})
        graph[name] = {module for module in imported if module in modules and module != name}
    return graph


def circles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Every import circle, each once, starting from its first module in sorted order."""
    found = set()

    def walk(start: str, path: list[str]) -> None:
        for module in graph[path[-1]]:
            if module == start:
                found.add(tuple(path))
            elif module > start and module not in path:
                walk(start, [*path, module])

    for module in graph:
        walk(module, [module])
    return found


def test_no_module_of_the_repo_imports_itself_round_a_circle():
    assert circles(import_graph(REPO)) == set()


def test_the_circle_check_sees_a_deferred_import_and_a_relative_one(tmp_path):
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "__init__.py").write_text("")
    (tmp_path / "kit" / "cli.py").write_text("def main():\n    from . import doctor  # deferred\n")
    (tmp_path / "kit" / "doctor.py").write_text("from .cli import main\nfrom kit import names\n")
    (tmp_path / "kit" / "names.py").write_text("import json\n")

    graph = import_graph(tmp_path)

    assert graph == {"kit": set(), "kit.cli": {"kit.doctor"}, "kit.doctor": {"kit.cli", "kit.names"},
                     "kit.names": set()}
    assert circles(graph) == {("kit.cli", "kit.doctor")}
