"""A left-to-right drawing of the statechart as SVG, for the operations console.

The layout is computed from the statechart itself (the same file the docs are rendered
from), so a new state or transition shows up without touching the console: states go in
columns by their longest distance from the initial state along step transitions (back edges,
self-loops and manual transitions left out), the states of one column one under another.
Every label and count is SVG text, so screen readers and tests read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from html import escape

from pyloto_corp.domain.statechart import Statechart, TransitionSpec

BOX_WIDTH = 140
BOX_HEIGHT = 52
COLUMN_STEP = 176
ROW_STEP = 124
MARGIN = 24


@dataclass(frozen=True)
class Placed:
    """A state's box: its column, its slot in the column (0 the main row, 1 below it, -1
    above it, ...), and its centre in SVG units."""

    name: str
    column: int
    slot: int
    x: float
    y: float


@dataclass(frozen=True)
class Layout:
    """Where each state's box goes and the drawing's size."""

    states: dict[str, Placed]
    width: float
    height: float
    top: float


def _back_edges(chart: Statechart, edges: list[TransitionSpec]) -> set[tuple[str, str]]:
    """Edges that close a cycle, found by a depth-first walk from the initial state."""
    exits: dict[str, list[str]] = {}
    for t in edges:
        exits.setdefault(t.source, []).append(t.dest)
    back: set[tuple[str, str]] = set()
    on_path: set[str] = set()
    done: set[str] = set()

    def walk(state: str) -> None:
        on_path.add(state)
        for dest in exits.get(state, []):
            if dest in on_path:
                back.add((state, dest))
            elif dest not in done:
                walk(dest)
        on_path.discard(state)
        done.add(state)

    walk(chart.initial)
    return back


def _main_row(chart: Statechart, edges: list[TransitionSpec]) -> list[str]:
    """The happy path: the longest path from the initial state that avoids funnels (states
    entered from four states or more, such as the fallback and the dead letter, a shortcut
    from the initial state not counted: an agent's reply starts at the send); `edges`
    hold no back edge (a depth-first walk, exits in file order: one file, one drawing)."""
    sources: dict[str, set[str]] = {}
    exits: dict[str, list[str]] = {}
    for t in edges:
        if t.source != chart.initial:
            sources.setdefault(t.dest, set()).add(t.source)
        exits.setdefault(t.source, []).append(t.dest)
    funnels = {name for name, found in sources.items() if len(found) >= 4}
    best: list[str] = [chart.initial]

    def walk(path: list[str]) -> None:
        nonlocal best
        if len(path) > len(best):
            best = list(path)
        for dest in exits.get(path[-1], []):
            if dest not in funnels and dest not in path:
                walk([*path, dest])

    walk([chart.initial])
    return best


def layout(chart: Statechart) -> Layout:
    """The main row is the happy path (see `_main_row`). Every other state sits at the
    median column of its neighbours on the main row, above it if it is open (a detour, such
    as the fallback) and below it if it is terminal (an end, such as the dead letter),
    pushed outward on a collision."""
    edges = [t for t in chart.transitions if not t.manual and t.source != t.dest]
    back = _back_edges(chart, edges)
    edges = [t for t in edges if (t.source, t.dest) not in back]
    main = _main_row(chart, edges)
    column = {name: i for i, name in enumerate(main)}
    slot = dict.fromkeys(main, 0)
    taken = {(i, 0) for i in range(len(main))}
    for name, spec in chart.states.items():
        if name in column:
            continue
        near = sorted(
            column[other]
            for t in edges
            for other in (
                t.source if t.dest == name else None,
                t.dest if t.source == name else None,
            )
            if other is not None and other in column
        )
        col = near[(len(near) - 1) // 2] if near else 0
        step = 1 if spec.terminal else -1
        row = step
        while (col, row) in taken:
            row += step
        column[name], slot[name] = col, row
        taken.add((col, row))
    low, high = min(slot.values()), max(slot.values())
    # Room above the top row and below the bottom one for arcs and self-loops.
    top = MARGIN + 40
    placed = {
        name: Placed(
            name,
            column[name],
            slot[name],
            MARGIN + BOX_WIDTH / 2 + column[name] * COLUMN_STEP,
            top + BOX_HEIGHT / 2 + (slot[name] - low) * ROW_STEP,
        )
        for name in chart.states
    }
    width = 2 * MARGIN + BOX_WIDTH + max(column.values()) * COLUMN_STEP
    height = top + BOX_HEIGHT + (high - low) * ROW_STEP + MARGIN + 30
    return Layout(placed, width, height, top)


Point = tuple[float, float]


def _cubic(p0: Point, p1: Point, p2: Point, p3: Point, t: float) -> Point:
    """The point at `t` (0 to 1) of the cubic Bézier curve from `p0` to `p3`."""
    u = 1 - t
    a, b, c, d = u**3, 3 * u * u * t, 3 * u * t * t, t**3
    return (
        a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0],
        a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1],
    )


def _curve(p0: Point, p1: Point, p2: Point, p3: Point, t: float) -> tuple[str, float, float]:
    """A cubic edge's SVG path and a point on it (at `t`) for its label."""
    path = (
        f"M{p0[0]:.0f},{p0[1]:.0f} C{p1[0]:.0f},{p1[1]:.0f} "
        f"{p2[0]:.0f},{p2[1]:.0f} {p3[0]:.0f},{p3[1]:.0f}"
    )
    x, y = _cubic(p0, p1, p2, p3, t)
    return path, x, y


def _edge_path(a: Placed, b: Placed, rows: set[tuple[int, int]]) -> tuple[str, float, float]:
    """The SVG path of an edge from box `a` to box `b`, and where its label goes: on the
    edge's own line (the text has a halo), never between two edges."""
    half_w, half_h = BOX_WIDTH / 2, BOX_HEIGHT / 2
    if a.name == b.name:  # a self-loop over the box
        x0, y0, x1 = a.x - 18, a.y - half_h, a.x + 18
        return _curve((x0, y0), (x0 - 10, y0 - 46), (x1 + 10, y0 - 46), (x1, y0), 0.5)
    between = any((c, a.slot) in rows for c in range(a.column + 1, b.column))
    if a.slot == b.slot and b.column > a.column and not between:  # a clear line on one row
        x0, x1 = a.x + half_w, b.x - half_w
        return f"M{x0:.0f},{a.y:.0f} L{x1:.0f},{b.y:.0f}", (x0 + x1) / 2, a.y - 9
    if a.slot == b.slot:  # same row, skipping columns or going back: an arc
        span = abs(b.column - a.column)
        sign = -1 if b.column > a.column else 1
        y0 = a.y + sign * half_h
        top = y0 + sign * (28 + 14 * span)
        return _curve((a.x, y0), (a.x, top), (b.x, top), (b.x, y0), 0.5)
    # Between rows: leave from the side facing the other box and enter on its facing side,
    # each end moved toward the other box so that edges meeting at one box fan out; the
    # label sits on the curve's first third, near the box it leaves, where edges are apart.
    down = b.slot > a.slot
    reach = half_w - 10
    y0 = a.y + (half_h if down else -half_h)
    y1 = b.y + (-half_h if down else half_h)
    x0 = a.x + max(-reach, min(reach, (b.x - a.x) * 0.15))
    x1 = b.x + max(-reach, min(reach, (a.x - b.x) * 0.12))
    mid = (y0 + y1) / 2
    return _curve((x0, y0), (x0, mid), (x1, mid), (x1, y1), 0.35)


def summarised(chart: Statechart) -> set[str]:
    """Terminal states entered from four states or more (the dead letter, the merge, the
    handoff): their arrows converge, so their counts are one line beside the box ("into
    failed: N"), not a number per arrow that would read as another arrow's."""
    sources: dict[str, set[str]] = {}
    for t in chart.transitions:
        if not t.manual and t.source != t.dest:
            sources.setdefault(t.dest, set()).add(t.source)
    return {
        name for name, found in sources.items() if len(found) >= 4 and chart.states[name].terminal
    }


def _into_text(state: str, n: int) -> str:
    """The one line of a summarised state's arrows (nothing when none was taken)."""
    return f"into {state}: {n}" if n else ""


def render_svg(
    chart: Statechart,
    counts: Mapping[str, object],
    taken: Mapping[str, int] | None,
    layout_: Layout | None = None,
    *,
    svg_id: str = "machine",
    caption: str = "records per state now, transitions taken in the last hour",
) -> str:
    """The statechart as an SVG element: each state with how many records are in it now
    (`counts`), each edge with how many records took it (`taken`, keyed `source>dest`;
    None draws the edges with their triggers' names instead): an edge not taken is dimmed
    (class `idle`) and has no number, and the edges into a `summarised` state are counted
    together in one `into-<state>` line beside its box. `svg_id` names the
    element (the main page's `machine`: its state counts are `count-<state>`; another
    drawing's are `<svg_id>-count-<state>`, so two charts can share a page)."""
    lay = layout_ or layout(chart)
    placed = lay.states
    count_id = "count-" if svg_id == "machine" else f"{svg_id}-count-"
    parts = [
        f'<svg id="{escape(svg_id)}" class="statechart" xmlns="http://www.w3.org/2000/svg" '
        f'role="img" aria-labelledby="{escape(svg_id)}-title" '
        f'viewBox="0 0 {lay.width:.0f} {lay.height:.0f}">',
        f'<title id="{escape(svg_id)}-title">Statechart {escape(chart.name)}: '
        f"{escape(caption)}</title>",
        f'<defs><marker id="{escape(svg_id)}-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z"/></marker></defs>',
    ]
    seen: set[str] = set()
    rows = {(p.column, p.slot) for p in placed.values()}
    funnels = summarised(chart) if taken is not None else set()
    for t in chart.transitions:
        key = f"{t.source}>{t.dest}"
        if key in seen:
            continue
        seen.add(key)
        path, lx, ly = _edge_path(placed[t.source], placed[t.dest], rows)
        kind = "edge manual" if t.manual else "edge"
        title = f"{t.trigger}: {t.source} to {t.dest}"
        if taken is None:
            if " L" in path:  # a straight edge: its name, wider than the gap, above the boxes
                ly = placed[t.source].y - BOX_HEIGHT / 2 - 8
            label = f'<text class="edge-label" x="{lx:.0f}" y="{ly:.0f}">{escape(t.trigger)}</text>'
        else:
            # Only a number that means something: an arrow not taken is dimmed, unlabelled.
            n = taken.get(key, 0)
            kind += "" if n else " idle"
            title += f", {n} in the last hour"
            label = (
                ""
                if t.dest in funnels
                else f'<text class="edge-count" data-transition="{escape(key)}" '
                f'x="{lx:.0f}" y="{ly:.0f}">{n or ""}</text>'
            )
        parts.append(
            f'<g class="{kind}" data-transition="{escape(key)}">'
            f"<title>{escape(title)}</title>"
            f'<path d="{path}" marker-end="url(#{escape(svg_id)}-arrow)"/>{label}</g>'
        )
    for name in sorted(funnels):
        p = placed[name]
        n = sum(v for k, v in (taken or {}).items() if k.endswith(f">{name}"))
        parts.append(
            f'<text class="into-count" id="into-{escape(name)}" data-state="{escape(name)}" '
            f'x="{p.x + BOX_WIDTH / 2 + 8:.0f}" y="{p.y + 4:.0f}">'
            f"{escape(_into_text(name, n))}</text>"
        )
    for name, spec in chart.states.items():
        p = placed[name]
        kind = "state terminal" if spec.terminal else "state"
        if name == "failed":
            kind += " dead-letter"
        shown = counts.get(name, 0)
        x0, y0 = p.x - BOX_WIDTH / 2, p.y - BOX_HEIGHT / 2
        parts.append(
            f'<g class="{kind}" data-state="{escape(name)}">'
            f"<title>{escape(name)}: {escape(spec.description)}</title>"
            f'<rect x="{x0:.0f}" y="{y0:.0f}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" '
            'rx="10"/>'
            f'<text class="name" x="{p.x:.0f}" y="{p.y - 6:.0f}">{escape(name)}</text>'
            f'<text class="count" id="{escape(count_id + name)}" x="{p.x:.0f}" '
            f'y="{p.y + 16:.0f}">{escape(str(shown))}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)
