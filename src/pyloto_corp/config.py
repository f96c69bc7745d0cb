"""Settings: one object, nested by subsystem, read once from the environment.

Every field is read from the environment variable named in its alias (the deploy guide's
names are kept). Errors name the variable; combinations that would lose data or split state
across instances refuse to start.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pyloto_corp.domain.conversation import DEFAULT_ACKNOWLEDGMENT, DEFAULT_HANDOFF_KEYWORDS

Environment = Literal["development", "staging", "production"]

# Development values used only when ENVIRONMENT=development and the variable is unset.
# They are public (the README and docs/ print them), so they protect nothing: staging and production
# refuse to start without real values.
DEV_APP_SECRET = "pyloto-dev-app-secret"  # noqa: S105
DEV_VERIFY_TOKEN = "pyloto-dev-verify-token"  # noqa: S105
DEV_INTERNAL_TASK_TOKEN = "pyloto-dev-internal-token"  # noqa: S105


class ConfigError(Exception):
    """The configuration cannot be used; the message names the variables to fix."""


def _comma_list(value: Any) -> Any:
    """A comma-separated variable as its items (blanks dropped); other values as given."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


class _Section(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class AppSettings(_Section):
    """Process-wide behaviour."""

    environment: Environment = Field(
        "development",
        alias="ENVIRONMENT",
        description="development | staging | production; staging/production demand secrets.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", alias="LOG_LEVEL", description="Minimum level of the JSON log lines on stdout."
    )
    webhook_max_body_bytes: int = Field(
        3 * 1024 * 1024,
        alias="WEBHOOK_MAX_BODY_BYTES",
        gt=0,
        description="Larger webhook bodies are answered 413 (Meta sends at most 3 MB).",
    )
    port: int = Field(
        8000, alias="PORT", ge=1, le=65535, description="`pyloto serve` port (Cloud Run sets it)."
    )
    request_read_timeout_seconds: float = Field(
        10.0,
        alias="REQUEST_READ_TIMEOUT_SECONDS",
        gt=0,
        le=300,
        description=(
            "`pyloto serve` closes a connection that takes longer to send a request's headers "
            "and body (a slow or stalled client); handling the request is not bounded by it."
        ),
    )
    ops_console_enabled: bool = Field(
        False,
        alias="OPS_CONSOLE_ENABLED",
        description=(
            "Serve the operations console under /ops (sign-in with an account of "
            "`pyloto users add`, see docs/accounts.md)."
        ),
    )
    hash_key: str | None = Field(
        None,
        alias="PRIVACY_HASH_KEY",
        description="Keys the hashes that stand for a customer (rollout bucket, conversation).",
        json_schema_extra={"unset": "the app secret"},
    )


def _price_list(value: Any) -> Any:
    """WHATSAPP_PRICES_BY_CATEGORY (`category=price,...`) as {category: price}; other
    values as given."""
    if not isinstance(value, str):
        return value
    prices: dict[str, float] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        category, sep, price = item.partition("=")
        try:
            number = float(price) if sep and category.strip() else -1.0
        except ValueError:
            number = -1.0
        if not 0 <= number < float("inf"):  # also refuses nan
            raise ValueError(
                "WHATSAPP_PRICES_BY_CATEGORY: expected category=price (a number >= 0) "
                f"separated by commas, got {item[:40]!r}"
            )
        prices[category.strip().lower()] = number
    return prices


class CostSettings(_Section):
    """Prices of the console's Cost page (0: not priced, the cost shown as -)."""

    currency: str = Field(
        "USD",
        alias="COST_CURRENCY",
        max_length=8,
        description="The currency the prices below are in (a label on the Cost page).",
    )
    llm_input_per_million: float = Field(
        0.0,
        alias="LLM_PRICE_INPUT_PER_MILLION",
        ge=0,
        allow_inf_nan=False,
        description="Price of one million LLM input tokens (0: not priced).",
    )
    llm_output_per_million: float = Field(
        0.0,
        alias="LLM_PRICE_OUTPUT_PER_MILLION",
        ge=0,
        allow_inf_nan=False,
        description="Price of one million LLM output tokens (0: not priced).",
    )
    whatsapp_per_billable: float = Field(
        0.0,
        alias="WHATSAPP_PRICE_PER_BILLABLE",
        ge=0,
        allow_inf_nan=False,
        description="Price of one message Meta calls billable, any category (0: not priced).",
    )
    whatsapp_by_category: Annotated[dict[str, float], BeforeValidator(_price_list)] = Field(
        default_factory=dict,
        alias="WHATSAPP_PRICES_BY_CATEGORY",
        json_schema_extra={"unset": "none (every category at WHATSAPP_PRICE_PER_BILLABLE)"},
        description="Prices per pricing category, e.g. `service=0.0068,marketing=0.0625`; "
        "a category named here wins over WHATSAPP_PRICE_PER_BILLABLE.",
    )


class ConsoleSettings(_Section):
    """The console's accounts: sessions, sign-in limits, Cloud Run IAP (docs/accounts.md)."""

    session_hours: float = Field(
        12.0,
        alias="OPS_SESSION_HOURS",
        gt=0,
        le=24 * 30,
        description="How long a console session lasts after its sign-in.",
    )
    signin_failures_per_account: int = Field(
        5,
        alias="OPS_SIGNIN_FAILURES_PER_ACCOUNT",
        ge=1,
        description="Failed sign-ins to one account within OPS_SIGNIN_ACCOUNT_WINDOW_SECONDS "
        "after which its sign-ins are refused (429) until the window ends.",
    )
    signin_account_window_seconds: float = Field(
        300.0,
        alias="OPS_SIGNIN_ACCOUNT_WINDOW_SECONDS",
        gt=0,
        description="The window of OPS_SIGNIN_FAILURES_PER_ACCOUNT.",
    )
    signin_failures_per_client: int = Field(
        20,
        alias="OPS_SIGNIN_FAILURES_PER_CLIENT",
        ge=1,
        description="Failed sign-ins from one client address within "
        "OPS_SIGNIN_CLIENT_WINDOW_SECONDS after which its sign-ins are refused (429).",
    )
    signin_client_window_seconds: float = Field(
        60.0,
        alias="OPS_SIGNIN_CLIENT_WINDOW_SECONDS",
        gt=0,
        description="The window of OPS_SIGNIN_FAILURES_PER_CLIENT.",
    )
    client_address_hops: int = Field(
        0,
        alias="OPS_CLIENT_ADDRESS_HOPS",
        ge=0,
        le=10,
        description="Where the sign-in limit reads the client's address: 0 the connection's "
        "peer; N the Nth entry from the right of X-Forwarded-For (1 behind Cloud Run's front "
        "end, 2 behind a load balancer in front of it).",
    )
    trust_iap: bool = Field(
        False,
        alias="OPS_TRUST_IAP",
        description="Sign in whoever Cloud Run IAP names (X-Goog-Authenticated-User-Email) "
        "as the account of that name; only with OPS_IAP_AUDIENCE, whose signed assertion "
        "(X-Goog-IAP-JWT-Assertion) is checked.",
    )
    iap_audience: str | None = Field(
        None,
        alias="OPS_IAP_AUDIENCE",
        description="The audience of IAP's signed assertion, e.g. "
        "/projects/NUMBER/locations/REGION/services/SERVICE.",
    )
    iap_keys_url: str = Field(
        "https://www.gstatic.com/iap/verify/public_key-jwk",
        alias="OPS_IAP_KEYS_URL",
        description="Where IAP's public keys (JWKS, ES256) are fetched.",
    )


class WhatsAppSettings(_Section):
    """Meta WhatsApp Cloud API credentials and endpoints."""

    app_secret: str | None = Field(
        None,
        alias="WHATSAPP_APP_SECRET",
        description="App secret that signs webhooks (X-Hub-Signature-256).",
        json_schema_extra={"unset": "dev value (development only)"},
    )
    verify_token: str | None = Field(
        None,
        alias="WHATSAPP_VERIFY_TOKEN",
        description="Token of the GET /webhook subscription check.",
        json_schema_extra={"unset": "dev value (development only)"},
    )
    access_token: str | None = Field(
        None,
        alias="WHATSAPP_ACCESS_TOKEN",
        description="Graph API token; without it replies go to the dry-run outbox.",
    )
    phone_number_id: str | None = Field(
        None,
        alias="WHATSAPP_PHONE_NUMBER_ID",
        pattern=r"^\d+$",
        description="The business number's id: the default sender (a message naming no number); "
        "required with a token unless WHATSAPP_PHONE_NUMBER_IDS is set.",
    )
    phone_number_ids: Annotated[tuple[str, ...], BeforeValidator(_comma_list)] = Field(
        (),
        alias="WHATSAPP_PHONE_NUMBER_IDS",
        description=(
            "More business numbers of the app, comma-separated: a message to one is read "
            "and answered from it; one to any other number is ignored."
        ),
    )
    access_tokens: str | None = Field(
        None,
        alias="WHATSAPP_ACCESS_TOKENS",
        description=(
            "`id:token` pairs, comma-separated, for numbers whose Graph API token is not "
            "WHATSAPP_ACCESS_TOKEN (the whole value may be one sm:// reference)."
        ),
        repr=False,
    )
    api_base_url: str = Field(
        "https://graph.facebook.com",
        alias="WHATSAPP_API_BASE_URL",
        description="Graph API host (a local fake in tests).",
    )
    api_version: str = Field(
        "v26.0",
        alias="WHATSAPP_API_VERSION",
        pattern=r"^v\d+\.\d+$",
        description="Graph API version in the messages URL; `pyloto serve` logs one "
        "graph_version_ending WARNING from 90 days before Meta retires it (dates in "
        "adapters/graph_versions.py, from Meta's changelog).",
    )
    timeout_seconds: float = Field(
        10.0,
        alias="WHATSAPP_TIMEOUT_SECONDS",
        gt=0,
        le=25,
        description="Timeout of one Graph API call; below the send claim's 30 s lease.",
    )
    typing_indicator: bool = Field(
        True,
        alias="WHATSAPP_TYPING_INDICATOR",
        description="Show a typing indicator when marking an inbound message as read.",
    )
    reconcile_seconds: float = Field(
        120.0,
        alias="WHATSAPP_RECONCILE_SECONDS",
        gt=0,
        le=3600,
        description="After a send whose outcome is unknown, wait this long for a status "
        "webhook carrying the record's reply key; then it is sent once more only after a "
        "Graph error or a vanished claim, else dead-lettered as outcome unknown (above 0: "
        "Graph cannot be asked what it sent).",
    )
    pacing_seconds: float = Field(
        6.0,
        alias="WHATSAPP_PACING_SECONDS",
        ge=0,
        description="One message to a customer per this many seconds (Meta's pair rate); "
        "0 turns pacing off.",
    )
    local_media_dir: Path = Field(
        Path("./pyloto-media"),
        alias="WHATSAPP_LOCAL_MEDIA_DIR",
        description=(
            "Without WHATSAPP_ACCESS_TOKEN, where the media step reads voice notes and "
            "pictures (`pyloto simulate --voice FILE` puts them there)."
        ),
    )
    pacing_burst: int = Field(
        5, alias="WHATSAPP_PACING_BURST", ge=1, description="Messages a customer may get at once."
    )
    reengagement_template: str | None = Field(
        None,
        alias="WHATSAPP_REENGAGEMENT_TEMPLATE",
        description="Approved template sent instead of a reply outside the 24-hour "
        "customer-service window (unset: such a reply is held as `window_closed`).",
    )
    reengagement_language: str = Field(
        "pt_BR",
        alias="WHATSAPP_REENGAGEMENT_TEMPLATE_LANGUAGE",
        min_length=2,
        description="Language code of the re-engagement template.",
    )

    @field_validator("phone_number_ids")
    @classmethod
    def _numeric_ids(cls, ids: tuple[str, ...]) -> tuple[str, ...]:
        wrong = [number for number in ids if not number.isdigit()]
        if wrong:
            raise ValueError(
                f"WHATSAPP_PHONE_NUMBER_IDS: {wrong[0]!r} is not a phone number id (digits)"
            )
        return ids

    @property
    def business_numbers(self) -> tuple[str, ...]:
        """Every business number answered for, the default (WHATSAPP_PHONE_NUMBER_ID, else
        the first of WHATSAPP_PHONE_NUMBER_IDS) first."""
        numbers = (
            (self.phone_number_id, *self.phone_number_ids)
            if self.phone_number_id
            else self.phone_number_ids
        )
        return tuple(dict.fromkeys(numbers))

    @property
    def own_tokens(self) -> dict[str, str]:
        """The tokens WHATSAPP_ACCESS_TOKENS gives, by number (unusable pairs left out:
        `token_problems` names them)."""
        pairs = (pair.partition(":") for pair in _comma_list(self.access_tokens or ""))
        return {number: token for number, _, token in pairs if number.isdigit() and token}

    def token_for(self, number: str) -> str | None:
        """The Graph API token of a business number: its own, else WHATSAPP_ACCESS_TOKEN."""
        return self.own_tokens.get(number) or self.access_token

    @property
    def sends(self) -> bool:
        """Whether replies go to the Graph API (a token is set), not the dry-run outbox."""
        return bool(self.access_token or self.access_tokens)

    def token_problems(self) -> list[str]:
        """What is wrong with the numbers and tokens together (never showing a token)."""
        problems: list[str] = []
        numbers = self.business_numbers
        for index, pair in enumerate(_comma_list(self.access_tokens or ""), 1):
            number, colon, token = pair.partition(":")
            if not (number.isdigit() and colon and token):
                problems.append(
                    f"WHATSAPP_ACCESS_TOKENS: pair {index} is not `phone_number_id:token`"
                )
            elif number not in numbers:
                problems.append(
                    f"WHATSAPP_ACCESS_TOKENS: pair {index} names {number}, which is neither "
                    "WHATSAPP_PHONE_NUMBER_ID nor in WHATSAPP_PHONE_NUMBER_IDS"
                )
        if self.sends and not numbers:
            variable = "WHATSAPP_ACCESS_TOKEN" if self.access_token else "WHATSAPP_ACCESS_TOKENS"
            problems.append(f"{variable} needs WHATSAPP_PHONE_NUMBER_ID (the sending number)")
        elif self.sends:
            problems.extend(
                f"business number {number} has no Graph API token: set WHATSAPP_ACCESS_TOKEN "
                "or give it one in WHATSAPP_ACCESS_TOKENS"
                for number in numbers
                if not self.token_for(number)
            )
        return problems


class HandoffSettings(_Section):
    """When the bot hands a conversation to a person, and where a person is told that a
    conversation changed mode (docs/handoff.md)."""

    keywords: Annotated[tuple[str, ...], BeforeValidator(_comma_list)] = Field(
        DEFAULT_HANDOFF_KEYWORDS,
        alias="HANDOFF_KEYWORDS",
        description="Comma-separated phrases that ask for a person (whole words; case, "
        "accents and punctuation aside); empty: only LLM#1 and agents hand off.",
    )
    release_keywords: Annotated[tuple[str, ...], BeforeValidator(_comma_list)] = Field(
        (),
        alias="HANDOFF_RELEASE_KEYWORDS",
        description="Comma-separated phrases with which a customer hands the conversation "
        "back to the bot (none by default).",
    )
    acknowledgment: str = Field(
        DEFAULT_ACKNOWLEDGMENT,
        alias="HANDOFF_ACKNOWLEDGMENT",
        min_length=1,
        max_length=1024,
        description="The one reply sent when a conversation starts waiting for a person.",
    )
    idle_seconds: float = Field(
        7200.0,
        alias="HANDOFF_IDLE_SECONDS",
        gt=0,
        description="A conversation with a person and no agent activity this long goes "
        "back to the bot (checked by the sweeper).",
    )
    webhook_url: str | None = Field(
        None,
        alias="HANDOFF_WEBHOOK_URL",
        pattern=r"^https?://[^\s]+$",
        description="POSTed a signed JSON notice, through the outbound queue with its "
        "retries, whenever a conversation changes mode; unset, no notice is sent.",
        repr=False,  # a Slack or n8n webhook URL is a credential in itself
    )
    webhook_secret: str | None = Field(
        None,
        alias="HANDOFF_WEBHOOK_SECRET",
        description="Key of the notices' X-Pyloto-Signature-256 (HMAC-SHA256 of the body); "
        "required with HANDOFF_WEBHOOK_URL.",
        repr=False,
    )
    webhook_timeout_seconds: float = Field(
        10.0,
        alias="HANDOFF_WEBHOOK_TIMEOUT_SECONDS",
        gt=0,
        le=30,
        description="Timeout of one notice's POST; a timeout is retried like a 5xx.",
    )


class BurstSettings(_Section):
    """How a customer's burst of messages is answered, and what LLM work one conversation
    may cause (docs/bursts.md)."""

    quiet_seconds: float = Field(
        2.5,
        alias="BURST_QUIET_SECONDS",
        ge=0,
        le=30,
        description="A customer's message waits this long for another before it is "
        "answered, with every unanswered message of theirs in one reply; each new message "
        "restarts the wait. 0: every message gets its own reply, as it comes.",
    )
    max_wait_seconds: float = Field(
        12.0,
        alias="BURST_MAX_WAIT_SECONDS",
        gt=0,
        le=120,
        description="A customer who keeps writing is answered anyway once the first "
        "unanswered message of theirs is this old (the newest is answered then).",
    )
    llm_per_minute: int = Field(
        6,
        alias="LLM_MAX_PIPELINES_PER_MINUTE",
        ge=0,
        description="LLM pipelines (LLM#1 to LLM#3) one conversation may run a minute; a "
        "burst beyond it gets its template (fallback llm_budget). 0: unbounded.",
    )


class OpenAISettings(_Section):
    """The three LLM steps."""

    enabled: bool | None = Field(
        None,
        alias="OPENAI_ENABLED",
        description="Run the LLM steps.",
        json_schema_extra={"unset": "true if OPENAI_API_KEY is set"},
    )
    api_key: str | None = Field(None, alias="OPENAI_API_KEY", description="OpenAI API key.")
    model: str = Field(
        "gpt-4o-mini",
        alias="OPENAI_MODEL",
        min_length=1,
        description="Model of the three LLM steps.",
    )
    transcription_model: str = Field(
        "gpt-4o-mini-transcribe",
        alias="OPENAI_TRANSCRIPTION_MODEL",
        min_length=1,
        description="Model that transcribes voice notes (audio transcriptions endpoint, "
        "Portuguese hinted).",
    )
    timeout_seconds: float = Field(
        10.0, alias="OPENAI_TIMEOUT_SECONDS", gt=0, le=120, description="Per-call timeout."
    )
    base_url: str | None = Field(
        None, alias="OPENAI_BASE_URL", description="Any OpenAI-compatible server."
    )
    rollout_percent: int = Field(
        100,
        alias="OPENAI_ROLLOUT_PERCENT",
        ge=0,
        le=100,
        description="Share of senders routed to the LLM.",
    )
    max_retries: int = Field(
        1,
        alias="OPENAI_MAX_RETRIES",
        ge=0,
        le=3,
        description="SDK retries of a failed call, all within OPENAI_TIMEOUT_SECONDS.",
    )
    mask_pii: bool = Field(
        True,
        alias="OPENAI_MASK_PII",
        description="Mask CPF, CNPJ, e-mails and phones in the text sent to the LLM.",
    )
    structured_output: Literal["auto", "json_schema", "json_object", "prompt"] = Field(
        "auto",
        alias="OPENAI_STRUCTURED_OUTPUT",
        description="How the steps ask for JSON: json_schema (strict), json_object (with the "
        "schema), prompt (schema in the prompt only); auto steps down when the server refuses.",
    )
    temperature: float | None = Field(
        None,
        alias="OPENAI_TEMPERATURE",
        ge=0,
        le=2,
        description="Sampling temperature of the chat steps; unset sends none (the model's "
        "default). Dropped for the process when the server refuses it.",
        json_schema_extra={"unset": "none sent"},
    )
    vision_model: str | None = Field(
        None,
        alias="OPENAI_VISION_MODEL",
        min_length=1,
        description="Model that describes pictures (on the chat server).",
        json_schema_extra={"unset": "OPENAI_MODEL"},
    )
    transcription_base_url: str | None = Field(
        None,
        alias="OPENAI_TRANSCRIPTION_BASE_URL",
        description="OpenAI-compatible server of voice note transcriptions.",
        json_schema_extra={"unset": "OPENAI_BASE_URL"},
    )
    transcription_api_key: str | None = Field(
        None,
        alias="OPENAI_TRANSCRIPTION_API_KEY",
        description="API key of the transcription server.",
        json_schema_extra={"unset": "OPENAI_API_KEY"},
    )

    @property
    def is_enabled(self) -> bool:
        """Whether LLM steps run (explicit flag, else presence of a key)."""
        return self.enabled if self.enabled is not None else self.api_key is not None


class BusinessSettings(_Section):
    """What LLM#2 may say about the business."""

    name: str = Field(
        "nossa empresa",
        alias="BUSINESS_NAME",
        min_length=1,
        description="The business the replies speak for.",
    )
    hours: str = Field(
        "segunda a sexta, das 9h às 18h",
        alias="BUSINESS_HOURS",
        description="Opening hours the replies may quote.",
    )
    faq: str = Field(
        "",
        alias="BUSINESS_FAQ",
        description="A short FAQ, inline (the only facts the replies may use).",
    )
    faq_file: Path | None = Field(
        None, alias="BUSINESS_FAQ_FILE", description="The FAQ from a UTF-8 file instead."
    )
    reply_templates_file: Path | None = Field(
        None,
        alias="REPLY_TEMPLATES_FILE",
        description=(
            "A UTF-8 TOML file of reply templates; its keys replace the shipped defaults "
            "(pyloto_corp/reply_templates.toml), the others stay."
        ),
    )
    website_url: str | None = Field(
        None,
        alias="BUSINESS_WEBSITE_URL",
        pattern=r"^https://[^/\s]+",
        description="https site; the only host CTA buttons may link to.",
    )


class StateSettings(_Section):
    """Where records live (state and dedupe are one store)."""

    backend: Literal["sqlite", "redis"] | None = Field(
        None,
        alias="STATE_BACKEND",
        description="Where records live.",
        json_schema_extra={"unset": "DEDUPE_BACKEND, else `sqlite`"},
    )
    dedupe_backend: Literal["sqlite", "redis"] | None = Field(
        None,
        alias="DEDUPE_BACKEND",
        description="The deploy guide's name for the same store; must agree with STATE_BACKEND.",
    )
    sqlite_path: Path = Field(
        Path("./pyloto.db"),
        alias="STATE_SQLITE_PATH",
        description="SQLite database file (with SQLite state, the dry-run outbox shares it).",
    )
    redis_url: str | None = Field(
        None,
        alias="REDIS_URL",
        pattern=r"^(redis|rediss|unix)://",
        description="redis://, rediss:// (TLS) or unix:// (socket) URL of the Redis store.",
    )
    redis_key_prefix: str = Field(
        "pyloto",
        alias="REDIS_KEY_PREFIX",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Prefix of every Redis key, so environments can share one Redis.",
    )
    redis_timeout_seconds: float = Field(
        2.0,
        alias="REDIS_TIMEOUT_SECONDS",
        gt=0,
        le=30,
        description="Connect and socket timeout of each Redis call.",
    )
    redis_durability: Literal["always", "everysec", "none"] = Field(
        "always",
        alias="REDIS_DURABILITY",
        description="What Redis must keep for a webhook to be acknowledged: always (AOF, "
        "appendfsync always), everysec (AOF fsynced at least every second: a crash of Redis's "
        "machine loses up to ~1 s of acknowledged messages) or none (accept any loss).",
    )
    redis_appendfsync: Literal["always", "everysec", "no"] | None = Field(
        None,
        alias="REDIS_APPENDFSYNC",
        description="The AOF's appendfsync of a Redis that refuses CONFIG (Memorystore), as "
        "its sync setting says; ignored where CONFIG GET answers.",
    )
    redis_allow_no_persistence: bool = Field(
        False,
        alias="REDIS_ALLOW_NO_PERSISTENCE",
        description="Accept losing acknowledged messages: the same as REDIS_DURABILITY=none.",
    )
    retention_days: float = Field(
        8.0,
        alias="STATE_RETENTION_DAYS",
        ge=7,
        description="Records (which hold personal data) are purged after this; >= Meta's 7 days.",
    )

    @property
    def effective_backend(self) -> Literal["sqlite", "redis"]:
        """STATE_BACKEND, else DEDUPE_BACKEND, else sqlite."""
        return self.backend or self.dedupe_backend or "sqlite"

    @property
    def required_durability(self) -> Literal["always", "everysec", "none"]:
        """REDIS_DURABILITY, or none when REDIS_ALLOW_NO_PERSISTENCE=true."""
        return "none" if self.redis_allow_no_persistence else self.redis_durability


class QueueSettings(_Section):
    """How transitions are scheduled."""

    backend: Literal["local", "cloud_tasks"] | None = Field(
        None,
        alias="QUEUE_BACKEND",
        description="local (in-process) or cloud_tasks.",
        json_schema_extra={"unset": "`local` (or CLOUD_TASKS_ENABLED's)"},
    )
    cloud_tasks_enabled: bool | None = Field(
        None, alias="CLOUD_TASKS_ENABLED", description="Deploy guide's switch; true = cloud_tasks."
    )
    gcp_project: str | None = Field(
        None,
        alias="GCP_PROJECT",
        description="Project of the Cloud Tasks queues and of short sm:// references.",
    )
    gcp_location: str = Field(
        "us-central1", alias="GCP_LOCATION", description="Region of the queues."
    )
    internal_task_base_url: str | None = Field(
        None, alias="INTERNAL_TASK_BASE_URL", description="Public URL tasks call back."
    )
    internal_task_token: str | None = Field(
        None,
        alias="INTERNAL_TASK_TOKEN",
        description="X-Internal-Token of the /internal routes (and the console's sign-in).",
        json_schema_extra={"unset": "dev value (development only)"},
    )
    inbound_queue_name: str = Field(
        "whatsapp-inbound",
        alias="INBOUND_TASK_QUEUE_NAME",
        description="Queue of the dedupe and LLM steps.",
    )
    outbound_queue_name: str = Field(
        "whatsapp-outbound", alias="OUTBOUND_TASK_QUEUE_NAME", description="Queue of the send step."
    )
    cloud_tasks_emulator_host: str | None = Field(
        None, alias="CLOUD_TASKS_EMULATOR_HOST", description="host:port of a local emulator."
    )
    cloud_tasks_service_account: str | None = Field(
        None,
        alias="CLOUD_TASKS_SERVICE_ACCOUNT",
        pattern=r"^[^@\s]+@[^@\s]+$",
        description="E-mail of the account whose OIDC tokens tasks carry; when set, the task "
        "routes accept only its Google-signed tokens instead of X-Internal-Token.",
    )
    cloud_tasks_oidc_audience: str | None = Field(
        None,
        alias="CLOUD_TASKS_OIDC_AUDIENCE",
        description="Audience of the tasks' OIDC tokens.",
        json_schema_extra={"unset": "INTERNAL_TASK_BASE_URL"},
    )
    google_oidc_certs_url: str = Field(
        "https://www.googleapis.com/oauth2/v1/certs",
        alias="GOOGLE_OIDC_CERTS_URL",
        pattern=r"^https?://",
        description="Google's public keys for ID tokens (PEM map or JWKS).",
    )
    cloud_run_service: str | None = Field(
        None, alias="K_SERVICE", description="Set by Cloud Run: the service's name."
    )
    allow_local_queue_on_cloud_run: bool = Field(
        False,
        alias="ALLOW_LOCAL_QUEUE_ON_CLOUD_RUN",
        description="Accept the in-process queue on Cloud Run (work is lost on scale-in).",
    )
    local_min_backoff_seconds: float = Field(
        5.0,
        alias="LOCAL_QUEUE_MIN_BACKOFF_SECONDS",
        gt=0,
        description="First retry delay of the local queue.",
    )
    local_max_backoff_seconds: float = Field(
        600.0,
        alias="LOCAL_QUEUE_MAX_BACKOFF_SECONDS",
        gt=0,
        description="Longest retry delay of the local queue.",
    )

    @property
    def oidc_audience(self) -> str | None:
        """CLOUD_TASKS_OIDC_AUDIENCE, else INTERNAL_TASK_BASE_URL."""
        return self.cloud_tasks_oidc_audience or self.internal_task_base_url

    @property
    def effective_backend(self) -> Literal["local", "cloud_tasks"]:
        """QUEUE_BACKEND, else CLOUD_TASKS_ENABLED, else local."""
        if self.backend is not None:
            return self.backend
        return "cloud_tasks" if self.cloud_tasks_enabled else "local"


class SecretSettings(_Section):
    """Secret Manager access."""

    emulator_host: str | None = Field(
        None, alias="SECRET_MANAGER_EMULATOR_HOST", description="host:port of a local emulator."
    )


class TelemetrySettings(_Section):
    """Where otel.yaml is, and the standard OTEL_* variables that override it."""

    config_path: Path | None = Field(
        None, alias="PYLOTO_OTEL_CONFIG", description="otel.yaml to read instead of the default."
    )
    service_name: str | None = Field(None, alias="OTEL_SERVICE_NAME", description="service.name.")
    traces_exporter: str | None = Field(
        None, alias="OTEL_TRACES_EXPORTER", description="cloud_trace | otlp | console | none."
    )
    metrics_exporter: str | None = Field(
        None, alias="OTEL_METRICS_EXPORTER", description="cloud_monitoring | otlp | console | none."
    )
    traces_sampler: str | None = Field(
        None, alias="OTEL_TRACES_SAMPLER", description="e.g. parentbased_traceidratio."
    )
    traces_sampler_arg: str | None = Field(
        None, alias="OTEL_TRACES_SAMPLER_ARG", description="The sampler's ratio, 0..1."
    )
    sdk_disabled: str | None = Field(
        None, alias="OTEL_SDK_DISABLED", description="true: export no traces or metrics."
    )

    def overrides(self) -> dict[str, str]:
        """The OTEL_* variables that were set, by name."""
        return {
            info.alias: str(getattr(self, name))
            for name, info in type(self).model_fields.items()
            if info.alias and info.alias.startswith("OTEL_") and getattr(self, name) is not None
        }


_environ: ContextVar[Mapping[str, str] | None] = ContextVar("pyloto_environ", default=None)


def _env_names(info: FieldInfo) -> str:
    assert info.alias is not None
    return info.alias


class _FlatEnvironment(PydanticBaseSettingsSource):
    """Reads each section's fields from their flat variable names (OPENAI_MODEL, ...)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ builds the whole mapping

    def __call__(self) -> dict[str, Any]:
        environ = _environ.get()
        source = os.environ if environ is None else environ
        upper = {key.upper(): value for key, value in source.items()}
        result: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            section = field.annotation
            if not (isinstance(section, type) and issubclass(section, _Section)):
                continue
            values = {
                _env_names(info): upper[_env_names(info)]
                for info in section.model_fields.values()
                if upper.get(_env_names(info), "") != ""
            }
            result[name] = values
        return result


class Settings(BaseSettings):
    """Everything pyloto reads from its environment."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    app: AppSettings = Field(default_factory=AppSettings)  # type: ignore[arg-type]
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)  # type: ignore[arg-type]
    costs: CostSettings = Field(default_factory=CostSettings)  # type: ignore[arg-type]
    whatsapp: WhatsAppSettings = Field(default_factory=WhatsAppSettings)  # type: ignore[arg-type]
    openai: OpenAISettings = Field(default_factory=OpenAISettings)  # type: ignore[arg-type]
    handoff: HandoffSettings = Field(default_factory=HandoffSettings)  # type: ignore[arg-type]
    bursts: BurstSettings = Field(default_factory=BurstSettings)  # type: ignore[arg-type]
    business: BusinessSettings = Field(default_factory=BusinessSettings)  # type: ignore[arg-type]
    state: StateSettings = Field(default_factory=StateSettings)  # type: ignore[arg-type]
    queue: QueueSettings = Field(default_factory=QueueSettings)  # type: ignore[arg-type]
    secrets: SecretSettings = Field(default_factory=SecretSettings)  # type: ignore[arg-type]
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)  # type: ignore[arg-type]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _FlatEnvironment(settings_cls))

    @model_validator(mode="after")
    def _refuse_unsafe_combinations(self) -> Settings:
        problems = unsafe_combinations(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def app_secret(self) -> str:
        """Webhook signing secret (development value when unset in development)."""
        return self.whatsapp.app_secret or DEV_APP_SECRET

    @property
    def verify_token(self) -> str:
        """Webhook verification token (development value when unset in development)."""
        return self.whatsapp.verify_token or DEV_VERIFY_TOKEN

    @property
    def hash_key(self) -> str:
        """Key of the customer hashes (rollout bucket, conversation id)."""
        return self.app.hash_key or self.app_secret

    @property
    def internal_task_token(self) -> str:
        """Token of /internal routes (development value when unset in development)."""
        return self.queue.internal_task_token or DEV_INTERNAL_TASK_TOKEN


def unsafe_combinations(settings: Settings) -> list[str]:
    """Reasons this configuration would lose data, split state or run unprotected."""
    return _backend_problems(settings) + _secret_problems(settings) + _oidc_problems(settings)


def _backend_problems(settings: Settings) -> list[str]:
    problems: list[str] = []
    state, queue = settings.state, settings.queue
    if state.backend and state.dedupe_backend and state.backend != state.dedupe_backend:
        problems.append(
            f"STATE_BACKEND={state.backend} and DEDUPE_BACKEND={state.dedupe_backend} differ: "
            "dedupe is the record's create-if-absent, so both must name the same store"
        )
    if queue.backend == "local" and queue.cloud_tasks_enabled:
        problems.append("CLOUD_TASKS_ENABLED=true contradicts QUEUE_BACKEND=local")
    queue_source = "QUEUE_BACKEND=cloud_tasks" if queue.backend else "CLOUD_TASKS_ENABLED=true"
    if state.effective_backend == "sqlite" and queue.effective_backend == "cloud_tasks":
        problems.append(
            f"STATE_BACKEND=sqlite (the default) with {queue_source} would split state across "
            "instances: use STATE_BACKEND=redis with REDIS_URL"
        )
    if state.effective_backend == "redis" and not state.redis_url:
        problems.append("STATE_BACKEND=redis needs REDIS_URL")
    if queue.effective_backend == "cloud_tasks":
        for name, value in (
            ("GCP_PROJECT", queue.gcp_project),
            ("INTERNAL_TASK_BASE_URL", queue.internal_task_base_url),
        ):
            if not value:
                problems.append(f"{queue_source} needs {name}")
    if (
        queue.cloud_run_service
        and queue.effective_backend == "local"
        and not queue.allow_local_queue_on_cloud_run
    ):
        problems.append(
            "on Cloud Run (K_SERVICE is set) the in-process queue loses its waiting work when "
            "an instance is scaled in, and gets no CPU between requests: use "
            "QUEUE_BACKEND=cloud_tasks, or set ALLOW_LOCAL_QUEUE_ON_CLOUD_RUN=true to accept that"
        )
    if queue.local_min_backoff_seconds > queue.local_max_backoff_seconds:
        problems.append("LOCAL_QUEUE_MIN_BACKOFF_SECONDS is above LOCAL_QUEUE_MAX_BACKOFF_SECONDS")
    return problems


def _oidc_problems(settings: Settings) -> list[str]:
    queue = settings.queue
    if settings.console.trust_iap and not settings.console.iap_audience:
        return [
            "OPS_TRUST_IAP=true needs OPS_IAP_AUDIENCE: the audience IAP's signed "
            "assertion is checked against (an unchecked header could be sent by anyone)"
        ]
    if queue.cloud_tasks_service_account and not queue.oidc_audience:
        return [
            "CLOUD_TASKS_SERVICE_ACCOUNT needs CLOUD_TASKS_OIDC_AUDIENCE or "
            "INTERNAL_TASK_BASE_URL: the audience its OIDC tokens are checked against"
        ]
    return []


def _secret_problems(settings: Settings) -> list[str]:
    problems: list[str] = []
    if settings.app.environment != "development":
        required = {
            "WHATSAPP_APP_SECRET": settings.whatsapp.app_secret,
            "WHATSAPP_VERIFY_TOKEN": settings.whatsapp.verify_token,
            "INTERNAL_TASK_TOKEN": settings.queue.internal_task_token,
        }
        problems.extend(
            f"ENVIRONMENT={settings.app.environment} requires {name}"
            for name, value in required.items()
            if not value
        )
    problems.extend(settings.whatsapp.token_problems())
    if settings.handoff.webhook_url and not settings.handoff.webhook_secret:
        problems.append(
            "HANDOFF_WEBHOOK_URL needs HANDOFF_WEBHOOK_SECRET: notices are always signed"
        )
    if settings.openai.enabled and not settings.openai.api_key:
        problems.append(
            "OPENAI_ENABLED=true needs OPENAI_API_KEY (any value for a local compatible server)"
        )
    return problems


def development_warnings(settings: Settings) -> list[str]:
    """Variables that fell back to their public development values."""
    if settings.app.environment != "development":
        return []
    fallbacks = {
        "WHATSAPP_APP_SECRET": settings.whatsapp.app_secret,
        "WHATSAPP_VERIFY_TOKEN": settings.whatsapp.verify_token,
        "INTERNAL_TASK_TOKEN": settings.queue.internal_task_token,
    }
    return [
        f"{name} is unset: using the public development value; never expose this instance"
        for name, value in fallbacks.items()
        if not value
    ]


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        variable = str(item["loc"][-1]) if item["loc"] else "configuration"
        if item["type"] == "value_error":
            lines.append(str(item["msg"]).removeprefix("Value error, "))
            continue
        given = item.get("input")
        shown = f" (got {given!r})" if isinstance(given, str) and len(given) < 60 else ""
        lines.append(f"{variable}: {item['msg']}{shown}")
    return "invalid configuration: " + "; ".join(lines)


@contextmanager
def _reading(environ: Mapping[str, str] | None) -> Iterator[None]:
    token = _environ.set(environ)
    try:
        yield
    finally:
        _environ.reset(token)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `environ` (default: the process environment) or raise ConfigError."""
    with _reading(environ):
        try:
            return Settings()
        except ValidationError as error:
            raise ConfigError(_describe(error)) from None
