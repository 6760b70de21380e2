"""Like counts are exact whatever runs at once (Hypothesis).

Rounds of likes and unlikes run concurrently, each sent up to three times at once (a client
retrying, a double tap). Within a round each user touches a post once, so the round's outcome is
known whatever order its commands commit in: afterwards every post's count is the number of
users whose last word on it was a like, and the stored events never say "liked" twice in a row.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import defaultdict
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.social import network
from examples.social.messages import LikePost, PostDetails, PublishPost, RegisterUser, UnlikePost
from twofold import Runtime
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store.memory import MemoryEventStore

POSTS = ("p-1", "p-2")
USERS = ("ada", "bob", "cy")
Step = tuple[str, str, bool, int]  # post, user, like (else unlike), times sent at once
steps = st.tuples(st.sampled_from(POSTS), st.sampled_from(USERS), st.booleans(), st.integers(1, 3))
rounds = st.lists(st.lists(steps, max_size=6), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds=rounds)
def test_a_posts_like_count_is_the_users_whose_last_word_was_a_like(rounds: list[list[Step]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(run(rounds, Path(folder)))


async def run(rounds: list[list[Step]], folder: Path) -> None:
    store = MemoryEventStore()
    async with Runtime(network, store=store, read_store=SQLiteReadStore(folder / "read.db")) as runtime:
        for user in USERS:
            await runtime.execute(RegisterUser(user_id=user, handle=user, display_name=user, email=f"{user}@x.org"))
        for post in POSTS:
            await runtime.execute(PublishPost(post_id=post, author_id="ada", text=post))
        liked: dict[tuple[str, str], bool] = {}
        for steps in rounds:
            once = {(post, user): (like, times) for post, user, like, times in reversed(steps)}
            await asyncio.gather(*(send(runtime, pair, like, times) for pair, (like, times) in once.items()))
            liked |= {pair: like for pair, (like, _) in once.items()}
        await runtime.catch_up()
        for post in POSTS:
            details = await runtime.query(PostDetails(post_id=post))
            assert details.post.likes == sum(liked.get((post, user), False) for user in USERS)
        await assert_likes_alternate(store)


async def send(runtime: Runtime, pair: tuple[str, str], like: bool, times: int) -> None:
    post, user = pair
    command = LikePost(post_id=post, user_id=user) if like else UnlikePost(post_id=post, user_id=user)
    await asyncio.gather(*(runtime.execute(command) for _ in range(times)))


async def assert_likes_alternate(store: MemoryEventStore) -> None:
    last: dict[str, str] = defaultdict(lambda: "social.PostUnliked")
    async for record in store.read_all(categories=["like"]):
        assert record.type != last[record.stream_id], f"{record.stream_id}: {record.type} twice in a row"
        last[record.stream_id] = record.type
