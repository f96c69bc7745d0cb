"""A replay's result page while some record it re-drove still runs: it says so, links the
page that shows them now and loads it again by itself (no script needed)."""

from __future__ import annotations

from pyloto_corp.http import ops_pages as pages


def _row(state: str, outcome: str, running: bool, reason: str | None = None) -> dict[str, object]:
    return {
        "ref": "0123456789abcdef",
        "href": "/ops/messages/TOKEN",
        "token": "TOKEN",
        "state": state,
        "outcome": outcome,
        "running": running,
        "reason": reason,
    }


def test_a_record_still_running_makes_the_page_look_again() -> None:
    rows = [_row("sending", "still running (in sending)", True), _row("sent", "sent", False)]
    html = pages.replay_result_page(rows, [], "csrf", "/ops/replay/status?m=TOKEN", 3)
    assert '<meta http-equiv="refresh" content="2; url=/ops/replay/status?m=TOKEN">' in html
    assert 'id="see-again" href="/ops/replay/status?m=TOKEN"' in html
    assert "still running (in sending)" in html
    assert '<b id="count-running">1</b> still running' in html
    assert "<b>5</b> replayed" in html  # the 2 followed and 3 more
    assert 'id="unfollowed">3 more replayed' in html


def test_a_page_with_every_record_at_rest_does_not_refresh() -> None:
    rows = [_row("failed", "failed again", False, "graph 131026")]
    html = pages.replay_status_page(rows, None, "csrf")
    assert "http-equiv" not in html
    assert 'id="see-again"' not in html
    assert '<b id="count-failed">1</b> failed again' in html
    assert '<span class="reason">graph 131026</span>' in html
