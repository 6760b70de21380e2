"""The public names: sorted, complete, and each one importable."""

from __future__ import annotations

import importlib

import pytest

import twofold

MODULES = [
    "twofold",
    "twofold.broker.consumer",
    "twofold.broker.inprocess",
    "twofold.deadletters",
    "twofold.errors",
    "twofold.http",
    "twofold.inspection",
    "twofold.bus",
    "twofold.checking",
    "twofold.cli_projections",
    "twofold.messages",
    "twofold.personal",
    "twofold.readmodels",
    "twofold.readmodels.duckdb",
    "twofold.readmodels.postgres",
    "twofold.readmodels.sqlite",
    "twofold.readmodels.tantivy",
    "twofold.rebuilds",
    "twofold.sagas",
    "twofold.store",
    "twofold.store.memory",
    "twofold.store.postgres",
    "twofold.store.sqlite",
    "twofold.system",
    "twofold.subscriptions",
    "twofold.tenancy",
    "twofold.testing",
    "twofold.testing.contracts",
    "twofold.testing.projections",
    "twofold.testing.pytest_plugin",
    "twofold.testing.sagas",
    "twofold.testing.servers",
]


def isort_order(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions: the order ruff's RUF022 keeps."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_every_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported, key=isort_order), f"{name}.__all__ is not sorted"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what the module lacks: {missing}"


def test_every_public_class_and_function_in_twofold_is_exported() -> None:
    public = {n for n, v in vars(twofold).items() if not n.startswith("_") and callable(v)}
    assert public <= set(twofold.__all__), f"not in __all__: {sorted(public - set(twofold.__all__))}"
