"""The social network's rules: users, handles, follows, posts, comments and likes, and their handlers.

Each relation that must hold once lives in a stream of its own, so that deciding it never
replays a crowd: a follow is ``follow-<follower>:<followee>``, a like ``like-<post>:<user>``
(liking twice finds it liked and changes nothing), a handle ``handle-<handle>``.
"""

from __future__ import annotations

from examples.social.messages import (
    CommentAdded,
    CommentOnPost,
    DeletePost,
    Follow,
    ForgetUser,
    HandleClaimed,
    LikePost,
    PostDeleted,
    PostLiked,
    PostPublished,
    PostUnliked,
    PublishPost,
    RegisterUser,
    Unfollow,
    UnlikePost,
    UserFollowed,
    UserForgotten,
    UserRegistered,
    UserUnfollowed,
)
from twofold import Aggregate, DomainError, UnitOfWork


class User(Aggregate, category="user"):
    """One user. Personal fields stay in the events: the state keeps only what decisions need."""

    forgotten: bool = False

    def active(self) -> User:
        """This user, if they may act; otherwise a refusal."""
        if not self.exists:
            raise DomainError(f"Unknown user {self.id}")
        if self.forgotten:
            raise DomainError(f"User {self.id} has been forgotten")
        return self

    def evolve(self, event: UserRegistered | UserForgotten) -> User:
        match event:
            case UserRegistered():
                return self
            case UserForgotten():
                return self.model_copy(update={"forgotten": True})


class HandleOwner(Aggregate, category="handle"):
    """Who holds a handle. ``id`` is the handle."""

    user_id: str | None = None

    def evolve(self, event: HandleClaimed) -> HandleOwner:
        return self.model_copy(update={"user_id": event.user_id})


class Following(Aggregate, category="follow"):
    """Whether one user follows another. ``id`` is ``<follower>:<followee>``."""

    active: bool = False

    def evolve(self, event: UserFollowed | UserUnfollowed) -> Following:
        return self.model_copy(update={"active": isinstance(event, UserFollowed)})


class Post(Aggregate, category="post"):
    author_id: str = ""
    deleted: bool = False

    def open(self) -> Post:
        """This post, if it can still be liked or commented on; otherwise a refusal."""
        if not self.exists or self.deleted:
            raise DomainError(f"No post {self.id}")
        return self

    def evolve(self, event: PostPublished | PostDeleted) -> Post:
        match event:
            case PostPublished():
                return self.model_copy(update={"author_id": event.author_id})
            case PostDeleted():
                return self.model_copy(update={"deleted": True})


class Comment(Aggregate, category="comment"):
    def evolve(self, event: CommentAdded) -> Comment:
        return self


class Like(Aggregate, category="like"):
    """Whether a user likes a post. ``id`` is ``<post>:<user>``."""

    liked: bool = False

    def evolve(self, event: PostLiked | PostUnliked) -> Like:
        return self.model_copy(update={"liked": isinstance(event, PostLiked)})


# -- handlers ------------------------------------------------------------------------------------


async def register_user(command: RegisterUser, uow: UnitOfWork) -> None:
    user = await uow.load(User, command.user_id)
    if user.exists:
        raise DomainError(f"User {command.user_id} already exists")
    handle = await uow.load(HandleOwner, command.handle)
    if handle.user_id is not None:
        raise DomainError(f"The handle {command.handle} is taken")
    uow.emit(handle, HandleClaimed(handle=command.handle, user_id=command.user_id))
    uow.emit(
        user,
        UserRegistered(
            user_id=command.user_id, handle=command.handle, display_name=command.display_name, email=command.email
        ),
    )


async def follow(command: Follow, uow: UnitOfWork) -> None:
    if command.follower_id == command.followee_id:
        raise DomainError(f"User {command.follower_id} cannot follow themselves")
    (await uow.load(User, command.follower_id)).active()
    (await uow.load(User, command.followee_id)).active()
    following = await uow.load(Following, f"{command.follower_id}:{command.followee_id}")
    if not following.active:
        uow.emit(following, UserFollowed(follower_id=command.follower_id, followee_id=command.followee_id))


async def unfollow(command: Unfollow, uow: UnitOfWork) -> None:
    following = await uow.load(Following, f"{command.follower_id}:{command.followee_id}")
    if following.active:
        uow.emit(following, UserUnfollowed(follower_id=command.follower_id, followee_id=command.followee_id))


async def publish_post(command: PublishPost, uow: UnitOfWork) -> None:
    (await uow.load(User, command.author_id)).active()
    post = await uow.load(Post, command.post_id)
    if post.exists:
        raise DomainError(f"Post {command.post_id} already exists")
    uow.emit(post, PostPublished(post_id=command.post_id, author_id=command.author_id, text=command.text))


async def delete_post(command: DeletePost, uow: UnitOfWork) -> None:
    post = await uow.load(Post, command.post_id)
    if post.exists and post.author_id != command.author_id:
        raise DomainError(f"Post {command.post_id} is not {command.author_id}'s to delete")
    if not post.open().deleted:
        uow.emit(post, PostDeleted(post_id=post.id, author_id=post.author_id))


async def comment_on_post(command: CommentOnPost, uow: UnitOfWork) -> None:
    (await uow.load(User, command.author_id)).active()
    (await uow.load(Post, command.post_id)).open()
    comment = await uow.load(Comment, command.comment_id)
    if comment.exists:
        raise DomainError(f"Comment {command.comment_id} already exists")
    uow.emit(
        comment,
        CommentAdded(
            comment_id=command.comment_id, post_id=command.post_id, author_id=command.author_id, text=command.text
        ),
    )


async def like_post(command: LikePost, uow: UnitOfWork) -> None:
    (await uow.load(User, command.user_id)).active()
    (await uow.load(Post, command.post_id)).open()
    like = await uow.load(Like, f"{command.post_id}:{command.user_id}")
    if not like.liked:  # liked already: a second like counts for nothing
        uow.emit(like, PostLiked(post_id=command.post_id, user_id=command.user_id))


async def unlike_post(command: UnlikePost, uow: UnitOfWork) -> None:
    (await uow.load(Post, command.post_id)).open()
    like = await uow.load(Like, f"{command.post_id}:{command.user_id}")
    if like.liked:
        uow.emit(like, PostUnliked(post_id=command.post_id, user_id=command.user_id))


async def forget_user(command: ForgetUser, uow: UnitOfWork) -> None:
    user = await uow.load(User, command.user_id)
    if not user.exists:
        raise DomainError(f"Unknown user {command.user_id}")
    if user.forgotten:
        return  # forgotten already: the key is gone, nothing is left to do
    uow.forget(user.id)
    uow.emit(user, UserForgotten(user_id=user.id))
