"""What an operator types to find a customer: the WhatsApp ids a number may stand for, and
the hashes the stores key customers by."""

from __future__ import annotations

import pytest

from pyloto_corp.application.customer_search import NotAnId, customer_hashes, numbers_for
from pyloto_corp.application.llm_steps import conversation_id

KEY = "unit-hash-key"


@pytest.mark.parametrize(
    "typed",
    ["+55 (11) 98765-4321", "55 11 98765 4321", "0055.11.98765.4321", "(11) 98765-4321"],
)
def test_a_brazilian_mobile_in_any_mask_is_looked_for_with_and_without_its_ninth_digit(
    typed: str,
) -> None:
    found = numbers_for(typed)
    assert found[-2:] == ["5511987654321", "551187654321"]


def test_a_mobile_written_without_its_ninth_digit_is_looked_for_with_it() -> None:
    assert numbers_for("+55 11 8765-4321") == ["551187654321", "5511987654321"]


def test_a_landline_and_a_foreign_number_are_taken_as_they_are() -> None:
    assert numbers_for("+55 11 3456-7890") == ["551134567890"]
    assert numbers_for("+1 (415) 555-0100") == ["14155550100"]
    # Without `+`, as well a Brazilian number (area code 14) without its country code.
    assert numbers_for("14 5555-0100") == ["1455550100", "551455550100"]


@pytest.mark.parametrize("typed", ["", "maria", "123", "+55 11 9876-54321-00000", "BR."])
def test_what_is_not_a_number_nor_a_bsuid_is_refused_without_being_quoted(typed: str) -> None:
    with pytest.raises(NotAnId) as refused:
        customer_hashes(typed, KEY)
    assert len(typed) < 4 or typed not in str(refused.value)


def test_a_bsuid_is_hashed_as_the_accept_step_hashes_it() -> None:
    bsuid = "BR.1502576394655843"
    assert customer_hashes(f" {bsuid} ", KEY) == [conversation_id(bsuid, KEY)]
    assert customer_hashes("br.1502576394655843", KEY) == [conversation_id(bsuid, KEY)]
    assert customer_hashes("+55 11 3456-7890", KEY) == [conversation_id("551134567890", KEY)]
