"""Account names, roles and stored password hashes (no store involved)."""

from __future__ import annotations

import pytest

from pyloto_corp.application.accounts import (
    AGENT,
    OPERATOR,
    AccountError,
    account_name,
    account_ref,
    check_role,
    hash_password,
    role_includes,
    session_key,
    verify_password,
)


def test_an_agent_may_do_what_an_operator_may_and_not_the_other_way() -> None:
    assert role_includes(AGENT, OPERATOR)
    assert role_includes(AGENT, AGENT)
    assert role_includes(OPERATOR, OPERATOR)
    assert not role_includes(OPERATOR, AGENT)
    assert not role_includes("admin", OPERATOR)
    with pytest.raises(AccountError):
        check_role("admin")


@pytest.mark.parametrize(
    ("given", "kept"),
    [("Ana", "ana"), (" ana.ops ", "ana.ops"), ("Ana@Example.com", "ana@example.com")],
)
def test_names_are_kept_lowercase(given: str, kept: str) -> None:
    assert account_name(given) == kept


@pytest.mark.parametrize("name", ["", " ", ".ana", "ana ops", "ana/ops", "é", "a" * 129, "a\x00"])
def test_odd_names_are_refused(name: str) -> None:
    with pytest.raises(AccountError):
        account_name(name)


@pytest.mark.parametrize("password", ["", "short", "x" * 1025])
def test_passwords_outside_the_bounds_are_refused_without_being_quoted(password: str) -> None:
    with pytest.raises(AccountError) as refused:
        hash_password(password)
    assert password not in str(refused.value) or not password


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "bcrypt$x",
        "scrypt$16384$8$1$c2FsdA",
        "scrypt$99999999999$8$1$c2FsdA$a2V5",  # a cost no one should compute
        "scrypt$16384$8$999$c2FsdA$a2V5",
        "scrypt$x$8$1$c2FsdA$a2V5",
        "scrypt$16384$8$1$!!$a2V5",
    ],
)
def test_a_stored_hash_this_version_cannot_read_matches_nothing(stored: str) -> None:
    assert not verify_password("a long password", stored)


def test_a_non_ascii_password_round_trips() -> None:
    stored = hash_password("senha çãõ 🔑 longa")
    assert verify_password("senha çãõ 🔑 longa", stored)
    assert not verify_password("senha cao longa", stored)


def test_refs_and_session_keys_do_not_show_what_they_stand_for() -> None:
    assert "ana" not in account_ref("ana")
    assert account_ref("ana") != account_ref("bia")
    assert len(session_key("id")) == 64
    assert session_key("id") != "id"


def test_the_account_scripts_are_files_that_name_their_keys_and_arguments() -> None:
    from pyloto_corp.adapters.redis.accounts import BODIES

    assert sorted(BODIES) == ["ops_account_add", "ops_account_end", "ops_session_add"]
    for name, body in BODIES.items():
        for part in ("-- KEYS", "-- ARGV", "-- Returns"):
            assert part in body, (name, part)
