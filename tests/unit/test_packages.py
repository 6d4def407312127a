"""Who may import what: the client stands alone, the services never reach into the harness, and every
third-party import of an installed package is one of its declared dependencies (and nothing more is declared)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"aigw", "aigw_client", "aigw_server", "harness", "tools", "tests", "bench", "envoy"}


def imports(package: Path) -> Iterator[tuple[Path, str]]:
    """(file, top-level module) for every absolute import in the package's files."""
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                yield from ((path, alias.name.split(".")[0]) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.module.split(".")[0]


def third_party(package: Path) -> dict[str, set[str]]:
    """Third-party top-level modules the package imports, each with the files that do."""
    found: dict[str, set[str]] = {}
    for path, module in imports(package):
        if module not in sys.stdlib_module_names and module not in FIRST_PARTY and module != "__future__":
            found.setdefault(module, set()).add(str(path.relative_to(REPO)))
    return found


def declared(pyproject: Path) -> set[str]:
    """The distribution names a pyproject declares as runtime dependencies (normalised)."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return {normalise(re.split(r"[\[<>=!~; ]", dep, maxsplit=1)[0]) for dep in deps}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions_of(module: str) -> set[str]:
    return {normalise(d) for d in packages_distributions().get(module, [])}


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("client/aigw_client", {"aigw_server", "harness", "tools", "tests", "bench"}),
        ("aigw_server", {"aigw_client", "harness", "tools", "tests", "bench"}),
    ],
)
def test_an_installed_package_imports_nothing_from_outside_its_audience(package: str, forbidden: set[str]) -> None:
    reached = sorted(
        f"{path.relative_to(REPO)} imports {module}" for path, module in imports(REPO / package) if module in forbidden
    )
    assert reached == []


@pytest.mark.parametrize(
    ("package", "pyproject"), [("client/aigw_client", "client/pyproject.toml"), ("aigw_server", "pyproject.toml")]
)
def test_every_third_party_import_is_a_declared_dependency(package: str, pyproject: str) -> None:
    deps = declared(REPO / pyproject)
    undeclared = {m: files for m, files in third_party(REPO / package).items() if not distributions_of(m) & deps}
    assert undeclared == {}


@pytest.mark.parametrize(
    ("package", "pyproject"), [("client/aigw_client", "client/pyproject.toml"), ("aigw_server", "pyproject.toml")]
)
def test_every_declared_dependency_is_imported(package: str, pyproject: str) -> None:
    used = set().union(*(distributions_of(m) for m in third_party(REPO / package)))
    # the generated stubs the services import (aigw.*) come with the client distribution
    provided = {"aigw-client"} if pyproject == "pyproject.toml" else set()
    assert declared(REPO / pyproject) - used - provided == set()


def test_the_client_declares_only_grpc_and_protobuf() -> None:
    assert declared(REPO / "client" / "pyproject.toml") == {"grpcio", "grpcio-status", "googleapis-common-protos", "protobuf"}
