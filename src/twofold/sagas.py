"""Sagas (process managers): long-running work across aggregates and services."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

__all__ = ["Saga"]


class Saga(BaseModel):
    """Base of sagas (filled in below)."""

    name: ClassVar[str]

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = name or cls.__name__
