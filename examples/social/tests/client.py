"""A client of the social network for its tests: commands, and queries that read their own writes."""

from __future__ import annotations

from typing import Any

import httpx

from twofold import Runtime


class Social:
    def __init__(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        self.client, self.runtime = client, runtime
        self.position = 0

    async def command(self, type_name: str, **body: Any) -> httpx.Response:
        response = await self.client.post(f"/commands/{type_name}", json=body)
        if response.status_code == 200 and response.json()["position"] is not None:
            self.position = max(self.position, response.json()["position"])
        return response

    async def ok(self, type_name: str, **body: Any) -> dict[str, Any]:
        response = await self.command(type_name, **body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def query(self, type_name: str, **params: Any) -> Any:
        """The answer once the read model has every write this client made."""
        headers = {"X-Min-Position": str(self.position)}
        response = await self.client.get(f"/queries/{type_name}", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def register(self, *user_ids: str) -> None:
        for user_id in user_ids:
            await self.ok(
                "RegisterUser",
                user_id=user_id,
                handle=user_id.replace("-", "_"),
                display_name=f"{user_id.title()} Person",
                email=f"{user_id}@example.org",
            )

    async def feed(self, user_id: str, **params: Any) -> list[str]:
        return [p["post_id"] for p in (await self.query("Newsfeed", user_id=user_id, **params))["posts"]]

    async def timeline(self, user_id: str, **params: Any) -> list[str]:
        return [p["post_id"] for p in (await self.query("Timeline", user_id=user_id, **params))["posts"]]

    async def post(self, post_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.query("PostDetails", post_id=post_id)
        return result
