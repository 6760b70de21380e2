"""The social network as ``make run-cluster APP=social`` runs it: PostgreSQL, NATS, a process per part.

Its one service runs as a command API, a query API and a workers process (projections, relay),
so a post published through one process reaches followers' feeds read through another, and
forgetting a user there blanks their personal data in what the query process answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from examples.social import social as system
from twofold.cluster import Cluster
from twofold.http.gateway import create_gateway

pytestmark = pytest.mark.slow

SETTLE_WITHIN = 60.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("social-cluster")
    with Cluster("examples.social:social", system, folder, query_replicas=1) as running:
        yield running


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    app = create_gateway(system, cluster.upstreams())
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://s") as http:
        yield http


async def ok(client: httpx.AsyncClient, command: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/commands/{command}", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def eventually(client: httpx.AsyncClient, query: str, check: Any, **params: Any) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + SETTLE_WITHIN
    while True:
        response = await client.get(f"/queries/{query}", params=params)
        answer: dict[str, Any] = response.json() if response.status_code == 200 else {}
        if answer and check(answer):
            return answer
        assert asyncio.get_running_loop().time() < deadline, (query, params, response.text)
        await asyncio.sleep(0.1)


async def test_posts_reach_followers_feeds_and_a_forgotten_user_is_blanked(client: httpx.AsyncClient) -> None:
    for user in ("ann", "ben", "cat"):
        await ok(client, "RegisterUser", user_id=user, handle=user, display_name=user.title(), email=f"{user}@x.org")
    await ok(client, "Follow", follower_id="ben", followee_id="ann")
    await ok(client, "Follow", follower_id="cat", followee_id="ann")
    await ok(client, "PublishPost", post_id="p-1", author_id="ann", text="hello, cluster")
    await ok(client, "LikePost", post_id="p-1", user_id="ben")
    await ok(client, "LikePost", post_id="p-1", user_id="ben")  # twice: counts once

    for follower in ("ben", "cat"):
        feed = await eventually(client, "Newsfeed", lambda a: a["posts"], user_id=follower)
        assert [p["post_id"] for p in feed["posts"]] == ["p-1"]
    await eventually(client, "PostDetails", lambda a: a["post"]["likes"] == 1, post_id="p-1")

    await ok(client, "ForgetUser", user_id="ann")
    profile = await eventually(client, "Profile", lambda a: a["display_name"] != "Ann", user_id="ann")
    assert "Ann" not in str(profile)
    assert "ann@x.org" not in str(profile)
