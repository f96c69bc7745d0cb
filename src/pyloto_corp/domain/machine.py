"""The one `transitions` machine built from the statechart, shared by every record."""

from __future__ import annotations

from transitions import Machine, MachineError

from pyloto_corp.domain.statechart import Statechart


class IllegalTransition(Exception):
    """A step fired a trigger the statechart does not allow from the record's state."""


class _Cursor:
    """What the machine moves: a stand-in for one record during one transition."""

    def __init__(self, state: str) -> None:
        self.state = state


class LifecycleMachine:
    """Validates every transition against the statechart through one shared Machine."""

    def __init__(self, chart: Statechart) -> None:
        self.chart = chart
        self._machine = Machine(
            model=None,
            states=list(chart.states),
            transitions=[
                {"trigger": t.trigger, "source": t.source, "dest": t.dest}
                for t in chart.transitions
            ],
            initial=chart.initial,
            auto_transitions=False,
            ignore_invalid_triggers=False,
        )
        self._known: dict[tuple[str, str], str | IllegalTransition] = {}

    def fire(self, state: str, trigger: str) -> str:
        """The state reached by firing `trigger` from `state`, or IllegalTransition.

        The machine has no conditions or callbacks, so the answer depends on the pair only:
        it is asked once per pair (adding a model to a `transitions` machine costs about as
        much as the rest of a step) and remembered.
        """
        key = (state, trigger)
        known = self._known.get(key)
        if known is None:
            known = self._known[key] = self._fire(state, trigger)
        if isinstance(known, IllegalTransition):
            raise IllegalTransition(str(known))
        return known

    def _fire(self, state: str, trigger: str) -> str | IllegalTransition:
        cursor = _Cursor(state)
        self._machine.add_model(cursor, initial=state)
        try:
            cursor.trigger(trigger)  # type: ignore[attr-defined]
        except (MachineError, AttributeError):
            return IllegalTransition(f"'{trigger}' is not allowed from '{state}'")
        finally:
            self._machine.remove_model(cursor)
        return cursor.state
