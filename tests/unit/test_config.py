"""Settings: defaults, errors that name the variable, refused combinations, no secret in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyloto_corp.adapters.cloud_tasks import CloudTasksQueue
from pyloto_corp.adapters.dry_run_outbox import RedisDryRunOutbox
from pyloto_corp.adapters.redis import RedisStore
from pyloto_corp.adapters.whatsapp_graph import GraphOutbox
from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import (
    DEV_APP_SECRET,
    DEV_INTERNAL_TASK_TOKEN,
    DEV_VERIFY_TOKEN,
    ConfigError,
    development_warnings,
    load_settings,
)
from tests.unit.fakes import FakeOutbox, FakeStore

SECRETS = {
    "WHATSAPP_APP_SECRET": "app-secret-7f3a9c",
    "WHATSAPP_VERIFY_TOKEN": "verify-token-2b8e41",
    "INTERNAL_TASK_TOKEN": "internal-token-9d0c55",
}
REDIS = {"REDIS_URL": "redis://localhost:6379/0"}
CLOUD_TASKS = {
    "QUEUE_BACKEND": "cloud_tasks",
    "GCP_PROJECT": "pyloto-prod",
    "INTERNAL_TASK_BASE_URL": "https://pyloto.example.com",
}


def config_error(environ: dict[str, str]) -> str:
    """The ConfigError message for `environ`."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    return str(caught.value)


def test_defaults_on_an_empty_environment() -> None:
    """An empty environment is a working development setup with the deploy guide's defaults."""
    settings = load_settings({})
    assert settings.app.environment == "development"
    assert settings.app.log_level == "INFO"
    assert settings.app.port == 8000
    assert settings.app.webhook_max_body_bytes == 3 * 1024 * 1024
    assert settings.openai.model == "gpt-4o-mini"
    assert settings.openai.timeout_seconds == 10.0
    assert settings.openai.rollout_percent == 100
    assert settings.openai.is_enabled is False
    assert settings.state.effective_backend == "sqlite"
    assert settings.state.sqlite_path == Path("pyloto.db")
    assert settings.state.retention_days >= 7
    assert settings.queue.effective_backend == "local"
    assert settings.queue.inbound_queue_name == "whatsapp-inbound"
    assert settings.queue.outbound_queue_name == "whatsapp-outbound"
    assert settings.whatsapp.api_base_url == "https://graph.facebook.com"


def test_values_are_read_from_the_given_mapping_not_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An explicit mapping is the whole environment; without one, the process's is read."""
    monkeypatch.setenv("PORT", "9123")
    assert load_settings({}).app.port == 8000
    assert load_settings({"PORT": "8081"}).app.port == 8081
    assert load_settings().app.port == 9123


def test_variables_are_typed_and_names_are_case_insensitive() -> None:
    """Numbers and flags are parsed; lower-case variable names are accepted."""
    settings = load_settings(
        {"openai_timeout_seconds": "2.5", "OPENAI_ROLLOUT_PERCENT": "25", "log_level": "DEBUG"}
    )
    assert settings.openai.timeout_seconds == 2.5
    assert settings.openai.rollout_percent == 25
    assert settings.app.log_level == "DEBUG"


def test_empty_variables_count_as_unset() -> None:
    """`PORT=` (as docker-compose writes an unset variable) keeps the default."""
    assert load_settings({"PORT": "", "LOG_LEVEL": ""}).app.port == 8000


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OPENAI_TIMEOUT_SECONDS", "abc"),
        ("OPENAI_TIMEOUT_SECONDS", "0"),
        ("OPENAI_TIMEOUT_SECONDS", "600"),
        ("OPENAI_ROLLOUT_PERCENT", "101"),
        ("OPENAI_ROLLOUT_PERCENT", "-1"),
        ("OPENAI_ENABLED", "maybe"),
        ("LOG_LEVEL", "LOUD"),
        ("PORT", "0"),
        ("PORT", "65536"),
        ("PORT", "http"),
        ("ENVIRONMENT", "prod"),
        ("WEBHOOK_MAX_BODY_BYTES", "-1"),
        ("WEBHOOK_MAX_BODY_BYTES", "0"),
        ("STATE_RETENTION_DAYS", "1"),
        ("STATE_BACKEND", "postgres"),
        ("DEDUPE_BACKEND", "memcached"),
        ("QUEUE_BACKEND", "sqs"),
        ("CLOUD_TASKS_ENABLED", "perhaps"),
        ("WHATSAPP_API_VERSION", "21.0"),
        ("LOCAL_QUEUE_MIN_BACKOFF_SECONDS", "-5"),
    ],
)
def test_invalid_value_names_the_variable(variable: str, value: str) -> None:
    """Each invalid value fails with a ConfigError naming the variable and the value given."""
    message = config_error({variable: value})
    assert f"{variable}: " in message
    assert repr(value) in message


def test_every_invalid_variable_is_reported_at_once() -> None:
    """Two bad variables are both named, so one restart fixes both."""
    message = config_error({"PORT": "0", "LOG_LEVEL": "LOUD"})
    assert "PORT" in message
    assert "LOG_LEVEL" in message


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({**CLOUD_TASKS, "STATE_BACKEND": "sqlite"}, ["STATE_BACKEND=sqlite", "cloud_tasks"]),
        ({**CLOUD_TASKS}, ["STATE_BACKEND=sqlite", "cloud_tasks"]),
        ({"CLOUD_TASKS_ENABLED": "true"}, ["STATE_BACKEND=sqlite", "CLOUD_TASKS_ENABLED=true"]),
        ({"CLOUD_TASKS_ENABLED": "true", "GCP_PROJECT": "p", "INTERNAL_TASK_BASE_URL": "https://x"},
         ["STATE_BACKEND=sqlite", "CLOUD_TASKS_ENABLED=true"]),
        ({"CLOUD_TASKS_ENABLED": "true", "QUEUE_BACKEND": "local"},
         ["CLOUD_TASKS_ENABLED", "QUEUE_BACKEND=local"]),
        ({"STATE_BACKEND": "sqlite", "DEDUPE_BACKEND": "redis", **REDIS},
         ["STATE_BACKEND=sqlite", "DEDUPE_BACKEND=redis"]),
        ({"STATE_BACKEND": "redis", "DEDUPE_BACKEND": "sqlite", **REDIS},
         ["STATE_BACKEND=redis", "DEDUPE_BACKEND=sqlite"]),
        ({"STATE_BACKEND": "redis"}, ["REDIS_URL"]),
        ({"DEDUPE_BACKEND": "redis"}, ["REDIS_URL"]),
        ({"STATE_BACKEND": "redis", **REDIS, "QUEUE_BACKEND": "cloud_tasks"},
         ["GCP_PROJECT", "INTERNAL_TASK_BASE_URL"]),
        ({"LOCAL_QUEUE_MIN_BACKOFF_SECONDS": "60", "LOCAL_QUEUE_MAX_BACKOFF_SECONDS": "5"},
         ["LOCAL_QUEUE_MIN_BACKOFF_SECONDS", "LOCAL_QUEUE_MAX_BACKOFF_SECONDS"]),
        ({"OPENAI_ENABLED": "true"}, ["OPENAI_ENABLED", "OPENAI_API_KEY"]),
    ],
)  # fmt: skip
def test_refused_backend_combinations(environ: dict[str, str], named: list[str]) -> None:
    """Combinations that would lose data or split state refuse to start, naming the variables."""
    message = config_error(environ)
    for name in named:
        assert name in message


@pytest.mark.parametrize("environment", ["staging", "production"])
@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_deployed_environments_require_every_secret(environment: str, missing: str) -> None:
    """Staging and production refuse to start when any one secret is unset or empty."""
    for value in (None, ""):
        environ = {"ENVIRONMENT": environment, **SECRETS}
        if value is None:
            del environ[missing]
        else:
            environ[missing] = value
        message = config_error(environ)
        assert f"ENVIRONMENT={environment} requires {missing}" in message
        others = set(SECRETS) - {missing}
        assert not any(f"requires {name}" in message for name in others)


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_deployed_environment_with_every_secret_starts(environment: str) -> None:
    """With all three secrets, staging and production load and use them, with no warning."""
    settings = load_settings({"ENVIRONMENT": environment, **SECRETS})
    assert settings.app_secret == SECRETS["WHATSAPP_APP_SECRET"]
    assert settings.verify_token == SECRETS["WHATSAPP_VERIFY_TOKEN"]
    assert settings.internal_task_token == SECRETS["INTERNAL_TASK_TOKEN"]
    assert development_warnings(settings) == []


def test_dedupe_backend_alone_selects_the_redis_state_store() -> None:
    """DEDUPE_BACKEND=redis (the deploy guide's name) moves state to Redis too."""
    settings = load_settings({"DEDUPE_BACKEND": "redis", **REDIS})
    assert settings.state.effective_backend == "redis"


def test_dedupe_backend_redis_allows_cloud_tasks() -> None:
    """With DEDUPE_BACKEND=redis the state is shared, so Cloud Tasks is accepted."""
    settings = load_settings({"DEDUPE_BACKEND": "redis", **REDIS, **CLOUD_TASKS})
    assert settings.state.effective_backend == "redis"
    assert settings.queue.effective_backend == "cloud_tasks"


def test_cloud_tasks_enabled_selects_the_cloud_tasks_queue() -> None:
    """CLOUD_TASKS_ENABLED=true without QUEUE_BACKEND means cloud_tasks."""
    environ = {"CLOUD_TASKS_ENABLED": "true", "STATE_BACKEND": "redis", **REDIS, **CLOUD_TASKS}
    del environ["QUEUE_BACKEND"]
    assert load_settings(environ).queue.effective_backend == "cloud_tasks"


def test_openai_is_enabled_by_a_key_unless_switched_off() -> None:
    """A key turns the LLM steps on; OPENAI_ENABLED=false keeps them off with a key."""
    assert load_settings({"OPENAI_API_KEY": "sk-test"}).openai.is_enabled is True
    off = load_settings({"OPENAI_API_KEY": "sk-test", "OPENAI_ENABLED": "false"})
    assert off.openai.is_enabled is False


def test_development_warnings_list_the_unset_secrets_and_fallbacks_apply() -> None:
    """In development each unset secret is named in a warning and its public value is used."""
    settings = load_settings({})
    warnings = development_warnings(settings)
    assert len(warnings) == 3
    for name, warning in zip(
        ["WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN", "INTERNAL_TASK_TOKEN"],
        warnings,
        strict=True,
    ):
        assert warning.startswith(f"{name} is unset")
    assert settings.app_secret == DEV_APP_SECRET
    assert settings.verify_token == DEV_VERIFY_TOKEN
    assert settings.internal_task_token == DEV_INTERNAL_TASK_TOKEN


def test_development_warnings_leave_out_secrets_that_are_set() -> None:
    """A secret given in development is used and not warned about; the others still are."""
    settings = load_settings({"WHATSAPP_APP_SECRET": SECRETS["WHATSAPP_APP_SECRET"]})
    warnings = development_warnings(settings)
    assert [w.split()[0] for w in warnings] == ["WHATSAPP_VERIFY_TOKEN", "INTERNAL_TASK_TOKEN"]
    assert settings.app_secret == SECRETS["WHATSAPP_APP_SECRET"]
    assert not any(SECRETS["WHATSAPP_APP_SECRET"] in w for w in warnings)


@pytest.mark.parametrize(
    "broken",
    [
        {"PORT": "0"},
        {"ENVIRONMENT": "production", "INTERNAL_TASK_TOKEN": ""},
        {"STATE_BACKEND": "sqlite", "DEDUPE_BACKEND": "redis"},
        {"OPENAI_ENABLED": "true", "OPENAI_API_KEY": ""},
        {"QUEUE_BACKEND": "cloud_tasks"},
        {"OPENAI_TIMEOUT_SECONDS": "never", "OPENAI_ENABLED": "sometimes"},
    ],
)
def test_secret_values_never_appear_in_config_errors(broken: dict[str, str]) -> None:
    """Whatever is wrong, the message shows no secret, key, token or Redis password."""
    secrets = {
        **SECRETS,
        "WHATSAPP_ACCESS_TOKEN": "EAAGm0PX4ZCpsBAccessToken",
        "OPENAI_API_KEY": "sk-proj-openai-4c1d2e",
        "REDIS_URL": "redis://:redis-password-5e6f@cache:6379/0",
    }
    message = config_error({**secrets, **broken})
    for value in secrets.values():
        if value:
            assert value not in message
    assert "redis-password-5e6f" not in message


def test_access_token_without_phone_number_id_is_refused_by_name() -> None:
    """A Graph token without the sending number stops start-up naming WHATSAPP_PHONE_NUMBER_ID,
    and the message never shows the token."""
    token = "EAAGm0PX4ZCpsBAccessToken"
    message = config_error({"WHATSAPP_ACCESS_TOKEN": token})
    assert "WHATSAPP_PHONE_NUMBER_ID" in message
    assert token not in message


@pytest.mark.anyio
async def test_access_token_selects_the_graph_outbox() -> None:
    """With WHATSAPP_ACCESS_TOKEN and WHATSAPP_PHONE_NUMBER_ID the Graph API outbox replaces
    the dry run, on the configured URL, version and number, with per-recipient pacing."""
    settings = load_settings(
        {
            "WHATSAPP_ACCESS_TOKEN": "EAAGm0PX4ZCpsBAccessToken",
            "WHATSAPP_PHONE_NUMBER_ID": "106540352242922",
            "WHATSAPP_API_BASE_URL": "http://graph.local/",
            "WHATSAPP_API_VERSION": "v23.0",
            "WHATSAPP_PACING_BURST": "3",
        }
    )
    container = bootstrap(settings, store=FakeStore())
    outbox = container.outbox
    assert isinstance(outbox, GraphOutbox)
    assert outbox.urls == {"106540352242922": "http://graph.local/v23.0/106540352242922/messages"}
    assert outbox.default_number == "106540352242922"
    assert outbox.reconcile_seconds == 120.0
    pacing = container.advancer.context.pacing
    assert pacing is not None
    assert (pacing.per_seconds, pacing.burst) == (6.0, 3)
    await outbox.close()


FIRST, SECOND, THIRD = "106540352242922", "106540352242933", "106540352242944"


@pytest.mark.anyio
async def test_several_business_numbers_each_send_with_their_own_token_or_the_shared_one() -> None:
    """WHATSAPP_PHONE_NUMBER_IDS adds numbers; WHATSAPP_ACCESS_TOKENS gives some their own
    token; numbers sharing a token share one client; the default number comes first."""
    settings = load_settings(
        {
            "WHATSAPP_ACCESS_TOKEN": "EAAG-shared",
            "WHATSAPP_PHONE_NUMBER_ID": FIRST,
            "WHATSAPP_PHONE_NUMBER_IDS": f"{SECOND}, {THIRD},",
            "WHATSAPP_ACCESS_TOKENS": f"{THIRD}:EAAG-third",
        }
    )
    assert settings.whatsapp.business_numbers == (FIRST, SECOND, THIRD)
    assert settings.whatsapp.token_for(SECOND) == "EAAG-shared"
    assert settings.whatsapp.token_for(THIRD) == "EAAG-third"
    container = bootstrap(settings, store=FakeStore())
    outbox = container.outbox
    assert isinstance(outbox, GraphOutbox)
    assert list(outbox.clients) == [FIRST, SECOND, THIRD]
    assert outbox.default_number == FIRST
    assert outbox.clients[FIRST] is outbox.clients[SECOND] is not outbox.clients[THIRD]
    numbers = container.advancer.context.numbers
    assert (numbers.default, numbers.others) == (FIRST, frozenset({SECOND, THIRD}))
    assert numbers.sender_of("") == FIRST
    assert numbers.sender_of("999999999999999") is None
    await outbox.close()


def test_every_number_may_have_its_own_token_without_a_shared_one() -> None:
    """WHATSAPP_ACCESS_TOKENS alone selects the Graph outbox; the first listed number is
    the default when WHATSAPP_PHONE_NUMBER_ID is unset."""
    settings = load_settings(
        {
            "WHATSAPP_PHONE_NUMBER_IDS": f"{SECOND},{THIRD}",
            "WHATSAPP_ACCESS_TOKENS": f"{SECOND}:EAAG-second,{THIRD}:EAAG-third",
        }
    )
    assert settings.whatsapp.sends
    assert settings.whatsapp.business_numbers == (SECOND, THIRD)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WHATSAPP_PHONE_NUMBER_IDS": "12a"}, "WHATSAPP_PHONE_NUMBER_IDS: '12a' is not"),
        (
            {"WHATSAPP_PHONE_NUMBER_ID": FIRST, "WHATSAPP_ACCESS_TOKENS": "EAAG-no-number"},
            "WHATSAPP_ACCESS_TOKENS: pair 1 is not `phone_number_id:token`",
        ),
        (
            {"WHATSAPP_PHONE_NUMBER_ID": FIRST, "WHATSAPP_ACCESS_TOKENS": f"{SECOND}:EAAG-x"},
            f"pair 1 names {SECOND}, which is neither",
        ),
        (
            {
                "WHATSAPP_PHONE_NUMBER_IDS": f"{FIRST},{SECOND}",
                "WHATSAPP_ACCESS_TOKENS": f"{FIRST}:EAAG-x",
            },
            f"business number {SECOND} has no Graph API token",
        ),
        ({"WHATSAPP_ACCESS_TOKENS": f"{FIRST}:EAAG-x"}, "WHATSAPP_ACCESS_TOKENS: pair 1 names"),
    ],
)
def test_numbers_and_tokens_that_do_not_fit_are_refused_without_showing_a_token(
    environ: dict[str, str], expected: str
) -> None:
    """Each problem names the variable; no token appears in the message."""
    message = config_error(environ)
    assert expected in message
    assert "EAAG" not in message


def test_dry_run_has_no_pacing() -> None:
    """Without a token replies go to the dry-run outbox and are not spaced."""
    container = bootstrap(load_settings({}), store=FakeStore())
    assert not isinstance(container.outbox, GraphOutbox)
    assert container.advancer.context.pacing is None


def test_bootstrap_accepts_a_key_with_the_llm_switched_off() -> None:
    """OPENAI_ENABLED=false with a key set builds a container on the embedded adapters."""
    settings = load_settings({"OPENAI_API_KEY": "sk-test", "OPENAI_ENABLED": "false"})
    store, outbox = FakeStore(), FakeOutbox()
    container = bootstrap(settings, store=store, outbox=outbox)
    assert container.store is store
    assert container.outbox is outbox
    assert container.advancer.machine is container.machine


@pytest.mark.parametrize("variable", ["STATE_BACKEND", "DEDUPE_BACKEND"])
@pytest.mark.parametrize(
    "url", ["redis://10.0.0.3:6379/0", "rediss://user:pw@redis.internal:6380", "unix:///tmp/r.sock"]
)
def test_redis_settings_build_a_shared_redis_store(variable: str, url: str) -> None:
    """Either variable selects Redis for state, dedupe and the dry-run outbox; no connection
    is opened while building (so a Redis that is down cannot break start-up wiring)."""
    container = bootstrap(load_settings({variable: "redis", "REDIS_URL": url}))
    assert isinstance(container.store, RedisStore)
    assert isinstance(container.outbox, RedisDryRunOutbox)
    assert container.sole_instance is False


@pytest.mark.parametrize("url", ["http://redis:6379", "localhost:6379", "redis:/x"])
def test_redis_url_must_be_a_redis_url(url: str) -> None:
    """A REDIS_URL that is not redis://, rediss:// or unix:// is refused, naming the variable."""
    message = config_error({"STATE_BACKEND": "redis", "REDIS_URL": url})
    assert "REDIS_URL" in message


def test_cloud_tasks_settings_build_the_cloud_tasks_queue() -> None:
    """QUEUE_BACKEND=cloud_tasks on Redis builds the Cloud Tasks adapter without connecting,
    with a dispatch deadline above the LLM timeout and OIDC off by default."""
    container = bootstrap(
        load_settings(
            {"STATE_BACKEND": "redis", **REDIS, **CLOUD_TASKS, "OPENAI_TIMEOUT_SECONDS": "10"}
        )
    )
    assert isinstance(container.queue, CloudTasksQueue)
    assert container.queue._client is None, "no channel before the serving loop runs"
    assert container.queue.target.dispatch_deadline_seconds > 10
    assert container.queue.target.service_account is None


def test_a_handoff_webhook_url_needs_its_secret_and_neither_is_shown() -> None:
    """Notices are always signed: a URL without HANDOFF_WEBHOOK_SECRET is refused, naming
    both; set, neither the URL (a credential for Slack or n8n) nor the secret is in the repr."""
    url = "https://hooks.example.com/services/T000/B000/XXXXSECRETPATH"
    assert "HANDOFF_WEBHOOK_SECRET" in config_error({"HANDOFF_WEBHOOK_URL": url})
    settings = load_settings({"HANDOFF_WEBHOOK_URL": url, "HANDOFF_WEBHOOK_SECRET": "k3y-s3cret"})
    assert settings.handoff.webhook_url == url
    assert settings.handoff.webhook_timeout_seconds == 10.0
    shown = repr(settings)
    assert "XXXXSECRETPATH" not in shown
    assert "k3y-s3cret" not in shown
    assert "HANDOFF_WEBHOOK_URL" in config_error({"HANDOFF_WEBHOOK_URL": "not a url"})
