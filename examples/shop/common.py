"""Field types the shop's services share: what a sku, an id, a quantity and a price may be."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Quantity = Annotated[int, Field(ge=1, le=1_000_000)]
Price = Annotated[Decimal, Field(ge=0, le=Decimal("1000000"), max_digits=12, decimal_places=2)]


class Line(BaseModel):
    """A sku and how many of it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Sku
    quantity: Quantity


class PricedLine(BaseModel):
    """A line at the price its product had when the order was priced."""

    model_config = ConfigDict(frozen=True)

    sku: str
    quantity: int
    price: Decimal
