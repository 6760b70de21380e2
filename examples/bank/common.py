"""Field types the bank's services share: ids, currencies and exact amounts of money."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, Field

CENT = Decimal("0.01")


def _in_cents(amount: Decimal) -> Decimal:
    """``20`` → ``20.00``: every amount carries its cents, so statements line up and compare as text."""
    return amount.quantize(CENT)


Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="An ISO 4217 code, such as EUR")]
# Money is a Decimal with cents, never a float: 0.10 + 0.20 is 0.30 here.
Amount = Annotated[
    Decimal, Field(gt=0, le=Decimal("1000000000"), max_digits=14, decimal_places=2), AfterValidator(_in_cents)
]
Limit = Annotated[
    Decimal, Field(ge=0, le=Decimal("1000000"), max_digits=9, decimal_places=2), AfterValidator(_in_cents)
]
Reason = Annotated[str, Field(min_length=1, max_length=200)]
