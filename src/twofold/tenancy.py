"""Tenants: each tenant's read models live apart, so no query can read another tenant's rows.

A command sent for a tenant (the token's ``tenant`` claim) stamps it on every event it appends,
and on every event that follows from those: saga reactions, the commands sagas send, imports
into other services. Projections then apply each event in its tenant's own copy of the read
models — a schema per tenant on PostgreSQL, a file per tenant on SQLite — and a query asked for
a tenant reads that copy only. Isolation is by where the rows are, not by a ``WHERE`` clause a
handler could forget: projection and query code stay exactly as they are without tenants, and
full-text indexes are per tenant too. Events without a tenant go to the read models everyone
has always had.

The write side is fenced as well: a stream belongs to the tenant of its first event, and a
command for any other tenant (or for none) that loads it is refused (``AccessDenied``).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twofold._tables import layout_of
from twofold.errors import FieldError, InvalidMessage
from twofold.readmodels import SQL_DIALECTS

if TYPE_CHECKING:
    from twofold.projections import Projection
    from twofold.readmodels import Database, ReadStore

__all__ = ["TENANT_PATTERN", "Tenancy", "check_tenant", "known_tenants", "tenant_location"]

TENANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")  # \Z: "$" would let a final newline through
TENANT_RULE = "a tenant is 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
REGISTRY = "twofold.tenants"  # the transaction name under which tenants are registered
CREATE_REGISTRY = "CREATE TABLE IF NOT EXISTS twofold_tenants (tenant TEXT PRIMARY KEY, location TEXT NOT NULL)"
REGISTER = "INSERT INTO twofold_tenants (tenant, location) VALUES (?, ?) ON CONFLICT (tenant) DO NOTHING"
LIST = "SELECT tenant FROM twofold_tenants ORDER BY tenant"


def check_tenant(tenant: str | None) -> str | None:
    """``tenant`` itself when it is a valid tenant id (or ``None``); :class:`InvalidMessage` naming it otherwise."""
    if tenant is not None and not (isinstance(tenant, str) and TENANT_PATTERN.match(tenant)):
        raise InvalidMessage("tenant", [FieldError("tenant", TENANT_RULE)])
    return tenant


def tenant_location(tenant: str) -> str:
    """Where a tenant's read models live: a name safe as a schema or file name, unique per tenant.

    ``Acme-EU`` → ``tenant_acme_eu_1f0c…``: readable for an operator, and the hash keeps ``Acme``
    and ``acme`` apart on a file system that folds case.
    """
    check_tenant(tenant)
    readable = re.sub(r"[^a-z0-9]", "_", tenant.lower())[:40]
    return f"tenant_{readable}_{hashlib.sha256(tenant.encode()).hexdigest()[:10]}"


class Tenancy:
    """Opens tenants' read stores with every projection's tables set up, once per process.

    One is shared by a runtime's projection runners and its query dispatcher: the first use of a
    tenant registers it in the main read store (so rebuilds find it) and runs each projection's
    ``setup`` in the tenant's store, so a query for a tenant nothing was projected for yet finds
    empty tables rather than missing ones.

    Args:
        read_store: the main read store; tenants' stores come from its ``for_tenant``.
        projections: whose tables every tenant's store gets.
        registry: the SQL store tenants are registered in; ``read_store`` itself by default. A
            target that is no SQL database (a search index) registers its tenants in the service's
            read database instead.
    """

    def __init__(
        self,
        read_store: ReadStore[Any],
        projections: Sequence[Projection],
        *,
        registry: ReadStore[Database] | None = None,
    ) -> None:
        self._read_store = read_store
        self._registry: ReadStore[Database] = registry or read_store
        self._projections = list(projections)
        self._opened: dict[str, asyncio.Task[ReadStore[Any]]] = {}

    @property
    def registry(self) -> ReadStore[Database]:
        """The SQL store this tenancy registers tenants in."""
        return self._registry

    async def store_for(self, tenant: str) -> ReadStore[Any]:
        """The tenant's read store, registered and set up on first use."""
        opening = self._opened.get(tenant)
        if opening is None or (opening.done() and opening.exception() is not None):
            check_tenant(tenant)
            # A task, so that callers asking at once share one set-up, and a caller cancelled
            # halfway leaves it to finish for the others.
            opening = self._opened[tenant] = asyncio.ensure_future(self._open(tenant))
        return await asyncio.shield(opening)

    async def tenants(self) -> list[str]:
        """Every tenant any projection of this read store has seen, in order."""
        await self._registry.transact(REGISTRY, _create_registry)
        rows = await self._registry.read(lambda db: db.fetch_all(LIST))
        return [str(row["tenant"]) for row in rows]

    async def _open(self, tenant: str) -> ReadStore[Any]:
        location = tenant_location(tenant)

        def register(db: Database) -> None:
            _create_registry(db)
            db.execute(REGISTER, (tenant, location))

        await self._registry.transact(REGISTRY, register)
        store = self._read_store.for_tenant(tenant)
        for projection in self._projections:
            await store.transact(projection.name, projection.setup)
        return store


async def known_tenants(read_store: ReadStore[Any]) -> list[str]:
    """The tenants registered in ``read_store``, in order, read without creating anything (for tools).

    A store that is no SQL database keeps no registry: its tenants are those of the read database.
    """
    if read_store.dialect not in SQL_DIALECTS:
        return []

    def listed(db: Database) -> list[str]:
        if not layout_of(db, "twofold_tenants").present:
            return []
        return [str(row["tenant"]) for row in db.fetch_all(LIST)]

    return await read_store.read(listed)


def _create_registry(db: Database) -> None:
    db.execute(CREATE_REGISTRY)
