"""Personal fields: sealed on append, opened where events are decoded, unreadable once forgotten."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import pytest

from twofold import (
    FORGOTTEN,
    Aggregate,
    Command,
    ConfigurationError,
    Database,
    Envelope,
    Event,
    Personal,
    Projection,
    Query,
    Runtime,
    Service,
    StoredEvent,
    UnitOfWork,
)
from twofold.personal import PersonalData, new_key, open_text, seal_text
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store.memory import MemoryEventStore
from twofold.store.sqlite import SQLiteEventStore


class PatientAdmitted(Event, name="clinic.PatientAdmitted"):
    patient_id: str
    name: Annotated[str, Personal(subject="patient_id")]
    ward: str
    note: Annotated[str | None, Personal(subject="patient_id")] = None


class PatientForgotten(Event, name="clinic.PatientForgotten"):
    patient_id: str


class Admit(Command):
    patient_id: str
    name: str
    ward: str


class Forget(Command):
    patient_id: str


class Names(Query):
    pass


class Patient(Aggregate, category="patient"):
    name: str = ""

    def evolve(self, event: PatientAdmitted | PatientForgotten) -> Patient:
        match event:
            case PatientAdmitted():
                return self.model_copy(update={"name": event.name})
            case PatientForgotten():
                return self


async def admit(command: Admit, uow: UnitOfWork) -> None:
    patient = await uow.load(Patient, command.patient_id)
    uow.emit(patient, PatientAdmitted(patient_id=command.patient_id, name=command.name, ward=command.ward))


async def forget(command: Forget, uow: UnitOfWork) -> None:
    patient = await uow.load(Patient, command.patient_id)
    uow.forget(command.patient_id)
    uow.emit(patient, PatientForgotten(patient_id=command.patient_id))


class Ward(Projection, name="clinic.ward"):
    tables = ("patients",)

    def setup(self, db: Database) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS patients (patient_id TEXT PRIMARY KEY, name TEXT, ward TEXT)")

    def apply(self, event: PatientAdmitted, db: Database, record: StoredEvent) -> None:
        db.execute("INSERT INTO patients VALUES (?, ?, ?)", (event.patient_id, event.name, event.ward))

    def names(self, query: Names, db: Database) -> list[str]:
        return [row["name"] for row in db.fetch_all("SELECT name FROM patients ORDER BY patient_id")]


ward = Ward()
clinic = Service("clinic", commands={Admit: admit, Forget: forget}, queries={Names: ward.names}, projections=[ward])


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    store = SQLiteEventStore(tmp_path / "clinic.db")
    async with Runtime(clinic, store=store, read_store=SQLiteReadStore(tmp_path / "read.db")) as running:
        yield running


def raw_data(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return " ".join(row[0] for row in conn.execute("SELECT data FROM events"))


def test_sealed_text_opens_with_its_key_and_subject() -> None:
    key = new_key()
    sealed = seal_text(key, "p-1", "Ada Lovelace")

    assert sealed.startswith("personal:v1:")
    assert "Ada" not in sealed
    assert open_text(key, "p-1", sealed) == "Ada Lovelace"


def test_sealed_text_never_opens_with_another_key_or_for_another_subject() -> None:
    key = new_key()
    sealed = seal_text(key, "p-1", "Ada Lovelace")

    assert open_text(new_key(), "p-1", sealed) == FORGOTTEN
    assert open_text(key, "p-2", sealed) == FORGOTTEN
    assert open_text(None, "p-1", sealed) == FORGOTTEN
    assert open_text(key, "p-1", sealed[:-4]) == FORGOTTEN  # damaged: refused, not garbled


def test_text_written_before_a_field_was_personal_reads_as_written() -> None:
    assert open_text(new_key(), "p-1", "Ada Lovelace") == "Ada Lovelace"


def test_a_personal_field_must_name_a_subject_field_of_its_event() -> None:
    with pytest.raises(TypeError, match=r"Misfiled.name is personal to the subject in field 'owner'"):

        class Misfiled(Event):
            name: Annotated[str, Personal(subject="owner")]


async def test_a_personal_field_is_never_written_in_clear_to_the_store(runtime: Runtime, tmp_path: Path) -> None:
    await runtime.execute(Admit(patient_id="p-1", name="Ada Lovelace", ward="north"))

    stored = raw_data(tmp_path / "clinic.db")
    assert "Ada" not in stored
    assert "personal:v1:" in stored
    assert "north" in stored  # fields not marked personal stay as they were


async def test_projections_and_aggregates_read_personal_fields_in_clear(runtime: Runtime) -> None:
    placed = await runtime.execute(Admit(patient_id="p-1", name="Ada Lovelace", ward="north"))

    assert await runtime.query(Names(), min_position=placed.position) == ["Ada Lovelace"]
    assert runtime.store is not None
    assert (await UnitOfWork(runtime.store, placed_envelope()).load(Patient, "p-1")).name == "Ada Lovelace"


async def test_forgetting_destroys_the_key_and_every_read_gets_the_placeholder(
    runtime: Runtime, tmp_path: Path
) -> None:
    await runtime.execute(Admit(patient_id="p-1", name="Ada Lovelace", ward="north"))
    await runtime.execute(Admit(patient_id="p-2", name="Grace Hopper", ward="south"))
    forgotten = await runtime.execute(Forget(patient_id="p-1"))

    with sqlite3.connect(tmp_path / "clinic.db") as conn:
        assert [r[0] for r in conn.execute("SELECT subject FROM subject_keys")] == ["p-2"]
    assert runtime.store is not None
    assert (await UnitOfWork(runtime.store, placed_envelope()).load(Patient, "p-1")).name == FORGOTTEN
    await runtime.rebuild("clinic.ward")
    assert await runtime.query(Names(), min_position=forgotten.position) == [FORGOTTEN, "Grace Hopper"]


async def test_a_subject_keeps_its_one_key_however_often_it_is_asked_for() -> None:
    store = MemoryEventStore()
    first = await store.subject_keys(["p-1"], create=True)
    again = await store.subject_keys(["p-1", "p-2"], create=True)

    assert again["p-1"] == first["p-1"]
    assert again["p-2"] != first["p-1"]


async def test_a_store_without_keys_refuses_to_seal_personal_fields() -> None:
    with pytest.raises(ConfigurationError, match="need an event store that keeps keys"):
        await PersonalData(None).seal([PatientAdmitted(patient_id="p-1", name="Ada", ward="north")])


def placed_envelope() -> Envelope[Command]:
    return Envelope(Admit(patient_id="unused", name="unused", ward="unused"))
