"""Console accounts for tests: one made the way `pyloto users add` makes it (through the
configured store, on a connection of the test's own), and the sign-in form posted."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from pyloto_corp.application.accounts import AGENT, AccountError
from pyloto_corp.bootstrap import accounts_beside, console_accounts
from pyloto_corp.config import Settings

ACCOUNT = "ana.ops"
PASSWORD = "correct horse battery staple"


async def ensure_account(
    settings: Settings, name: str = ACCOUNT, role: str = AGENT, password: str = PASSWORD
) -> None:
    """The account exists in `settings`' store (made now unless it was already)."""
    store, close = accounts_beside(settings)
    try:
        await console_accounts(settings, store).add(name, role, password)
    except AccountError:
        pass  # made by an earlier sign-in of the same test
    finally:
        await close()


async def post_sign_in(
    client: httpx.AsyncClient, name: str = ACCOUNT, password: str = PASSWORD, **headers: str
) -> httpx.Response:
    """POST the sign-in form (no redirect followed)."""
    return await client.post(
        "/ops/login",
        data={"name": name, "password": password},
        headers=headers,
        follow_redirects=False,
    )


def add_with_cli(
    command: list[str],
    env: dict[str, str],
    name: str = ACCOUNT,
    role: str = AGENT,
    password: str = PASSWORD,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`pyloto users add NAME --role ROLE --password-stdin` in a child process."""
    return subprocess.run(
        [*command, "users", "add", name, "--role", role, "--password-stdin"],
        input=f"{password}\n",
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
