"""The notification webhook (HANDOFF_WEBHOOK_URL): one POST per delivery of a handoff notice.

httpx, as the other low-volume calls (Google's keys): a notice goes out when a conversation
changes mode, a few times a day, not on every message. Redirects are not followed (a signed
body is for the URL configured, nowhere else). Errors never name the URL: a Slack or n8n
webhook URL is a credential in itself.
"""

from __future__ import annotations

import httpx

from pyloto_corp.application.ports import TransientStepError


class HttpWebhookPoster:
    """WebhookPoster on httpx, to one URL."""

    def __init__(self, url: str, timeout_seconds: float, client: httpx.AsyncClient | None = None):
        self.url = url
        self.client = client or httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=False)

    def __repr__(self) -> str:
        return "HttpWebhookPoster(url=<HANDOFF_WEBHOOK_URL>)"

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        """The answer's status; TransientStepError (its type only) when none came."""
        try:
            response = await self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise TransientStepError(f"notification webhook: {type(error).__name__}") from None
        return response.status_code

    async def close(self) -> None:
        """Close the connections."""
        await self.client.aclose()
