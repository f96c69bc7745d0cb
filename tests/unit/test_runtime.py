"""The start-up heap freeze `pyloto serve` does before answering."""

from __future__ import annotations

import gc
import socket

import pytest

from pyloto_corp.runtime import freeze_startup_heap, listen_url


class Node:
    """An object the collector tracks."""

    def __init__(self, n: int) -> None:
        self.n = n


def test_freezing_takes_the_live_objects_out_of_the_collector_and_keeps_them() -> None:
    """Everything alive at the call is frozen (so full collections skip it), and frozen
    objects stay usable."""
    kept = [Node(n) for n in range(1000)]
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count()
        assert frozen >= len(kept)
        assert all(gc.is_tracked(item) for item in kept)
        assert kept[999].n == 999
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize(
    ("family", "host", "shown"),
    [
        (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
        (socket.AF_INET, "0.0.0.0", "127.0.0.1"),  # noqa: S104 (what a container binds)
        (socket.AF_INET6, "::1", "[::1]"),
        (socket.AF_INET6, "::", "[::1]"),
    ],
)
def test_the_start_up_url_is_one_a_client_on_the_machine_can_open(
    family: socket.AddressFamily, host: str, shown: str
) -> None:
    """The URL names the bound port; a wildcard address becomes the loopback one, an IPv6
    address is bracketed."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            pytest.skip(f"no {host} on this machine")
        port = sock.getsockname()[1]
        assert listen_url(sock) == f"http://{shown}:{port}"
