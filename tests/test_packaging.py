"""Packaging: what ``python -m build`` makes, and the wheel installed as a user installs it.

The wheel and sdist are built once per module, ``--no-isolation`` so that the build
needs no network (``build`` and ``setuptools`` come with the ``test`` extra).  The
sdist goes first and the wheel is built from it, as ``python -m build`` always does,
so a file the sdist forgets breaks the wheel too.
"""

from __future__ import annotations

import configparser
import email.parser
import email.policy
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final

import attrs
import pytest
from packaging.requirements import Requirement

import trio_sock

if TYPE_CHECKING:
    from email.message import Message

ROOT: Final = Path(__file__).resolve().parent.parent
PACKAGE: Final = ROOT / "trio_sock"
#: The directories the sdist carries whole, beside the package, so it can be tested.
SDIST_TREES: Final = ("tests", "examples", "benchmarks", "docs")
#: Generous for a loaded CI machine; a build takes about a second here.
BUILD_TIMEOUT: Final = 120.0
#: Installing resolves trio and attrs from the package index: allow for a slow one.
INSTALL_TIMEOUT: Final = 150.0
#: Running the installed program: Python's start-up and Trio's import, on a busy machine.
RUN_TIMEOUT: Final = 30.0


@attrs.frozen
class Dists:
    """The two files ``python -m build`` made."""

    wheel: Path
    sdist: Path


def _run(command: list[str], *, timeout: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``command``; fail the test with its output unless it exits 0."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


def _only(paths: list[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


def _project_files(top: str) -> set[str]:
    """Every regular file under ``top`` in the source tree, minus bytecode and the
    benchmarks' compiled helpers (the same exclusions as MANIFEST.in)."""
    files = set()
    for path in (ROOT / top).rglob("*"):
        relative = path.relative_to(ROOT)
        if (
            path.is_file()
            and "__pycache__" not in relative.parts
            and path.suffix not in {".pyc", ".pyo", ".pyd"}
            and relative.parts[:2] != ("benchmarks", "bin")
        ):
            files.add(relative.as_posix())
    return files


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    out = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)]
    _run(build, timeout=BUILD_TIMEOUT, cwd=ROOT)
    return Dists(wheel=_only(list(out.glob("*.whl"))), sdist=_only(list(out.glob("*.tar.gz"))))


@pytest.fixture(scope="module")
def wheel_names(dists: Dists) -> set[str]:
    with zipfile.ZipFile(dists.wheel) as wheel:
        return set(wheel.namelist())


def _dist_info(dists: Dists, name: str) -> str:
    with zipfile.ZipFile(dists.wheel) as wheel:
        return wheel.read(f"trio_sock-{trio_sock.__version__}.dist-info/{name}").decode()


@pytest.fixture(scope="module")
def metadata(dists: Dists) -> Message:
    return email.parser.Parser(policy=email.policy.compat32).parsestr(_dist_info(dists, "METADATA"))


@pytest.fixture(scope="module")
def sdist_names(dists: Dists) -> set[str]:
    top = PurePosixPath(f"trio_sock-{trio_sock.__version__}")
    with tarfile.open(dists.sdist) as sdist:
        return {
            PurePosixPath(member.name).relative_to(top).as_posix()
            for member in sdist.getmembers()
            if member.isfile()
        }


@pytest.fixture(scope="module")
def venv(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed by pip, dependencies and all.

    Created without pip of its own (this test's pip installs into it with
    ``--python``), which saves seconds and changes nothing the wheel gets.
    """
    where = tmp_path_factory.mktemp("venv") / "venv"
    _run(
        [sys.executable, "-m", "venv", "--without-pip", str(where)],
        timeout=RUN_TIMEOUT,
        cwd=where.parent,
    )
    install = [sys.executable, "-m", "pip", "--python", str(where / "bin" / "python"), "install"]
    _run([*install, "--quiet", str(dists.wheel)], timeout=INSTALL_TIMEOUT, cwd=where.parent)
    return where


def test_the_wheel_holds_every_module_and_py_typed_and_nothing_else(
    dists: Dists, wheel_names: set[str]
) -> None:
    assert dists.wheel.name == f"trio_sock-{trio_sock.__version__}-py3-none-any.whl"
    modules = {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert modules <= wheel_names
    assert "trio_sock/py.typed" in wheel_names
    dist_info = f"trio_sock-{trio_sock.__version__}.dist-info"
    assert {name.split("/")[0] for name in wheel_names} == {"trio_sock", dist_info}
    assert not [name for name in wheel_names if name.endswith((".pyc", ".pyo"))]
    assert f"{dist_info}/licenses/LICENSE" in wheel_names


def test_the_wheel_metadata_names_the_dependencies_python_and_version(metadata: Message) -> None:
    assert metadata["Name"] == "trio_sock"
    assert metadata["Version"] == trio_sock.__version__
    assert metadata["Requires-Python"] == ">=3.11"
    runtime = [Requirement(text) for text in metadata.get_all("Requires-Dist", [])]
    assert {r.name for r in runtime if r.marker is None} == {"trio", "attrs"}


def test_the_wheel_metadata_is_complete(metadata: Message) -> None:
    assert metadata["Summary"]
    assert metadata["Author"] == "trio_sock developers"
    assert metadata["Keywords"]
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert str(metadata.get_payload()).strip() == (ROOT / "README.md").read_text().strip()
    assert {
        "Framework :: Trio",
        "Typing :: Typed",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    } <= set(metadata.get_all("Classifier", []))


def test_the_wheel_declares_the_trio_sock_script(dists: Dists) -> None:
    entry_points = configparser.ConfigParser()
    entry_points.read_string(_dist_info(dists, "entry_points.txt"))
    assert dict(entry_points["console_scripts"]) == {"trio-sock": "trio_sock.__main__:run"}


def test_the_sdist_holds_the_docs_tests_examples_and_benchmarks(sdist_names: set[str]) -> None:
    docs = {"README.md", "CHANGELOG.md", "LICENSE", "pyproject.toml", "MANIFEST.in"}
    assert docs <= sdist_names
    assert {"tests/conftest.py", "tests/c/client1.c", "examples/README.md"} <= sdist_names
    for top in ("trio_sock", *SDIST_TREES):
        assert _project_files(top) <= sdist_names, f"the sdist lacks files under {top}/"
    assert not [name for name in sdist_names if "__pycache__" in name or name.endswith(".pyc")]


@pytest.mark.timeout(INSTALL_TIMEOUT + 2 * BUILD_TIMEOUT)
def test_the_installed_wheel_runs_its_script_and_serves(venv: Path, tmp_path: Path) -> None:
    # From tmp_path, not the project root, so that nothing can import the source tree.
    script = _run([str(venv / "bin" / "trio-sock"), "--help"], timeout=RUN_TIMEOUT, cwd=tmp_path)
    assert "{server,client}" in script.stdout
    python = str(venv / "bin" / "python")
    where = _run(
        [python, "-c", "import trio_sock; print(trio_sock.__version__, trio_sock.__file__)"],
        timeout=RUN_TIMEOUT,
        cwd=tmp_path,
    )
    version, location = where.stdout.split()
    assert version == trio_sock.__version__
    assert Path(location).is_relative_to(venv)
    assert (Path(location).parent / "py.typed").is_file()
    # Every public name imports (each module is loaded on first use), and a
    # server and client from the wheel talk to each other.
    round_trip = f"""
import trio, trio_sock
for name in trio_sock.__all__:
    getattr(trio_sock, name)

async def main():
    unix = trio_sock.UnixAddress({str(tmp_path / "sock")!r})
    addresses = [unix, trio_sock.TcpAddress("127.0.0.1", 0)]
    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_sock.serve, trio_sock.ServerConfig(addresses=addresses))
        for address in server.addresses:
            print(await trio_sock.send_char(trio_sock.ClientConfig(address=address, char="A")))
        nursery.cancel_scope.cancel()

trio.run(main)
"""
    served = _run([python, "-c", round_trip], timeout=RUN_TIMEOUT, cwd=tmp_path)
    assert served.stdout.split() == ["B", "B"]


def test_the_public_names_for_type_checkers_are_the_ones_imported_on_first_use() -> None:
    import ast

    import trio_sock

    tree = ast.parse((ROOT / "trio_sock" / "__init__.py").read_text())
    checked = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
    )
    typed = {
        alias.asname: f"{node.module}"
        for node in checked.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == trio_sock._EXPORTS
    for name in trio_sock._EXPORTS:
        assert getattr(trio_sock, name) is not None
    assert sorted(trio_sock.__all__) == sorted(["__version__", *trio_sock._EXPORTS])


def test_the_changelog_has_a_section_for_this_version_under_unreleased() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[0] == "## [Unreleased]"
    assert headings[1].startswith(f"## [{trio_sock.__version__}] - ")
