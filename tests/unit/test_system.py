"""A system's declaration is checked when it is made: names and types unique, subscriptions to real services."""

from __future__ import annotations

import pytest

from examples.shop import catalog, inventory, orders, payments, shop
from twofold import Command, ConfigurationError, Service, Subscription, System, UnitOfWork


class Ping(Command, name="AddProduct"):  # the catalog's command type name, on purpose
    pass


async def ping(command: Ping, uow: UnitOfWork) -> None:
    return None


def test_the_shop_routes_each_type_to_the_one_service_that_owns_it() -> None:
    assert shop.names == ("catalog", "inventory", "orders", "payments")
    assert shop.owner_of_command("PlaceOrder") is orders
    assert shop.owner_of_command("inventory.ReserveStock") is inventory
    assert shop.owner_of_query("StockLevel") is inventory
    assert shop.owner_of_query("SearchProducts") is catalog
    assert shop.owner_of_command("Nope") is None
    assert shop.service("payments") is payments


def test_two_services_may_not_share_a_name_or_a_command_type() -> None:
    with pytest.raises(ConfigurationError, match="service 'catalog'"):
        System("twice", [catalog, catalog])
    with pytest.raises(ConfigurationError, match="command type 'AddProduct'"):
        System("clash", [catalog, Service("pinger", commands={Ping: ping})])


def test_a_subscription_must_name_another_service_of_the_system() -> None:
    lonely = Service("lonely", subscriptions=[Subscription("nowhere", categories=["x"])])
    with pytest.raises(ConfigurationError, match="subscribes to 'nowhere'"):
        System("odd", [catalog, lonely])
    with pytest.raises(ConfigurationError, match="no service 'billing'"):
        shop.service("billing")
