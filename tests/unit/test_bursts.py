"""What a burst is made of (application/bursts.py): which earlier messages a reply answers,
what each said once edits and deletions are applied, and when a draft is superseded."""

from __future__ import annotations

from dataclasses import replace

from pyloto_corp.application.bursts import (
    MERGED_NEWER,
    SUPERSEDED,
    _since,
    burst_texts,
    gather,
    superseded,
)
from pyloto_corp.application.step_context import Bursts, StepContext
from pyloto_corp.domain.conversation import Conversation
from pyloto_corp.domain.records import Record
from pyloto_corp.domain.results import Results
from tests.support.records import inbound

NOW = 1_800_000_000.0


def message(state: str, text: str | None = "oi", at: float = NOW, **inbound_args: object) -> Record:
    record = Record.received(inbound(text=text, **inbound_args), at)  # type: ignore[arg-type]
    return replace(record, state=state)


def change(kind: str, original: Record, text: str | None = None, at: float = NOW) -> Record:
    record = message("buffered", text, at, kind=kind)
    details = {"original_message_id": original.message_id}
    return replace(record, inbound=replace(record.inbound, details=details))


def test_a_burst_reaches_back_to_the_last_answered_message() -> None:
    answered = message("sent", "bom dia", NOW - 60)
    waiting = [message("merged", "oi", NOW), message("buffered", "quero saber o preço", NOW + 1)]
    newest = message("buffered", "do corte masculino", NOW + 2)
    found = gather([answered, *waiting, newest], newest)
    assert found.members == [*waiting, newest]
    assert not found.reading
    assert not found.drafting


def test_ignored_messages_are_skipped_and_a_person_is_a_boundary() -> None:
    held = message("with_agent", "falei com a ana", NOW - 5)
    reaction = message("ignored", "👍", NOW - 1, kind="reaction")
    newest = message("buffered", "obrigado", NOW)
    assert gather([held, reaction, newest], newest).members == [newest]


def test_earlier_messages_still_read_or_drafted_are_flagged() -> None:
    voice = message("media", None, NOW, kind="audio")
    drafting = message("llm1", "quanto custa?", NOW + 1)
    newest = message("buffered", "e a barba?", NOW + 2)
    found = gather([voice, drafting, newest], newest)
    assert (found.reading, found.drafting) == (True, True)


def test_the_latest_message_gathers_what_arrived_around_it_in_any_order() -> None:
    """The customer's latest message accepted answers the burst, even when a message
    created after it (on another instance, or stamped earlier by Meta) is still waiting."""
    older = message("merged", "oi", NOW)
    record = message("buffered", "tudo bem?", NOW + 1)
    later = message("buffered", "quero marcar", NOW + 2)
    assert gather([older, record, later], record).members == [older, later, record]


def test_a_long_burst_keeps_the_start_its_messages_saw() -> None:
    """Beyond the records read, the earliest start any of them noted is the burst's."""
    seen = replace(message("merged", "1", NOW + 30), results=Results(burst_since=NOW))
    newest = message("buffered", "2", NOW + 31)
    assert _since(gather([seen, newest], newest)) == NOW


def test_an_edit_replaces_the_text_it_edits_and_a_deletion_removes_it() -> None:
    first = message("merged", "quero cortar amanhã", NOW)
    second = message("merged", "meu cpf é 123.456.789-09", NOW + 1)
    edit = change("edit", first, "quero cortar no sábado", NOW + 2)
    deletion = change("revoke", second, at=NOW + 3)
    newest = message("buffered", "pode ser de manhã", NOW + 4)
    said = burst_texts([first, second, edit, deletion, newest])
    assert said == [
        (first.message_id, "quero cortar no sábado"),
        (newest.message_id, "pode ser de manhã"),
    ]


def test_a_change_of_a_message_outside_the_burst_says_nothing() -> None:
    answered = message("sent", "oi", NOW)
    edit = change("edit", answered, "olá", NOW + 1)
    assert burst_texts([edit]) == []


def test_the_answering_message_is_kept_without_text() -> None:
    """A sticker or a welcome request is answered by its kind's template."""
    first = message("merged", "", NOW)
    sticker = message("buffered", None, NOW + 1, kind="sticker")
    assert burst_texts([first, sticker]) == [(sticker.message_id, "")]


def at(context: StepContext, newest: str, now: float) -> StepContext:
    return replace(
        context,
        clock=lambda: now,
        conversation=Conversation("key", last_message=newest),
        bursts=Bursts(quiet_seconds=2.0, max_wait_seconds=12.0),
    )


def test_a_newer_message_merges_a_waiting_one_and_supersedes_a_young_draft(
    context: StepContext,
) -> None:
    waiting = message("buffered", "oi", NOW)
    drafting = replace(
        message("llm2", "oi", NOW), results=Results(burst_since=NOW, burst_texts=["oi"])
    )
    merged = superseded(waiting, at(context, "wamid.NEWER", NOW + 3))
    assert merged is not None
    assert merged.reason == MERGED_NEWER
    draft = superseded(drafting, at(context, "wamid.NEWER", NOW + 3))
    assert draft is not None
    assert draft.reason == SUPERSEDED
    # Past the cap the draft goes out: the newer message waits for it.
    assert superseded(drafting, at(context, "wamid.NEWER", NOW + 13)) is None
    # The newest itself goes on, as does everything with coalescing off.
    assert superseded(drafting, at(context, drafting.message_id, NOW + 3)) is None
    off = replace(at(context, "wamid.NEWER", NOW + 3), bursts=Bursts())
    assert superseded(waiting, off) is None
