"""Bootstrap of the LLM steps: the business profile, the routing, and no network at start-up."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pyloto_corp.adapters.openai_llm import OpenAIAssistant
from pyloto_corp.application.step_context import LLMRouting
from pyloto_corp.bootstrap import assistant_routing, bootstrap, business_profile
from pyloto_corp.config import ConfigError, Settings
from pyloto_corp.devtools.fake_openai import FakeOpenAI

MakeSettings = Callable[..., Settings]


@pytest.mark.anyio
async def test_an_enabled_llm_is_built_from_settings_without_a_request(
    make_settings: MakeSettings, fake_openai: FakeOpenAI
) -> None:
    """With a key the routing holds an OpenAI assistant configured from OPENAI_* and
    BUSINESS_*, with the site's host as the only CTA host; building it sends nothing."""
    settings = make_settings(
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_MODEL="gpt-4o-mini-2024-07-18",
        OPENAI_TRANSCRIPTION_MODEL="whisper-1",
        OPENAI_TIMEOUT_SECONDS="7.5",
        OPENAI_MAX_RETRIES="2",
        OPENAI_ROLLOUT_PERCENT="10",
        OPENAI_MASK_PII="false",
        BUSINESS_NAME="Barbearia Navalha",
        BUSINESS_WEBSITE_URL="https://www.barbearia.example.com/inicio",
    )
    routing = assistant_routing(settings)
    assert routing is not None
    assistant = routing.assistant
    assert isinstance(assistant, OpenAIAssistant)
    assert assistant.model == "gpt-4o-mini-2024-07-18"
    assert assistant.transcription_model == "whisper-1"
    assert assistant.timeout == 7.5
    assert assistant.business.name == "Barbearia Navalha"
    assert assistant.client.max_retries == 2
    assert str(assistant.client.base_url).startswith(fake_openai.base_url)
    assert routing.rollout_percent == 10
    assert routing.mask_pii is False
    assert routing.allowed_hosts == frozenset({"www.barbearia.example.com"})
    await assistant.close()

    container = bootstrap(settings)
    llm = container.advancer.context.llm
    assert isinstance(llm, LLMRouting)
    assert isinstance(llm.assistant, OpenAIAssistant)
    assert container.advancer.context.hash_key == settings.hash_key
    await llm.assistant.close()
    await container.store.close()
    assert fake_openai.requests == [], "nothing is sent until a message needs it"


@pytest.mark.anyio
async def test_without_a_site_no_cta_host_is_allowed(make_settings: MakeSettings) -> None:
    """No BUSINESS_WEBSITE_URL: CTA buttons can link nowhere."""
    routing = assistant_routing(make_settings(OPENAI_API_KEY="sk-test"))
    assert routing is not None
    assert routing.allowed_hosts == frozenset()
    assert isinstance(routing.assistant, OpenAIAssistant)
    assert routing.assistant.transcription_model == "gpt-4o-mini-transcribe"
    await routing.assistant.close()


@pytest.mark.parametrize(
    "variables",
    [{}, {"OPENAI_API_KEY": "sk-test", "OPENAI_ENABLED": "false"}],
    ids=["no-key", "disabled-with-key"],
)
def test_a_disabled_llm_has_no_routing(
    make_settings: MakeSettings, variables: dict[str, str]
) -> None:
    """No key, or OPENAI_ENABLED=false even with one: no assistant (no client) at all."""
    assert assistant_routing(make_settings(**variables)) is None


def test_the_business_profile_comes_from_settings(make_settings: MakeSettings) -> None:
    """Name, hours, inline FAQ (trimmed) and site."""
    profile = business_profile(
        make_settings(
            BUSINESS_NAME="Loja Azul",
            BUSINESS_HOURS="todos os dias",
            BUSINESS_FAQ="  Entregamos em SP.  \n",
            BUSINESS_WEBSITE_URL="https://azul.example.com",
        )
    )
    assert (profile.name, profile.hours, profile.faq, profile.website) == (
        "Loja Azul",
        "todos os dias",
        "Entregamos em SP.",
        "https://azul.example.com",
    )


def test_the_faq_file_is_read_and_wins_over_the_inline_faq(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    """BUSINESS_FAQ_FILE's UTF-8 text is the FAQ (trimmed), in place of BUSINESS_FAQ."""
    faq = tmp_path / "faq.txt"
    faq.write_text("\nCorte: R$ 50.\nBarba: R$ 30.\nAceitamos Pix e cartão.\n", encoding="utf-8")
    profile = business_profile(make_settings(BUSINESS_FAQ="inline", BUSINESS_FAQ_FILE=str(faq)))
    assert profile.faq == "Corte: R$ 50.\nBarba: R$ 30.\nAceitamos Pix e cartão."


@pytest.mark.parametrize("problem", ["missing", "directory", "not-utf8"])
def test_an_unreadable_faq_file_is_a_config_error_naming_the_variable(
    make_settings: MakeSettings, tmp_path: Path, problem: str
) -> None:
    """A FAQ file that is missing, a directory or not UTF-8 stops start-up with a ConfigError
    naming BUSINESS_FAQ_FILE and the path."""
    path = tmp_path / "faq.txt"
    if problem == "directory":
        path.mkdir()
    elif problem == "not-utf8":
        path.write_bytes("Preço: R$ 50, promoção".encode("latin-1"))
    settings = make_settings(OPENAI_API_KEY="sk-test", BUSINESS_FAQ_FILE=str(path))
    with pytest.raises(ConfigError, match="BUSINESS_FAQ_FILE") as caught:
        business_profile(settings)
    assert str(path) in str(caught.value)
    with pytest.raises(ConfigError, match="BUSINESS_FAQ_FILE"):
        assistant_routing(settings)


@pytest.mark.anyio
async def test_by_default_every_step_shares_the_chat_settings_and_negotiates(
    make_settings: MakeSettings,
) -> None:
    """Unset, the new variables change nothing: one client, OPENAI_MODEL for pictures, auto
    starting strict, no temperature."""
    routing = assistant_routing(make_settings(OPENAI_API_KEY="sk-test", OPENAI_MODEL="m"))
    assert routing is not None
    assistant = routing.assistant
    assert isinstance(assistant, OpenAIAssistant)
    assert assistant.transcription_client is assistant.client
    assert assistant.vision_model == "m"
    assert (assistant.auto, assistant.mode, assistant.temperature) == (True, "json_schema", None)
    await assistant.close()


@pytest.mark.anyio
async def test_transcription_and_vision_may_have_their_own_server_key_and_model(
    make_settings: MakeSettings,
) -> None:
    """OPENAI_TRANSCRIPTION_BASE_URL/_API_KEY build a client of their own; a fixed
    OPENAI_STRUCTURED_OUTPUT never negotiates; OPENAI_TEMPERATURE is kept."""
    settings = make_settings(
        OPENAI_API_KEY="sk-chat",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        OPENAI_TRANSCRIPTION_BASE_URL="http://127.0.0.1:10/v1",
        OPENAI_TRANSCRIPTION_API_KEY="sk-audio",
        OPENAI_VISION_MODEL="vision-m",
        OPENAI_STRUCTURED_OUTPUT="json_object",
        OPENAI_TEMPERATURE="0.3",
    )
    routing = assistant_routing(settings)
    assert routing is not None
    assistant = routing.assistant
    assert isinstance(assistant, OpenAIAssistant)
    audio = assistant.transcription_client
    assert audio is not assistant.client
    assert str(audio.base_url) == "http://127.0.0.1:10/v1/"
    assert audio.api_key == "sk-audio"
    assert assistant.client.api_key == "sk-chat"
    assert assistant.vision_model == "vision-m"
    assert (assistant.auto, assistant.mode, assistant.temperature) == (False, "json_object", 0.3)
    await assistant.close()
    only_key = assistant_routing(
        make_settings(OPENAI_API_KEY="sk-chat", OPENAI_TRANSCRIPTION_API_KEY="sk-audio")
    )
    assert only_key is not None
    assert isinstance(only_key.assistant, OpenAIAssistant)
    assert only_key.assistant.transcription_client.api_key == "sk-audio"
    assert only_key.assistant.transcription_client.base_url == only_key.assistant.client.base_url
    await only_key.assistant.close()


@pytest.mark.parametrize(
    ("variable", "value"),
    [("OPENAI_STRUCTURED_OUTPUT", "xml"), ("OPENAI_TEMPERATURE", "3")],
)
def test_a_bad_negotiation_setting_is_a_config_error_naming_it(
    make_settings: MakeSettings, variable: str, value: str
) -> None:
    """An unknown mode or a temperature above 2 refuses to start, naming the variable."""
    with pytest.raises(ConfigError, match=variable):
        make_settings(OPENAI_API_KEY="sk-test", **{variable: value})
