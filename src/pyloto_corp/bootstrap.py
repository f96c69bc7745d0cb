"""The one place that builds adapters from settings and wires them into the use cases."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from openai import AsyncOpenAI

from pyloto_corp.adapters.cloud_tasks import CallbackTarget, CloudTasksQueue, create_stats_client
from pyloto_corp.adapters.cloud_tasks import create_client as create_tasks_client
from pyloto_corp.adapters.dry_run_outbox import DryRunOutbox, RedisDryRunOutbox
from pyloto_corp.adapters.google_iap import IapVerifier
from pyloto_corp.adapters.google_oidc import OidcVerifier
from pyloto_corp.adapters.google_oidc import create_http_client as create_oidc_http_client
from pyloto_corp.adapters.graph_media import GraphMedia
from pyloto_corp.adapters.handoff_webhook import HttpWebhookPoster
from pyloto_corp.adapters.local_media import LocalMedia
from pyloto_corp.adapters.local_queue import LocalQueue
from pyloto_corp.adapters.openai_llm import OpenAIAssistant
from pyloto_corp.adapters.openai_llm import create_client as create_openai_client
from pyloto_corp.adapters.redis.accounts import RedisAccounts
from pyloto_corp.adapters.redis.keys import RedisKeys
from pyloto_corp.adapters.redis.store import RedisStore
from pyloto_corp.adapters.redis.store import connect as redis_connect
from pyloto_corp.adapters.reply_templates import load_reply_templates
from pyloto_corp.adapters.sqlite import SQLiteStore
from pyloto_corp.adapters.sqlite.accounts import SQLiteAccounts
from pyloto_corp.adapters.statechart_yaml import load_statechart, parse_statechart
from pyloto_corp.adapters.whatsapp_graph import GraphClient, GraphOutbox
from pyloto_corp.adapters.whatsapp_graph import create_client as create_graph_client
from pyloto_corp.ai.prompts import BusinessProfile
from pyloto_corp.application.accounts import AccountStore
from pyloto_corp.application.advance import Advancer
from pyloto_corp.application.conversations import Conversations, ModeChange, ModeRules
from pyloto_corp.application.durability import DurabilityGate, refusal
from pyloto_corp.application.handoff_notices import (
    NOTIFY_STATE,
    HandoffNotice,
    HandoffNotifier,
    InvalidNotice,
)
from pyloto_corp.application.ingest import Ingestor
from pyloto_corp.application.ports import (
    InstanceRegistry,
    MediaSource,
    Outbox,
    StateStore,
    StoreUnavailable,
    Task,
    TaskQueue,
)
from pyloto_corp.application.queue_figures import RecentRetries
from pyloto_corp.application.queues import (
    BEAT_INTERVAL_SECONDS,
    DEAD_AFTER_SECONDS,
    INBOUND,
    OUTBOUND,
    STUCK_AFTER_SECONDS,
    SWEEP_INTERVAL_SECONDS,
    QueueSpec,
)
from pyloto_corp.application.registry import undeclared_in_chart
from pyloto_corp.application.replay import MANUAL_TRIGGERS
from pyloto_corp.application.signin import Accounts, SignInLimits
from pyloto_corp.application.step_context import (
    Bursts,
    BusinessNumbers,
    Handoff,
    LLMRouting,
    Pacing,
    StepContext,
)
from pyloto_corp.application.steps import HANDLED_TRIGGERS
from pyloto_corp.application.sweeper import Sweeper
from pyloto_corp.config import ConfigError, OpenAISettings, Settings
from pyloto_corp.domain.conversation import Keywords
from pyloto_corp.domain.conversation import check_chart as check_conversation_chart
from pyloto_corp.domain.machine import LifecycleMachine
from pyloto_corp.domain.replies import ReplyTemplates
from pyloto_corp.domain.statechart import Statechart, StatechartError
from pyloto_corp.observability.instruments import Telemetry
from pyloto_corp.observability.otel_config import (
    OtelConfigError,
    apply_environment,
    load_otel_config,
)
from pyloto_corp.observability.setup import TelemetryRuntime, build_telemetry

log = logging.getLogger(__name__)

STATECHART_FILE = "inbound_message.yaml"
CONVERSATION_CHART_FILE = "conversation.yaml"


def statechart_dir() -> Path:
    """statecharts/ of a source checkout, else the copy shipped inside the wheel."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent.parent / "statecharts", package / "statecharts"):
        if (candidate / STATECHART_FILE).is_file():
            return candidate
    raise ConfigError(f"statechart file {STATECHART_FILE} not found next to the package")


def load_chart(path: Path | None = None) -> Statechart:
    """Read and validate the inbound message statechart against the code's step handlers
    (or, for conversation.yaml, the conversation chart against the modes the code has)."""
    path = path or statechart_dir() / STATECHART_FILE
    shown = f"statecharts/{path.name}" if path.parent.name == "statecharts" else str(path)
    text = path.read_text(encoding="utf-8")
    if path.name == CONVERSATION_CHART_FILE:
        conversation = parse_statechart(text, shown)
        check_conversation_chart(conversation)
        return conversation
    chart = load_statechart(text, shown, HANDLED_TRIGGERS, MANUAL_TRIGGERS)
    problems = undeclared_in_chart(chart)
    if problems:
        raise StatechartError(f"{shown}: " + "; ".join(problems))
    return chart


def _storage(
    settings: Settings, chart: Statechart, instance_id: str | None = None
) -> tuple[StateStore, Outbox, bool]:
    """The store, the dry-run outbox beside it, and whether this process is its only user."""
    terminal = [name for name, spec in chart.states.items() if spec.terminal]
    if settings.state.effective_backend == "redis":
        assert settings.state.redis_url is not None  # checked by the settings
        client = redis_connect(settings.state.redis_url, settings.state.redis_timeout_seconds)
        keys = RedisKeys(settings.state.redis_key_prefix)
        retention = settings.state.retention_days * 86400
        # The create script itself refuses to store while AOF is off (see DurabilityGate).
        require_aof = settings.state.required_durability != "none"
        redis_store = RedisStore(
            client, terminal, retention, keys, instance_id, chart.states, require_aof
        )
        dry_run = RedisDryRunOutbox(client, keys, retention, default_number(settings))
        return redis_store, dry_run, False
    path = settings.state.sqlite_path
    # Locked to this process: no other instance can hold its records or leases.
    store = SQLiteStore(path, terminal, exclusive=True)
    return store, DryRunOutbox(path, default_number(settings)), True


def account_store(settings: Settings, store: StateStore) -> AccountStore | None:
    """The console's accounts beside the state store (on its connection), or None for a
    store of neither kind (the tests' fakes; they pass their own)."""
    if isinstance(store, RedisStore):
        return RedisAccounts(store.client, settings.state.redis_key_prefix)
    if isinstance(store, SQLiteStore):
        return SQLiteAccounts(store.db)
    return None


def accounts_beside(settings: Settings) -> tuple[AccountStore, Callable[[], Awaitable[None]]]:
    """The accounts for a command beside a running server (`pyloto users`), on their own
    connection, and what closes it."""
    if settings.state.effective_backend == "redis":
        assert settings.state.redis_url is not None  # checked by the settings
        client = redis_connect(settings.state.redis_url, settings.state.redis_timeout_seconds)
        return RedisAccounts(client, settings.state.redis_key_prefix), client.aclose
    accounts = SQLiteAccounts.at(settings.state.sqlite_path)
    return accounts, accounts.close


def console_accounts(settings: Settings, store: AccountStore) -> Accounts:
    """Sign-in and sessions over `store`, with the settings' lifetime and limits."""
    console = settings.console
    limits = SignInLimits(
        per_account=console.signin_failures_per_account,
        account_window_seconds=console.signin_account_window_seconds,
        per_client=console.signin_failures_per_client,
        client_window_seconds=console.signin_client_window_seconds,
    )
    return Accounts(store, console.session_hours * 3600, limits)


def default_number(settings: Settings) -> str:
    """The business number that answers a message naming none ("" when none is set)."""
    numbers = settings.whatsapp.business_numbers
    return numbers[0] if numbers else ""


def business_numbers(settings: Settings) -> BusinessNumbers:
    """The business numbers this service answers for, the default first."""
    numbers = settings.whatsapp.business_numbers
    return BusinessNumbers(default_number(settings), frozenset(numbers[1:]))


def reply_templates(settings: Settings) -> ReplyTemplates:
    """The fallback replies: the shipped templates, overridden by REPLY_TEMPLATES_FILE."""
    business = settings.business
    return load_reply_templates(business.reply_templates_file, business.name, business.hours)


def reading_store(settings: Settings) -> StateStore | None:
    """The configured store for reading records beside a running server (no lock on a
    SQLite file), or None when the SQLite file does not exist yet."""
    chart = load_chart()
    if settings.state.effective_backend == "redis":
        return _storage(settings, chart)[0]
    if not settings.state.sqlite_path.exists():
        return None
    terminal = [name for name, spec in chart.states.items() if spec.terminal]
    return SQLiteStore(settings.state.sqlite_path, terminal)


async def persistence_refusal(settings: Settings) -> str | None:
    """Why `pyloto serve` must not start on this Redis (it would not keep what it
    acknowledges through a crash, see DurabilityGate), or None.

    A Redis that cannot be reached is not refused here: the service starts and answers 503
    until it can, and only once its persistence has been checked and holds.
    """
    required = settings.state.required_durability
    if settings.state.effective_backend != "redis" or required == "none":
        return None
    store = reading_store(settings)
    assert isinstance(store, RedisStore)
    try:
        persistence = await store.persistence()
    except StoreUnavailable:
        return None
    finally:
        await store.close()
    return refusal(persistence, required, settings.state.redis_appendfsync)


def graph_outbox(
    settings: Settings, store: StateStore, telemetry: Telemetry | None = None
) -> GraphOutbox | None:
    """The Graph API outbox when a token is set (WHATSAPP_ACCESS_TOKEN or
    WHATSAPP_ACCESS_TOKENS), else None (dry run): one client per distinct token, so numbers
    sharing a token share its connections."""
    whatsapp = settings.whatsapp
    if not whatsapp.sends:
        return None
    problems = whatsapp.token_problems()
    if problems:  # also refused by the settings
        raise ConfigError("; ".join(problems))
    by_token: dict[str, GraphClient] = {}
    clients: dict[str, GraphClient] = {}
    for number in whatsapp.business_numbers:
        token = whatsapp.token_for(number)
        assert token is not None  # checked by token_problems
        if token not in by_token:
            by_token[token] = create_graph_client(token, whatsapp.timeout_seconds)
        clients[number] = by_token[token]
    return GraphOutbox(
        clients,
        whatsapp.api_base_url,
        whatsapp.api_version,
        store,
        typing_indicator=whatsapp.typing_indicator,
        reconcile_seconds=whatsapp.reconcile_seconds,
        telemetry=telemetry,
    )


def media_source(settings: Settings, telemetry: Telemetry | None = None) -> MediaSource:
    """The Graph API's media endpoints when WHATSAPP_ACCESS_TOKEN is set, else the local
    folder `pyloto simulate --voice` writes to."""
    whatsapp = settings.whatsapp
    token = whatsapp.token_for(default_number(settings)) if whatsapp.sends else None
    if token:
        # Each message's media with the token of the number it was sent to; the default
        # number's for a message naming none.
        return GraphMedia(
            token,
            whatsapp.api_base_url,
            whatsapp.api_version,
            whatsapp.timeout_seconds,
            telemetry=telemetry,
            tokens=whatsapp.own_tokens,
        )
    return LocalMedia(whatsapp.local_media_dir)


def send_pacing(settings: Settings) -> Pacing | None:
    """Per-recipient spacing of real sends (Meta's pair rate); none for the dry run."""
    whatsapp = settings.whatsapp
    if not whatsapp.sends or whatsapp.pacing_seconds <= 0:
        return None
    return Pacing(per_seconds=whatsapp.pacing_seconds, burst=whatsapp.pacing_burst)


def business_profile(settings: Settings) -> BusinessProfile:
    """The business as the prompts describe it (the FAQ file is read once, here)."""
    business = settings.business
    faq = business.faq
    if business.faq_file is not None:
        try:
            faq = business.faq_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"BUSINESS_FAQ_FILE: cannot read {business.faq_file}: {error}"
            ) from None
    return BusinessProfile(business.name, business.hours, faq.strip(), business.website_url)


def assistant_routing(settings: Settings, telemetry: Telemetry | None = None) -> LLMRouting | None:
    """The OpenAI-backed LLM steps, or None when the LLM is disabled (no call is ever made)."""
    if not settings.openai.is_enabled:
        return None
    openai_settings = settings.openai
    assert openai_settings.api_key is not None  # checked by the settings
    client = create_openai_client(
        openai_settings.api_key,
        openai_settings.base_url,
        openai_settings.timeout_seconds,
        openai_settings.max_retries,
    )
    assistant = OpenAIAssistant(
        client,
        openai_settings.model,
        openai_settings.timeout_seconds,
        business_profile(settings),
        telemetry,
        transcription_model=openai_settings.transcription_model,
        transcription_client=_transcription_client(openai_settings),
        vision_model=openai_settings.vision_model,
        structured_output=openai_settings.structured_output,
        temperature=openai_settings.temperature,
    )
    website = settings.business.website_url
    hosts = frozenset({urlsplit(website).hostname or ""}) if website else frozenset()
    return LLMRouting(
        assistant=assistant,
        rollout_percent=openai_settings.rollout_percent,
        mask_pii=openai_settings.mask_pii,
        allowed_hosts=hosts,
    )


def _transcription_client(openai_settings: OpenAISettings) -> AsyncOpenAI | None:
    """A client of its own for transcriptions on another server or key, else None (they
    share the chat client)."""
    base_url = openai_settings.transcription_base_url
    api_key = openai_settings.transcription_api_key
    if base_url is None and api_key is None:
        return None
    key = api_key or openai_settings.api_key
    assert key is not None  # checked by the settings
    return create_openai_client(
        key,
        base_url or openai_settings.base_url,
        openai_settings.timeout_seconds,
        openai_settings.max_retries,
    )


def telemetry_runtime(settings: Settings) -> TelemetryRuntime:
    """Tracing and metrics as otel.yaml (or PYLOTO_OTEL_CONFIG) and OTEL_* say."""
    telemetry = settings.telemetry
    try:
        config = apply_environment(load_otel_config(telemetry.config_path), telemetry.overrides())
        return build_telemetry(
            config,
            hash_key=settings.hash_key,
            environment=settings.app.environment,
            project=settings.queue.gcp_project,
        )
    except OtelConfigError as error:
        raise ConfigError(str(error)) from None


def queue_specs(settings: Settings) -> dict[str, QueueSpec]:
    """The deploy guide's queues with the configured local backoff."""
    low = settings.queue.local_min_backoff_seconds
    high = settings.queue.local_max_backoff_seconds
    return {
        spec.name: replace(spec, min_backoff_seconds=low, max_backoff_seconds=high)
        for spec in (INBOUND, OUTBOUND)
    }


def dispatch_deadline(settings: Settings) -> int:
    """Cloud Tasks' dispatch deadline: above one step's longest run (an LLM call with its
    deadline, or a Graph send), within Cloud Tasks' 15 s to 30 min."""
    return int(min(1800, max(30, settings.openai.timeout_seconds * 2 + 20)))


def cloud_tasks_queue(settings: Settings) -> CloudTasksQueue:
    """The Cloud Tasks adapter; its client is built on first use, in the serving loop."""
    queue = settings.queue
    assert queue.gcp_project, "checked by the settings"
    assert queue.internal_task_base_url, "checked by the settings"
    target = CallbackTarget(
        base_url=queue.internal_task_base_url,
        internal_token=settings.internal_task_token,
        service_account=queue.cloud_tasks_service_account,
        audience=queue.oidc_audience,
        dispatch_deadline_seconds=dispatch_deadline(settings),
    )
    names = {"inbound": queue.inbound_queue_name, "outbound": queue.outbound_queue_name}
    emulator = queue.cloud_tasks_emulator_host
    return CloudTasksQueue(
        lambda: create_tasks_client(emulator),
        queue.gcp_project,
        queue.gcp_location,
        names,
        target,
        stats_client=lambda: create_stats_client(emulator),
    )


def handoff_notifier(
    settings: Settings, queue: TaskQueue, telemetry: Telemetry | None = None
) -> HandoffNotifier:
    """The mode-change notifier: posting to HANDOFF_WEBHOOK_URL, or doing nothing unset."""
    handoff = settings.handoff
    poster = None
    if handoff.webhook_url:
        poster = HttpWebhookPoster(handoff.webhook_url, handoff.webhook_timeout_seconds)
    # The settings refuse a URL without a secret; unset, nothing is ever signed.
    return HandoffNotifier(queue, poster, handoff.webhook_secret or "", telemetry)


def iap_verifier(settings: Settings) -> IapVerifier | None:
    """The check of Cloud Run IAP's signed assertion when OPS_TRUST_IAP is on, else None."""
    console = settings.console
    if not console.trust_iap:
        return None
    assert console.iap_audience is not None  # checked by the settings
    return IapVerifier(console.iap_audience, console.iap_keys_url, create_oidc_http_client())


def oidc_verifier(settings: Settings) -> OidcVerifier | None:
    """The task routes' ID-token check, or None when CLOUD_TASKS_SERVICE_ACCOUNT is unset."""
    queue = settings.queue
    if not queue.cloud_tasks_service_account:
        return None
    assert queue.oidc_audience is not None  # checked by the settings
    return OidcVerifier(
        queue.oidc_audience,
        queue.google_oidc_certs_url,
        frozenset({queue.cloud_tasks_service_account}),
        create_oidc_http_client(),
    )


@dataclass
class Container:
    """Everything a running pyloto needs, built once; `start()` and `stop()` run it.

    What it opened is closed by one exit stack, in the reverse order of opening: the
    background sweeps and the local workers first, the connections, then telemetry.
    """

    sole_instance: bool
    settings: Settings
    chart: Statechart
    machine: LifecycleMachine
    store: StateStore
    queue: TaskQueue
    outbox: Outbox
    advancer: Advancer
    ingestor: Ingestor
    sweeper: Sweeper
    clock: Callable[[], float]
    # Tells a person when a conversation changes mode (application/handoff_notices.py).
    notifier: HandoffNotifier
    oidc_verifier: OidcVerifier | None = None
    accounts: Accounts | None = None
    iap_verifier: IapVerifier | None = None
    telemetry_runtime: TelemetryRuntime | None = None
    instances: InstanceRegistry | None = None
    durability: DurabilityGate | None = None
    conversations: Conversations | None = None
    # Cloud Tasks' retries its task handlers saw, for the console's Queues page.
    retries_seen: RecentRetries = field(default_factory=RecentRetries)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack, repr=False)

    def __post_init__(self) -> None:
        """Own every client built for it, opened or not: stop() closes them all."""
        stack = self._stack
        if self.telemetry_runtime is not None:
            # Exports what is buffered; in a thread, as exporters block on the network.
            stack.push_async_callback(asyncio.to_thread, self.telemetry_runtime.shutdown)
        accounts = self.accounts.store if self.accounts is not None else None
        resources = (
            self.outbox,
            self.oidc_verifier,
            self.notifier,
            self.iap_verifier,
            accounts,
            self.store,
        )
        for resource in resources:
            close = getattr(resource, "close", None)
            if close is not None:
                stack.push_async_callback(close)
        media = self.advancer.context.media
        close_media = getattr(media, "close", None) if media is not None else None
        if close_media is not None:
            stack.push_async_callback(close_media)
        llm = self.advancer.context.llm
        close_llm = getattr(llm.assistant, "close", None) if llm is not None else None
        if close_llm is not None:
            stack.push_async_callback(close_llm)
        if isinstance(self.queue, CloudTasksQueue):
            stack.push_async_callback(self.queue.close)

    async def start(self) -> None:
        """Open the store, start the workers and re-queue what a previous run left open.

        The only user of its store re-queues every open record (a previous run of this
        process left them); an instance sharing Redis re-queues only the stuck ones, as the
        others may be working on the rest. A shared store that is down at start-up is not
        fatal: requests get 503 until it answers.
        """
        try:
            await self.store.ping()
        except StoreUnavailable:
            if self.sole_instance:
                raise
            log.exception("store_unavailable_at_start", extra={"event": "store_unavailable"})
        if self.durability is not None:
            # Checked now, then every second: webhooks get 503 until it holds.
            await self.durability.check()
            self.durability.watch()
            self._stack.push_async_callback(self.durability.stop)
        if not isinstance(self.queue, LocalQueue):
            # Cloud Tasks holds the work; Cloud Scheduler calls POST /internal/sweep. On Redis
            # the beat still checks that Redis keeps what it acknowledged.
            if self.instances is not None:
                self.sweeper.watch(
                    self.instances, BEAT_INTERVAL_SECONDS, DEAD_AFTER_SECONDS, adopting=False
                )
                self._stack.push_async_callback(self.sweeper.stop)
            return
        if self.instances is not None:
            # Last on the way out: once this instance's workers have stopped, what it still
            # owns is adopted by the others at their next beat.
            self._stack.push_async_callback(self._retire, self.instances)
        self.queue.start(self._run_task)
        self._stack.push_async_callback(self.queue.stop)
        try:
            await self.sweeper.sweep(0.0 if self.sole_instance else STUCK_AFTER_SECONDS)
        except StoreUnavailable:
            log.exception("sweep_failed", extra={"event": "sweep_failed"})
        self.sweeper.start(SWEEP_INTERVAL_SECONDS, STUCK_AFTER_SECONDS)
        if self.instances is not None:
            self.sweeper.watch(self.instances, BEAT_INTERVAL_SECONDS, DEAD_AFTER_SECONDS)
        self._stack.push_async_callback(self.sweeper.stop)

    async def stop(self) -> None:
        """Stop the workers and release connections."""
        await self._stack.aclose()

    @staticmethod
    async def _retire(instances: InstanceRegistry) -> None:
        try:
            await instances.retire()
        except StoreUnavailable:
            log.warning("retire_failed", extra={"event": "retire_failed"})

    @property
    def telemetry(self) -> Telemetry:
        """What the code records spans and metrics with."""
        return self.advancer.telemetry

    def max_attempts(self, state: str) -> int:
        """Attempts the queue of `state`'s step gives a task (the deploy guide's numbers)."""
        spec = self.chart.states.get(state)
        return (OUTBOUND if spec and spec.queue == "outbound" else INBOUND).max_attempts

    async def _run_task(self, task: Task, attempt: int) -> None:
        # The same delivery paths as the Cloud Tasks routes: retries, the last attempt's dead
        # letter and lease handling are one piece of code for both queues.
        if task.state == NOTIFY_STATE:
            await self._notify(task.message_id, attempt)
            return
        await self.advancer.deliver(
            task.message_id,
            task.state,
            attempt,
            self.max_attempts(task.state),
            task.traceparent,
        )

    async def _notify(self, key: str, attempt: int) -> None:
        try:
            notice = HandoffNotice.from_key(key)
        except InvalidNotice:  # never written by this code: nothing a retry could fix
            log.error("handoff_notice_invalid", extra={"event": "handoff_notice_invalid"})
            return
        await self.notifier.deliver(notice, attempt)


def handoff_policy(settings: Settings) -> Handoff:
    """The handoff settings as the steps use them."""
    handoff, whatsapp = settings.handoff, settings.whatsapp
    template = whatsapp.reengagement_template
    return Handoff(
        keywords=Keywords.of(handoff.keywords),
        release_keywords=Keywords.of(handoff.release_keywords),
        acknowledgment=handoff.acknowledgment,
        reengagement=(template, whatsapp.reengagement_language) if template else None,
    )


def burst_policy(settings: Settings) -> Bursts:
    """How bursts are coalesced, the LLM budget, and whether the typing indicator shows."""
    bursts = settings.bursts
    return Bursts(
        quiet_seconds=bursts.quiet_seconds,
        max_wait_seconds=bursts.max_wait_seconds,
        llm_per_minute=bursts.llm_per_minute,
        typing=settings.whatsapp.typing_indicator,
    )


def bootstrap(
    settings: Settings,
    *,
    store: StateStore | None = None,
    outbox: Outbox | None = None,
    clock: Callable[[], float] = time.time,
    assistant: LLMRouting | None = None,
    telemetry: TelemetryRuntime | None = None,
    queue: TaskQueue | None = None,
    media: MediaSource | None = None,
    accounts: AccountStore | None = None,
) -> Container:
    """Build the container; no connection is opened until `start()`.

    With WHATSAPP_ACCESS_TOKEN the Graph API outbox sends replies (unless `outbox` is given);
    without it they go to the dry-run outbox beside the store.
    """
    runtime = telemetry or telemetry_runtime(settings)
    chart = load_chart()
    machine = LifecycleMachine(chart)
    instance_id = uuid.uuid4().hex
    if store is None:
        store, default_outbox, sole_instance = _storage(settings, chart, instance_id)
        outbox = outbox or graph_outbox(settings, store, runtime.telemetry) or default_outbox
    else:
        sole_instance = False
        outbox = (
            outbox
            or graph_outbox(settings, store, runtime.telemetry)
            or DryRunOutbox(settings.state.sqlite_path, default_number(settings))
        )
    if queue is not None:
        pass  # the caller's (tests run tasks by hand through the HTTP task route)
    elif settings.queue.effective_backend == "cloud_tasks":
        queue = cloud_tasks_queue(settings)
    else:
        queue = LocalQueue(queue_specs(settings))
    context = StepContext(
        store=store,
        outbox=outbox,
        clock=clock,
        templates=reply_templates(settings),
        instance_id=instance_id,
        sole_instance=sole_instance,
        llm=assistant_routing(settings, runtime.telemetry) if assistant is None else assistant,
        hash_key=settings.hash_key,
        pacing=send_pacing(settings),
        media=media_source(settings, runtime.telemetry) if media is None else media,
        numbers=business_numbers(settings),
        handoff=handoff_policy(settings),
        bursts=burst_policy(settings),
    )
    notifier = handoff_notifier(settings, queue, runtime.telemetry)

    async def announce(change: ModeChange) -> None:
        await notifier.notify(
            HandoffNotice(
                change.conversation,
                change.mode,
                change.previous,
                change.reason,
                change.at,
                change.version,
            )
        )

    conversation_chart = load_chart(statechart_dir() / CONVERSATION_CHART_FILE)
    modes = ModeRules(LifecycleMachine(conversation_chart), announce, runtime.telemetry.tracer)
    advancer = Advancer(machine, store, queue, context, runtime.telemetry, modes)
    accounts = accounts or account_store(settings, store)
    # On Redis, webhooks are acknowledged only while it keeps them through a crash.
    gate = None
    if isinstance(store, RedisStore):
        state = settings.state
        gate = DurabilityGate(
            store.persistence,
            state.required_durability,
            declared_fsync=state.redis_appendfsync,
        )
    purge = outbox.purge if isinstance(outbox, DryRunOutbox) else None
    retention = settings.state.retention_days * 86400
    conversations = Conversations(store, store, queue, advancer.task_for, modes, clock)
    return Container(
        sole_instance=sole_instance,
        settings=settings,
        chart=chart,
        machine=machine,
        store=store,
        queue=queue,
        outbox=outbox,
        advancer=advancer,
        ingestor=Ingestor(store, advancer, clock, runtime.telemetry, gate),
        sweeper=Sweeper(
            store,
            queue,
            chart,
            clock,
            retention,
            purge,
            runtime.telemetry,
            release_idle=lambda: conversations.release_idle(settings.handoff.idle_seconds),
        ),
        conversations=conversations,
        clock=clock,
        notifier=notifier,
        oidc_verifier=oidc_verifier(settings),
        accounts=console_accounts(settings, accounts) if accounts is not None else None,
        iap_verifier=iap_verifier(settings),
        telemetry_runtime=runtime,
        # Instances on Redis beat; with in-process queues they adopt what a dead one left.
        instances=store if isinstance(store, RedisStore) else None,
        durability=gate,
    )
