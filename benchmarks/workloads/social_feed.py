"""``social_feed``: from a post to its appearance in the newsfeeds of its author's 1,000 followers.

The social network runs embedded in this process on SQLite files (``make run APP=social``). One
author has ``FOLLOWERS`` followers; the author publishes ``POSTS`` posts one after another, and
each is timed from ``PublishPost`` being sent until the newsfeeds of its first and last follower
show it (read-your-writes queries, which wait for the read model to reach the post). Figures: p50
and p99 of that time, first with fan-out on write (a row per follower, written in the post's
transaction of the read model), then with the author past ``SOCIAL_FANOUT_LIMIT`` (no rows; the
feed merges the author's timeline in as it is read). A post missing from a feed fails the run.

There is no anchor: no other system in the comparison runs this workload.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from benchmarks.shape import Shape
from benchmarks.workloads._common import Progress, percentile, row
from twofold.testing.servers import PostgresServer

WORKLOAD = "social_feed"
FOLLOWERS = 1_000
SETUP_BATCH = 100  # commands sent at once while the followers register and follow
TIMEOUT = 30.0  # seconds a post may take to reach the feeds before the run has failed


async def measure(shape: Shape, postgres: PostgresServer, folder: Path, progress: Progress) -> list[dict[str, Any]]:
    posts = 200 if shape.runs >= 5 else 50  # the full shape, or QUICK=1
    rows: list[dict[str, Any]] = []
    for mode, fanout_limit in (("fan-out on write", FOLLOWERS), ("merged on read", FOLLOWERS - 1)):
        progress(f"  {WORKLOAD}: {posts} posts to {FOLLOWERS} followers, {mode}")
        async with _social(folder / mode.replace(" ", "-"), fanout_limit) as runtime:
            await _followers(runtime)
            latencies = [await _publish(runtime, n) for n in range(posts)]
        rows += [
            row(
                WORKLOAD,
                "sqlite",
                "twofold",
                [percentile(latencies, p) * 1000],
                "ms",
                statistic=f"p{p}",
                lower_is_better=True,
                posts=posts,
                followers=FOLLOWERS,
                mode=mode,
            )
            for p in (50, 99)
        ]
    return rows


@contextlib.asynccontextmanager
async def _social(folder: Path, fanout_limit: int) -> AsyncIterator[Any]:
    from examples.social import network
    from examples.social.network import read_model
    from twofold import Runtime
    from twofold.readmodels.sqlite import SQLiteReadStore
    from twofold.store.sqlite import SQLiteEventStore

    limit = read_model.fanout_limit
    read_model.fanout_limit = fanout_limit
    try:
        store, read_store = SQLiteEventStore(folder / "network.db"), SQLiteReadStore(folder / "network-read.db")
        async with Runtime(network, store=store, read_store=read_store) as runtime:
            yield runtime
    finally:
        read_model.fanout_limit = limit


async def _followers(runtime: Any) -> None:
    from examples.social.messages import Follow, RegisterUser

    def user(name: str) -> RegisterUser:
        return RegisterUser(user_id=name, handle=name.replace("-", "_"), display_name=name, email=f"{name}@example.org")

    await runtime.execute(user("author"))
    for start in range(0, FOLLOWERS, SETUP_BATCH):
        fans = [f"fan-{n}" for n in range(start, min(start + SETUP_BATCH, FOLLOWERS))]
        await asyncio.gather(*(runtime.execute(user(fan)) for fan in fans))
        await asyncio.gather(*(runtime.execute(Follow(follower_id=fan, followee_id="author")) for fan in fans))
    await runtime.catch_up()


async def _publish(runtime: Any, n: int) -> float:
    from examples.social.messages import Newsfeed, PublishPost

    started = time.perf_counter()
    published = await runtime.execute(PublishPost(post_id=f"post-{n}", author_id="author", text=f"post {n}"))
    for fan in ("fan-0", f"fan-{FOLLOWERS - 1}"):
        page = await runtime.query(Newsfeed(user_id=fan, limit=1), min_position=published.position, timeout=TIMEOUT)
        if [p.post_id for p in page.posts] != [f"post-{n}"]:
            raise RuntimeError(f"post-{n} is not at the top of {fan}'s newsfeed: {page}")
    return time.perf_counter() - started
