"""``twofold new NAME``: a new service package, with its tests, that passes them as generated.

    $ twofold new library
    created library/: __init__.py domain.py service.py tests/__init__.py tests/test_service.py
    $ python -m pytest library

The files come from ``twofold/templates/new`` (shipped in the package), with ``{{name}}`` replaced.
"""

from __future__ import annotations

import keyword
import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register", "scaffold"]

PLACEHOLDER = "{{name}}"
SUFFIX = ".tmpl"  # templates are not Python files, so neither tools nor the import system read them
PACKAGE_NAME = re.compile(r"[a-z][a-z0-9_]*")


def register(app: typer.Typer) -> None:
    """Add ``twofold new`` to the ``twofold`` command line."""
    app.command()(new)


def new(name: Annotated[str, typer.Argument(help="The package and service name, e.g. library")]) -> None:
    """Create a service package here: an aggregate, a command, an event, a read model, a query, tests."""
    try:
        created = scaffold(name, Path.cwd())
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"created {name}/: {' '.join(str(p.relative_to(Path.cwd() / name)) for p in created)}")
    typer.echo(f"next: python -m pytest {name}   then   twofold serve {name}.service:service")


def scaffold(name: str, into: Path) -> list[Path]:
    """Write package ``name`` under ``into`` from the templates; the files written, in order."""
    if not PACKAGE_NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ValueError(
            f"{name!r} cannot name a Python package: use lower-case letters, digits and _, starting with a letter"
        )
    target = into / name
    if target.exists():
        raise ValueError(f"{target} already exists; choose another name or remove it")
    written: list[Path] = []
    for template, relative in _templates(resources.files("twofold") / "templates" / "new", Path()):
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.read_text(encoding="utf-8").replace(PLACEHOLDER, name), encoding="utf-8")
        written.append(path)
    return written


def _templates(folder: Traversable, relative: Path) -> list[tuple[Traversable, Path]]:
    """Every template under ``folder``, with the path its file takes, sorted so the output is stable."""
    found: list[tuple[Traversable, Path]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            found.extend(_templates(entry, relative / entry.name))
        elif entry.name.endswith(SUFFIX):
            found.append((entry, relative / entry.name.removesuffix(SUFFIX)))
    return found
