"""The console's HTML: small functions that return escaped markup, no template engine.

Every value that comes from a record goes through `e()` (HTML escaping) and was masked
before it got here: message ids appear as their log reference, texts through the same
redaction as `pyloto inspect`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from pyloto_corp.application.console import TIMEOUT_GATE, Dashboard, Window
from pyloto_corp.domain.conversation import Conversation
from pyloto_corp.domain.costs import ConversationCost, DayCost, Prices, Tokens
from pyloto_corp.domain.ops_metrics import LLM_OUTCOMES, LLMCalls, Percentiles
from pyloto_corp.domain.outcome import since_text
from pyloto_corp.domain.records import FAILED_STATE

Nav = str  # which page the header marks as current


def e(value: object) -> str:
    """`value` as escaped HTML text."""
    return escape(str(value), quote=True)


def when(at: float | None) -> str:
    """A time as UTC text, to the second."""
    if at is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))


def definitions(facts: Iterable[tuple[str, str]]) -> str:
    """The terms and descriptions of a `<dl>`: (label, HTML already escaped) pairs."""
    return "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in facts)


def duration_text(seconds: float, exact: bool = False) -> str:
    """A span of time as a person reads it: `45 s`, `12 min`, `3 h 20 min`, `2 d 4 h`;
    `exact` (the Queues page's short waits) keeps a tenth below 10 s and the seconds below
    an hour: `0.4 s`, `3 min 5 s`."""
    if exact and seconds < 10:
        return f"{max(0.0, seconds):.1f} s"
    total = max(0, int(seconds))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if exact and secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def ms(value: float | None) -> str:
    """Milliseconds as text, in seconds from 10 s on."""
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def page(
    title: str,
    body: str,
    nav: Nav = "",
    csrf: str | None = None,
    script: bool = False,
    refresh: str | None = None,
) -> str:
    """A whole page: header with navigation (and sign-out when signed in), then `body`;
    `refresh`: a page the browser loads after 2 seconds (no script needed)."""
    links = [
        ("machine", "/ops", "Machine"),
        ("records", "/ops/records", "Records"),
        ("dead-letters", "/ops/dead-letters", "Dead letters"),
        ("inbox", "/ops/inbox", "Inbox"),
        ("costs", "/ops/costs", "Cost"),
        ("queues", "/ops/queues", "Queues"),
    ]
    header = '<span class="brand">pyloto ops</span>'
    if csrf is not None:
        items = "".join(
            f'<a id="nav-{key}" href="{href}"'
            + (' aria-current="page"' if key == nav else "")
            + f">{label}</a>"
            for key, href, label in links
        )
        header += (
            f"<nav>{items}</nav>"
            '<form method="post" action="/ops/logout">'
            f'<input type="hidden" name="csrf" value="{e(csrf)}">'
            '<button type="submit" id="sign-out">Sign out</button></form>'
        )
    tail = '<script src="/ops/static/ops.js" defer></script>' if script else ""
    if refresh is not None:
        tail += f'<meta http-equiv="refresh" content="2; url={e(refresh)}">'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · pyloto ops</title>"
        '<link rel="stylesheet" href="/ops/static/ops.css">'
        f"{tail}</head><body><header>{header}</header><main>{body}</main></body></html>"
    )


def signin(error: str | None = None) -> str:
    """The sign-in form: an account's name and password, posted (never in a URL)."""
    message = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    body = (
        '<div class="card signin"><h1>Sign in</h1>'
        '<p class="muted">Your console account (<code>pyloto users add</code>).</p>'
        f"{message}"
        '<form id="signin" method="post" action="/ops/login">'
        '<label for="name">Name</label>'
        '<input id="name" name="name" type="text" autocomplete="username" '
        'autocapitalize="none" spellcheck="false" required autofocus>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" '
        'autocomplete="current-password" required>'
        '<button class="primary" id="signin-submit" type="submit">Sign in</button>'
        "</form></div>"
    )
    return page("Sign in", body)


def _hidden(csrf: str, fields: Mapping[str, str] | None = None) -> str:
    out = f'<input type="hidden" name="csrf" value="{e(csrf)}">'
    for name, value in (fields or {}).items():
        out += f'<input type="hidden" name="{e(name)}" value="{e(value)}">'
    return out


# ---- the main page -------------------------------------------------------------------------


def _scale_top(peak: int) -> int:
    """The y-axis's top: the first of 1, 2, 5, 10, 20, 50, ... at or above `peak`."""
    decade = 1
    while True:
        for step in (1, 2, 5):
            if decade * step >= peak:
                return decade * step
        decade *= 10


def _spark(window: Window) -> str:
    """Received (solid) and sent (dashed, drawn over it) per bucket, on a y-axis of
    messages per bucket from 0 to a round top, with its gridlines labelled."""
    w, h, left, pad = 320.0, 90.0, 30.0, 6.0
    top = _scale_top(max([1, *window.received, *window.sent]))
    n = max(1, len(window.starts) - 1)

    def y_of(v: float) -> float:
        return h - pad - v * (h - 2 * pad) / top

    def line(values: Sequence[int]) -> str:
        return " ".join(
            f"{left + i * (w - left - pad) / n:.1f},{y_of(v):.1f}" for i, v in enumerate(values)
        )

    ticks = sorted({0, top // 2, top} if top % 2 == 0 else {0, top})
    axis = "".join(
        f'<line class="grid-line" x1="{left:.0f}" x2="{w - pad:.0f}" '
        f'y1="{y_of(v):.1f}" y2="{y_of(v):.1f}"/>'
        f'<text class="tick" x="{left - 4:.0f}" y="{y_of(v) + 3.5:.1f}">{v}</text>'
        for v in ticks
    )
    unit = "minute" if window.width == 60 else "hour"
    label = (
        f"Messages per {unit}, {window.name}: {window.total_received} received (solid line), "
        f"{window.total_sent} sent (dashed line); the axis goes from 0 to {top} per {unit}"
    )
    return (
        f'<svg class="throughput" viewBox="0 0 {w:.0f} {h:.0f}" role="img" '
        f'aria-label="{e(label)}"><title>{e(label)}</title>'
        f'<g class="y-axis" data-top="{top}">{axis}'
        f'<line class="axis-line" x1="{left:.0f}" x2="{left:.0f}" y1="{pad:.0f}" '
        f'y2="{h - pad:.0f}"/></g>'
        f'<polyline class="received" points="{line(window.received)}"/>'
        f'<polyline class="sent" points="{line(window.sent)}"/></svg>'
    )


def _bars(items: Mapping[str, int], empty: str) -> str:
    if not items:
        return f'<p class="muted">{e(empty)}</p>'
    peak = max(items.values())
    rows = "".join(
        f'<tr><td>{e(k)}</td><td class="num">{n}</td><td class="barcell">'
        f'<svg viewBox="0 0 100 8" preserveAspectRatio="none" aria-hidden="true">'
        f'<rect class="bar" x="0" y="0" height="8" width="{100 * n / peak:.1f}"/></svg></td></tr>'
        for k, n in items.items()
    )
    return f"<table>{rows}</table>"


def _percentile_rows(window: Window) -> str:
    rows = [("received → sent", window.end_to_end)]
    rows += [(f"step in {state}", p) for state, p in window.steps.items()]

    def row(label: str, p: Percentiles) -> str:
        return (
            # A state's name breaks after its underscores, not in the middle of a word.
            f"<tr><td>{e(label).replace('_', '_<wbr>')}</td><td class='num'>{p.count}</td>"
            f"<td class='num'>{ms(p.p50)}</td><td class='num'>{ms(p.p95)}</td>"
            f"<td class='num'>{ms(p.p99)}</td></tr>"
        )

    return (
        '<table class="latency-table"><colgroup><col class="what"><col class="n">'
        '<col span="3" class="p"></colgroup>'
        "<tr><th></th><th class='num'>n</th><th class='num'>p50</th>"
        "<th class='num'>p95</th><th class='num'>p99</th></tr>"
        + "".join(row(label, p) for label, p in rows)
        + "</table>"
    )


def _failures_line(window: Window, failed_now: int) -> str:
    """Dead-letterings (events: a record dead-lettered, replayed and dead-lettered again
    counts twice) beside the records in `failed` now, each named for what it counts."""
    return (
        '<p class="failures">'
        f'<span title="moves into failed in the window; one record can count more than once">'
        f"dead-letterings (events, {e(window.name)}) "
        f'<b class="total-dead-letters">{window.dead_letters}</b></span> · '
        '<span title="records in failed at this moment, waiting for a replay">'
        f'failed now (records) <b class="failed-now">{failed_now}</b></span></p>'
    )


def charts(board: Dashboard) -> str:
    """The charts section's content (replaced as a whole at each refresh)."""
    cards = []
    for window in (board.hour, board.day):
        cards.append(
            f'<div class="card chart" data-window="{e(window.name)}">'
            f"<h3>Throughput, {e(window.name)}</h3>"
            '<div class="legend"><span class="received">received '
            f'<b class="total-received">{window.total_received}</b></span>'
            f'<span class="sent">sent <b class="total-sent">{window.total_sent}</b></span>'
            f'<span class="unit">per {"minute" if window.width == 60 else "hour"}</span>'
            f"</div>{_spark(window)}"
            f'<div class="axis" aria-hidden="true"><span>{e(when(window.starts[0]))}</span>'
            "<span>now</span></div>"
            f"{_failures_line(window, board.counts.get(FAILED_STATE, 0))}</div>"
        )
    for window in (board.hour, board.day):
        cards.append(
            f'<div class="card chart"><h3>Fallbacks by reason, {e(window.name)}</h3>'
            f"{_bars(window.fallbacks, 'No fallback.')}</div>"
        )
    for window in (board.hour, board.day):
        cards.append(
            f'<div class="card chart latency"><h3>Latency, {e(window.name)}</h3>'
            f'<div class="table-wrap">{_percentile_rows(window)}</div></div>'
        )
    cards += [_llm_card(window) for window in (board.hour, board.day)]
    return "".join(cards)


# ---- the LLM's health card (the rollout's gates) ------------------------------------------


def _share(n: int, total: int) -> str:
    return f"{100 * n / total:.1f} %" if total else "-"


def _llm_rows(window: Window) -> str:
    def cell(calls: LLMCalls, outcome: str) -> str:
        n, rate = calls.outcomes[outcome], calls.rate(outcome) or 0.0
        over = outcome == "timeout" and rate >= TIMEOUT_GATE
        css = f"num outcome-{outcome}" + (" over" if over else "")
        return f'<td class="{css}">{n} <span class="muted">{_share(n, calls.total)}</span></td>'

    rows = "".join(
        f'<tr class="llm-calls" data-step="{e(c.step)}" data-model="{e(c.model)}">'
        f"<td>{e(c.step)}</td><td><code>{e(c.model)}</code></td>"
        f'<td class="num calls">{c.total}</td>'
        + "".join(cell(c, outcome) for outcome in LLM_OUTCOMES)
        + "</tr>"
        for c in window.llm
    )
    if not rows:
        return '<p class="muted no-llm-calls">No LLM call.</p>'
    head = "".join(f"<th class='num'>{e(outcome)}</th>" for outcome in LLM_OUTCOMES)
    return (
        f"<table><tr><th>step</th><th>model</th><th class='num'>calls</th>{head}</tr>{rows}</table>"
    )


def _llm_latency(window: Window) -> str:
    if not window.llm_latency:
        return ""
    parts = " · ".join(
        f'{e(step)} <b class="llm-p95" data-step="{e(step)}">{ms(p.p95)}</b>'
        for step, p in window.llm_latency.items()
    )
    return f'<p class="llm-latency">Call time p95: {parts}</p>'


def _replies(window: Window) -> str:
    total = sum(window.replies.values())
    parts = " · ".join(
        f'{e(author)} <b class="replies-{e(author)}">{n}</b>'
        for author, n in window.replies.items()
    )
    share = window.llm_share()
    llm = "-" if share is None else f"{100 * share:.1f} %"
    return (
        f'<p class="replies">Replies sent <b class="replies-total">{total}</b>: {parts}. '
        f'LLM share of the bot\'s replies <b class="llm-share">{e(llm)}</b></p>'
    )


def _llm_card(window: Window) -> str:
    """The LLM calls of each step by model and outcome, their p95, and who made the
    replies sent: what the rollout's gates are read from (docs/console.md)."""
    return (
        f'<div class="card chart llm-health" data-window="{e(window.name)}">'
        f"<h3>LLM calls and replies, {e(window.name)}</h3>"
        f"{_llm_rows(window)}{_llm_latency(window)}{_replies(window)}</div>"
    )


def machine_page(board: Dashboard, svg: str, csrf: str) -> str:
    """The live machine, the charts, and the figures at a glance."""
    body = (
        "<h1>The machine, live</h1>"
        '<p class="muted">Records in each state now; on each arrow, the records that took it '
        "in the last hour (an arrow not taken is dimmed, with no number; the many arrows into "
        "an end such as <code>failed</code> are counted together beside its box). Updated "
        '<span id="updated-at" aria-live="polite">'
        f"{e(when(board.at))}</span>.</p>"
        f'<div class="card diagram" id="diagram">{svg}</div>'
        '<section id="charts" class="grid" aria-label="Throughput and health">'
        f"{charts(board)}</section>"
    )
    return page("Machine", body, "machine", csrf, script=True)


def summary_json(board: Dashboard) -> bytes:
    """What the main page polls: counts, transitions taken, and the charts' markup."""
    return json.dumps(
        {
            "at": board.at,
            "updated_at": when(board.at),
            "counts": board.counts,
            "taken": board.hour.taken,
            "charts": charts(board),
            "llm": {key: _llm_json(w) for key, w in (("hour", board.hour), ("day", board.day))},
            "replies": {
                key: _replies_json(w) for key, w in (("hour", board.hour), ("day", board.day))
            },
        }
    ).encode()


def _llm_json(window: Window) -> dict[str, Any]:
    """A window's LLM calls (by step and model: counts and rates of each outcome) and
    each step's call time percentiles."""
    return {
        "calls": [
            {
                "step": c.step,
                "model": c.model,
                "total": c.total,
                "outcomes": c.outcomes,
                "rates": {outcome: c.rate(outcome) for outcome in LLM_OUTCOMES},
            }
            for c in window.llm
        ],
        "latency_ms": {
            step: {"count": p.count, "p50": p.p50, "p95": p.p95, "p99": p.p99}
            for step, p in window.llm_latency.items()
        },
    }


def _replies_json(window: Window) -> dict[str, Any]:
    """A window's replies sent by author, their total and the LLM's share of the bot's."""
    return {
        **window.replies,
        "total": sum(window.replies.values()),
        "llm_share": window.llm_share(),
    }


# ---- records -------------------------------------------------------------------------------


def _option(value: str, current: str | None, label: str | None = None) -> str:
    selected = " selected" if value == (current or "") else ""
    return f'<option value="{e(value)}"{selected}>{e(label or value or "any")}</option>'


def records_page(
    rows: Iterable[dict[str, Any]],
    states: Sequence[str],
    filters: Mapping[str, str],
    next_href: str | None,
    csrf: str,
    notice: str | None = None,
    customer: str | None = None,
) -> str:
    """The record list with its filters, the search by message id and the search of a
    customer by number or BSUID; `customer`: the list is that customer's records."""
    state_options = _option("", filters.get("state")) + "".join(
        _option(s, filters.get("state")) for s in states
    )
    form = (
        '<form class="filters card" method="get" action="/ops/records" id="filters">'
        f'<label>State<select name="state" id="filter-state">{state_options}</select></label>'
        '<label>Fallback reason<input name="reason" id="filter-reason" '
        f'value="{e(filters.get("reason", ""))}" placeholder="any"></label>'
        '<label>Updated since (UTC)<input type="datetime-local" name="since" '
        f'value="{e(filters.get("since", ""))}"></label>'
        '<label>Updated before (UTC)<input type="datetime-local" name="until" '
        f'value="{e(filters.get("until", ""))}"></label>'
        '<button class="primary" type="submit" id="filter-submit">Filter</button></form>'
        '<form class="filters card" id="search" method="post" action="/ops/search">'
        f"{_hidden(csrf)}"
        '<label>Message id (wamid)<input name="id" id="search-id" size="60" required '
        'autocomplete="off"></label>'
        '<button class="primary" type="submit" id="search-submit">Open</button></form>'
        '<form class="filters card" id="customer-search" method="post" action="/ops/search">'
        f"{_hidden(csrf)}"
        '<label>Customer: phone number or BSUID<input name="customer" id="customer-id" '
        'size="40" required autocomplete="off" spellcheck="false" inputmode="text"></label>'
        '<button class="primary" type="submit" id="customer-submit">Find records</button>'
        "</form>"
    )
    lines = "".join(
        f'<tr class="record" data-state="{e(r["state"])}">'
        f'<td><a class="message-link" href="{e(r["href"])}"><code>{e(r["ref"])}</code></a></td>'
        f"<td class='state'>{e(r['state'])}</td><td>{e(r['kind'])}</td>"
        f"<td>{e(when(r['created_at']))}</td><td>{e(when(r['updated_at']))}</td>"
        f"<td class='reason'>{e(r['reason'] or '')}</td></tr>"
        for r in rows
    )
    table = (
        '<table id="records"><thead><tr><th>Message (reference)</th><th>State</th><th>Kind</th>'
        "<th>Received</th><th>Last update</th><th>Fallback / failure</th></tr></thead>"
        f"<tbody>{lines}</tbody></table>"
    )
    if not lines:
        table += '<p class="muted" id="no-records">No record matches.</p>'
    more = (
        f'<p><a id="next-page" href="{e(next_href)}">Older records →</a></p>' if next_href else ""
    )
    warn = f'<p class="error" role="alert" id="notice">{e(notice)}</p>' if notice else ""
    title = "<h1>Records</h1>"
    if customer is not None:
        title = (
            f'<h1>Records of customer <code id="customer-key">{e(customer[:12])}</code></h1>'
            '<p class="muted" id="customer-note">Their newest records (at most 100), newest '
            "first, by the keyed hash of their number or BSUID. "
            '<a href="/ops/records" id="all-records">All records</a></p>'
        )
    return page("Records", f"{title}{warn}{form}{table}{more}", "records", csrf)


def query_href(path: str, params: Mapping[str, str]) -> str:
    """`path` with the non-empty `params` as its query."""
    kept = {k: v for k, v in params.items() if v}
    return f"{path}?{urlencode(kept)}" if kept else path


# ---- one message ---------------------------------------------------------------------------


def _attempt(attempt: object) -> str:
    """' · attempt N' of a transition a queue delivery made (N ≥ 1); nothing for one it did
    not (a dead-lettering or a replay records 0: no delivery attempt of its own)."""
    if not isinstance(attempt, int) or attempt < 1:
        return ""
    return f' · attempt <span class="attempt">{attempt}</span>'


def _sent_ref(ref: str | None) -> str:
    """The sent message's WhatsApp id as its log reference: Meta's wamid encodes the
    customer's number, so it is never shown in clear."""
    if not ref:
        return '<span id="sent-ref" class="muted">-</span>'
    return f'<code id="sent-ref">{e(ref)}</code> <span class="muted">(log reference)</span>'


def _llm1_card(results: Mapping[str, Any]) -> str:
    """What LLM#1 found: the event, its confidence and its summary (masked)."""
    if results.get("event") is None:
        return ""
    confidence = results.get("confidence")
    facts = [
        ("Event", f'<span id="llm1-event">{e(results["event"])}</span>'),
        (
            "Confidence",
            f'<span id="llm1-confidence">{"-" if confidence is None else f"{confidence:.2f}"}'
            "</span>",
        ),
        ("Summary (masked)", f'<span id="llm1-summary">{e(results.get("summary") or "-")}</span>'),
    ]
    dl = definitions(facts)
    return (
        "<h2>LLM#1: the event detected</h2>"
        f'<div class="card" id="llm1"><dl class="facts">{dl}</dl></div>'
    )


def _fallback_card(view: Mapping[str, Any]) -> str:
    """Why the message fell back, from which step, and what was sent instead."""
    reason = view.get("fallback_reason")
    if not reason:
        return ""
    results = view["results"]
    template = results.get("template")
    instead = (
        f"the template <code>{e(template)}</code> (its request body below)"
        if template
        else "no template yet"
    )
    facts = [
        ("Reason", f'<span id="fallback-detail-reason">{e(reason)}</span>'),
        (
            "Step that gave up",
            f'<span id="fallback-step">{e(results.get("fallback_step") or "-")}</span>',
        ),
        ("Sent instead", f'<span id="fallback-instead">{instead}</span>'),
    ]
    dl = definitions(facts)
    return f'<h2>Fallback</h2><div class="card" id="fallback"><dl class="facts">{dl}</dl></div>'


def message_page(
    view: dict[str, Any],
    trace_id: str | None,
    trace_href: str | None,
    csrf: str,
    replay_token: str | None = None,
) -> str:
    """One record: its facts, its history as a timeline, the reply, the failure;
    `replay_token`: a dead letter's sealed id, for its Replay button (confirmed first)."""
    items = []
    for h in view["history"]:
        items.append(
            f'<li class="transition outcome-{e(h["to"])}">'
            f'<span class="from">{e(h["from"])}</span> → <span class="to">{e(h["to"])}</span> '
            f'<span class="muted">by <span class="trigger">{e(h["trigger"])}</span></span><br>'
            f'<span class="at">{e(when(h["at"]))}</span> · '
            f'<span class="duration">{e(ms(h["duration_ms"]))}</span>{_attempt(h["attempt"])}'
            "</li>"
        )
    inbound = view["inbound"]
    facts = [
        ("Reference", f'<code id="ref">{e(view["log_ref"])}</code>'),
        ("State", f'<span id="state">{e(view["state"])}</span>'),
        ("Kind", e(inbound["kind"])),
        ("From", e(inbound["from"] or inbound.get("user_id") or "-")),
        ("Received", e(when(view["created_at"]))),
        ("Last update", e(when(view["updated_at"]))),
        (
            "Fallback reason",
            f'<span id="fallback-reason">{e(view["fallback_reason"] or "-")}</span>',
        ),
        ("Delivery", e(view["delivery_status"] or "-")),
        ("Sent as (WhatsApp id)", _sent_ref(view.get("outbound_ref"))),
    ]
    unknown = view.get("outcome_unknown")
    if unknown and view["state"] != "sent":
        since = since_text(unknown["since"])
        note = (
            f"outcome unknown since {since} ({unknown['why']}; {unknown['sends']} send(s) "
            "may have reached the customer)"
        )
        facts.append(("Outcome", f'<span id="outcome-unknown" class="error">{e(note)}</span>'))
    if trace_id:
        link = f'<a href="{e(trace_href)}" rel="noreferrer">Cloud Trace</a>' if trace_href else ""
        facts.append(("Trace", f'<code id="trace-id">{e(trace_id)}</code> {link}'))
    dl = definitions(facts)
    failure = ""
    if view["failure_reason"]:
        failure = (
            f'<h2>Failure</h2><p class="error" id="failure-reason">{e(view["failure_reason"])}</p>'
        )
    if replay_token is not None:
        failure += (
            '<form id="replay-message" method="post" action="/ops/replay">'
            f"{_hidden(csrf, {'message': replay_token})}"
            '<button class="primary" type="submit" id="replay-message-button">Replay…</button>'
            "</form>"
        )
    text = inbound["text"]
    said = f'<h2>Message (masked)</h2><pre id="inbound-text">{e(text)}</pre>' if text else ""
    said += _llm1_card(view["results"]) + _fallback_card(view)
    reply = view["reply"]
    sent = (
        f'<pre id="reply">{e(json.dumps(reply, ensure_ascii=False, indent=2))}</pre>'
        if reply
        else '<p class="muted" id="reply">No reply built yet.</p>'
    )
    body = (
        f"<h1>Message <code>{e(view['log_ref'])}</code></h1>"
        f'<div class="card"><dl class="facts">{dl}</dl></div>{failure}'
        f'<h2>Timeline</h2><ol id="timeline">{"".join(items)}</ol>{said}'
        f"<h2>Reply (request body, personal data masked)</h2>{sent}"
    )
    return page("Message", body, "records", csrf)


# ---- what the line costs ------------------------------------------------------------------


def money(value: float | None, currency: str) -> str:
    """A cost as text, or "-" when it is not priced."""
    if value is None:
        return "-"
    return f"{value:,.4f} {currency}"


def _tokens_text(tokens: Tokens) -> str:
    return f"{tokens.input:,} in / {tokens.output:,} out"


def _prices_note(prices: Prices) -> str:
    """Which prices are set, in one line (what "-" stands for otherwise)."""
    parts = []
    if prices.llm_priced:
        parts.append(
            f"LLM {prices.input_per_million:g} in / {prices.output_per_million:g} out "
            f"{prices.currency} per million tokens"
        )
    if prices.per_billable > 0:
        parts.append(f"{prices.per_billable:g} {prices.currency} per billable message")
    parts += [f"{c} {p:g} {prices.currency}" for c, p in sorted(prices.by_category.items())]
    if not parts:
        return (
            "No price is set (LLM_PRICE_INPUT_PER_MILLION, LLM_PRICE_OUTPUT_PER_MILLION, "
            "WHATSAPP_PRICE_PER_BILLABLE, WHATSAPP_PRICES_BY_CATEGORY): counts only, costs "
            "shown as -."
        )
    return "Prices: " + "; ".join(parts) + ". A - is a figure with no price set."


def costs_page(days: Sequence[DayCost], prices: Prices, csrf: str) -> str:
    """Per UTC day: billable messages by category, tokens by step, and their costs."""
    cur = prices.currency
    categories = sorted({c for d in days for c in d.billable})
    steps = [s for s in ("media", "llm1", "llm2", "llm3") if any(s in d.tokens for d in days)]
    head = (
        "<tr><th>Day (UTC)</th>"
        + "".join(f'<th class="num">{e(c)}</th>' for c in categories)
        + '<th class="num">billable</th><th class="num">WhatsApp</th>'
        + "".join(f'<th class="num">tokens {e(s)}</th>' for s in steps)
        + '<th class="num">LLM</th><th class="num">total</th></tr>'
    )
    rows = "".join(
        f'<tr class="cost-day" data-day="{e(time.strftime("%Y-%m-%d", time.gmtime(d.day)))}">'
        f"<td>{e(time.strftime('%Y-%m-%d', time.gmtime(d.day)))}</td>"
        + "".join(
            f'<td class="num billable-{e(c)}">{d.billable.get(c, 0)}</td>' for c in categories
        )
        + f'<td class="num billable-total">{d.total_billable}</td>'
        f'<td class="num whatsapp-cost">{e(money(d.whatsapp_cost, cur))}</td>'
        + "".join(
            f'<td class="num tokens-{e(s)}">{e(_tokens_text(d.tokens.get(s, Tokens())))}</td>'
            for s in steps
        )
        + f'<td class="num llm-cost">{e(money(d.llm_cost, cur))}</td>'
        f'<td class="num day-cost">{e(money(d.cost, cur))}</td></tr>'
        for d in days
    )
    table = (
        f'<table id="costs"><thead>{head}</thead><tbody>{rows}</tbody></table>'
        if days
        else '<p class="muted" id="no-costs">Nothing billable and no LLM token in the last '
        "31 days.</p>"
    )
    body = (
        "<h1>What the line costs</h1>"
        '<p class="muted">Per UTC day, the last 31: messages Meta\'s status webhooks call '
        "billable, by pricing category (each outbound message once, whichever of its "
        "statuses said so first), and the tokens each LLM step used. Since 2026-10-01 every "
        "service message (a reply inside the 24-hour window) is billed.</p>"
        f'<p id="prices">{e(_prices_note(prices))}</p>'
        f'<div class="card">{table}</div>'
    )
    return page("Cost", body, "costs", csrf)


def conversation_cost_card(cost: ConversationCost, prices: Prices) -> str:
    """One conversation's replies and tokens, from its records kept (counts only)."""
    cur = prices.currency
    steps = "".join(
        f'<tr class="conversation-tokens" data-step="{e(step)}"><td>{e(step)}</td>'
        f'<td class="num">{e(_tokens_text(tokens))}</td></tr>'
        for step, tokens in cost.tokens.items()
    )
    facts = [
        ("Replies sent", f'<span id="replies-sent">{cost.replies_sent}</span>'),
        (
            "Replies delivered (billable)",
            f'<span id="replies-billable">{cost.replies_delivered}</span>',
        ),
        (
            "WhatsApp, estimated",
            f'<span id="whatsapp-estimate">{e(money(cost.whatsapp_estimate, cur))}</span>',
        ),
        ("LLM tokens", f'<span id="tokens-total">{e(_tokens_text(cost.total_tokens))}</span>'),
        ("LLM cost", f'<span id="llm-cost">{e(money(cost.llm_cost, cur))}</span>'),
    ]
    dl = definitions(facts)
    table = f"<table>{steps}</table>" if steps else ""
    return (
        f'<div class="card" id="conversation-cost"><dl class="facts">{dl}</dl>{table}'
        '<p class="muted">From the records kept (retention): each delivered reply is a '
        "billable service message since 2026-10-01, estimated at the service price.</p></div>"
    )


# ---- dead letters and replay ---------------------------------------------------------------


def dead_letters_page(rows: Sequence[dict[str, Any]], next_href: str | None, csrf: str) -> str:
    """Dead letters with their reasons, each with a replay button, and replay-all."""
    lines = "".join(
        f'<tr class="dead-letter"><td><a class="message-link" href="{e(r["href"])}">'
        f"<code>{e(r['ref'])}</code></a></td><td>{e(when(r['updated_at']))}</td>"
        f'<td class="reason">{e(r["reason"] or "-")}{_unknown_note(r)}</td><td>'
        '<form class="replay-one inline" method="post" action="/ops/replay">'
        f"{_hidden(csrf, {'message': r['token']})}"
        '<button class="primary replay-button" type="submit">Replay…</button></form></td></tr>'
        for r in rows
    )
    table = (
        '<table id="dead-letters"><thead><tr><th>Message (reference)</th><th>Failed at</th>'
        f"<th>Reason</th><th></th></tr></thead><tbody>{lines}</tbody></table>"
    )
    if not rows:
        table += '<p class="muted" id="no-dead-letters">No dead letter.</p>'
    all_form = (
        '<form id="replay-all" method="post" action="/ops/replay">'
        f"{_hidden(csrf, {'all': '1'})}"
        '<button class="danger" type="submit" id="replay-all-button">Replay all…</button></form>'
    )
    more = f'<p><a id="next-page" href="{e(next_href)}">Older →</a></p>' if next_href else ""
    body = (
        '<h1>Dead letters</h1><p class="muted">Records in <code>failed</code>. A replay sends '
        "the reply again through the outbound step (a template is built first when there was "
        "no reply); a reply already known to be sent is never sent twice.</p>"
        f'<div class="card">{all_form}</div>{table}{more}'
    )
    return page("Dead letters", body, "dead-letters", csrf)


def _unknown_note(row: Mapping[str, Any]) -> str:
    """'outcome unknown since …' under a dead letter's reason, when it is."""
    since = row.get("unknown_since")
    if not since:
        return ""
    return f'<br><span class="outcome-unknown">outcome unknown since {e(since)}</span>'


def confirm_page(what: str, fields: Mapping[str, str], csrf: str, *, warning: bool = False) -> str:
    """The confirmation before a replay runs (`warning`: the reply may already have
    arrived, so the question is shown as an alert)."""
    role = ' class="error" role="alert"' if warning else ""
    body = (
        f'<h1>Replay?</h1><div class="card"><p id="confirm-what"{role}>{e(what)}</p>'
        '<form id="confirm-replay" method="post" action="/ops/replay">'
        f"{_hidden(csrf, {**fields, 'confirm': 'yes'})}"
        '<button class="danger" type="submit" id="confirm-button">Replay</button> '
        '<a href="/ops/dead-letters" id="cancel">Cancel</a></form></div>'
    )
    return page("Confirm replay", body, "dead-letters", csrf)


def _outcome_items(rows: Sequence[Mapping[str, Any]]) -> str:
    """A replayed record each: its link, what became of it, and why when it failed again."""
    return "".join(
        f'<li class="replayed" data-outcome="{e(r["state"])}">'
        f'<a class="message-link" href="{e(r["href"])}"><code>{e(r["ref"])}</code></a>: '
        f'<b class="outcome{" error" if r["state"] == "failed" else ""}">{e(r["outcome"])}</b>'
        + (f' <span class="reason">{e(r["reason"])}</span>' if r["reason"] else "")
        + f' <a class="timeline-link" href="{e(r["href"])}">timeline →</a></li>'
        for r in rows
    )


def _outcome_tally(rows: Sequence[Mapping[str, Any]]) -> str:
    """'2 sent, 1 failed again, 1 still running' of the replayed records followed."""
    sent = sum(1 for r in rows if r["state"] == "sent")
    failed = sum(1 for r in rows if r["state"] == "failed")
    running = sum(1 for r in rows if r["running"])
    other = len(rows) - sent - failed - running
    parts = [
        f'<b id="count-sent">{sent}</b> sent',
        f'<b id="count-failed">{failed}</b> failed again',
    ]
    parts.append(f'<b id="count-running">{running}</b> still running')
    if other:
        parts.append(f"<b>{other}</b> ended otherwise")
    return ", ".join(parts)


def _see_again(again: str | None) -> str:
    if again is None:
        return ""
    return (
        '<p class="muted" id="still-running">Some are still on their way: this page looks '
        f'again in 2 seconds. <a id="see-again" href="{e(again)}">See again now</a></p>'
    )


def replay_result_page(
    replayed: Sequence[Mapping[str, Any]],
    skipped: Sequence[tuple[str, str, str]],
    csrf: str,
    again: str | None = None,
    unfollowed: int = 0,
) -> str:
    """What a replay did: each replayed record followed a few seconds (its outcome row,
    `_outcome` in http/ops.py), `unfollowed` more not followed, and (reference, href,
    reason) of each one left alone; `again`: where to see the followed ones now."""
    left = "".join(
        f'<li class="skipped"><a href="{e(href)}"><code>{e(ref)}</code></a>: '
        f'<span class="reason">{e(reason)}</span></li>'
        for ref, href, reason in skipped
    )
    more = (
        f'<p class="muted" id="unfollowed">{unfollowed} more replayed, not followed here: '
        'see the <a href="/ops/records">records</a>.</p>'
        if unfollowed
        else ""
    )
    body = (
        f'<h1>Replay done</h1><div class="card" id="replay-result">'
        f"<p><b>{len(replayed) + unfollowed}</b> replayed, <b>{len(skipped)}</b> left alone.</p>"
        + (f'<p id="outcomes">Now: {_outcome_tally(replayed)}.</p>' if replayed else "")
        + f"<ul>{_outcome_items(replayed)}{left}</ul>{more}</div>{_see_again(again)}"
        '<p><a href="/ops/dead-letters">Back to the dead letters</a></p>'
    )
    return page("Replay done", body, "dead-letters", csrf, refresh=again)


def replay_status_page(rows: Sequence[Mapping[str, Any]], again: str | None, csrf: str) -> str:
    """The records a replay re-drove, as they are now (refreshed while some still run)."""
    body = (
        '<h1>Replayed records, now</h1><div class="card" id="replay-result">'
        f'<p id="outcomes">{_outcome_tally(rows)}.</p>'
        f"<ul>{_outcome_items(rows)}</ul></div>{_see_again(again)}"
        '<p><a href="/ops/dead-letters">Back to the dead letters</a></p>'
    )
    return page("Replayed records", body, "dead-letters", csrf, refresh=again)


def not_found_page(message: str, csrf: str | None) -> str:
    """A 404 inside the console."""
    return page("Not found", f'<h1>Not found</h1><p class="error">{e(message)}</p>', "", csrf)


# ---- the agent inbox (the only pages with a customer's words) -----------------------------


def inbox_page(rows: Sequence[Mapping[str, Any]], chart_svg: str, csrf: str) -> str:
    """The conversations waiting for a person or owned by one, the longest waiting first."""
    lines = "".join(
        f'<tr class="conversation" data-mode="{e(r["mode"])}">'
        f'<td><a class="conversation-link" href="/ops/inbox/{e(r["id"])}">'
        f"<code>{e(r['id'][:12])}</code></a></td>"
        f'<td><span class="badge {e(r["mode"])}">{e(r["mode"])}</span></td>'
        f'<td class="waiting">{e(r["waiting"])}</td>'
        f'<td class="owner">{e(r["owner"] or "-")}</td>'
        f'<td class="window{"" if r["window_open"] else " window-closed"}">{e(r["window"])}</td>'
        "</tr>"
        for r in rows
    )
    table = (
        '<table id="inbox"><thead><tr><th>Conversation</th><th>Mode</th><th>In it for</th>'
        "<th>Owner</th><th>Reply window</th></tr></thead>"
        f"<tbody>{lines}</tbody></table>"
    )
    if not rows:
        table += '<p class="muted" id="no-conversations">No one is waiting for a person.</p>'
    body = (
        "<h1>Inbox</h1>"
        '<p class="muted">Conversations where a customer asked for a person '
        "(<code>waiting_human</code>) or an agent answers (<code>human</code>), the longest "
        "waiting first. The bot is silent in both until the conversation is released (or "
        "left idle).</p>"
        f"{table}"
        '<h2>Conversation modes</h2><div class="card">'
        f"{chart_svg}</div>"
    )
    return page("Inbox", body, "inbox", csrf)


def _thread(entries: Sequence[Mapping[str, Any]]) -> str:
    labels = {"customer": "Customer", "agent": "Agent", "bot": "Bot"}
    items = "".join(
        f'<li class="{e(x["who"])}"><div class="who">{e(labels.get(x["who"], x["who"]))}</div>'
        f'<div class="words">{e(x["text"])}</div>'
        f'<div class="meta">{e(when(x["at"]))} · <span class="state">{e(x["state"])}</span>'
        "</div></li>"
        for x in entries
    )
    if not items:
        return '<p class="muted" id="thread">No message kept (retention).</p>'
    return f'<ol id="thread">{items}</ol>'


def conversation_page(
    *,
    conversation: Conversation,
    entries: Sequence[Mapping[str, Any]],
    window: str,
    window_open: bool,
    in_mode: str,
    csrf: str,
    notice: str | None = None,
    draft: str = "",
    cost: str = "",
) -> str:
    """One conversation: facts, the thread (the customer's words in clear), the actions, the
    audit trail; `cost`: its cost card (conversation_cost_card)."""
    key = conversation.key
    base = f"/ops/inbox/{e(key)}"
    closed = (
        ""
        if window_open
        else '<p class="window-closed" id="window-note">WhatsApp\'s 24-hour window is closed: a '
        "reply goes as the re-engagement template when one is set, else it is held.</p>"
    )
    facts = [
        ("Conversation", f'<code id="conversation-id">{e(key[:12])}</code>'),
        (
            "Mode",
            f'<span id="mode" class="badge {e(conversation.mode)}">{e(conversation.mode)}</span>',
        ),
        ("In it for", f'<span id="in-mode">{e(in_mode)}</span>'),
        ("Why", e(conversation.reason or "-")),
        ("Owner", f'<span id="owner">{e(conversation.owner or "-")}</span>'),
        ("Reply window", f'<span id="window">{e(window)}</span>'),
    ]
    dl = definitions(facts)
    warn = f'<p class="error" role="alert" id="notice">{e(notice)}</p>' if notice else ""
    take = (
        f'<form id="takeover" class="inline" method="post" action="{base}/takeover">'
        f'{_hidden(csrf)}<button class="primary" type="submit" id="takeover-button">'
        "Take over</button></form>"
    )
    release = (
        f'<form id="release" class="inline" method="post" action="{base}/release">'
        f'{_hidden(csrf)}<button class="danger" type="submit" id="release-button">'
        "Release to the bot</button></form>"
    )
    reply = (
        f'<form id="reply-form" class="card" method="post" action="{base}/reply">{_hidden(csrf)}'
        '<label for="reply-text">Reply to the customer</label>'
        '<textarea id="reply-text" name="text" maxlength="4096" required>'
        f"{e(draft)}</textarea>"
        '<button class="primary" type="submit" id="reply-button">Send reply</button></form>'
    )
    audit = "".join(
        f'<li class="audit-entry"><span class="at">{e(when(a.at))}</span> · '
        f'<b class="who">{e(a.who)}</b> · <span class="action">{e(a.action)}</span></li>'
        for a in conversation.audit
    )
    audit_html = (
        f'<ol id="audit">{audit}</ol>' if audit else '<p class="muted" id="audit">None yet.</p>'
    )
    body = (
        f"<h1>Conversation <code>{e(key[:12])}</code></h1>{warn}"
        f'<div class="card"><dl class="facts">{dl}</dl>{closed}</div>'
        f'<div class="actions card">{take}{release}</div>'
        '<h2>Messages <span class="muted">(the customer\'s words, in clear)</span></h2>'
        f"{_thread(entries)}{reply}"
        f"<h2>Audit trail</h2>{audit_html}"
        + (f"<h2>What it cost</h2>{cost}" if cost else "")
        + '<p><a href="/ops/inbox" id="back-to-inbox">← Inbox</a></p>'
    )
    return page("Conversation", body, "inbox", csrf)
