"""Rendering: the templates and the static files, read once from the package.

Autoescape is on for every template, so whatever an event holds is shown as text, never as markup.
Undefined names fail loudly (``StrictUndefined``) rather than rendering as empty text.
"""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

try:
    import jinja2
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is installed
    raise ModuleNotFoundError("The console needs the http extra: pip install 'twofold[http]'") from exc
from fastapi.responses import HTMLResponse, Response

from twofold.http.console._streams import pretty

_PACKAGE = "twofold.http.console"
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}

_environment = jinja2.Environment(
    loader=jinja2.PackageLoader(_PACKAGE, "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def url(path: str, *segments: str, **params: object) -> str:
    """A console link: ``path`` then each segment quoted, then the parameters that are not ``None``.

    url("/console/streams", "orders", "order-o/1", after=3) → "/console/streams/orders/order-o%2F1?after=3"
    """
    link = "/".join([path, *(quote(s, safe="") for s in segments)])
    query = {k: v for k, v in params.items() if v is not None and v != ""}
    return link + ("?" + urlencode(query) if query else "")


_environment.filters["pretty"] = pretty
_environment.globals["url"] = url


def render(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """``template`` rendered with ``context``, as an HTML response."""
    return HTMLResponse(_environment.get_template(template).render(**context), status_code=status_code)


def _static_files() -> dict[str, tuple[bytes, str]]:
    folder = resources.files(_PACKAGE) / "static"
    found = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if suffix in _TYPES:
            found[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return found


STATIC = _static_files()  # name → (content, media type): a fixed set, so a request never names a path


def static(name: str) -> Response | None:
    """The static file ``name``, cached by browsers for an hour; ``None`` when there is none."""
    found = STATIC.get(name)
    if found is None:
        return None
    content, media_type = found
    return Response(content, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})
