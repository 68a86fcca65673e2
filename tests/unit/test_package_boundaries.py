"""No service imports another service's modules; contracts, common machinery and the two named
hosting seams are the only ways across."""

from __future__ import annotations

import ast
from pathlib import Path

from support.procs import REPO

PACKAGE = REPO / "services" / "hybridinference"
SERVICES = ("gateway", "router", "providers", "logger")
# Shared by every service: the common machinery and the API-key store.
SHARED = ("common", "keys")
# A service hosted in its caller's process is reached through one module of its own.
SEAMS = {
    "gateway": {"hybridinference.router.hosted_in_gateway"},
    "router": {"hybridinference.providers.hosted_in_router"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # What is imported is module.name (a submodule or a name defined in the module).
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.startswith("hybridinference.")}


def _allowed(service: str, name: str) -> bool:
    parts = name.split(".")
    area = parts[1]
    if area == service or area in SHARED:
        return True
    if len(parts) >= 3 and parts[2] == "v1":
        return True  # a contract (generated code), e.g. hybridinference.logger.v1
    if len(parts) == 2:
        return False
    module = ".".join(parts[:3])
    return module in SEAMS.get(service, set())


def test_services_import_no_other_service_modules() -> None:
    crossings = [
        f"{path.relative_to(REPO)} imports {name}"
        # The key store is shared, and itself imports no service.
        for service in (*SERVICES, "keys")
        for path in sorted((PACKAGE / service).rglob("*.py"))
        if "v1" not in path.relative_to(PACKAGE).parts
        for name in sorted(_imports(path))
        if not _allowed(service, name)
    ]
    assert crossings == []


def test_the_seams_exist() -> None:
    for seams in SEAMS.values():
        for module in seams:
            assert (REPO / "services" / Path(*module.split("."))).with_suffix(".py").is_file()


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_benchmarks_and_the_shared_harness_import_no_test_modules() -> None:
    # What both need lives in support/; support needs neither.
    forbidden = {"bench": {"tests"}, "support": {"tests", "bench"}}
    crossings = [
        f"{path.relative_to(REPO)} imports {name}"
        for folder, names in forbidden.items()
        for path in sorted((REPO / folder).rglob("*.py"))
        for name in sorted(_top_level_imports(path) & names)
    ]
    assert crossings == []
