"""The social network: users who follow each other, posts, comments, likes, feeds and trends.

    network    profiles, timelines, newsfeeds (fan-out on write, merged on read for authors with
               very many followers), like and comment counts, and the posts trending this hour

Display names, emails and what users write are personal: stored encrypted under each user's
key, and unreadable everywhere once ``ForgetUser`` destroys it (docs/personal-data.md).

twofold serve examples.social:social       # embedded, one process (make run APP=social)
twofold cluster examples.social:social     # on PostgreSQL and NATS (make run-cluster APP=social)
"""

from examples.social.domain import (
    comment_on_post,
    delete_post,
    follow,
    forget_user,
    like_post,
    publish_post,
    register_user,
    unfollow,
    unlike_post,
)
from examples.social.messages import (
    CommentOnPost,
    DeletePost,
    Follow,
    ForgetUser,
    LikePost,
    Newsfeed,
    PostDetails,
    Profile,
    PublishPost,
    RegisterUser,
    Timeline,
    TrendingPosts,
    Unfollow,
    UnlikePost,
)
from examples.social.network import read_model
from twofold import Service, System

network = Service(
    "network",
    description="Users, follows, posts, comments and likes; timelines, newsfeeds and what is trending.",
    commands={
        RegisterUser: register_user,
        Follow: follow,
        Unfollow: unfollow,
        PublishPost: publish_post,
        DeletePost: delete_post,
        CommentOnPost: comment_on_post,
        LikePost: like_post,
        UnlikePost: unlike_post,
        ForgetUser: forget_user,
    },
    queries={
        Profile: read_model.profile,
        Timeline: read_model.timeline,
        Newsfeed: read_model.newsfeed,
        PostDetails: read_model.post_details,
        TrendingPosts: read_model.trending_posts,
    },
    projections=[read_model],
)

social = System(
    "social",
    [network],
    description="A social network: follows, posts, comments and likes, newsfeeds by fan-out on write, trends"
    " of the hour, and users forgotten by destroying their key.",
)

__all__ = ["network", "social"]
