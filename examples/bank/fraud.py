"""The fraud service: watches every account's movements and raises alerts as patterns appear.

It imports the accounts service's ``account`` streams and owns one projection that applies three
rules as each movement arrives — never on a timer, and with time taken from the events, so that
a rebuild raises exactly the same alerts:

- **rapid withdrawals**: ``RAPID_COUNT`` or more withdrawals from one account within a minute;
- **new account, large credit**: ``LARGE_CREDIT`` or more arriving by transfer at an account
  opened less than ``NEW_ACCOUNT`` ago;
- **structuring**: ``STRUCTURING_COUNT`` movements within a day just under the reporting
  threshold (between ``NEAR_THRESHOLD`` and ``THRESHOLD``), as if to stay beneath it.

Each alert lists the events that raised it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel, Field

from examples.bank.accounts import AccountOpened, MoneyDeposited, MoneyWithdrawn, timestamp
from examples.bank.common import Id
from twofold import Database, Projection, Query, Service, StoredEvent, Subscription

RAPID_COUNT, RAPID_WINDOW = 5, timedelta(minutes=1)
LARGE_CREDIT, NEW_ACCOUNT = Decimal(10_000), timedelta(minutes=10)
THRESHOLD, NEAR_THRESHOLD = Decimal(10_000), Decimal(9_000)
STRUCTURING_COUNT, STRUCTURING_WINDOW = 3, timedelta(days=1)
KEPT = max(RAPID_WINDOW, STRUCTURING_WINDOW)  # how long a movement matters to any rule


class OpenAlerts(Query):
    account_id: Id | None = None
    limit: int = Field(default=50, ge=1, le=200)


class Evidence(BaseModel):
    position: int
    type: str
    amount: Decimal
    at: str


class AlertView(BaseModel):
    alert_id: str
    account_id: str
    rule: str
    raised_at: str
    detail: str
    events: list[Evidence]


class AlertList(BaseModel):
    alerts: list[AlertView]


class FraudWatch(Projection, name="fraud.watch"):
    """Alerts, and the recent movements the rules look back over (pruned as time moves on)."""

    tables = ("fraud_accounts", "fraud_movements", "fraud_alerts")

    def setup(self, db: Database) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS fraud_accounts (account_id TEXT PRIMARY KEY, opened_at TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS fraud_movements (position BIGINT PRIMARY KEY, account_id TEXT NOT NULL,"
            " type TEXT NOT NULL, amount TEXT NOT NULL, at TEXT NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS fraud_movements_by_account ON fraud_movements (account_id, at)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS fraud_alerts (alert_id TEXT PRIMARY KEY, account_id TEXT NOT NULL,"
            " rule TEXT NOT NULL, raised_at TEXT NOT NULL, detail TEXT NOT NULL, events TEXT NOT NULL,"
            " position BIGINT NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS fraud_alerts_by_account ON fraud_alerts (account_id, position)")

    def apply(self, event: AccountOpened | MoneyDeposited | MoneyWithdrawn, db: Database, record: StoredEvent) -> None:
        at = record.recorded_at
        if isinstance(event, AccountOpened):
            db.execute(
                "INSERT INTO fraud_accounts (account_id, opened_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (event.account_id, timestamp(at)),
            )
            return
        db.execute(
            "INSERT INTO fraud_movements (position, account_id, type, amount, at) VALUES (?, ?, ?, ?, ?)",
            (record.position, event.account_id, record.type, str(event.amount), timestamp(at)),
        )
        db.execute("DELETE FROM fraud_movements WHERE at < ?", (timestamp(at - KEPT),))
        if isinstance(event, MoneyWithdrawn):
            self._rapid_withdrawals(event, record, db)
        elif event.reference is not None and event.reference.startswith("transfer "):
            self._large_credit_to_new_account(event, record, db)
        if NEAR_THRESHOLD <= event.amount < THRESHOLD:
            self._structuring(event, record, db)

    def _rapid_withdrawals(self, event: MoneyWithdrawn, record: StoredEvent, db: Database) -> None:
        recent = self._movements(db, event.account_id, record.recorded_at - RAPID_WINDOW, type=record.type)
        if len(recent) == RAPID_COUNT:  # once per burst: the fifth raises it, the sixth does not again
            detail = f"{RAPID_COUNT} withdrawals within {RAPID_WINDOW.seconds} seconds"
            self._raise(db, "rapid-withdrawals", event.account_id, record, detail, recent)

    def _large_credit_to_new_account(self, event: MoneyDeposited, record: StoredEvent, db: Database) -> None:
        if event.amount < LARGE_CREDIT:
            return
        opened = db.fetch_one("SELECT opened_at FROM fraud_accounts WHERE account_id = ?", (event.account_id,))
        if opened is not None and opened["opened_at"] > timestamp(record.recorded_at - NEW_ACCOUNT):
            detail = f"{event.amount} by transfer to an account opened at {opened['opened_at']}"
            evidence = self._movements(db, event.account_id, record.recorded_at, position=record.position)
            self._raise(db, "new-account-large-credit", event.account_id, record, detail, evidence)

    def _structuring(self, event: MoneyDeposited | MoneyWithdrawn, record: StoredEvent, db: Database) -> None:
        recent = [
            m
            for m in self._movements(db, event.account_id, record.recorded_at - STRUCTURING_WINDOW)
            if NEAR_THRESHOLD <= Decimal(m["amount"]) < THRESHOLD
        ]
        if len(recent) == STRUCTURING_COUNT:
            detail = f"{STRUCTURING_COUNT} movements within a day just under {THRESHOLD}"
            self._raise(db, "structuring", event.account_id, record, detail, recent)

    @staticmethod
    def _movements(
        db: Database, account_id: str, since: datetime, *, type: str | None = None, position: int | None = None
    ) -> list[dict[str, object]]:
        rows = db.fetch_all(
            "SELECT position, type, amount, at FROM fraud_movements WHERE account_id = ? AND at >= ? ORDER BY position",
            (account_id, timestamp(since)),
        )
        return [
            r for r in rows if (type is None or r["type"] == type) and (position is None or r["position"] == position)
        ]

    @staticmethod
    def _raise(
        db: Database, rule: str, account_id: str, record: StoredEvent, detail: str, evidence: list[dict[str, object]]
    ) -> None:
        db.execute(
            "INSERT INTO fraud_alerts (alert_id, account_id, rule, raised_at, detail, events, position)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                f"{rule}:{account_id}:{record.position}",
                account_id,
                rule,
                timestamp(record.recorded_at),
                detail,
                json.dumps(evidence),
                record.position,
            ),
        )

    def open_alerts(self, query: OpenAlerts, db: Database) -> AlertList:
        if query.account_id is None:
            rows = db.fetch_all("SELECT * FROM fraud_alerts ORDER BY position DESC LIMIT ?", (query.limit,))
        else:
            rows = db.fetch_all(
                "SELECT * FROM fraud_alerts WHERE account_id = ? ORDER BY position DESC LIMIT ?",
                (query.account_id, query.limit),
            )
        return AlertList(alerts=[_alert(row) for row in rows])


def _alert(row: dict[str, object]) -> AlertView:
    fields = {k: v for k, v in row.items() if k not in ("events", "position")}
    return AlertView.model_validate({**fields, "events": json.loads(str(row["events"]))})


watch = FraudWatch()

fraud = Service(
    "fraud",
    description="Watches every account's movements and raises alerts on suspicious patterns as they happen.",
    queries={OpenAlerts: watch.open_alerts},
    projections=[watch],
    subscriptions=[Subscription("accounts", categories=["account"])],
)
