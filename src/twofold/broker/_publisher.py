"""Pipelined JetStream publishes: send many, then collect each one's acknowledgement or refusal.

nats-py's own ``publish_async`` loses the server's refusals (nats-io/nats.py#985: its reply
handler raises instead of failing the future, which then never completes), and a refusal such
as "wrong last sequence" is exactly what the relay must see at once. So this sends each message
with a reply subject of its own under one inbox subscription, and turns every reply into a
result: a ``PubAck``, or a :class:`PublishRefused` carrying JetStream's error code.
"""

from __future__ import annotations

import asyncio
import itertools
import json

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from twofold.errors import BrokerError

NO_RESPONDERS = "503"  # the status NATS answers with when no stream takes the subject


class PublishRefused(BrokerError):
    """JetStream answered a publish with an error (``err_code`` is JetStream's, e.g. 10071)."""

    def __init__(self, subject: str, code: int | None, err_code: int | None, description: str) -> None:
        self.subject, self.code, self.err_code, self.description = subject, code, err_code, description
        super().__init__(f"JetStream refused a message on {subject}: {description} (code {code}, error {err_code})")


class Publisher:
    """Publishes to JetStream on one connection; each ``publish`` returns a future of its ``PubAck``."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._inbox = client.new_inbox()
        self._tokens = itertools.count()
        self._waiting: dict[str, tuple[str, asyncio.Future[api.PubAck]]] = {}
        self._subscription: Subscription | None = None

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> asyncio.Future[api.PubAck]:
        """Send one message; the future completes with its acknowledgement or a :class:`PublishRefused`."""
        if self._subscription is None:
            self._subscription = await self._client.subscribe(f"{self._inbox}.*", cb=self._on_reply)
        token = str(next(self._tokens))
        future: asyncio.Future[api.PubAck] = asyncio.get_running_loop().create_future()
        self._waiting[token] = (subject, future)
        future.add_done_callback(lambda _: self._waiting.pop(token, None))  # cancelled ones too
        await self._client.publish(subject, payload, reply=f"{self._inbox}.{token}", headers=headers)
        return future

    async def _on_reply(self, msg: Msg) -> None:
        subject, future = self._waiting.get(msg.subject.rsplit(".", 1)[-1], ("", None))
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            future.set_exception(PublishRefused(subject, 503, None, "no stream takes this subject"))
            return
        try:
            answer = json.loads(msg.data)
            if "error" in answer:
                error = answer["error"]
                future.set_exception(
                    PublishRefused(subject, error.get("code"), error.get("err_code"), error.get("description", ""))
                )
            else:
                future.set_result(api.PubAck.from_response(answer))
        except (ValueError, TypeError, KeyError) as exc:
            future.set_exception(BrokerError(f"JetStream's answer to a publish on {subject} is unreadable: {exc}"))
