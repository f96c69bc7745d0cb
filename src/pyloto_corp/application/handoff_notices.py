"""Tell a person that a conversation changed mode: a signed webhook, sent through the queue.

A notice travels as a task of its own (`state` NOTIFY_STATE on the outbound queue) whose
`message_id` is the notice itself, written out (`HandoffNotice.key`): the task needs no
record, any instance can deliver it, and the queue's dedupe (the local lane's pending set,
Cloud Tasks' task name) keeps one task per notice. Its delivery POSTs the notice's JSON to
HANDOFF_WEBHOOK_URL, signed with HANDOFF_WEBHOOK_SECRET; the queue retries timeouts, 408,
429 and 5xx with its backoff, and the last attempt gives up (logged and counted). A notice
holds no personal data by construction: the conversation is a keyed hash, the rest tokens,
numbers and a time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol

from pyloto_corp.application.ports import Task, TaskQueue, TransientStepError
from pyloto_corp.application.queues import OUTBOUND
from pyloto_corp.observability.instruments import Telemetry

log = logging.getLogger(__name__)

# The task `state` of a notice's delivery: no record state, so the advancer never sees it.
NOTIFY_STATE = "notify_handoff"
NOTICE_TYPE = "pyloto.conversation.mode_changed"
SIGNATURE_HEADER = "X-Pyloto-Signature-256"
MODES = frozenset({"bot", "waiting_human", "human"})
_KEY_PREFIX = "handoff"
# 16 hex digits at least: longer than any phone number (E.164 has 15 digits at most).
_CONVERSATION = re.compile(r"[0-9a-f]{16,128}")
_REASON = re.compile(r"[a-z][a-z0-9_]{0,39}")
# Statuses a later attempt may turn into a success; any other non-2xx is final.
_RETRIED_STATUSES = frozenset({408, 429})


class InvalidNotice(ValueError):
    """A notice, or a task key, that is not one pyloto writes."""


@dataclass(frozen=True)
class HandoffNotice:
    """A conversation moved from `previous_mode` to `mode` at `at` (Unix seconds, kept to
    the millisecond) because of `reason`, its `version`-th change.

    `conversation` is the conversation's opaque id (a keyed hash, lowercase hex), `reason`
    a short token (`keyword`, `llm_handoff`, `operator_takeover`, `agent_reply`,
    `business_app_echo`, `agent_release`, `idle_timeout`, `customer_keyword`, ...).
    """

    conversation: str
    mode: str
    previous_mode: str
    reason: str
    at: float
    version: int

    def __post_init__(self) -> None:
        if not _CONVERSATION.fullmatch(self.conversation):
            raise InvalidNotice("conversation is not an opaque hex id")
        if self.mode not in MODES or self.previous_mode not in MODES:
            raise InvalidNotice(f"modes are {sorted(MODES)}")
        if not _REASON.fullmatch(self.reason):
            raise InvalidNotice("reason is not a short lowercase token")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            raise InvalidNotice("version is not a non-negative integer")
        if not 0 <= self.at < 2**42:
            raise InvalidNotice("at is not a Unix time")
        # Every delivery is rebuilt from the key, which holds milliseconds: so is this.
        object.__setattr__(self, "at", round(self.at * 1000) / 1000)

    @property
    def key(self) -> str:
        """The notice written out, as its task carries it."""
        fields = (self.version, self.mode, self.previous_mode, self.reason)
        at_ms = round(self.at * 1000)
        return ":".join((_KEY_PREFIX, self.conversation, *map(str, fields), str(at_ms)))

    @classmethod
    def from_key(cls, key: str) -> HandoffNotice:
        """The notice `key` writes out; InvalidNotice for anything else."""
        parts = key.split(":")
        if len(parts) != 7 or parts[0] != _KEY_PREFIX:
            raise InvalidNotice("not a handoff notice key")
        _, conversation, version, mode, previous, reason, at_ms = parts
        if not (version.isascii() and version.isdigit() and at_ms.isascii() and at_ms.isdigit()):
            raise InvalidNotice("version and time are not integers")
        return cls(conversation, mode, previous, reason, int(at_ms) / 1000, int(version))

    @property
    def id(self) -> str:
        """Stable across redeliveries of the same notice: receivers dedupe on it."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:32]

    def payload(self) -> dict[str, Any]:
        """The JSON object the webhook receives (docs/handoff.md#notification-webhook)."""
        return {
            "type": NOTICE_TYPE,
            "id": self.id,
            "conversation": self.conversation,
            "mode": self.mode,
            "previous_mode": self.previous_mode,
            "reason": self.reason,
            "at": self.at,
            "version": self.version,
        }

    def body(self) -> bytes:
        """The payload as the bytes that are signed and sent."""
        return json.dumps(self.payload(), separators=(",", ":")).encode()


def signature(body: bytes, secret: str) -> str:
    """The X-Pyloto-Signature-256 value: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookPoster(Protocol):
    """POSTs a body to the configured notification URL."""

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        """The answer's HTTP status; TransientStepError when none came (no connection, a
        timeout), never naming the URL (a Slack webhook URL is itself a secret)."""

    async def close(self) -> None:
        """Release the connections."""


class HandoffNotifier:
    """Sends mode changes to HANDOFF_WEBHOOK_URL through the queue; without a URL (`poster`
    None) `notify` does nothing."""

    def __init__(
        self,
        queue: TaskQueue,
        poster: WebhookPoster | None,
        secret: str,
        telemetry: Telemetry | None = None,
        max_attempts: int = OUTBOUND.max_attempts,
    ) -> None:
        self.queue = queue
        self.poster = poster
        self.secret = secret
        self.telemetry = telemetry or Telemetry()
        self.max_attempts = max_attempts

    @property
    def enabled(self) -> bool:
        """Whether notices are sent (HANDOFF_WEBHOOK_URL is set)."""
        return self.poster is not None

    async def notify(self, notice: HandoffNotice) -> None:
        """Queue the notice's delivery (QueueUnavailable when the queue refuses it); the
        same notice queued twice is one task while the first is pending."""
        if self.poster is None:
            return
        await self.queue.enqueue(Task(message_id=notice.key, state=NOTIFY_STATE, queue="outbound"))

    async def deliver(self, notice: HandoffNotice, attempt: int) -> str:
        """One delivery: `sent`, `rejected` (a final 4xx), `gave_up` (the last attempt
        failed) or `unconfigured`; TransientStepError for the queue to retry."""
        if self.poster is None:
            # Queued before the URL was unset: nowhere to send it.
            return self._done(notice, "unconfigured", attempt, logging.WARNING)
        body = notice.body()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(body, self.secret),
            "User-Agent": "pyloto-handoff-notifier",
        }
        try:
            status = await self.poster.post(body, headers)
        except TransientStepError as error:
            return self._failed(notice, attempt, str(error), None)
        if 200 <= status < 300:
            return self._done(notice, "sent", attempt, logging.INFO, status)
        if status in _RETRIED_STATUSES or status >= 500:
            return self._failed(notice, attempt, f"HTTP {status}", status)
        return self._done(notice, "rejected", attempt, logging.ERROR, status)

    def _failed(self, notice: HandoffNotice, attempt: int, why: str, status: int | None) -> str:
        """Back to the queue, unless this was its last attempt."""
        if attempt >= self.max_attempts:
            return self._done(notice, "gave_up", attempt, logging.ERROR, status)
        self._count("retried")
        fields = self._fields("handoff_notice_retry", notice, attempt, status)
        log.warning("handoff_notice_retry", extra=fields)
        raise TransientStepError(f"handoff notice not delivered: {why}")

    def _done(
        self,
        notice: HandoffNotice,
        outcome: str,
        attempt: int,
        level: int,
        status: int | None = None,
    ) -> str:
        self._count(outcome)
        event = f"handoff_notice_{outcome}"
        log.log(level, event, extra=self._fields(event, notice, attempt, status))
        return outcome

    def _count(self, outcome: str) -> None:
        self.telemetry.metrics.handoff_notices.add(1, {"pyloto.outcome": outcome})

    @staticmethod
    def _fields(
        event: str, notice: HandoffNotice, attempt: int, status: int | None
    ) -> dict[str, Any]:
        about = {"notice": notice.id, "mode": notice.mode, "reason": notice.reason}
        return {"event": event, **about, "attempt": attempt, "http_status": status}

    async def close(self) -> None:
        """Close the poster's connections."""
        if self.poster is not None:
            await self.poster.close()
