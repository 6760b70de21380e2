"""Upcasters: events stored by older classes are read as the current class, by aggregates and projections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from twofold import (
    Aggregate,
    Command,
    ConfigurationError,
    Database,
    Envelope,
    Event,
    EventStore,
    NewEvent,
    Projection,
    Query,
    Runtime,
    Service,
    StoredEvent,
    StoreError,
    UnitOfWork,
)
from twofold.messages import EventTypes, Upcaster
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store.memory import MemoryEventStore
from twofold.store.sqlite import SQLiteEventStore


class MemberJoined(Event, name="club.MemberJoined", version=3):
    """Version 1 called ``full_name`` ``name``; version 3 added ``channel`` (every older member came by web)."""

    member_id: str
    full_name: str
    channel: str


class PointsEarned(Event, name="club.PointsEarned"):
    member_id: str
    points: int


class EarnPoints(Command):
    member_id: str
    points: int


class Everyone(Query):
    pass


def _rename_name(data: dict[str, Any]) -> dict[str, Any]:
    data["full_name"] = data.pop("name")
    return data


def _add_channel(data: dict[str, Any]) -> dict[str, Any]:
    data["channel"] = "web"
    return data


UPCASTERS = [
    Upcaster("club.MemberJoined", from_version=1, function=_rename_name),
    Upcaster("club.MemberJoined", from_version=2, function=_add_channel),
]


class Member(Aggregate, category="member"):
    full_name: str = ""
    channel: str = ""
    points: int = 0

    def evolve(self, event: MemberJoined | PointsEarned) -> Member:
        match event:
            case MemberJoined(full_name=full_name, channel=channel):
                return self.model_copy(update={"full_name": full_name, "channel": channel})
            case PointsEarned(points=points):
                return self.model_copy(update={"points": self.points + points})


class Members(Projection, name="club.members"):
    tables = ("members",)

    def setup(self, db: Database) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS members (member_id TEXT PRIMARY KEY, full_name TEXT NOT NULL, channel TEXT)"
        )

    def apply(self, event: MemberJoined, db: Database, record: StoredEvent) -> None:
        db.execute("INSERT INTO members VALUES (?, ?, ?)", (event.member_id, event.full_name, event.channel))

    def everyone(self, query: Everyone, db: Database) -> list[dict[str, Any]]:
        return db.fetch_all("SELECT member_id, full_name, channel FROM members ORDER BY member_id")


async def earn_points(command: EarnPoints, uow: UnitOfWork) -> None:
    member = await uow.load(Member, command.member_id)
    uow.emit(member, PointsEarned(member_id=member.id, points=command.points))


def joined(member_id: str, name: str, version: int) -> NewEvent:
    """A MemberJoined as the class of ``version`` wrote it."""
    data: dict[str, Any] = {"member_id": member_id, "name": name}
    if version >= 2:
        data = {"member_id": member_id, "full_name": name}
    if version >= 3:
        data["channel"] = "app"
    return NewEvent("club.MemberJoined", data, schema_version=version)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    store: EventStore = MemoryEventStore() if request.param == "memory" else SQLiteEventStore(tmp_path / "events.db")
    yield store
    await store.close()


async def test_an_event_written_at_version_1_loads_into_the_current_aggregate(store: EventStore) -> None:
    await store.append(
        "member-m-1", [joined("m-1", "Ada", 1), NewEvent("club.PointsEarned", {"member_id": "m-1", "points": 5})]
    )

    member = await UnitOfWork(store, Envelope(EarnPoints(member_id="m-1", points=1)), upcasters=UPCASTERS).load(
        Member, "m-1"
    )

    assert (member.full_name, member.channel, member.points, member.version) == ("Ada", "web", 5, 2)


async def test_old_events_reach_commands_and_projections_as_the_current_class(
    store: EventStore, tmp_path: Path
) -> None:
    await store.append("member-m-1", [joined("m-1", "Ada", 1)])
    await store.append("member-m-2", [joined("m-2", "Grace", 2)])
    await store.append("member-m-3", [joined("m-3", "Edsger", 3)])
    members = Members()
    club = Service(
        "club",
        commands={EarnPoints: earn_points},
        queries={Everyone: members.everyone},
        projections=[members],
        upcasters=UPCASTERS,
    )

    async with Runtime(club, store=store, read_store=SQLiteReadStore(tmp_path / "read.db")) as runtime:
        earned = await runtime.execute(EarnPoints(member_id="m-1", points=3))
        rows = await runtime.query(Everyone(), min_position=earned.position)

    assert earned.version == 2
    assert rows == [
        {"member_id": "m-1", "full_name": "Ada", "channel": "web"},
        {"member_id": "m-2", "full_name": "Grace", "channel": "web"},
        {"member_id": "m-3", "full_name": "Edsger", "channel": "app"},
    ]


def test_a_chain_of_upcasters_applies_each_step_in_order() -> None:
    types = EventTypes([MemberJoined], reversed(UPCASTERS))

    from_1 = types.decode("club.MemberJoined", {"member_id": "m-1", "name": "Ada"}, 1)
    from_2 = types.decode("club.MemberJoined", {"member_id": "m-1", "full_name": "Ada"}, 2)

    assert from_1 == from_2 == MemberJoined(member_id="m-1", full_name="Ada", channel="web")


def test_an_event_at_the_class_version_is_decoded_without_upcasting() -> None:
    data = {"member_id": "m-1", "full_name": "Ada", "channel": "app"}

    assert EventTypes([MemberJoined]).decode("club.MemberJoined", data, 3) == MemberJoined(**data)


def test_upcasting_leaves_the_stored_data_as_it_was() -> None:
    stored = {"member_id": "m-1", "name": "Ada"}

    EventTypes([MemberJoined], UPCASTERS).decode("club.MemberJoined", stored, 1)

    assert stored == {"member_id": "m-1", "name": "Ada"}


def test_a_missing_step_in_the_chain_is_an_error_naming_the_type_and_versions() -> None:
    types = EventTypes([MemberJoined], UPCASTERS[1:])

    with pytest.raises(
        StoreError,
        match=r"Cannot read club\.MemberJoined stored at schema version 1 as version 3: "
        r"no upcaster from version 1 to 2; declare Upcaster\('club\.MemberJoined', from_version=1",
    ):
        types.decode("club.MemberJoined", {"member_id": "m-1", "name": "Ada"}, 1)


def test_a_stored_version_newer_than_the_class_is_an_error_naming_the_type_and_versions() -> None:
    with pytest.raises(
        StoreError, match=r"Cannot read club\.MemberJoined stored at schema version 4: MemberJoined is version 3"
    ):
        EventTypes([MemberJoined], UPCASTERS).decode("club.MemberJoined", {"member_id": "m-1"}, 4)


async def test_loading_an_aggregate_without_the_upcasters_it_needs_fails_clearly() -> None:
    store = MemoryEventStore()
    await store.append("member-m-1", [joined("m-1", "Ada", 1)])

    with pytest.raises(StoreError, match=r"no upcaster from version 1 to 2"):
        await UnitOfWork(store, Envelope(EarnPoints(member_id="m-1", points=1))).load(Member, "m-1")


def test_two_upcasters_for_one_step_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"Service club: Two upcasters turn club\.MemberJoined version 1"):
        Service("club", upcasters=[UPCASTERS[0], UPCASTERS[0]])


def test_an_upcaster_from_version_0_is_refused() -> None:
    with pytest.raises(ValueError, match=r"from_version must be 1 or more \(got 0\)"):
        Upcaster("club.MemberJoined", from_version=0, function=_rename_name)
