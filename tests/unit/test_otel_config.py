"""otel.yaml: the shipped defaults, OTEL_* overrides, errors that name the file and the key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import ConfigError, Settings
from pyloto_corp.observability.otel_config import (
    OtelConfig,
    OtelConfigError,
    apply_environment,
    attribute_allowed,
    load_otel_config,
)
from tests.support.helpers import REPO

SHIPPED = REPO / "otel.yaml"

MakeSettings = Callable[..., Settings]


def write(tmp_path: Path, text: str) -> Path:
    """An otel.yaml holding `text`."""
    path = tmp_path / "otel.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    """The OtelConfigError message of loading `path`."""
    with pytest.raises(OtelConfigError) as caught:
        load_otel_config(path)
    return str(caught.value)


@pytest.fixture
def shipped() -> OtelConfig:
    """The repository's otel.yaml with no variable set."""
    return load_otel_config(SHIPPED, {})


# --- the shipped file ------------------------------------------------------------------------


def test_the_shipped_otel_yaml_sends_nothing_and_samples_everything(shipped: OtelConfig) -> None:
    """A laptop run exports no traces or metrics; the sampler is parent-based on a ratio of
    1.0; the service is `pyloto`; resources are detected only on Cloud Run."""
    assert shipped.traces_exporter == "none"
    assert shipped.metrics_exporter == "none"
    assert shipped.sampler == "parentbased_traceidratio"
    assert shipped.sampler_ratio == 1.0
    assert shipped.service_name == "pyloto"
    assert shipped.service_version is None
    assert shipped.environment is None
    assert shipped.cloud_trace_project is None
    assert shipped.cloud_trace_endpoint is None
    assert shipped.otlp_endpoint is None
    assert shipped.metrics_interval_seconds == 60.0
    assert shipped.resource_detection == "auto"
    assert shipped.source == str(SHIPPED)


def test_the_shipped_allow_list_keeps_pyloto_and_gen_ai_keys_and_hashes_the_user(
    shipped: OtelConfig,
) -> None:
    """The allow-list holds `pyloto.*`, `enduser.id` and the gen_ai and HTTP keys the code
    sets; `enduser.id` is the one hashed attribute; no extra pattern is configured."""
    redaction = shipped.redaction
    for entry in (
        "pyloto.*",
        "enduser.id",
        "exception.type",
        "error.type",
        "gen_ai.request.model",
        "gen_ai.usage.input_tokens",
        "http.response.status_code",
        "service.*",
    ):
        assert entry in redaction.allowed_attributes, entry
    assert "exception.message" not in redaction.allowed_attributes
    assert "exception.stacktrace" not in redaction.allowed_attributes
    assert redaction.hashed_attributes == ("enduser.id",)
    assert redaction.extra_patterns == ()


def test_an_empty_file_gives_the_defaults_and_an_empty_allow_list(tmp_path: Path) -> None:
    """An empty otel.yaml is valid: exporters off, the default sampler, and no attribute
    allowed to leave (nothing configured, nothing exported)."""
    config = load_otel_config(write(tmp_path, ""))
    assert config.traces_exporter == "none"
    assert config.metrics_exporter == "none"
    assert config.sampler == "parentbased_traceidratio"
    assert config.sampler_ratio == 1.0
    assert config.redaction.allowed_attributes == ()
    assert config.redaction.hashed_attributes == ("enduser.id",)


def test_file_values_are_read_and_normalised(tmp_path: Path) -> None:
    """Every key of the file is read; choices are case-insensitive and trimmed; extra
    patterns are compiled."""
    path = write(
        tmp_path,
        """
service: {name: pyloto-staging, version: "2.1", environment: staging}
traces:
  exporter: " Cloud_Trace "
  sampler: {type: TRACEIDRATIO, ratio: 0.25}
  cloud_trace: {project_id: pyloto-test, endpoint: "127.0.0.1:9999"}
  otlp: {endpoint: "http://127.0.0.1:4318/v1/traces"}
metrics: {exporter: console, interval_seconds: 5}
resource: {detection: none}
redaction:
  allowed_attributes: [pyloto.*]
  hashed_attributes: [enduser.id, pyloto.customer]
  extra_patterns: ['CLI-[0-9]{6}']
""",
    )
    config = load_otel_config(path)
    assert config.service_name == "pyloto-staging"
    assert config.service_version == "2.1"
    assert config.environment == "staging"
    assert config.traces_exporter == "cloud_trace"
    assert config.sampler == "traceidratio"
    assert config.sampler_ratio == 0.25
    assert config.cloud_trace_project == "pyloto-test"
    assert config.cloud_trace_endpoint == "127.0.0.1:9999"
    assert config.otlp_endpoint == "http://127.0.0.1:4318/v1/traces"
    assert config.metrics_exporter == "console"
    assert config.metrics_interval_seconds == 5.0
    assert config.resource_detection == "none"
    assert config.redaction.hashed_attributes == ("enduser.id", "pyloto.customer")
    (pattern,) = config.redaction.extra_patterns
    assert pattern.sub("x", "cliente CLI-123456") == "cliente x"


# --- OTEL_* variables ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("OTEL_SERVICE_NAME", "pyloto-canary", "service_name", "pyloto-canary"),
        ("OTEL_TRACES_EXPORTER", "cloud_trace", "traces_exporter", "cloud_trace"),
        ("OTEL_TRACES_EXPORTER", "CONSOLE", "traces_exporter", "console"),
        ("OTEL_TRACES_EXPORTER", "otlp", "traces_exporter", "otlp"),
        ("OTEL_METRICS_EXPORTER", "cloud_monitoring", "metrics_exporter", "cloud_monitoring"),
        ("OTEL_METRICS_EXPORTER", "console", "metrics_exporter", "console"),
        ("OTEL_TRACES_SAMPLER", "always_off", "sampler", "always_off"),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on", "sampler", "parentbased_always_on"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.1", "sampler_ratio", 0.1),
        ("OTEL_TRACES_SAMPLER_ARG", "0", "sampler_ratio", 0.0),
    ],
)
def test_each_otel_variable_wins_over_the_file(
    variable: str, value: str, field: str, expected: object
) -> None:
    """A standard OTEL_* variable replaces the file's value; the rest of the file stays."""
    from_file = load_otel_config(SHIPPED, {})
    overridden = load_otel_config(SHIPPED, {variable: value})
    assert getattr(overridden, field) == expected
    assert getattr(from_file, field) != expected
    untouched = {"redaction", "resource_detection", "metrics_interval_seconds", "source"}
    for name in untouched:
        assert getattr(overridden, name) == getattr(from_file, name)


def test_apply_environment_overrides_a_loaded_config(shipped: OtelConfig) -> None:
    """`apply_environment` is what bootstrap applies to the file: the same overrides, and an
    empty environment changes nothing."""
    assert apply_environment(shipped, {}) == shipped
    changed = apply_environment(
        shipped, {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "other"}
    )
    assert (changed.traces_exporter, changed.service_name) == ("console", "other")
    assert shipped.traces_exporter == "none", "the original is left as it was"


def test_empty_variables_are_ignored(shipped: OtelConfig) -> None:
    """A variable set to the empty string does not override the file."""
    empty = dict.fromkeys(
        (
            "OTEL_SERVICE_NAME",
            "OTEL_TRACES_EXPORTER",
            "OTEL_METRICS_EXPORTER",
            "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG",
            "OTEL_SDK_DISABLED",
        ),
        "",
    )
    assert load_otel_config(SHIPPED, empty) == shipped


@pytest.mark.parametrize("value", ["true", "TRUE", " True "])
def test_otel_sdk_disabled_turns_both_exporters_off(tmp_path: Path, value: str) -> None:
    """OTEL_SDK_DISABLED=true sets traces and metrics to `none`, over the file and over
    OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER."""
    path = write(tmp_path, "traces: {exporter: console}\nmetrics: {exporter: console}\n")
    environ = {
        "OTEL_SDK_DISABLED": value,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
    }
    config = load_otel_config(path, environ)
    assert config.traces_exporter == "none"
    assert config.metrics_exporter == "none"


def test_otel_sdk_disabled_other_than_true_changes_nothing(tmp_path: Path) -> None:
    """OTEL_SDK_DISABLED=false (or anything but true) leaves the exporters as configured."""
    path = write(tmp_path, "traces: {exporter: console}\nmetrics: {exporter: console}\n")
    for value in ("false", "0", "no"):
        config = load_otel_config(path, {"OTEL_SDK_DISABLED": value})
        assert (config.traces_exporter, config.metrics_exporter) == ("console", "console")


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "'zipkin' is not one of cloud_trace, otlp"),
        ("OTEL_METRICS_EXPORTER", "prometheus", "'prometheus' is not one of cloud_monitoring"),
        ("OTEL_TRACES_SAMPLER", "sometimes", "'sometimes' is not one of always_on"),
        ("OTEL_TRACES_SAMPLER_ARG", "half", "'half' is not a number"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5", "1.5 is outside 0.0..1.0"),
        ("OTEL_TRACES_SAMPLER_ARG", "-0.1", "-0.1 is outside 0.0..1.0"),
    ],
)
def test_a_bad_variable_is_an_error_naming_it(variable: str, value: str, problem: str) -> None:
    """An invalid OTEL_* value fails with OtelConfigError naming the variable and the value."""
    with pytest.raises(OtelConfigError) as caught:
        load_otel_config(SHIPPED, {variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}: "), message
    assert problem in message


# --- errors in the file ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("traces: {exporter: zipkin}", "traces.exporter", "'zipkin' is not one of cloud_trace"),
        ("metrics: {exporter: statsd}", "metrics.exporter", "'statsd' is not one of"),
        ("traces: {sampler: {type: coin}}", "traces.sampler.type", "'coin' is not one of"),
        ("traces: {sampler: {ratio: 1.5}}", "traces.sampler.ratio", "1.5 is outside 0.0..1.0"),
        ("traces: {sampler: {ratio: -1}}", "traces.sampler.ratio", "-1.0 is outside"),
        ("traces: {sampler: {ratio: lots}}", "traces.sampler.ratio", "'lots' is not a number"),
        ("metrics: {interval_seconds: 1}", "metrics.interval_seconds", "1.0 is outside 5.0"),
        ("resource: {detection: aws}", "resource.detection", "'aws' is not one of auto, gcp"),
        (
            "redaction: {allowed_attributes: pyloto.*}",
            "redaction.allowed_attributes",
            "expected a list of strings",
        ),
        (
            "redaction: {allowed_attributes: [pyloto.*, 3]}",
            "redaction.allowed_attributes",
            "expected a list of strings",
        ),
        (
            "redaction: {hashed_attributes: {enduser.id: true}}",
            "redaction.hashed_attributes",
            "expected a list of strings",
        ),
        (
            "redaction: {extra_patterns: ['(unclosed']}",
            "redaction.extra_patterns",
            "'(unclosed': missing ), unterminated subpattern",
        ),
        ("traces: [cloud_trace]", "traces.exporter", "expected a mapping above it"),
        ("service: {name: [a, b]}", "service.name", "expected text"),
    ],
)
def test_a_bad_value_in_the_file_is_an_error_naming_the_file_and_the_key(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    """Each invalid value fails with `<file>: <key>: <problem>`."""
    path = write(tmp_path, text + "\n")
    message = load_error(path)
    assert message.startswith(f"{path}: {key}: "), message
    assert problem in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_a_file_that_is_not_a_mapping_is_an_error(tmp_path: Path, text: str) -> None:
    """A list, a string or a number at the top level is refused, naming the file."""
    path = write(tmp_path, text)
    assert load_error(path) == f"{path}: expected a mapping at the top level"


def test_invalid_yaml_is_an_error_naming_the_file(tmp_path: Path) -> None:
    """A YAML syntax error is an OtelConfigError naming the file, not a yaml exception."""
    path = write(tmp_path, "traces:\n  exporter: [none\n")
    message = load_error(path)
    assert message.startswith(f"{path}: not valid YAML: "), message


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    """A path where no file is gives `<path>: cannot read: ...`."""
    path = tmp_path / "nowhere" / "otel.yaml"
    message = load_error(path)
    assert message.startswith(f"{path}: cannot read: "), message


def test_a_file_that_is_not_utf8_is_an_error_naming_it(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are refused with the file's name."""
    path = tmp_path / "otel.yaml"
    path.write_bytes(b"service: {name: \xff\xfe}\n")
    assert load_error(path).startswith(f"{path}: cannot read: ")


# --- through bootstrap -----------------------------------------------------------------------


def bootstrap_error(settings: Settings) -> str:
    """The ConfigError message bootstrap raises for `settings`."""
    with pytest.raises(ConfigError) as caught:
        bootstrap(settings)
    return str(caught.value)


def test_bootstrap_refuses_a_bad_otel_config_with_its_message(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    """PYLOTO_OTEL_CONFIG naming a broken file stops bootstrap with pyloto's ConfigError,
    carrying the file and the key."""
    bad = write(tmp_path, "traces:\n  sampler:\n    ratio: 1.5\n")
    settings = make_settings(PYLOTO_OTEL_CONFIG=str(bad))
    assert settings.telemetry.config_path == bad
    message = bootstrap_error(settings)
    assert message == f"{bad}: traces.sampler.ratio: 1.5 is outside 0.0..1.0"


def test_bootstrap_refuses_a_missing_otel_config(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    """PYLOTO_OTEL_CONFIG naming no file stops bootstrap with a ConfigError naming the path."""
    missing = tmp_path / "missing.yaml"
    assert bootstrap_error(make_settings(PYLOTO_OTEL_CONFIG=str(missing))).startswith(
        f"{missing}: cannot read: "
    )


def test_bootstrap_refuses_a_bad_otel_variable_naming_it(make_settings: MakeSettings) -> None:
    """A bad OTEL_* value given to pyloto's settings stops bootstrap naming the variable."""
    message = bootstrap_error(make_settings(OTEL_TRACES_EXPORTER="jaeger"))
    assert message.startswith("OTEL_TRACES_EXPORTER: 'jaeger' is not one of"), message


@pytest.mark.parametrize(("disabled", "printed"), [("true", False), ("false", True)])
def test_bootstrap_applies_the_variables_to_the_configured_file(
    make_settings: MakeSettings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    disabled: str,
    printed: bool,
) -> None:
    """PYLOTO_OTEL_CONFIG picks the file and the OTEL_* settings override it: a file asking
    for console traces prints a span, unless OTEL_SDK_DISABLED=true turns the export off."""
    path = write(tmp_path, "traces: {exporter: console}\nresource: {detection: none}\n")
    container = bootstrap(make_settings(PYLOTO_OTEL_CONFIG=str(path), OTEL_SDK_DISABLED=disabled))
    with container.telemetry.span("configured"):
        pass
    assert container.telemetry_runtime is not None
    container.telemetry_runtime.shutdown()
    assert ('"name": "configured"' in capsys.readouterr().out) is printed


# --- attribute_allowed -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "allowed", "expected"),
    [
        ("pyloto.state.from", ("pyloto.*",), True),
        ("pyloto.", ("pyloto.*",), True),
        ("pyloto", ("pyloto.*",), False),
        ("pylotox.state", ("pyloto.*",), False),
        ("my.pyloto.state", ("pyloto.*",), False),
        ("Pyloto.state", ("pyloto.*",), False),
        ("enduser.id", ("enduser.id",), True),
        ("enduser.idx", ("enduser.id",), False),
        ("enduser.id.raw", ("enduser.id",), False),
        ("enduser", ("enduser.id",), False),
        ("enduser.id", ("enduser*",), True),
        ("anything", ("*",), True),
        ("", ("*",), True),
        ("pyloto.state", (), False),
        ("http.route", ("http.request.method", "http.route"), True),
        ("http.request.header.cookie", ("http.request.method", "http.route"), False),
    ],
)
def test_attribute_allowed_matches_exact_keys_and_star_prefixes(
    key: str, allowed: tuple[str, ...], expected: bool
) -> None:
    """An entry allows its exact key; an entry ending in `*` allows every key that starts
    with what precedes the star (case-sensitive); an empty list allows nothing."""
    assert attribute_allowed(key, allowed) is expected
