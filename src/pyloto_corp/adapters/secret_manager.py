"""Google Secret Manager: `sm://` references in the environment, resolved once at start-up.

A variable whose value is a reference is replaced by the secret's payload before settings are
read, so the rest of pyloto only ever sees plain values. Accepted forms:

    sm://projects/P/secrets/S/versions/V
    sm://projects/P/secrets/S            (version `latest`)
    sm://S/versions/V, sm://S            (project from GCP_PROJECT)

Errors name the variable and the reference, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.api_core import exceptions as google_errors
from google.api_core import retry as google_retry
from google.auth import exceptions as auth_errors
from google.auth.credentials import AnonymousCredentials
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)

from pyloto_corp.config import ConfigError

PREFIX = "sm://"
EMULATOR_VARIABLE = "SECRET_MANAGER_EMULATOR_HOST"
PROJECT_VARIABLE = "GCP_PROJECT"
DEFAULT_TIMEOUT_SECONDS = 10.0

# Secret ids and version ids/aliases are letters, digits, '-' and '_'; project ids may be
# domain-scoped ("example.com:project"), project numbers are digits.
_ID = r"[A-Za-z0-9_-]+"
_PROJECT = r"[A-Za-z0-9][A-Za-z0-9.:_-]*"
_VERSIONED = rf"(?P<secret>{_ID})(?:/versions/(?P<version>{_ID}))?"
_FULL = re.compile(rf"projects/(?P<project>{_PROJECT})/secrets/{_VERSIONED}")
_SHORT = re.compile(_VERSIONED)
_PROJECT_ID = re.compile(_PROJECT)

_FORMS = "sm://projects/P/secrets/S[/versions/V] or sm://S[/versions/V] with GCP_PROJECT"


@dataclass(frozen=True)
class Reference:
    """One variable whose value names a secret version."""

    variable: str
    written: str  # the value as given, e.g. "sm://whatsapp-app-secret"
    name: str  # full resource name: projects/P/secrets/S/versions/V

    def failure(self, reason: str) -> ConfigError:
        """A ConfigError naming this variable and its reference (no value)."""
        shown = self.written
        if shown != PREFIX + self.name:
            shown += f" → {self.name}"
        return ConfigError(
            f"cannot resolve {self.variable} from Secret Manager ({shown}): {reason}"
        )


def resolve_references(
    environ: Mapping[str, str], *, timeout: float = DEFAULT_TIMEOUT_SECONDS
) -> dict[str, str]:
    """A copy of `environ` with every `sm://` value replaced by its secret's payload."""
    resolved = dict(environ)
    references = find_references(environ)
    if not references:
        return resolved
    with _client(environ, references) as client:
        payloads: dict[str, str] = {}
        for reference in references:
            if reference.name not in payloads:
                payloads[reference.name] = _access(client, reference, timeout)
            resolved[reference.variable] = payloads[reference.name]
    return resolved


def find_references(environ: Mapping[str, str]) -> list[Reference]:
    """Every `sm://` value of `environ`, parsed (ConfigError on a malformed one)."""
    project = _lookup(environ, PROJECT_VARIABLE)
    return [
        parse_reference(variable, value, project)
        for variable, value in environ.items()
        if value.startswith(PREFIX)
    ]


def parse_reference(variable: str, value: str, project: str | None) -> Reference:
    """The secret version `value` names; short forms take their project from `project`."""
    path = value.removeprefix(PREFIX)
    full = _FULL.fullmatch(path)
    if full:
        project, secret, version = full["project"], full["secret"], full["version"]
    else:
        short = _SHORT.fullmatch(path)
        if short is None:
            raise ConfigError(f"{variable}: {value} is not a Secret Manager reference ({_FORMS})")
        secret, version = short["secret"], short["version"]
        if not project:
            raise ConfigError(f"{variable}: {value} needs {PROJECT_VARIABLE} (or write {_FORMS})")
        if not _PROJECT_ID.fullmatch(project):
            raise ConfigError(f"{variable}: {value} needs a project id in {PROJECT_VARIABLE}")
    name = f"projects/{project}/secrets/{secret}/versions/{version or 'latest'}"
    return Reference(variable, value, name)


def _lookup(environ: Mapping[str, str], name: str) -> str | None:
    # Settings match variable names case-insensitively; so does this.
    return next((value for key, value in environ.items() if key.upper() == name and value), None)


def _client(
    environ: Mapping[str, str], references: Iterable[Reference]
) -> secretmanager_v1.SecretManagerServiceClient:
    """One client for the whole resolution: the emulator's insecure channel, else ADC."""
    emulator_host = _lookup(environ, EMULATOR_VARIABLE)
    if emulator_host:
        # As Google's other clients do with *_EMULATOR_HOST: no TLS, no credentials. A local
        # subchannel pool keeps the connection this client's own, so closing it closes that.
        channel = grpc.insecure_channel(
            emulator_host, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        transport = SecretManagerServiceGrpcTransport(
            channel=channel,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
        return secretmanager_v1.SecretManagerServiceClient(transport=transport)
    try:
        return secretmanager_v1.SecretManagerServiceClient()
    except auth_errors.DefaultCredentialsError:
        variables = ", ".join(sorted({reference.variable for reference in references}))
        raise ConfigError(
            f"{variables}: Secret Manager references need Google credentials "
            f"(Application Default Credentials) or {EMULATOR_VARIABLE}"
        ) from None


def _access(
    client: secretmanager_v1.SecretManagerServiceClient, reference: Reference, timeout: float
) -> str:
    """The payload of one secret version as text, or ConfigError naming the reference."""
    # Transient unavailability is retried, all within `timeout`; anything else fails at once.
    retry = google_retry.Retry(
        predicate=google_retry.if_exception_type(google_errors.ServiceUnavailable),
        initial=0.1,
        maximum=1.0,
        timeout=timeout,
    )
    try:
        response = client.access_secret_version(name=reference.name, retry=retry, timeout=timeout)
    except google_errors.GoogleAPIError as error:
        raise reference.failure(_reason(error)) from None
    except auth_errors.GoogleAuthError as error:  # e.g. a token that cannot be refreshed
        raise reference.failure(f"Google credentials failed ({type(error).__name__})") from None
    try:
        text = bytes(response.payload.data).decode("utf-8")
    except UnicodeDecodeError:
        raise reference.failure("the payload is not UTF-8 text") from None
    return text.rstrip("\r\n")


def _reason(error: google_errors.GoogleAPIError) -> str:
    """What went wrong, from the status alone: the server's message could quote anything."""
    if isinstance(error, google_errors.RetryError) and isinstance(
        error.cause, google_errors.GoogleAPIError
    ):
        return _reason(error.cause)
    if isinstance(error, google_errors.NotFound):
        return "not found"
    if isinstance(error, google_errors.PermissionDenied):
        return "permission denied"
    status = getattr(error, "grpc_status_code", None)
    return status.name if isinstance(status, grpc.StatusCode) else type(error).__name__
