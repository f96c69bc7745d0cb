"""`pyloto serve` on a Redis that persists nothing: refused in one line, unless accepted."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import ServeProcess, process_env, redis_variables
from tests.support.redis_server import RedisServer
from tests.support.running import running


@pytest.fixture
def bare_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with neither AOF nor RDB."""
    with running(RedisServer(tmp_path / "redis", "none")) as server:
        yield server


def test_serve_refuses_a_redis_without_persistence_in_one_line(
    bare_redis: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    server = ServeProcess(
        process_env(redis_variables(bare_redis.url, redis_prefix, tmp_path)),
        tmp_path / "server.log",
    )
    done = subprocess.run(
        server.command, env=server.env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert done.stdout == b""
    error = done.stderr.decode()
    assert error.count("\n") == 1, error
    assert "neither AOF nor RDB" in error
    assert "REDIS_ALLOW_NO_PERSISTENCE=true" in error


def test_serve_starts_on_it_when_the_risk_is_accepted(
    bare_redis: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    variables = redis_variables(
        bare_redis.url, redis_prefix, tmp_path, REDIS_ALLOW_NO_PERSISTENCE="true"
    )
    server = ServeProcess(process_env(variables), tmp_path / "server.log")
    try:
        server.start()
        ready = httpx.get(f"{server.url}/ready", timeout=5).json()
    finally:
        server.cleanup()
    assert ready["durability"] == "none"


@pytest.mark.parametrize(
    ("persistence", "kept"),
    [("default", "persists only RDB snapshots"), ("everysec", "fsyncs its AOF `everysec`")],
)
def test_serve_refuses_redis_s_default_snapshots_and_aof_fsynced_every_second(
    redis_prefix: str, tmp_path: Path, persistence: str, kept: str
) -> None:
    """Redis's own default (RDB snapshots, no AOF) and AOF fsynced every second: one line
    naming what Redis keeps and the setting that accepts the loss."""
    with running(RedisServer(tmp_path / "redis", persistence)) as redis_server:
        server = ServeProcess(
            process_env(redis_variables(redis_server.url, redis_prefix, tmp_path)),
            tmp_path / "server.log",
        )
        done = subprocess.run(
            server.command, env=server.env, capture_output=True, timeout=60, check=False
        )
    assert done.returncode == 1
    error = done.stderr.decode()
    assert error.count("\n") == 1, error
    assert kept in error
    assert "REDIS_ALLOW_NO_PERSISTENCE=true" in error
