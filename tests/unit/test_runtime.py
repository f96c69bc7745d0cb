"""The start-up heap freeze `pyloto serve` does before answering."""

from __future__ import annotations

import gc

from pyloto_corp.runtime import freeze_startup_heap


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
