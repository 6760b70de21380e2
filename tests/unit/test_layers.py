"""The layout is the architecture: these tests fail when an import crosses a layer."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "twofold"
CORE = [
    "errors",
    "messages",
    "aggregate",
    "commands",
    "projections",
    "queries",
    "sagas",
    "saga_runner",
    "subscriptions",
    "deadletters",
    "bus",
    "command_queue",
    "service",
    "system",
    "runtime",
    "health",
    "tenancy",
    "personal",
    "rebuilds",
    "checking",
    "_tables",
    "inspection",
    "observability",
]
FORBIDDEN_IN_CORE = (
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlite3",
    "psycopg",
    "asyncpg",
    "nats",
    "prometheus_client",
    "duckdb",
    "tantivy",
)
CORE_MAY_IMPORT = {
    "twofold.errors",
    "twofold.messages",
    "twofold.aggregate",
    "twofold.commands",
    "twofold.projections",
    "twofold.queries",
    "twofold.sagas",
    "twofold.saga_runner",
    "twofold.subscriptions",
    "twofold.deadletters",
    "twofold.bus",
    "twofold.command_queue",
    "twofold.service",
    "twofold.system",
    "twofold.runtime",
    "twofold.health",
    "twofold.tenancy",
    "twofold.personal",
    "twofold.inspection",
    "twofold.store",
    "twofold.store._follow",
    "twofold.readmodels",
    "twofold._notify",
    "twofold.rebuilds",
    "twofold.checking",
    "twofold._tables",
    "twofold.observability",
}
# OpenTelemetry's API only: without an SDK it records nothing and costs next to nothing, and it lets
# a trace context flow through the core. The SDK and exporters are set up outside it (twofold.telemetry).
OPENTELEMETRY_API = ("opentelemetry.trace", "opentelemetry.context")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_backend_driver_or_web_framework(module: str) -> None:
    imported = imports_of(SOURCE / f"{module}.py")
    offending = sorted(m for m in imported if m.split(".")[0] in FORBIDDEN_IN_CORE)
    assert not offending, f"twofold.{module} imports {offending}"
    beyond_api = sorted(m for m in imported if m.startswith("opentelemetry.") and not m.startswith(OPENTELEMETRY_API))
    assert not beyond_api, f"twofold.{module} imports {beyond_api}; the core may use OpenTelemetry's API only"
    inner = sorted(m for m in imported if m.startswith("twofold") and m not in CORE_MAY_IMPORT)
    assert not inner, f"twofold.{module} reaches outside the core: {inner}"


def test_the_store_and_read_store_protocols_import_no_backend() -> None:
    for path in (SOURCE / "store" / "__init__.py", SOURCE / "readmodels" / "__init__.py"):
        offending = sorted(m for m in imports_of(path) if m.split(".")[0] in FORBIDDEN_IN_CORE)
        assert not offending, f"{path.relative_to(ROOT)} imports {offending}"


BACKENDS = {
    "store/sqlite.py": "twofold.store.sqlite",
    "store/postgres.py": "twofold.store.postgres",
    "readmodels/sqlite.py": "twofold.readmodels.sqlite",
    "readmodels/postgres.py": "twofold.readmodels.postgres",
    "readmodels/duckdb.py": "twofold.readmodels.duckdb",
    "readmodels/tantivy.py": "twofold.readmodels.tantivy",
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_backend_never_imports_another_backend(backend: str) -> None:
    others = {module for path, module in BACKENDS.items() if path != backend}
    assert not others & imports_of(SOURCE / backend)


def test_examples_import_only_public_twofold_names() -> None:
    """Public: no module path segment starts with ``_`` and every name is in its module's ``__all__``."""
    for path in sorted((ROOT / "examples").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "twofold":
                assert not any(part.startswith("_") for part in node.module.split(".")), f"{where}: {node.module}"
                exported = set(importlib.import_module(node.module).__all__)
                private = [a.name for a in node.names if a.name not in exported]
                assert not private, f"{where} imports {private} from {node.module}, which does not export them"
            elif isinstance(node, ast.Import):
                deep = [a.name for a in node.names if a.name.startswith("twofold.")]
                assert not deep, f"{where} imports {deep}; import names from their public module instead"
