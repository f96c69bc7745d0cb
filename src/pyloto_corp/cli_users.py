"""`pyloto users`: the console's accounts, in the configured state store (SQLite or Redis).

Runs beside a serving process: on SQLite it opens the same file on a connection of its own
(the server's lock is for records, not accounts), on Redis the same keys.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from typing import Any

from pyloto_corp.application.accounts import ROLES, AccountError
from pyloto_corp.application.ports import StoreUnavailable
from pyloto_corp.config import Settings


def add_parser(commands: Any) -> None:
    """`users add|list|remove|revoke` under the `pyloto` parser's `commands`."""
    users = commands.add_parser("users", help="the console's accounts (people, with a role)")
    actions = users.add_subparsers(dest="users_command", required=True)
    add = actions.add_parser("add", help="add an account (asks for its password)")
    add.add_argument("name", help="the account's name (lowercase; an e-mail for IAP)")
    add.add_argument(
        "--role",
        choices=sorted(ROLES),
        required=True,
        help="operator: the console's pages; agent: those and the agent inbox",
    )
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (for scripts), not a prompt",
    )
    actions.add_parser("list", help="every account: name, role, created")
    remove = actions.add_parser("remove", help="delete an account and end its sessions")
    remove.add_argument("name")
    revoke = actions.add_parser("revoke", help="end every session of an account (sign it out)")
    revoke.add_argument("name")


def _password(from_stdin: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        print("pyloto: the two passwords differ", file=sys.stderr)
        return None
    return first


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one `pyloto users` command; 0 when done, 1 when refused."""
    password = None
    if args.users_command == "add":
        password = _password(args.password_stdin)
        if password is None:
            return 1
    try:
        return asyncio.run(_run(settings, args, password))
    except AccountError as error:
        print(f"pyloto: {error}", file=sys.stderr)
    except StoreUnavailable as error:
        print(f"pyloto: the state store is unavailable: {error}", file=sys.stderr)
    return 1


async def _run(settings: Settings, args: argparse.Namespace, password: str | None) -> int:
    from pyloto_corp.bootstrap import accounts_beside, console_accounts

    store, close = accounts_beside(settings)
    accounts = console_accounts(settings, store)
    try:
        command = args.users_command
        if command == "add":
            assert password is not None
            account = await accounts.add(args.name, args.role, password)
            print(f"added {account.name} ({account.role})")
        elif command == "list":
            for account in await store.list_accounts():
                created = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(account.created_at))
                print(f"{account.name}\t{account.role}\t{created}")
        elif command == "remove":
            if not await accounts.remove(args.name):
                print(f"pyloto: no account named {args.name!r}", file=sys.stderr)
                return 1
            print(f"removed {args.name} (its sessions are ended)")
        else:
            ended = await accounts.revoke(args.name)
            print(f"ended {ended} session(s) of {args.name}")
        return 0
    finally:
        await close()
