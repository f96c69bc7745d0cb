"""Ports: what the use cases need from the outside world."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from pyloto_corp.ai.schemas import EventDetection, MessageChoice, ReplyDraft
from pyloto_corp.domain.conversation import Conversation
from pyloto_corp.domain.outcome import NO_ANSWER
from pyloto_corp.domain.records import Record, StatusUpdate, Turn
from pyloto_corp.domain.statechart import QueueName
from pyloto_corp.domain.writes import (
    NO_WRITES,
    ConversationWrite,
    CustomerRequest,
    SlotRequest,
    TurnsWrite,
    Writes,
)

# The values a step's event carries for its save (domain/writes.py), named here too because
# the stores that apply them implement these ports.
__all__ = ["CustomerRequest", "SlotRequest", "TurnsWrite", "Writes"]


class StoreUnavailable(Exception):
    """The store cannot be reached; callers answer 503 so the sender retries."""


class StoreNotDurable(StoreUnavailable):
    """The store answers but would not keep what it acknowledges through a crash (a Redis
    without AOF, or fsyncing less often than REDIS_DURABILITY asks): 503 until it would."""


class QueueUnavailable(Exception):
    """The queue cannot accept tasks; callers answer 503 so the sender retries."""


class TransientStepError(Exception):
    """A step failed in a way a later attempt may fix; the queue retries the task.

    `retry_after`: seconds before which a retry cannot succeed (a pacing slot); the local
    queue waits at least that long. `waiting`: the step waits for something that ends by
    itself (another delivery's send claim, whose lease runs out); the local queue retries at
    its pace without counting the attempt, so such a wait cannot use up the task's attempts
    and dead-letter a reply that was never sent.
    """

    def __init__(self, *args: object, retry_after: float = 0.0, waiting: bool = False) -> None:
        super().__init__(*args)
        self.retry_after = retry_after
        self.waiting = waiting


class StepDeferred(Exception):
    """The step cannot decide before `until` (epoch seconds): nothing is saved, and the
    Advancer queues the same step again to run then (a task scheduled for that time), so
    the delivery ends without a retry counted."""

    def __init__(self, until: float, why: str) -> None:
        super().__init__(why)
        self.until = until


class PermanentStepError(Exception):
    """A step failed in a way no retry can fix; the record is dead-lettered."""


class AmbiguousSend(TransientStepError):
    """A send may have reached WhatsApp: a timeout or dropped connection after the request,
    an error answer that does not prove nothing was sent, or a 2xx without a message id.

    The send step keeps its claim, so a retry reconciles instead of sending at once. `why`
    is the reason's name in domain/outcome.py, which decides whether it is ever re-sent.
    """

    def __init__(self, *args: object, why: str = NO_ANSWER) -> None:
        super().__init__(*args)
        self.why = why


class RecordStore(Protocol):
    """Durable records keyed by wamid, saved under optimistic version checks."""

    async def create_if_absent(self, records: Sequence[Record]) -> list[bool]:
        """Atomically store each record unless its id exists; True where it was created."""

    async def get(self, message_id: str) -> Record | None:
        """The record with its delivery status, or None."""

    async def save(self, record: Record, expected_version: int) -> bool:
        """Store `record` if the stored version is `expected_version`; False on a conflict."""

    async def record_status(self, update: StatusUpdate) -> bool:
        """Keep the delivery status unless a later one is known; True if it moved forward."""

    async def count_billable(self, outbound_message_id: str, category: str, at: float) -> bool:
        """Count one billable message of pricing `category` in the UTC day of `at` (the
        `b:{category}` counter of domain.ops_metrics, kept per DAY), once per outbound
        message whatever its statuses repeat: True the first time, False after (within the
        retention)."""

    async def open_records(self, older_than: float) -> list[tuple[str, str]]:
        """(message id, state) of non-terminal records last updated before `older_than`."""

    async def failed_records(self, since: float | None, limit: int) -> list[str]:
        """Ids of at most `limit` `failed` records last updated at or after `since` (any
        time if None), oldest first."""

    async def purge(self, created_before: float) -> int:
        """Delete records (and their statuses) created before the retention limit."""


@dataclass(frozen=True)
class LeaseHold:
    """A step's lease on (record, state): its name, who holds it, for how long when taken."""

    name: str
    owner: str
    seconds: float = 0.0


@dataclass(frozen=True)
class StepCommit:
    """Everything one transition writes, as one value the store applies atomically (one
    SQLite transaction, one Redis script call): the record as moved and the version it was
    loaded at, the lease given back, the next step's lease taken with the save, and what
    the step's event writes besides the record (pacing token, turns, customer key)."""

    record: Record
    expected_version: int
    lease: LeaseHold
    next_lease: LeaseHold | None = None
    writes: Writes = NO_WRITES


@dataclass(frozen=True)
class StepLoad:
    """What `lease_step` found: whether the lease was taken, the record (None if not taken
    or not found) and, when asked for, the last turns of the record's conversation, oldest
    first (None when the record names no conversation)."""

    taken: bool
    record: Record | None = None
    turns: list[Turn] | None = None
    # The conversation the record names (None: it names none, or none is stored yet).
    conversation: Conversation | None = None
    # Its last records, oldest first, when asked for (None: not asked for, or no conversation).
    records: list[Record] | None = None


@dataclass(frozen=True)
class StepSave:
    """What `finish_step` did: whether the record was saved; `wait` > 0 when the pacing
    slot asked for was not free (then nothing was saved); whether the next lease was taken;
    the customer key resolved for the record ('' when none was asked for or not saved)."""

    saved: bool
    wait: float = 0.0
    next_taken: bool = False
    customer: str = ""
    # The conversation was not in the mode the write expected: nothing was saved.
    mode_changed: bool = False


class StepLeases(Protocol):
    """A step's lease on (record, state), taken with the load and given back with the save,
    so a second delivery of the same task does not do the step's work alongside the first."""

    async def release_lease(self, name: str, owner: str) -> None:
        """Give the lease back if `owner` still holds it."""

    async def lease_step(
        self,
        name: str,
        owner: str,
        seconds: float,
        message_id: str,
        turns: int = 0,
        records: int = 0,
    ) -> StepLoad:
        """Take the lease `name` for `seconds` unless someone else holds it, then load the
        record if it was taken (None if not taken or not found) and, when `turns` > 0, the
        last `turns` turns of the conversation the record names (`Record.conversation`),
        and when `records` > 0, its last `records` records, as one call to the store."""

    async def finish_step(self, commit: StepCommit) -> StepSave:
        """Apply everything one transition writes, atomically, as one call to the store:
        save `commit.record` if its version is still `commit.expected_version`, give back
        `commit.lease` whatever the outcome, and with the save:

        - `writes.customer`: resolved as `CustomerKeys` describes, only if the version
          matches, and saved as the record's `conversation` (the record's own is replaced);
        - `writes.slot`: the save happens only if a pacing token is taken too (none is taken on a
          version conflict; the wait is answered instead);
        - `writes.turns`: appended whatever the save's outcome (the send they tell of happened);
        - `writes.conversation`: applied with the save, and a condition of it
          (`ConversationWrite.expect_mode`: no save, `mode_changed`, when not met); its key
          '' names the customer key the same save resolves;
        - `next_lease`: taken only if the record was saved, for the step of its new state
          run at once by the same delivery.
        """


class ConversationMemory(Protocol):
    """The last turns of each customer's conversation, for LLM#2's prompt (written by the
    save of a send: `StepCommit.turns`)."""

    async def recent_turns(self, conversation: str, since: float, limit: int) -> list[Turn]:
        """The conversation's last `limit` turns at or after `since`, oldest first."""


class CustomerKeys(Protocol):
    """Which key stands for a customer (their memory, pacing and rollout bucket): the keyed
    hash of their BSUID whenever WhatsApp gives one, with their number's hash as an alias.

    Aliases live as long as records do (the retention), renewed by each message naming both
    ids. Keys are keyed hashes (`llm_steps.conversation_id`), never the ids themselves.

    The save of an accept resolves the key (`StepCommit.customer`), atomically. With the
    BSUID's hash: that key, or the one a changed BSUID moved to; with the number's hash too,
    the number's turns move to it if it has none, and the number becomes its alias. With the
    number's hash only: the customer key its alias names, else that hash itself (the key
    every customer had before BSUIDs). Empty when neither is given.
    """

    async def move_customer(self, previous_key: str, current_key: str) -> None:
        """A BSUID changed: the turns of `previous_key` move to `current_key` (unless it has
        its own already), and `previous_key` becomes its alias, atomically."""


class ConversationStore(Protocol):
    """Customers' conversations: their mode, window and audit trail, and their records."""

    async def get_conversation(self, key: str) -> Conversation | None:
        """The conversation (with its audit trail), or None if none is stored."""

    async def change_conversation(self, key: str, write: ConversationWrite) -> Conversation | None:
        """Apply `write` to the conversation `key` (made in `bot` if missing), atomically;
        None, and nothing written, when `write.expect_mode` is not its mode."""

    async def list_conversations(self, mode: str | None, limit: int) -> list[Conversation]:
        """Conversations in `mode` (any when None), the longest in it first (no audit)."""

    async def conversation_records(self, key: str, limit: int) -> list[Record]:
        """The conversation's last `limit` records (its customer's messages and the replies
        agents sent), oldest first, each with its reply's delivery status."""

    async def customer_of(self, key: str) -> str:
        """The customer key `key` stands for through its aliases (a number's hash, or a
        BSUID's before it changed), else `key` itself: what the records name."""


class StepStore(ConversationMemory, Protocol):
    """What the steps may use of the store: reading the conversation's turns and, to answer
    a customer's burst, its last records. Steps never write: what a transition writes
    travels in its event to the Advancer's `StepCommit`."""

    async def conversation_records(self, key: str, limit: int) -> list[Record]:
        """The conversation's last `limit` records, oldest first."""


class IngestStore(RecordStore, CustomerKeys, Protocol):
    """What ingest uses: records and statuses, and customers' keys (a changed BSUID)."""


class AdvancerStore(RecordStore, StepLeases, Protocol):
    """What the Advancer uses: records and step leases."""


@dataclass(frozen=True)
class Adoption:
    """One heartbeat: records adopted from dead instances, and what the store remembered.

    `remembered_beat` is this instance's previous beat as the store still holds it (None if
    it holds none): older than the last beat this instance wrote means the store lost writes
    since then. `store_run` names the store's process (Redis's run_id).
    """

    adopted: list[tuple[str, str]]
    remembered_beat: float | None
    store_run: str


class InstanceRegistry(Protocol):
    """Instances sharing a store, by heartbeat: what a dead one owned is adopted by a live one.

    Only a store shared by instances that each run an in-process queue needs it (Redis with
    the local queue): there, a killed instance takes the tasks of the records it owns along.
    """

    async def adopt_orphans(self, now: float, dead_after_seconds: float) -> Adoption:
        """Beat for this instance; (message id, state) of the open records of instances
        silent for `dead_after_seconds`, now this instance's, each adopted by one only."""

    async def retire(self) -> None:
        """Stop beating at once (a graceful stop), so others adopt without waiting."""

    async def instances(self) -> list[InstanceBeat]:
        """The instances the store knows (live, dead or retired), latest beat first, at most
        INSTANCES_LISTED, each with the records it adopted from dead ones (the console)."""


# The most instances the console lists (Cloud Run scales to far fewer).
INSTANCES_LISTED = 100


@dataclass(frozen=True)
class InstanceBeat:
    """One instance as the store remembers it: its id (a random hex, no personal data), its
    last beat (0: it retired; None: forgotten since it died, its adoptions still counted),
    the records it adopted from dead instances and when it last did; `this`: the instance
    that answers."""

    instance_id: str
    beat_at: float | None
    adopted: int = 0
    adopted_at: float | None = None
    this: bool = False


@dataclass(frozen=True)
class RecordQuery:
    """A page of the console's record list: newest last update first.

    `state` and `fallback_reason` filter (None: any; the reason as the record holds it);
    `since`/`until` bound the last update (inclusive/exclusive); `before` is the cursor of
    the next page (the `next_before` of the previous one): only records last updated strictly
    before it, or at it with a smaller id. `limit`: at most this many records (the stores cap
    it at 500; 0 or less gives an empty page).
    """

    state: str | None = None
    fallback_reason: str | None = None
    since: float | None = None
    until: float | None = None
    before: tuple[float, str] | None = None
    limit: int = 50


@dataclass(frozen=True)
class RecordPage:
    """Records of one page, newest first, and the cursor of the next (None on the last).

    A page may hold fewer than `limit` records and still have a cursor: a store that filters
    by looking at a bounded slice of an index stops there, and the next page goes on."""

    records: list[Record]
    next_before: tuple[float, str] | None


class OpsReadModel(Protocol):
    """What the operations console reads: counters kept in the same write as each
    transition, and indexed pages of records, so no page load reads every record."""

    async def state_counts(self) -> dict[str, int]:
        """How many records are in each state now (states with none may be absent)."""

    async def counter_buckets(self, width: int, since: float) -> list[tuple[int, dict[str, int]]]:
        """The time buckets of `width` seconds (MINUTE, HOUR or DAY of domain.ops_metrics)
        that start at or after `bucket_of(since, width)`, oldest first, each with its
        counters (names as in domain.ops_metrics: the DAY buckets hold the cost counters);
        buckets with no counter may be absent, and so are buckets older than their width is
        kept (MINUTE_, HOUR_ or DAY_BUCKETS_KEPT_SECONDS before now). ValueError for another
        width."""

    async def list_records(self, query: RecordQuery) -> RecordPage:
        """One page of records matching `query`, without their delivery status."""


class StateStore(AdvancerStore, StepStore, CustomerKeys, OpsReadModel, ConversationStore, Protocol):
    """Everything one backend (SQLite or Redis) provides; bootstrap builds one."""

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""

    async def durability(self) -> str:
        """How a write survives a crash of the store: `sqlite` (fsynced), or Redis's
        persistence, `aof`, `rdb`, `aof+rdb`, `none`, or `unknown` (CONFIG refused)."""

    async def close(self) -> None:
        """Release connections."""


@dataclass(frozen=True)
class Task:
    """Advance `message_id` from `state`; `queue` is the state's queue. A task whose
    `state` is `handoff_notices.NOTIFY_STATE` delivers the notice `message_id` writes out
    instead (no record is involved).

    `generation` tells a deliberate re-queue (the sweeper's) apart from a duplicate of the
    same step; `traceparent` carries the message's trace to the task. `not_before`: the
    task runs at that time (epoch seconds) at the earliest (0: at once), as a burst's
    wake-up does.
    """

    message_id: str
    state: str
    queue: QueueName
    generation: str = ""
    traceparent: str | None = None
    not_before: float = 0.0


TaskHandler = Callable[[Task, int], Awaitable[None]]


class TaskQueue(Protocol):
    """Delivers each task at least once, retrying failures with backoff."""

    async def enqueue(self, task: Task) -> None:
        """Schedule `task`; raises QueueUnavailable when it cannot be accepted."""

    async def ping(self) -> None:
        """Raise QueueUnavailable unless the queue accepts work."""


class Outbox(Protocol):
    """Sends Graph API message requests.

    `reconcile_seconds`: how long after a claimed send whose outcome is unknown the send step
    keeps asking `find_sent` before it decides (domain/outcome.py) whether to send again; 0
    only when `find_sent` is exact (its None proves nothing was sent, so no outcome stays
    unknown).
    """

    reconcile_seconds: float

    async def send(self, body: dict[str, Any], phone_number_id: str = "") -> str:
        """Send `body` (a Graph API request body) from the business number `phone_number_id`
        ("": the default number); the outbound wamid. TransientStepError/PermanentStepError
        on failure (PermanentStepError for a number the outbox cannot send from)."""

    async def find_sent(self, message_id: str) -> str | None:
        """The outbound id of an earlier reply to record `message_id`, if one is known."""

    async def mark_read(self, message_id: str, phone_number_id: str = "") -> None:
        """Mark an inbound message as read, through the business number it was written to
        ("": the default number); best effort, may raise step errors."""


ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class LLMResult(Generic[ResultT]):
    """A structured LLM answer with what it cost."""

    value: ResultT
    latency_ms: float
    input_tokens: int
    output_tokens: int
    model: str  # as the server's answer named it
    requested_model: str = ""  # as the call asked for it (the setting)


class LLMFailure(Exception):
    """An LLM call gave no usable answer; `reason` is kept as the fallback reason."""

    def __init__(
        self, reason: str, detail: str = "", *, input_tokens: int = 0, output_tokens: int = 0
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        # What the failed call cost, when the API answered at all (refusal, unparsable).
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        # The model the call asked for: the assistant names it as the failure leaves it.
        self.model = ""


@dataclass(frozen=True)
class MediaFile:
    """A customer's media as downloaded: its bytes (held in memory only, never stored), the
    MIME type Graph gave, and the sha256 it was checked against."""

    data: bytes
    mime_type: str
    sha256: str


class MediaRejected(Exception):
    """The media cannot be had, whatever a retry does; `reason` is kept as the fallback
    reason (`media_too_large`, `media_unavailable`, `media_checksum_mismatch`). The message
    never holds the media URL or the access token."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class MediaSource(Protocol):
    """Where a message's media is fetched from: the Graph API (`GET /{media-id}` for its URL,
    type, size and sha256, then the URL with the access token), or a local folder in
    development."""

    async def fetch(self, media_id: str, max_bytes: int, phone_number_id: str = "") -> MediaFile:
        """The media's bytes, checked against `max_bytes` before the download and against
        the sha256 after it; `phone_number_id` is the business number the message was sent
        to (Graph lets only its token read the media). MediaRejected when it cannot be had
        (too large, gone, corrupt, still failing after the adapter's own retries of
        transient errors)."""


class Assistant(Protocol):
    """The three LLM steps, and the media step's transcription and description."""

    async def transcribe(self, audio: bytes, mime_type: str) -> LLMResult[str]:
        """A voice note's words, transcribed with Portuguese hinted (LLMFailure on failure)."""

    async def describe_image(self, image: bytes, mime_type: str, caption: str) -> LLMResult[str]:
        """What a picture shows, in Portuguese, read with its caption (LLMFailure on failure)."""

    async def detect_event(self, text: str, kind: str) -> LLMResult[EventDetection]:
        """LLM#1: the customer's intent."""

    async def draft_reply(
        self, text: str, event: str, summary: str, history: Sequence[Turn]
    ) -> LLMResult[ReplyDraft]:
        """LLM#2: the reply in Portuguese."""

    async def choose_message_type(self, draft: str, event: str) -> LLMResult[MessageChoice]:
        """LLM#3: the WhatsApp message type and its parts."""


@dataclass(frozen=True)
class RetryFigure:
    """A task on its second attempt or later: `next_at` when its next attempt is due (None
    while it runs, or when the queue does not say), `backoff_seconds` the wait before it."""

    message_id: str  # the console shows its log reference only
    state: str
    attempt: int
    next_at: float | None
    backoff_seconds: float | None
    seen_at: float | None = None  # when it was seen (Cloud Tasks: its handler's headers)


@dataclass(frozen=True)
class QueueFigures:
    """One queue now. None is a figure the queue cannot give (never a guessed 0).

    `depth`: tasks not running (ready, rate-limited, or scheduled for later: retries and
    wake-ups); `oldest_due_at`: the due time of the task that has waited longest for a
    worker (None: no task is overdue); `retrying`: tasks on attempt 2 or later, `retries`
    the first of them by next attempt."""

    queue: str
    backend: str  # "local" or "cloud_tasks"
    depth: int | None
    in_flight: int | None
    retrying: int | None
    oldest_due_at: float | None
    retries: list[RetryFigure]
    executed_last_minute: int | None = None
    note: str = ""


@runtime_checkable
class QueueStats(Protocol):
    """What a queue tells the console about itself, read-only and without listing tasks."""

    async def queue_figures(self, now: float) -> list[QueueFigures]:
        """Each queue's figures at `now` (inbound, outbound)."""
