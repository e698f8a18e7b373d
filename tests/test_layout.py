"""How the code is laid out: the package's imports run one way, and its functions stay short.

The import graph is read from the source with ``ast``: every ``import`` of a module of the package,
at the top of a module or inside a function, is an arrow. Each check is also run once against a small
package written on the spot with the fault it looks for, so that none of them can pass by accident.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "textimg_helpers"
MAX_LINES = 40  # a function's lines from ``def`` to its last line, its docstring not counted
# Settings and the database layer come before the model: they never import what joins or follows it.
# A room (a sub-package, ``service``) counts as one: ``service.client`` is in ``service``.
BEFORE_THE_MODEL = {"config", "hits", "service", "milvus", "store"}
MODEL_AND_AFTER = {"encoders", "multilingual", "search", "ingest", "evaluate", "duplicates", "moves",
                   "viz", "widgets", "session", "cli"}
SERVICE_PROCESS = "service.process"  # started as a command (``python -m``): no other module imports it
WEB = "web"  # the page of ``textimg app``: only the CLI, and the room itself, import it


def module_name(path: Path, package: Path) -> str:
    """``cli`` for ``package/cli.py``, ``service.client`` for ``package/service/client.py``, ``service``
    for ``package/service/__init__.py`` (the package's own ``__init__.py`` is ``__init__``)."""
    parts = path.relative_to(package).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def import_target(node: ast.ImportFrom, path: Path, name: str) -> list[str] | None:
    """The package module that ``from ... import`` in ``path`` (the module ``name``) reads from, as
    parts (``["service", "client"]``); ``None`` for a module outside the package."""
    here = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    if node.level:
        base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
        return base + (node.module.split(".") if node.module else [])
    if (node.module or "").split(".")[0] == PACKAGE.name:
        return node.module.split(".")[1:]
    return None


def imported_modules(path: Path, modules: set[str], name: str = "") -> set[str]:
    """The package's modules that ``path`` (the module ``name``) imports, anywhere in it: ``from .x
    import y`` names ``x``, or ``x.y`` when that is a module; ``from ..config`` in a sub-package names
    ``config``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            target = import_target(node, path, name)
            if target is None:
                continue
            found.add(".".join(target))
            found |= {".".join(target + [alias.name]) for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found |= {".".join(parts[1:i]) for i in range(2, len(parts) + 1) if parts[0] == PACKAGE.name}
    return found & modules


def import_graph(package: Path) -> dict[str, set[str]]:
    """``{module: modules it imports}`` for every module of ``package``, its sub-packages' too."""
    paths = {module_name(path, package): path for path in sorted(package.rglob("*.py"))}
    return {name: imported_modules(path, set(paths), name) - {name} for name, path in sorted(paths.items())}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or ``None`` when there is none."""
    done, path = set(), []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            if cycle := visit(imported):
                return cycle
        path.pop()
        done.add(module)
        return None

    return next((cycle for module in sorted(graph) if (cycle := visit(module))), None)


def backward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Arrows that run against the flow: settings importing any module of the package, ``hits``
    importing anything, the database layer (a room of it: every module of ``service``) importing the
    model or what joins it to the database, any module importing the service process."""
    wrong = [f"config -> {m}" for m in sorted(graph.get("config", ()))]
    wrong += [f"hits -> {m}" for m in sorted(graph.get("hits", ()))]
    for module in sorted(m for m in graph if m.split(".")[0] in BEFORE_THE_MODEL):
        wrong += [f"{module} -> {m}" for m in sorted(graph[module]) if m.split(".")[0] in MODEL_AND_AFTER]
    wrong += [f"{module} -> {SERVICE_PROCESS}" for module in sorted(graph) if SERVICE_PROCESS in graph[module]]
    wrong += [f"{module} -> {m}" for module in sorted(graph) if module.split(".")[0] not in (WEB, "cli")
              for m in sorted(graph[module]) if m.split(".")[0] == WEB]  # no lesson module needs the page
    return wrong


def long_functions(package: Path, limit: int = MAX_LINES) -> list[str]:
    """``module.py:line name (n lines)`` for each function or method longer than ``limit`` lines
    (``service/client.py:...`` in a sub-package)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1 - docstring_lines(node)
                if lines > limit:
                    found.append(f"{path.relative_to(package).as_posix()}:{node.lineno} {node.name} ({lines} lines)")
    return found


def docstring_lines(node: ast.FunctionDef) -> int:
    first = node.body[0]
    is_docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
        and isinstance(first.value.value, str)
    return first.end_lineno - first.lineno + 1 if is_docstring else 0


def top_level_names(path: Path) -> set[str]:
    """The names a module defines at its top level (functions, classes, assignments, in ``if`` and
    ``try`` blocks too), not those it imports."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        for inner in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(inner.name)
            elif isinstance(inner, (ast.Assign, ast.AnnAssign)):
                targets = inner.targets if isinstance(inner, ast.Assign) else [inner.target]
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def declared_all(path: Path) -> list[str] | None:
    """The module's ``__all__`` (a list of strings), or ``None`` when it has none."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return [element.value for element in node.value.elts]
    return None


def borrowed_imports(files: list[Path], package: Path) -> list[str]:
    """``file: from M import N`` for each name taken from a module of ``package`` that does not define
    it (a re-export): each name is imported from its home."""
    paths = {module_name(path, package): path for path in package.rglob("*.py")}
    found = []
    for path in files:
        name = module_name(path, package) if path.is_relative_to(package) else ""
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            target = import_target(node, path, name) if isinstance(node, ast.ImportFrom) else None
            if target is None:
                continue
            home = ".".join(target)
            if home in paths and paths[home].name != "__init__.py":
                defined = top_level_names(paths[home])
                found += [f"{path.name}: from {home} import {alias.name}" for alias in node.names
                          if alias.name not in defined and f"{home}.{alias.name}" not in paths]
    return found


# The package -------------------------------------------------------------------------------------

def test_the_imports_of_the_package_have_no_cycle():
    assert find_cycle(import_graph(PACKAGE)) is None


def test_settings_and_the_database_import_nothing_downstream():
    graph = import_graph(PACKAGE)
    assert {"config", "store", "milvus", "service", "service.files", "service.client", "service.process", "hits",
            "encoders", "search"} <= set(graph)
    assert "service.process" not in graph["service.client"] | graph["service.files"] | graph["milvus"]
    assert backward_arrows(graph) == []


def test_searching_joins_the_model_and_the_database():
    graph = import_graph(PACKAGE)
    assert {"encoders", "store"} <= graph["search"]
    assert "store" not in graph["encoders"] and "milvus" not in graph["encoders"]


def test_no_function_is_longer_than_40_lines():
    assert long_functions(PACKAGE) == []


def test_each_module_says_what_it_offers_and_each_name_comes_from_its_home():
    """Every module has an ``__all__`` of names it defines; the package, its tests, benchmarks and
    scripts import each name from the module that defines it, never through another."""
    root = PACKAGE.parent
    modules = [p for p in sorted(PACKAGE.rglob("*.py")) if p.name not in ("__init__.py", "__main__.py")]
    for path in modules:
        offered = declared_all(path)
        assert offered is not None, f"{path.relative_to(PACKAGE)} has no __all__"
        assert set(offered) <= top_level_names(path), f"{path.name}: {set(offered) - top_level_names(path)}"
    files = sorted(PACKAGE.rglob("*.py")) + sorted((root / "tests").glob("*.py")) + sorted(
        (root / "benchmarks").glob("*.py")) + sorted((root / "scripts").glob("*.py"))
    assert borrowed_imports(files, PACKAGE) == []


# The checks themselves, against packages that break each rule ---------------------------------------

def write_package(folder: Path, modules: dict[str, str]) -> Path:
    """``{"store": source, "room/__init__": source, ...}`` written as ``folder/store.py``..."""
    folder.mkdir()
    for name, source in modules.items():
        (folder / f"{name}.py").parent.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


def test_the_checks_find_a_cycle_a_backward_arrow_and_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    package = write_package(tmp_path / "pkg", {
        "config": "import os\n",
        "store": "from .config import X\n\ndef search():\n    from .encoders import encode\n",
        "encoders": f'from . import data\n\ndef encode():\n    """Doc."""\n{body}\n',
        "data": "import textimg_helpers.encoders\n",
        "hits": "from dataclasses import dataclass\n",
    })
    graph = import_graph(package)
    assert graph == {"config": set(), "data": {"encoders"}, "encoders": {"data"}, "hits": set(),
                     "store": {"config", "encoders"}}
    assert find_cycle(graph) == ["data", "encoders", "data"]
    assert backward_arrows(graph) == ["store -> encoders"]
    assert long_functions(package) == ["encoders.py:3 encode (41 lines)"]
    assert backward_arrows({**graph, "config": {"data"}, "hits": {"config"}}) == [
        "config -> data", "hits -> config", "store -> encoders"]


def test_the_checks_see_into_a_sub_package(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    package = write_package(tmp_path / "pkg", {
        "config": "import os\n",
        "milvus": "from .service.client import connect\nfrom .service import files\n",
        "service/__init__": '"""The room."""\n',
        "service/files": "from ..config import X\n",
        "service/client": "from .files import run_dir\nfrom .. import encoders\nfrom .process import main\n",
        "service/process": f'import textimg_helpers.service.files\n\ndef main():\n    """Doc."""\n{body}\n',
        "encoders": "from .config import X\n",
    })
    graph = import_graph(package)
    assert graph == {"config": set(), "encoders": {"config"}, "milvus": {"service", "service.client", "service.files"},
                     "service": set(), "service.files": {"config"},
                     "service.client": {"service.files", "encoders", "service.process"},
                     "service.process": {"service", "service.files"}}
    assert backward_arrows(graph) == ["service.client -> encoders", "service.client -> service.process"]
    assert long_functions(package) == ["service/process.py:3 main (41 lines)"]


def test_the_checks_find_a_re_export_a_missing_all_and_the_page_imported_by_a_lesson(tmp_path):
    package = write_package(tmp_path / "pkg", {
        "config": '__all__ = ["X"]\nX = 1\n',
        "store": '__all__ = ["search"]\nfrom .config import X\n\ndef search():\n    pass\n',
        "viz": "from .store import X, search\nfrom .web.app import page\n",
        "web/__init__": "",
        "web/app": '__all__ = ["page", "gone"]\ndef page():\n    pass\n',
    })
    assert borrowed_imports(sorted(package.rglob("*.py")), package) == ["viz.py: from store import X"]
    assert declared_all(package / "viz.py") is None
    assert set(declared_all(package / "web" / "app.py")) - top_level_names(package / "web" / "app.py") == {"gone"}
    assert backward_arrows(import_graph(package)) == ["viz -> web.app"]
