"""The social network's read model: profiles, timelines, newsfeeds, counts and what is trending.

Newsfeeds are built by fan-out on write: when a post is published, a row goes into the feed of
each of its author's followers, so reading a feed is one indexed range. An author with more than
``fanout_limit`` followers (``SOCIAL_FANOUT_LIMIT``, 1000 by default) is not fanned out — one post
would write thousands of rows — and the newsfeed merges such authors' posts in as it is read,
from their timelines and the periods each reader followed them. Either way a feed holds the posts
published while its reader followed their author, so the answer does not depend on the limit.

Every time comes from the events (``recorded_at``), so a rebuild gives the same model, trending
included. ``UserForgotten`` blanks the user's display name and the text of their posts and
comments at once; the counts their likes and follows made stay.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from examples.social.messages import (
    CommentAdded,
    CommentView,
    Newsfeed,
    PostDeleted,
    PostDetails,
    PostLiked,
    PostPage,
    PostPublished,
    PostUnliked,
    PostView,
    PostWithComments,
    Profile,
    ProfileView,
    Timeline,
    Trending,
    TrendingPost,
    TrendingPosts,
    UserFollowed,
    UserForgotten,
    UserRegistered,
    UserUnfollowed,
)
from twofold import FORGOTTEN, Database, NotFound, Projection, StoredEvent

TRENDING_WINDOW = timedelta(hours=1)
NEWEST = 2**62  # a position past every event: the first page starts below it

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS users (user_id TEXT PRIMARY KEY, handle TEXT NOT NULL, display_name TEXT NOT NULL,"
    " followers INTEGER NOT NULL, following INTEGER NOT NULL, forgotten INTEGER NOT NULL)",
    # A follow's history, not only its present: a feed shows what was published while one followed.
    "CREATE TABLE IF NOT EXISTS follow_periods (follower_id TEXT NOT NULL, followee_id TEXT NOT NULL,"
    " started BIGINT NOT NULL, ended BIGINT, PRIMARY KEY (follower_id, followee_id, started))",
    "CREATE INDEX IF NOT EXISTS follow_periods_by_followee ON follow_periods (followee_id, ended)",
    "CREATE TABLE IF NOT EXISTS posts (position BIGINT PRIMARY KEY, post_id TEXT NOT NULL UNIQUE,"
    " author_id TEXT NOT NULL, text TEXT NOT NULL, published_at TEXT NOT NULL, likes INTEGER NOT NULL,"
    " comments INTEGER NOT NULL, fanned_out INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS posts_by_author ON posts (author_id, fanned_out, position)",
    "CREATE TABLE IF NOT EXISTS feed_rows (user_id TEXT NOT NULL, position BIGINT NOT NULL,"
    " PRIMARY KEY (user_id, position))",
    "CREATE INDEX IF NOT EXISTS feed_rows_by_post ON feed_rows (position)",
    "CREATE TABLE IF NOT EXISTS comments (position BIGINT PRIMARY KEY, comment_id TEXT NOT NULL UNIQUE,"
    " post_id TEXT NOT NULL, author_id TEXT NOT NULL, text TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS comments_by_post ON comments (post_id, position)",
    # One row per like or comment, at its event's time; trending counts those within the window.
    "CREATE TABLE IF NOT EXISTS activity (post_id TEXT NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL,"
    " at TEXT NOT NULL, PRIMARY KEY (post_id, kind, actor))",
    "CREATE INDEX IF NOT EXISTS activity_by_time ON activity (at)",
)

POST_COLUMNS = (
    "p.post_id, p.author_id, u.handle, u.display_name, p.text, p.published_at, p.likes, p.comments, p.position"
)
FAN_OUT = (
    "INSERT INTO feed_rows (user_id, position)"
    " SELECT follower_id, ? FROM follow_periods WHERE followee_id = ? AND ended IS NULL"
)
TIMELINE = f"""
SELECT {POST_COLUMNS} FROM posts p JOIN users u ON u.user_id = p.author_id
WHERE p.author_id = ? AND p.position < ? ORDER BY p.position DESC LIMIT ?
"""
# The fanned-out rows, and the posts of authors too followed to fan out, each within a period
# the reader followed its author: the same posts full fan-out would have written.
NEWSFEED = f"""
WITH entries AS (
    SELECT position FROM feed_rows WHERE user_id = ? AND position < ?
    UNION ALL
    SELECT p.position FROM follow_periods f JOIN posts p ON p.author_id = f.followee_id AND p.fanned_out = 0
    WHERE f.follower_id = ? AND p.position > f.started AND (f.ended IS NULL OR p.position < f.ended)
      AND p.position < ?
)
SELECT {POST_COLUMNS} FROM entries e JOIN posts p ON p.position = e.position JOIN users u ON u.user_id = p.author_id
ORDER BY p.position DESC LIMIT ?
"""
POST = f"SELECT {POST_COLUMNS} FROM posts p JOIN users u ON u.user_id = p.author_id WHERE p.post_id = ?"
COMMENTS = """
SELECT c.comment_id, c.author_id, u.handle, c.text FROM comments c JOIN users u ON u.user_id = c.author_id
WHERE c.post_id = ? ORDER BY c.position
"""
TRENDING = f"""
WITH counted AS (SELECT post_id, count(*) AS activity FROM activity WHERE at > ? AND at <= ? GROUP BY post_id)
SELECT {POST_COLUMNS}, c.activity FROM counted c JOIN posts p ON p.post_id = c.post_id
JOIN users u ON u.user_id = p.author_id ORDER BY c.activity DESC, p.position DESC LIMIT ?
"""


class Network(Projection, name="social.network"):
    """Profiles, posts with their counts, follow periods, feed rows and recent activity.

    Args:
        fanout_limit: the most followers an author's posts are fanned out to; past it, their
            posts are merged into newsfeeds as they are read.
    """

    tables = ("users", "follow_periods", "posts", "feed_rows", "comments", "activity")

    def __init__(self, fanout_limit: int = 1000) -> None:
        self.fanout_limit = fanout_limit

    def setup(self, db: Database) -> None:
        for statement in SCHEMA:
            db.execute(statement)

    def apply(
        self,
        event: UserRegistered
        | UserForgotten
        | UserFollowed
        | UserUnfollowed
        | PostPublished
        | PostDeleted
        | CommentAdded
        | PostLiked
        | PostUnliked,
        db: Database,
        record: StoredEvent,
    ) -> None:
        match event:
            case UserRegistered() | UserForgotten():
                _apply_user(event, db)
            case UserFollowed() | UserUnfollowed():
                _apply_follow(event, db, record.position)
            case PostPublished():
                self._publish(event, db, record)
            case PostDeleted():
                _delete(event, db)
            case CommentAdded() | PostLiked() | PostUnliked():
                _apply_activity(event, db, record)

    def _publish(self, event: PostPublished, db: Database, record: StoredEvent) -> None:
        author = db.fetch_one("SELECT followers FROM users WHERE user_id = ?", (event.author_id,))
        fan_out = author is not None and author["followers"] <= self.fanout_limit
        db.execute(
            "INSERT INTO posts (position, post_id, author_id, text, published_at, likes, comments, fanned_out)"
            " VALUES (?, ?, ?, ?, ?, 0, 0, ?)",
            (record.position, event.post_id, event.author_id, event.text, timestamp(record.recorded_at), int(fan_out)),
        )
        if fan_out:
            db.execute(FAN_OUT, (record.position, event.author_id))

    # -- queries ---------------------------------------------------------------------------------

    def profile(self, query: Profile, db: Database) -> ProfileView:
        row = db.fetch_one("SELECT * FROM users WHERE user_id = ?", (query.user_id,))
        if row is None:
            raise NotFound(f"No user {query.user_id}")
        return ProfileView(**{**row, "forgotten": bool(row["forgotten"])})

    def timeline(self, query: Timeline, db: Database) -> PostPage:
        rows = db.fetch_all(TIMELINE, (query.user_id, query.before or NEWEST, query.limit + 1))
        return _page(rows, query.limit)

    def newsfeed(self, query: Newsfeed, db: Database) -> PostPage:
        before = query.before or NEWEST
        rows = db.fetch_all(NEWSFEED, (query.user_id, before, query.user_id, before, query.limit + 1))
        return _page(rows, query.limit)

    def post_details(self, query: PostDetails, db: Database) -> PostWithComments:
        row = db.fetch_one(POST, (query.post_id,))
        if row is None:
            raise NotFound(f"No post {query.post_id}")
        comments = [CommentView(**c) for c in db.fetch_all(COMMENTS, (query.post_id,))]
        return PostWithComments(post=_post(row), comment_list=comments)

    def trending_posts(self, query: TrendingPosts, db: Database) -> Trending:
        now = query.now or datetime.now(UTC)
        rows = db.fetch_all(TRENDING, (timestamp(now - TRENDING_WINDOW), timestamp(now), query.limit))
        return Trending(posts=[TrendingPost(post=_post(row), activity=row["activity"]) for row in rows])


def _apply_user(event: UserRegistered | UserForgotten, db: Database) -> None:
    if isinstance(event, UserRegistered):
        db.execute(
            "INSERT INTO users (user_id, handle, display_name, followers, following, forgotten)"
            " VALUES (?, ?, ?, 0, 0, 0)",
            (event.user_id, event.handle, event.display_name),
        )
        return
    # The key is gone, so a rebuild reads these as forgotten too; this blanks the copies made before.
    db.execute("UPDATE users SET display_name = ?, forgotten = 1 WHERE user_id = ?", (FORGOTTEN, event.user_id))
    db.execute("UPDATE posts SET text = ? WHERE author_id = ?", (FORGOTTEN, event.user_id))
    db.execute("UPDATE comments SET text = ? WHERE author_id = ?", (FORGOTTEN, event.user_id))


def _apply_follow(event: UserFollowed | UserUnfollowed, db: Database, position: int) -> None:
    step = 1 if isinstance(event, UserFollowed) else -1
    if isinstance(event, UserFollowed):
        db.execute(
            "INSERT INTO follow_periods (follower_id, followee_id, started) VALUES (?, ?, ?)",
            (event.follower_id, event.followee_id, position),
        )
    else:
        db.execute(
            "UPDATE follow_periods SET ended = ? WHERE follower_id = ? AND followee_id = ? AND ended IS NULL",
            (position, event.follower_id, event.followee_id),
        )
    db.execute("UPDATE users SET followers = followers + ? WHERE user_id = ?", (step, event.followee_id))
    db.execute("UPDATE users SET following = following + ? WHERE user_id = ?", (step, event.follower_id))


def _delete(event: PostDeleted, db: Database) -> None:
    """The post leaves every feed, timeline, count and trend at once."""
    post = db.fetch_one("SELECT position FROM posts WHERE post_id = ?", (event.post_id,))
    if post is None:
        return
    db.execute("DELETE FROM feed_rows WHERE position = ?", (post["position"],))
    db.execute("DELETE FROM comments WHERE post_id = ?", (event.post_id,))
    db.execute("DELETE FROM activity WHERE post_id = ?", (event.post_id,))
    db.execute("DELETE FROM posts WHERE post_id = ?", (event.post_id,))


def _apply_activity(event: CommentAdded | PostLiked | PostUnliked, db: Database, record: StoredEvent) -> None:
    at = record.recorded_at
    if db.fetch_one("SELECT 1 AS found FROM posts WHERE post_id = ?", (event.post_id,)) is None:
        return  # a like or comment that raced the post's deletion: nothing left to count it on
    match event:
        case CommentAdded():
            db.execute(
                "INSERT INTO comments (position, comment_id, post_id, author_id, text) VALUES (?, ?, ?, ?, ?)",
                (record.position, event.comment_id, event.post_id, event.author_id, event.text),
            )
            db.execute("UPDATE posts SET comments = comments + 1 WHERE post_id = ?", (event.post_id,))
            _record_activity(db, event.post_id, "comment", event.comment_id, at)
        case PostLiked():
            db.execute("UPDATE posts SET likes = likes + 1 WHERE post_id = ?", (event.post_id,))
            _record_activity(db, event.post_id, "like", event.user_id, at)
        case PostUnliked():
            db.execute("UPDATE posts SET likes = likes - 1 WHERE post_id = ?", (event.post_id,))
            db.execute(
                "DELETE FROM activity WHERE post_id = ? AND kind = 'like' AND actor = ?", (event.post_id, event.user_id)
            )


def _record_activity(db: Database, post_id: str, kind: str, actor: str, at: datetime) -> None:
    db.execute(
        "INSERT INTO activity (post_id, kind, actor, at) VALUES (?, ?, ?, ?)", (post_id, kind, actor, timestamp(at))
    )
    # Activity older than the window never trends again; dropping it by the event's own time
    # keeps the table small and a rebuild identical.
    db.execute("DELETE FROM activity WHERE at < ?", (timestamp(at - TRENDING_WINDOW),))


def _page(rows: list[dict[str, Any]], limit: int) -> PostPage:
    page, more = rows[:limit], len(rows) > limit
    return PostPage(posts=[_post(row) for row in page], next=page[-1]["position"] if more else None)


def _post(row: dict[str, Any]) -> PostView:
    return PostView(**{k: v for k, v in row.items() if k in PostView.model_fields})


def timestamp(moment: datetime) -> str:
    """UTC to the microsecond, one fixed width, so times sort as text the same on both backends."""
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


read_model = Network(fanout_limit=int(os.environ.get("SOCIAL_FANOUT_LIMIT", "1000")))
