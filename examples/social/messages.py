"""What the social network says and answers: its commands, events, queries and the views they return.

Display names, emails, and the text of posts and comments are personal to the user who wrote
them: stored encrypted under that user's key, they read as ``[forgotten]`` once the user is.
A handle is the public pseudonym, kept (and never handed out again) after its user is forgotten.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from twofold import Command, Event, Personal, Query

PAGE = 100

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
Handle = Annotated[str, Field(min_length=2, max_length=30, pattern=r"^[a-z0-9_]+$")]
Text = Annotated[str, Field(min_length=1, max_length=2000)]
Before = Annotated[int | None, Field(default=None, ge=1, description="The ``next`` of the previous page")]
Limit = Annotated[int, Field(default=20, ge=1, le=PAGE)]

# -- commands ------------------------------------------------------------------------------------


class RegisterUser(Command):
    user_id: Id
    handle: Handle
    display_name: Annotated[str, Field(min_length=1, max_length=100)]
    email: Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]


class Follow(Command):
    follower_id: Id
    followee_id: Id


class Unfollow(Command):
    follower_id: Id
    followee_id: Id


class PublishPost(Command):
    post_id: Id
    author_id: Id
    text: Text


class DeletePost(Command):
    post_id: Id
    author_id: Id


class CommentOnPost(Command):
    comment_id: Id
    post_id: Id
    author_id: Id
    text: Text


class LikePost(Command):
    post_id: Id
    user_id: Id


class UnlikePost(Command):
    post_id: Id
    user_id: Id


class ForgetUser(Command):
    """Erase a user's personal data: their key is destroyed, so every copy of it reads as forgotten."""

    user_id: Id


# -- events --------------------------------------------------------------------------------------


class UserRegistered(Event, name="social.UserRegistered"):
    user_id: str
    handle: str
    display_name: Annotated[str, Personal(subject="user_id")]
    email: Annotated[str, Personal(subject="user_id")]


class HandleClaimed(Event, name="social.HandleClaimed"):
    handle: str
    user_id: str


class UserForgotten(Event, name="social.UserForgotten"):
    user_id: str


class UserFollowed(Event, name="social.UserFollowed"):
    follower_id: str
    followee_id: str


class UserUnfollowed(Event, name="social.UserUnfollowed"):
    follower_id: str
    followee_id: str


class PostPublished(Event, name="social.PostPublished"):
    post_id: str
    author_id: str
    text: Annotated[str, Personal(subject="author_id")]


class PostDeleted(Event, name="social.PostDeleted"):
    post_id: str
    author_id: str


class CommentAdded(Event, name="social.CommentAdded"):
    comment_id: str
    post_id: str
    author_id: str
    text: Annotated[str, Personal(subject="author_id")]


class PostLiked(Event, name="social.PostLiked"):
    post_id: str
    user_id: str


class PostUnliked(Event, name="social.PostUnliked"):
    post_id: str
    user_id: str


# -- queries and views ---------------------------------------------------------------------------


class Profile(Query):
    user_id: Id


class Timeline(Query):
    """A user's own posts, newest first; page on with ``before``."""

    user_id: Id
    before: Before = None
    limit: Limit = 20


class Newsfeed(Query):
    """Posts of the people a user follows, published while they followed them, newest first."""

    user_id: Id
    before: Before = None
    limit: Limit = 20


class PostDetails(Query):
    post_id: Id


class TrendingPosts(Query):
    """The posts with most likes and comments within the hour before ``now`` (default: the present)."""

    now: datetime | None = None
    limit: Limit = 10


class ProfileView(BaseModel):
    user_id: str
    handle: str
    display_name: str
    followers: int
    following: int
    forgotten: bool


class PostView(BaseModel):
    post_id: str
    author_id: str
    handle: str
    display_name: str
    text: str
    published_at: str
    likes: int
    comments: int


class PostPage(BaseModel):
    posts: list[PostView]
    next: int | None = Field(description="Pass as ``before`` for the next page; none when this is the last")


class CommentView(BaseModel):
    comment_id: str
    author_id: str
    handle: str
    text: str


class PostWithComments(BaseModel):
    post: PostView
    comment_list: list[CommentView]


class TrendingPost(BaseModel):
    post: PostView
    activity: int = Field(description="Likes and comments within the hour")


class Trending(BaseModel):
    posts: list[TrendingPost]
