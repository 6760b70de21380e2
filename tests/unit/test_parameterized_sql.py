"""Parameterized SQL everywhere: no SQL text in ``src/twofold`` or ``examples`` is built from values.

Every f-string, ``%`` or ``.format`` whose text reads as SQL may interpolate only module constants
(``COLUMNS``, ``LOCK_STREAM[0]``) or an expression this file allows, each with why it is safe;
values travel as parameters (``?``, ``$1``). docs/security.md, "Hostile input", states the rule.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = [ROOT / "src" / "twofold", ROOT / "examples"]
# SQL by its words: any upper-case keyword, or text that opens with a statement in any case.
SQL = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|TRUNCATE|VALUES|WHERE|FROM|JOIN|ORDER BY)\b"
    r"|^\s*(select|insert|update|delete|create|drop|alter|pragma|truncate|with)\s",
)
CONSTANT = re.compile(r"^[A-Z][A-Z0-9_]*(\[\d+\])?$")
ALLOWED = {  # (file under the root, expression): why it is no value a client chose
    ("src/twofold/deadletters.py", "' AND '.join((f'{name} = ?' for name, _ in conditions))"): (
        "column names from a fixed tuple, each compared with a parameter"
    ),
    ("src/twofold/saga_runner.py", "sql"): "SQL text joined from literals only, a few lines above",
    ("src/twofold/_sqlite.py", "self._synchronous"): "the PRAGMA level its store was built with, FULL or NORMAL",
    ("src/twofold/projections.py", "table"): "a projection's table names, checked as identifiers at class creation",
    ("src/twofold/saga_runner.py", "marks"): "only '?' placeholders, one per value passed as a parameter",
    ("src/twofold/testing/servers.py", "name"): "a test database name, checked as an identifier first",
    ("src/twofold/testing/projections.py", "table"): "a table a test names, checked as an identifier first",
    ("src/twofold/readmodels/sqlite.py", "quoted"): "a projection's table name, checked by quoted_table",
    ("src/twofold/_tables.py", "table"): "a projection's table name, checked by quoted_table",
    ("src/twofold/_tables.py", "columns"): "column names the database reported, each quoted with its quotes doubled",
    ("src/twofold/readmodels/duckdb.py", "where"): "the store's own schema, its names quoted by _qualified",
    ("src/twofold/readmodels/duckdb.py", "shadow"): "a scratch schema (a checked scratch name), quoted by _qualified",
    ("src/twofold/readmodels/duckdb.py", "quoted"): "a projection's table name, checked by quoted_table",
    ("src/twofold/_tables.py", "order"): "the same quoted column names, with a fixed collation and NULLS FIRST",
}


def formatted_sql(source: str) -> list[tuple[int, str]]:
    """Each expression interpolated into SQL text in ``source``, with its line: ``[(12, "sku"), …]``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        text, values = _template(node)
        if text is not None and SQL.search(text):
            found.extend((node.lineno, ast.unparse(value)) for value in values)
    return found


def _template(node: ast.AST) -> tuple[str | None, list[ast.expr]]:
    """The literal text of a string built by formatting, and what goes into it."""
    if isinstance(node, ast.JoinedStr):
        text = "".join(part.value for part in node.values if isinstance(part, ast.Constant))
        return text, [part.value for part in node.values if isinstance(part, ast.FormattedValue)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        literal = [side.value for side in (node.left, node.right) if _is_text(side)]
        others = [side for side in (node.left, node.right) if not _is_text(side)]
        if isinstance(node.op, ast.Mod) and _is_text(node.left):
            return str(literal[0]), [node.right]
        if isinstance(node.op, ast.Add) and literal:
            return "".join(map(str, literal)), [o for o in others if not isinstance(o, ast.JoinedStr | ast.BinOp)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        template = node.func.value
        if isinstance(template, ast.Constant) and isinstance(template.value, str):
            return template.value, [*node.args, *(keyword.value for keyword in node.keywords)]
    return None, []


def _is_text(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def violations(path: Path, source: str) -> list[str]:
    relative = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    return [
        f"{relative}:{line}: {expression}"
        for line, expression in formatted_sql(source)
        if not CONSTANT.match(expression) and (relative, expression) not in ALLOWED
    ]


def test_no_sql_in_the_framework_or_the_examples_is_formatted_with_values() -> None:
    files = sorted(path for folder in SCANNED for path in folder.rglob("*.py"))
    assert len(files) > 30

    found = [v for path in files for v in violations(path, path.read_text(encoding="utf-8"))]

    assert found == [], "SQL built from values; pass them as parameters:\n" + "\n".join(found)


def test_every_allowed_interpolation_is_still_there_so_the_list_stays_short() -> None:
    used = {
        (path.relative_to(ROOT).as_posix(), expression)
        for folder in SCANNED
        for path in folder.rglob("*.py")
        for _, expression in formatted_sql(path.read_text(encoding="utf-8"))
    }

    assert set(ALLOWED) <= used


def test_the_check_catches_values_formatted_into_sql_however_it_is_written() -> None:
    source = """
db.execute(f"SELECT * FROM products WHERE sku = '{sku}'")
db.execute("DELETE FROM orders WHERE id = %s" % order_id)
db.execute("UPDATE stock SET n = {}".format(n))
db.execute("SELECT * FROM t WHERE name = '" + name + "'")
await conn.fetch(f"select * from t where a = {request.query_params['a']}")
db.execute(f"SELECT {COLUMNS} FROM events WHERE position > ?", [position])
db.execute("SELECT * FROM t WHERE sku = ?", [sku])
log.info(f"reading {sku} from the store")
"""

    assert [v.split(": ", 1)[1] for v in violations(Path("example.py"), source)] == [
        "sku",
        "order_id",
        "n",
        "name",
        "request.query_params['a']",
    ]
