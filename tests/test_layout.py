"""The layout's rules, checked on the source: layers import downwards, no cycles.

``trio_sock``'s packages are layers: ``config`` at the bottom, then ``listen``,
``server``, ``workers``, ``service``, and ``cli`` on top; the top-level modules
(``protocol``, ``errors``, ``tls``, ``client``) sit beside them.  A module may
import its own layer and those below, never one above, and no import cycle
exists between modules, counting imports inside functions too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Final

import pytest

PACKAGE: Final = Path(__file__).resolve().parent.parent / "trio_sock"
#: Each layer, and the layers it may import besides its own.
MAY_IMPORT: Final = {
    "config": set(),
    "protocol": set(),
    "proxy_header": {"config"},
    "errors": set(),
    "_version": set(),
    "tls": {"errors"},
    "trace": set(),
    "listen": {"config", "errors", "trace"},
    "client": {"config", "errors", "tls", "trace", "listen"},
    "server": {"config", "errors", "tls", "trace", "listen", "protocol", "proxy_header"},
    "workers": {"config", "errors", "tls", "listen", "server"},
    "testing": {"config", "errors", "listen", "server"},
    "service": {"config", "errors", "tls", "listen", "server", "workers"},
    "cli": {"config", "errors", "listen", "server", "workers", "service", "client"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every ``trio_sock`` module ``path`` imports, anywhere in it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("trio_sock")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            if not base.startswith("trio_sock"):
                continue
            for alias in node.names:  # ``from pkg import module`` imports pkg.module
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return found - {name}


MODULES: Final = {module_name(path) for path in PACKAGE.rglob("*.py")}
GRAPH: Final = {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.mark.parametrize(
    "module", sorted(m for m in GRAPH if layer(m) not in ("__init__", "__main__"))
)
def test_a_module_imports_only_its_own_layer_and_those_below(module: str) -> None:
    allowed = MAY_IMPORT[layer(module)] | {layer(module)}
    wrong = {m for m in GRAPH[module] if m in MODULES and layer(m) not in allowed | {"__init__"}}
    assert not wrong, f"{module} imports {sorted(wrong)}, above its layer"


def test_no_module_imports_the_package_root_but_the_entry_point() -> None:
    # trio_sock/__init__ imports lazily from every layer: importing it from inside
    # would load the whole library.
    importers = {m for m, imported in GRAPH.items() if "trio_sock" in imported}
    assert importers <= {"trio_sock.__main__"}, importers


def test_there_is_no_import_cycle() -> None:
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for imported in sorted(GRAPH.get(module, ())):
            visit(imported, [*path, module])
        done.add(module)

    for module in sorted(GRAPH):
        if module != "trio_sock":  # the lazy public names: checked above
            visit(module, [])


def test_every_package_says_what_it_holds_and_may_import() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init} has no docstring"
        if init.parent.name != "config":
            assert "import" in doc, f"{init}'s docstring does not say what it may import"


def test_the_ready_line_is_written_in_one_module() -> None:
    holders = [
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if '"server waiting on' in path.read_text()
    ]
    assert holders == ["trio_sock.server.ready"]


def test_the_readmes_map_of_the_code_names_every_module() -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    tree = readme.split("## The code", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"([a-z_]+\.py)\b", tree))
    modules = {
        path.name
        for path in PACKAGE.rglob("*.py")
        if not path.name.startswith("_") and "__pycache__" not in path.parts
    }
    assert modules - named == set(), "README's map of the code misses these modules"
