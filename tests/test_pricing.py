import datetime
import json
import math

import pytest
from pipecat.metrics.metrics import LLMTokenUsage

from pipecat_grafana.pricing import (
    DEFAULT_PRICES,
    PRICE_FILE_ENV,
    PRICES_AS_OF,
    TOKENS_PER_PRICE_UNIT,
    LLMPrice,
    PriceTable,
    STTPrice,
    TTSPrice,
)
from pipecat_grafana.summary import CallSummary, ServiceCost
from pipecat_grafana.tokens import TokenCounts


@pytest.fixture(autouse=True)
def no_price_file(monkeypatch):
    """A price file in the developer's environment must not change these tests."""
    monkeypatch.delenv(PRICE_FILE_ENV, raising=False)


def usage(**overrides) -> LLMTokenUsage:
    fields = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    fields.update(overrides)
    return LLMTokenUsage(**fields)


# A price whose every rate differs, so a token counted at the wrong rate shows.
DISTINCT = LLMPrice(
    input=1.0,
    output=2.0,
    cache_read=0.5,
    cache_write=1.5,
    audio_input=10.0,
    audio_output=20.0,
    audio_cache_read=0.25,
)


def table_with(price, model="test-model") -> PriceTable:
    return PriceTable(prices={}, overrides={model: price}, load_env=False)


# --- token normalisation ---------------------------------------------------------


GROSS = usage(  # OpenAI-style: prompt_tokens includes the cache; total = prompt + completion
    prompt_tokens=1000,
    completion_tokens=200,
    total_tokens=1200,
    cache_read_input_tokens=600,
    cache_creation_input_tokens=300,
)
NET = usage(  # Anthropic-style: prompt_tokens excludes the cache; total includes it
    prompt_tokens=100,
    completion_tokens=200,
    total_tokens=100 + 600 + 300 + 200,
    cache_read_input_tokens=600,
    cache_creation_input_tokens=300,
)


@pytest.mark.parametrize("report", [GROSS, NET], ids=["gross", "net"])
def test_gross_and_net_providers_give_the_same_gross_prompt(report):
    counts, warning = TokenCounts.from_usage(report)

    assert warning is None
    assert counts.prompt == 1000
    assert counts.completion == 200
    assert counts.cache_read == 600
    assert counts.cache_creation == 300


def test_net_prompt_is_total_minus_completion():
    counts, _ = TokenCounts.from_usage(NET)

    assert counts.prompt == NET.total_tokens - NET.completion_tokens
    assert counts.prompt == (
        NET.prompt_tokens + NET.cache_read_input_tokens + NET.cache_creation_input_tokens
    )


def test_fields_not_reported_stay_none():
    counts, warning = TokenCounts.from_usage(usage())

    assert warning is None
    assert counts.cache_read is None
    assert counts.cache_creation is None
    assert counts.reasoning is None
    assert counts.input_audio is None
    assert counts.output_audio is None
    assert counts.cache_read_audio is None


def test_zero_is_kept_as_reported_zero():
    counts, _ = TokenCounts.from_usage(usage(reasoning_tokens=0, cache_read_input_tokens=0))

    assert counts.reasoning == 0
    assert counts.cache_read == 0


def test_audio_and_reasoning_parts_are_carried_over():
    report = usage(
        prompt_tokens=900,
        completion_tokens=300,
        total_tokens=1200,
        cache_read_input_tokens=400,
        input_audio_tokens=500,
        cache_read_input_audio_tokens=200,
        output_audio_tokens=250,
        reasoning_tokens=40,
    )

    counts, warning = TokenCounts.from_usage(report)

    assert warning is None
    assert (counts.prompt, counts.completion) == (900, 300)
    assert (counts.input_audio, counts.cache_read_audio) == (500, 200)
    assert (counts.output_audio, counts.reasoning) == (250, 40)


def test_cached_audio_is_not_an_exported_token_type():
    counts = TokenCounts(prompt=10, completion=1, cache_read_audio=5)

    assert "cache_read_audio" not in counts.model_dump()


def test_total_zero_while_prompt_reported_warns_and_keeps_prompt():
    counts, warning = TokenCounts.from_usage(usage(prompt_tokens=100, total_tokens=0))

    assert warning is not None
    assert "total_tokens" in warning
    assert counts.prompt == 100
    assert counts.completion == 20


def test_total_below_completion_warns_and_falls_back_to_prompt_tokens():
    counts, warning = TokenCounts.from_usage(
        usage(prompt_tokens=100, completion_tokens=80, total_tokens=50)
    )

    assert warning is not None
    assert "total_tokens (50)" in warning
    assert "completion_tokens (80)" in warning
    assert counts.prompt == 100
    assert counts.completion == 80


def test_fallback_adds_the_cache_to_a_prompt_smaller_than_its_cached_part():
    # Only a net prompt can be smaller than the tokens read from the cache.
    report = usage(
        prompt_tokens=50,
        total_tokens=0,
        cache_read_input_tokens=1000,
        cache_creation_input_tokens=7,
    )

    counts, warning = TokenCounts.from_usage(report)

    assert warning is not None
    assert counts.prompt == 50 + 1000 + 7


def test_negative_optional_field_is_not_reported_and_warns():
    counts, warning = TokenCounts.from_usage(usage(cache_read_input_tokens=-5))

    assert counts.cache_read is None
    assert warning is not None
    assert "cache_read_input_tokens is negative (-5)" in warning


def test_negative_completion_warns_and_counts_zero():
    counts, warning = TokenCounts.from_usage(
        usage(prompt_tokens=100, completion_tokens=-3, total_tokens=97)
    )

    assert warning is not None
    assert "completion_tokens is negative" in warning
    assert counts.completion == 0
    assert counts.prompt == 100


def test_negative_prompt_and_total_never_give_a_negative_count():
    counts, warning = TokenCounts.from_usage(
        usage(prompt_tokens=-1, completion_tokens=5, total_tokens=-9)
    )

    assert warning is not None
    assert counts.prompt == 0
    assert counts.completion == 5


def test_completion_smaller_than_its_audio_part_warns_and_is_raised():
    counts, warning = TokenCounts.from_usage(
        usage(completion_tokens=10, total_tokens=110, output_audio_tokens=30)
    )

    assert warning is not None
    assert counts.completion == 30


# --- cost of one LLM report ---------------------------------------------------------


def expected_cost(*pairs: tuple[int, float]) -> float:
    return sum(count * rate for count, rate in pairs) / TOKENS_PER_PRICE_UNIT


def test_text_input_and_output():
    tokens = TokenCounts(prompt=1000, completion=500)

    cost = table_with(DISTINCT).llm_cost("test-model", tokens)

    assert cost == pytest.approx(expected_cost((1000, DISTINCT.input), (500, DISTINCT.output)))


def test_cache_read_tokens_at_cache_read_rate():
    tokens = TokenCounts(prompt=1000, completion=0, cache_read=600)

    cost = table_with(DISTINCT).llm_cost("test-model", tokens)

    assert cost == pytest.approx(
        expected_cost((1000 - 600, DISTINCT.input), (600, DISTINCT.cache_read))
    )


def test_cache_creation_tokens_at_cache_write_rate():
    tokens = TokenCounts(prompt=1000, completion=0, cache_creation=300)

    cost = table_with(DISTINCT).llm_cost("test-model", tokens)

    assert cost == pytest.approx(
        expected_cost((1000 - 300, DISTINCT.input), (300, DISTINCT.cache_write))
    )


def test_input_audio_tokens_at_audio_input_rate():
    tokens = TokenCounts(prompt=1000, completion=0, input_audio=700)

    cost = table_with(DISTINCT).llm_cost("test-model", tokens)

    assert cost == pytest.approx(
        expected_cost((1000 - 700, DISTINCT.input), (700, DISTINCT.audio_input))
    )


def test_output_audio_tokens_at_audio_output_rate():
    tokens = TokenCounts(prompt=0, completion=500, output_audio=350)

    cost = table_with(DISTINCT).llm_cost("test-model", tokens)

    assert cost == pytest.approx(
        expected_cost((500 - 350, DISTINCT.output), (350, DISTINCT.audio_output))
    )


def test_reasoning_tokens_cost_nothing_extra():
    table = table_with(DISTINCT)
    plain = TokenCounts(prompt=1000, completion=500)
    reasoning = TokenCounts(prompt=1000, completion=500, reasoning=400)

    assert table.llm_cost("test-model", reasoning) == table.llm_cost("test-model", plain)


def test_cached_audio_is_charged_once_at_the_audio_cache_rate():
    tokens = TokenCounts(
        prompt=1000, completion=0, cache_read=400, input_audio=600, cache_read_audio=250
    )

    cost = table_with(DISTINCT).llm_cost("test-model", tokens)

    cached_text = 400 - 250
    uncached_audio = 600 - 250
    uncached_text = 1000 - cached_text - 250 - uncached_audio
    assert cost == pytest.approx(
        expected_cost(
            (uncached_text, DISTINCT.input),
            (cached_text, DISTINCT.cache_read),
            (250, DISTINCT.audio_cache_read),
            (uncached_audio, DISTINCT.audio_input),
        )
    )


def test_every_token_type_together():
    tokens = TokenCounts(
        prompt=5000,
        completion=2000,
        cache_read=1000,
        cache_creation=500,
        input_audio=1500,
        output_audio=1200,
        reasoning=300,
    )

    cost = table_with(DISTINCT).llm_cost("test-model", tokens)

    assert cost == pytest.approx(
        expected_cost(
            (5000 - 1000 - 500 - 1500, DISTINCT.input),
            (1000, DISTINCT.cache_read),
            (500, DISTINCT.cache_write),
            (1500, DISTINCT.audio_input),
            (2000 - 1200, DISTINCT.output),
            (1200, DISTINCT.audio_output),
        )
    )


def test_missing_rates_fall_back_to_input_and_output():
    price = LLMPrice(input=3.0, output=15.0)
    tokens = TokenCounts(
        prompt=1000,
        completion=400,
        cache_read=300,
        cache_creation=200,
        input_audio=100,
        output_audio=50,
        cache_read_audio=20,
    )

    cost = table_with(price).llm_cost("test-model", tokens)

    assert cost == pytest.approx(expected_cost((1000, price.input), (400, price.output)))


def test_uncached_text_is_clamped_at_zero():
    tokens = TokenCounts(prompt=100, completion=0, cache_read=80, cache_creation=80)

    cost = table_with(DISTINCT).llm_cost("test-model", tokens)

    assert cost == pytest.approx(
        expected_cost((80, DISTINCT.cache_read), (80, DISTINCT.cache_write))
    )


def test_normalised_net_report_costs_the_same_as_the_gross_one():
    table = table_with(DISTINCT)
    gross, _ = TokenCounts.from_usage(GROSS)
    net, _ = TokenCounts.from_usage(NET)

    assert table.llm_cost("test-model", net) == pytest.approx(table.llm_cost("test-model", gross))


def test_tts_cost_is_characters_times_price():
    table = PriceTable(load_env=False)
    price = table.lookup("tts", "sonic-2")

    assert isinstance(price, TTSPrice)
    assert table.tts_cost("sonic-2", 250) == pytest.approx(250 * price.per_character)


def test_stt_cost_is_minutes_times_price():
    table = PriceTable(load_env=False)
    price = table.lookup("stt", "nova-3")

    assert isinstance(price, STTPrice)
    assert table.stt_cost("nova-3", 90.0) == pytest.approx(90.0 / 60 * price.per_minute)


def test_negative_quantities_are_rejected():
    table = PriceTable(load_env=False)

    with pytest.raises(ValueError):
        table.tts_cost("sonic-2", -1)
    with pytest.raises(ValueError):
        table.stt_cost("nova-3", -0.5)


# --- lookup -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service_type", "model", "key"),
    [
        ("llm", "gpt-4o", "gpt-4o"),
        ("llm", "GPT-4o", "gpt-4o"),
        ("llm", "gpt-4o-2024-08-06", "gpt-4o"),
        ("llm", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("llm", "openai/gpt-4o", "gpt-4o"),
        ("llm", "models/gemini-2.0-flash", "gemini-2.0-flash"),
        ("llm", "gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
        ("llm", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("llm", "claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("llm", "us.anthropic.claude-sonnet-4-6-v1:0", "claude-sonnet-4"),
        ("llm", "gpt-realtime-2.1", "gpt-realtime-2.1"),
        ("stt", "nova-3-general", "nova-3"),
        ("stt", "solaria-1", "solaria-1"),
        ("tts", "sonic-3.6", "sonic"),
        ("tts", "eleven_flash_v2_5", "eleven_flash_v2_5"),
    ],
)
def test_lookup_finds_the_model_family(service_type, model, key):
    assert PriceTable(load_env=False).lookup(service_type, model) is DEFAULT_PRICES[key]


def test_gpt_4o_mini_does_not_get_gpt_4o_price():
    table = PriceTable(load_env=False)

    mini = table.lookup("llm", "gpt-4o-mini-2024-07-18")

    assert mini is not None
    assert mini != DEFAULT_PRICES["gpt-4o"]


def test_a_shorter_name_is_not_a_prefix_inside_a_word():
    table = PriceTable(prices={"gpt-4": LLMPrice(input=30.0, output=60.0)}, load_env=False)

    assert table.lookup("llm", "gpt-4-0613") is not None
    assert table.lookup("llm", "gpt-4o") is None
    assert table.lookup("llm", "gpt-4.1") is None


def test_lookup_only_returns_the_kind_the_service_needs():
    table = PriceTable(load_env=False)

    assert table.lookup("tts", "gpt-4o") is None
    assert table.lookup("llm", "sonic-2") is None
    assert isinstance(table.lookup("stt", "gpt-4o-transcribe"), STTPrice)
    assert isinstance(table.lookup("tts", "gpt-4o-mini-tts"), TTSPrice)


def test_unknown_service_type_is_a_programming_error():
    with pytest.raises(ValueError, match="service_type"):
        PriceTable(load_env=False).lookup("LMM", "gpt-4o")


def test_unpriced_model_costs_none_never_zero():
    table = PriceTable(load_env=False)
    tokens = TokenCounts(prompt=1000, completion=100)

    assert table.lookup("llm", "my-private-model") is None
    assert table.llm_cost("my-private-model", tokens) is None
    assert table.llm_cost(None, tokens) is None
    assert table.tts_cost("my-private-voice", 100) is None
    assert table.stt_cost("", 60.0) is None
    assert table.lookup("other", "gpt-4o") is None


# --- the default table --------------------------------------------------------------


def test_prices_as_of_is_a_date():
    assert datetime.date.fromisoformat(PRICES_AS_OF)


def test_gpt_4_keeps_the_seed_figures():
    # Seed: GPT-4 $0.03/1K prompt tokens, $0.06/1K completion tokens.
    gpt_4 = DEFAULT_PRICES["gpt-4"]

    assert gpt_4.input == pytest.approx(0.03 * TOKENS_PER_PRICE_UNIT / 1000)
    assert gpt_4.output == pytest.approx(0.06 * TOKENS_PER_PRICE_UNIT / 1000)


@pytest.mark.parametrize(
    ("service_type", "model"),
    [
        ("llm", "gpt-4o"),
        ("llm", "gpt-4o-mini"),
        ("llm", "gpt-4.1"),
        ("llm", "gpt-4-turbo"),
        ("llm", "o3-mini"),
        ("llm", "gpt-realtime"),
        ("llm", "gpt-4o-realtime-preview"),
        ("llm", "claude-3-5-sonnet"),
        ("llm", "claude-3-5-haiku"),
        ("llm", "claude-sonnet-4"),
        ("llm", "claude-opus-4"),
        ("llm", "claude-3-haiku"),
        ("llm", "gemini-2.0-flash"),
        ("llm", "gemini-1.5-pro"),
        ("llm", "gemini-1.5-flash"),
        ("llm", "gemini-2.5-flash"),
        ("llm", "gemini-2.5-pro"),
        ("llm", "llama-3.1-70b-versatile"),
        ("llm", "llama-3.3-70b-versatile"),
        ("llm", "llama-3.1-8b-instant"),
        ("stt", "whisper-1"),
        ("stt", "gpt-4o-transcribe"),
        ("stt", "nova-2"),
        ("stt", "nova-3"),
        ("stt", "gladia"),
        ("tts", "tts-1"),
        ("tts", "tts-1-hd"),
        ("tts", "gpt-4o-mini-tts"),
        ("tts", "cartesia"),
        ("tts", "sonic"),
        ("tts", "elevenlabs"),
        ("tts", "eleven_turbo_v2_5"),
        ("tts", "eleven_multilingual_v2"),
    ],
)
def test_default_table_covers_the_seed_providers(service_type, model):
    assert PriceTable(load_env=False).lookup(service_type, model) is not None


def test_claude_and_realtime_defaults_carry_cache_and_audio_rates():
    claude = DEFAULT_PRICES["claude-sonnet-4"]
    realtime = DEFAULT_PRICES["gpt-realtime"]

    assert claude.cache_read is not None and claude.cache_write is not None
    assert realtime.audio_input is not None and realtime.audio_output is not None


# --- overrides ----------------------------------------------------------------------


def test_overrides_argument_replaces_and_adds_prices():
    table = PriceTable(
        overrides={
            "gpt-4o": {"input": 1.0, "output": 2.0},
            "my-tts": {"per_character": 0.00003},
            "My-STT": STTPrice(per_minute=0.01),
        },
        load_env=False,
    )

    assert table.lookup("llm", "gpt-4o") == LLMPrice(input=1.0, output=2.0)
    assert table.lookup("llm", "gpt-4o-2024-08-06") == LLMPrice(input=1.0, output=2.0)
    assert table.lookup("tts", "my-tts") == TTSPrice(per_character=0.00003)
    assert table.lookup("stt", "my-stt") == STTPrice(per_minute=0.01)
    assert table.lookup("llm", "gpt-4o-mini") is DEFAULT_PRICES["gpt-4o-mini"]


def test_prices_argument_replaces_the_defaults():
    table = PriceTable(prices={"only-model": LLMPrice(input=1.0, output=1.0)}, load_env=False)

    assert table.lookup("llm", "gpt-4o") is None
    assert set(table.prices) == {"only-model"}


@pytest.mark.parametrize(
    "entry",
    [
        {"input": -1.0, "output": 2.0},
        {"input": "2.5", "output": 10.0},
        {"input": 1.0},
        {"input": 1.0, "output": 2.0, "per_minute": 0.1},
        {"inputs": 1.0, "output": 2.0},
        {"colour": "blue"},
        3.0,
    ],
)
def test_bad_override_raises_naming_the_model(entry):
    with pytest.raises(ValueError, match="my-broken-model"):
        PriceTable(overrides={"my-broken-model": entry}, load_env=False)


def test_json_price_file_from_the_environment(monkeypatch, tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "gpt-4o": {"input": 2.0, "output": 8.0, "cache_read": 0.5},
                "my-voice": {"per_character": 0.00004},
                "my-ears": {"per_minute": 0.002},
            }
        )
    )
    monkeypatch.setenv(PRICE_FILE_ENV, str(path))

    table = PriceTable()

    assert table.price_file == path
    assert table.lookup("llm", "gpt-4o") == LLMPrice(input=2.0, output=8.0, cache_read=0.5)
    assert table.lookup("tts", "my-voice") == TTSPrice(per_character=0.00004)
    assert table.lookup("stt", "my-ears") == STTPrice(per_minute=0.002)
    assert table.lookup("llm", "gpt-4o-mini") is DEFAULT_PRICES["gpt-4o-mini"]


def test_toml_price_file_from_the_environment(monkeypatch, tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(
        """
[gpt-4o]
input = 2
output = 8.0

["gpt-4.1"]
input = 1.5
output = 6.0

[tts.my-voice]
per_character = 0.00004

[stt]
my-ears = { per_minute = 0.002 }
"""
    )
    monkeypatch.setenv(PRICE_FILE_ENV, str(path))

    table = PriceTable()

    assert table.lookup("llm", "gpt-4o") == LLMPrice(input=2.0, output=8.0)
    assert table.lookup("llm", "gpt-4.1") == LLMPrice(input=1.5, output=6.0)
    assert table.lookup("tts", "my-voice") == TTSPrice(per_character=0.00004)
    assert table.lookup("stt", "my-ears") == STTPrice(per_minute=0.002)


def test_overrides_argument_wins_over_the_file(monkeypatch, tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"gpt-4o": {"input": 2.0, "output": 8.0}}))
    monkeypatch.setenv(PRICE_FILE_ENV, str(path))

    table = PriceTable(overrides={"gpt-4o": {"input": 1.0, "output": 4.0}})

    assert table.lookup("llm", "gpt-4o") == LLMPrice(input=1.0, output=4.0)


def test_load_env_false_ignores_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv(PRICE_FILE_ENV, str(tmp_path / "missing.json"))

    table = PriceTable(load_env=False)

    assert table.price_file is None
    assert table.lookup("llm", "gpt-4o") is DEFAULT_PRICES["gpt-4o"]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("missing.json", None, "cannot be read"),
        ("bad.json", '{"gpt-4o": {"input": 2.5,', "not valid JSON"),
        ("bad.toml", "[gpt-4o\ninput = 2.5", "not valid TOML"),
        ("list.json", '[{"input": 2.5, "output": 10.0}]', "top level"),
        ("negative.json", '{"gpt-4o": {"input": -2.5, "output": 10.0}}', "greater than"),
        ("text.json", '{"gpt-4o": {"input": "cheap", "output": 10.0}}', "valid number"),
        ("bool.json", '{"my-tts": {"per_character": true}}', "valid number"),
        ("nan.json", '{"gpt-4o": {"input": NaN, "output": 10.0}}', "finite"),
        ("missing-field.json", '{"gpt-4o": {"input": 2.5}}', "output is missing"),
        (
            "unknown-field.json",
            '{"gpt-4o": {"input": 2.5, "output": 10, "x": 1}}',
            "x is not a price field",
        ),
        ("mixed.json", '{"gpt-4o": {"input": 2.5, "per_minute": 0.1}}', "mixes fields"),
        ("scalar.json", '{"gpt-4o": 2.5}', "expected a table of price fields"),
        ("section.toml", "[tts.gpt-4o]\ninput = 2.5\noutput = 10.0", "under [tts]"),
        ("dotted.toml", "[gpt-4.1]\ninput = 2.0\noutput = 8.0", "quote"),
        ("latin1.json", b'{"caf\xe9": {"per_minute": 0.1}}', "UTF-8"),
    ],
)
def test_malformed_price_file_raises_naming_the_variable(
    monkeypatch, tmp_path, name, content, problem
):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    monkeypatch.setenv(PRICE_FILE_ENV, str(path))

    with pytest.raises(ValueError) as raised:
        PriceTable()

    message = str(raised.value)
    assert PRICE_FILE_ENV in message
    assert str(path) in message
    assert problem in message
    assert '"per_character"' in message  # shows the expected shape


def test_the_default_table_is_the_shipped_price_file_read_like_a_users(monkeypatch):
    from pipecat_grafana.pricing import DEFAULT_PRICE_FILE

    assert DEFAULT_PRICE_FILE.name == "prices.toml" and DEFAULT_PRICE_FILE.is_file()
    monkeypatch.setenv(PRICE_FILE_ENV, str(DEFAULT_PRICE_FILE))
    from_file = PriceTable()
    assert from_file.price_file == DEFAULT_PRICE_FILE
    assert dict(from_file.prices) == dict(DEFAULT_PRICES)
    assert len(DEFAULT_PRICES) > 50


def test_an_absurd_price_is_refused_as_absurd():
    # 1e308 per million tokens would make every total it touches infinite.
    for price in ({"input": 1e308, "output": 1.0}, {"per_character": 5.0}, {"per_minute": 1e6}):
        with pytest.raises(ValueError, match="not a plausible price"):
            table_with(price)


def test_a_cost_is_always_finite():
    table = table_with({"input": 10_000.0, "output": 10_000.0})
    huge = TokenCounts.from_usage(usage(prompt_tokens=10**400, completion_tokens=1))[0]
    cost = table.llm_cost("test-model", huge)
    assert cost is None or math.isfinite(cost)


def test_a_price_file_is_parsed_once_per_process_and_again_when_it_changes(monkeypatch, tmp_path):
    path = tmp_path / "prices.json"
    path.write_text('{"house-llm": {"input": 1.0, "output": 2.0}}')
    monkeypatch.setenv(PRICE_FILE_ENV, str(path))
    first, second = PriceTable(), PriceTable()
    # The same parsed price, not an equal one parsed again.
    assert first.lookup("llm", "house-llm") is second.lookup("llm", "house-llm")

    path.write_text('{"house-llm": {"input": 3.0, "output": 4.0}}  ')  # edited: size changes
    assert PriceTable().lookup("llm", "house-llm").input == 3.0


def test_the_summary_cost_lines_add_up_to_the_total_as_printed():
    costs = [
        ServiceCost(service_type="llm", model="gpt-4o", usd=0.00005),
        ServiceCost(service_type="tts", model="cartesia", usd=0.00648),
    ]
    total = sum(cost.usd for cost in costs)
    summary = CallSummary(
        call_id="c",
        service_name="s",
        started_at=datetime.datetime.now(datetime.UTC),
        duration_seconds=1.0,
        costs=costs,
        total_cost_usd=total,
        llm_model="gpt-4o",
        stt_model=None,
        tts_model="cartesia",
        end_reason="completed",
    )
    text = summary.format()
    shown = [
        float(line.rsplit("$", 1)[1]) for line in text.splitlines() if line.startswith("Cost ")
    ]
    (printed_total,) = [
        float(line.split("$", 1)[1]) for line in text.splitlines() if line.startswith("Total cost")
    ]
    assert len(shown) == 2 and all(shown)
    assert round(sum(shown), 10) == printed_total
