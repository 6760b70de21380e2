"""A read-only web console, served by the query side at ``/console``: what a store holds and how its workers fare.

    app.include_router(console_router("orders", {"orders": runtime}))      # one service (create_app does this)
    app.include_router(console_router("shop", runtimes))                   # a system (the gateway does this)

    GET /console/streams?category=order&order=recent    streams, newest activity first (or order=id)
    GET /console/streams/orders/order-o-1?version=2     a stream's events, and its aggregate at version 2
    GET /console/projections                            position, head, lag, last error; live
    GET /console/sagas?saga=checkout&status=active      instances, their state, deadlines, compensations
    GET /console/dead-letters                           parked messages and why
    GET /console/trace?correlation_id=…                 one correlation's causal tree, across services

Plain pages rendered on the server, with a few lines of script for the live parts. Every list is a
keyset page, so a page costs the same on a store of a million events as on one of ten. It shows
every tenant's events: the scope it needs (``console:read`` or ``queries:*``) is never enough for a
tenant's token (:mod:`twofold.http.auth`).
"""

from twofold.http.console._routes import console_router

__all__ = ["console_router"]
