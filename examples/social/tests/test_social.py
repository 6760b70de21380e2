"""The social network end to end, on SQLite and on PostgreSQL: follows, posts, likes, feeds, trends, forgetting."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from examples.social.network import read_model
from examples.social.tests.client import Social
from twofold import FORGOTTEN

# -- likes and comments --------------------------------------------------------------------------


async def test_liking_twice_counts_once_and_unliking_takes_it_back(social: Social) -> None:
    await social.register("ada", "bob", "cy")
    await social.ok("PublishPost", post_id="p-1", author_id="ada", text="Hello")

    await social.ok("LikePost", post_id="p-1", user_id="bob")
    await social.ok("LikePost", post_id="p-1", user_id="bob")
    await social.ok("LikePost", post_id="p-1", user_id="cy")
    assert (await social.post("p-1"))["post"]["likes"] == 2

    await social.ok("UnlikePost", post_id="p-1", user_id="bob")
    await social.ok("UnlikePost", post_id="p-1", user_id="bob")
    assert (await social.post("p-1"))["post"]["likes"] == 1


async def test_comments_are_listed_in_order_and_counted(social: Social) -> None:
    await social.register("ada", "bob")
    await social.ok("PublishPost", post_id="p-1", author_id="ada", text="Hello")
    await social.ok("CommentOnPost", comment_id="c-1", post_id="p-1", author_id="bob", text="Hi Ada")
    await social.ok("CommentOnPost", comment_id="c-2", post_id="p-1", author_id="ada", text="Hi Bob")

    details = await social.post("p-1")

    assert details["post"]["comments"] == 2
    assert [(c["handle"], c["text"]) for c in details["comment_list"]] == [("bob", "Hi Ada"), ("ada", "Hi Bob")]


# -- timelines and newsfeeds ---------------------------------------------------------------------


async def test_a_timeline_pages_a_users_own_posts_newest_first(social: Social) -> None:
    await social.register("ada")
    for n in range(5):
        await social.ok("PublishPost", post_id=f"p-{n}", author_id="ada", text=f"post {n}")

    first = await social.query("Timeline", user_id="ada", limit=2)
    second = await social.query("Timeline", user_id="ada", limit=2, before=first["next"])
    last = await social.query("Timeline", user_id="ada", limit=2, before=second["next"])

    pages = [[p["post_id"] for p in page["posts"]] for page in (first, second, last)]
    assert pages == [["p-4", "p-3"], ["p-2", "p-1"], ["p-0"]]
    assert last["next"] is None


async def test_a_newsfeed_shows_the_followed_and_unfollowing_removes_only_later_posts(social: Social) -> None:
    await social.register("ada", "bob", "cy")
    await social.ok("Follow", follower_id="cy", followee_id="ada")
    await social.ok("Follow", follower_id="cy", followee_id="bob")
    await social.ok("PublishPost", post_id="a-1", author_id="ada", text="from ada")
    await social.ok("PublishPost", post_id="b-1", author_id="bob", text="from bob")
    await social.ok("PublishPost", post_id="c-1", author_id="cy", text="from cy")  # one's own: not in one's feed
    assert await social.feed("cy") == ["b-1", "a-1"]

    await social.ok("Unfollow", follower_id="cy", followee_id="ada")
    await social.ok("PublishPost", post_id="a-2", author_id="ada", text="after the unfollow")

    assert await social.feed("cy") == ["b-1", "a-1"]
    assert (await social.query("Profile", user_id="ada"))["followers"] == 0


@pytest.mark.parametrize("limit", [0, 1])
async def test_authors_past_the_fanout_limit_are_merged_in_as_full_fanout_would_show_them(
    social: Social, limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    await social.register("star", "ada", "bob", "cy")
    for fan in ("ada", "bob", "cy"):
        await social.ok("Follow", follower_id=fan, followee_id="star")
    await social.ok("Follow", follower_id="bob", followee_id="ada")
    await social.ok("PublishPost", post_id="s-1", author_id="star", text="one")
    await social.ok("PublishPost", post_id="a-1", author_id="ada", text="two")
    await social.ok("Unfollow", follower_id="cy", followee_id="star")
    await social.ok("PublishPost", post_id="s-2", author_id="star", text="three")
    await social.ok("Follow", follower_id="cy", followee_id="star")
    await social.ok("PublishPost", post_id="s-3", author_id="star", text="four")
    fanned_out = {fan: await social.feed(fan) for fan in ("ada", "bob", "cy")}
    pages = await _pages_of(social, "bob")

    monkeypatch.setattr(read_model, "fanout_limit", limit)
    await social.runtime.rebuild("social.network")

    assert {fan: await social.feed(fan) for fan in ("ada", "bob", "cy")} == fanned_out
    assert fanned_out == {"ada": ["s-3", "s-2", "s-1"], "bob": ["s-3", "s-2", "a-1", "s-1"], "cy": ["s-3", "s-1"]}
    assert await _pages_of(social, "bob") == pages == [["s-3", "s-2"], ["a-1", "s-1"]]


async def _pages_of(social: Social, user_id: str) -> list[list[str]]:
    first = await social.query("Newsfeed", user_id=user_id, limit=2)
    second = await social.query("Newsfeed", user_id=user_id, limit=2, before=first["next"])
    return [[p["post_id"] for p in page["posts"]] for page in (first, second)]


# -- deleting ------------------------------------------------------------------------------------


async def test_a_deleted_post_is_gone_from_feeds_timelines_counts_and_trends(social: Social) -> None:
    await social.register("ada", "bob")
    await social.ok("Follow", follower_id="bob", followee_id="ada")
    await social.ok("PublishPost", post_id="p-1", author_id="ada", text="regrettable")
    await social.ok("PublishPost", post_id="p-2", author_id="ada", text="fine")
    await social.ok("LikePost", post_id="p-1", user_id="bob")
    await social.ok("CommentOnPost", comment_id="c-1", post_id="p-1", author_id="bob", text="hm")
    assert [p["post"]["post_id"] for p in (await social.query("TrendingPosts"))["posts"]] == ["p-1"]

    refused = await social.command("DeletePost", post_id="p-1", author_id="bob")
    await social.ok("DeletePost", post_id="p-1", author_id="ada")

    assert refused.status_code == 409
    assert await social.feed("bob") == ["p-2"]
    assert await social.timeline("ada") == ["p-2"]
    assert (await social.query("TrendingPosts"))["posts"] == []
    gone = await social.client.get("/queries/PostDetails", params={"post_id": "p-1"})
    assert gone.status_code == 404
    assert (await social.command("LikePost", post_id="p-1", user_id="bob")).status_code == 409


# -- trending ------------------------------------------------------------------------------------


async def test_trending_ranks_the_last_hours_likes_and_comments_and_forgets_older_ones(social: Social) -> None:
    await social.register("ada", "bob", "cy")
    await social.ok("PublishPost", post_id="p-1", author_id="ada", text="one")
    await social.ok("PublishPost", post_id="p-2", author_id="ada", text="two")
    await social.ok("LikePost", post_id="p-1", user_id="bob")
    for liker in ("bob", "cy"):
        await social.ok("LikePost", post_id="p-2", user_id=liker)
    await social.ok("CommentOnPost", comment_id="c-1", post_id="p-2", author_id="cy", text="!")

    now = datetime.now(UTC)
    trending = await social.query("TrendingPosts")
    later = await social.query("TrendingPosts", now=(now + timedelta(hours=1, minutes=1)).isoformat())

    assert [(t["post"]["post_id"], t["activity"]) for t in trending["posts"]] == [("p-2", 3), ("p-1", 1)]
    assert later["posts"] == []


# -- forgetting ----------------------------------------------------------------------------------


async def test_forgetting_a_user_blanks_their_personal_data_everywhere_and_keeps_the_counts(social: Social) -> None:
    await social.register("ada", "bob")
    await social.ok("Follow", follower_id="ada", followee_id="bob")
    await social.ok("Follow", follower_id="bob", followee_id="ada")
    await social.ok("PublishPost", post_id="a-1", author_id="ada", text="Ada's secret thoughts")
    await social.ok("PublishPost", post_id="b-1", author_id="bob", text="Bob's post")
    await social.ok("LikePost", post_id="b-1", user_id="ada")
    await social.ok("CommentOnPost", comment_id="c-1", post_id="b-1", author_id="ada", text="Ada's comment")

    await social.ok("ForgetUser", user_id="ada")
    await social.ok("ForgetUser", user_id="ada")  # forgetting twice changes nothing more

    await _assert_ada_is_forgotten(social)
    await social.runtime.rebuild("social.network")
    await _assert_ada_is_forgotten(social)
    assert (await social.command("PublishPost", post_id="a-2", author_id="ada", text="back")).status_code == 409


async def _assert_ada_is_forgotten(social: Social) -> None:
    ada, bob = await social.query("Profile", user_id="ada"), await social.query("Profile", user_id="bob")
    assert (ada["display_name"], ada["forgotten"], ada["following"], ada["followers"]) == (FORGOTTEN, True, 1, 1)
    assert (bob["display_name"], bob["followers"]) == ("Bob Person", 1)
    post = (await social.query("Timeline", user_id="ada"))["posts"][0]
    assert (post["text"], post["display_name"]) == (FORGOTTEN, FORGOTTEN)
    details = await social.post("b-1")
    assert (details["post"]["likes"], details["post"]["comments"]) == (1, 1)
    assert [c["text"] for c in details["comment_list"]] == [FORGOTTEN]
    assert [p["text"] for p in (await social.query("Newsfeed", user_id="bob"))["posts"]] == [FORGOTTEN]
    assert social.runtime.store is not None
    stored = json.dumps([r.data async for r in social.runtime.store.read_all()])
    assert "Ada Person" not in stored
    assert "ada@example.org" not in stored
    assert "Ada's" not in stored
    assert "Bob Person" not in stored  # sealed too, though still readable with bob's key


# -- refusals ------------------------------------------------------------------------------------


async def test_the_rules_refuse_what_makes_no_sense(social: Social) -> None:
    await social.register("ada")

    taken = await social.command(
        "RegisterUser", user_id="ada2", handle="ada", display_name="Another", email="a@example.org"
    )
    self_follow = await social.command("Follow", follower_id="ada", followee_id="ada")
    stranger = await social.command("PublishPost", post_id="p-1", author_id="nobody", text="hi")

    assert (taken.status_code, taken.json()["detail"]) == (409, "The handle ada is taken")
    assert (self_follow.status_code, self_follow.json()["detail"]) == (409, "User ada cannot follow themselves")
    assert (stranger.status_code, stranger.json()["detail"]) == (409, "Unknown user nobody")
