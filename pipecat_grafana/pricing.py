"""Estimated cost: a dated default price table, user overrides, and token normalisation.

``voice.cost.usd`` is an estimate, never a bill: providers change prices, give
volume discounts and bill some things (long prompts, one-hour cache writes, batch
jobs) at rates a usage report cannot tell apart. This module keeps that estimate
honest: the default table says when it was checked (``PRICES_AS_OF``) and where
each figure comes from, a user can replace any figure, and a model with no known
price is *unpriced* (``None``), never a cost of zero.

Prices are in US dollars: per million tokens for an LLM, per character for
text-to-speech, per minute of audio for speech-to-text.

Overriding prices
-----------------
Pass ``overrides=`` to :class:`PriceTable`, or name a JSON or TOML file in the
environment variable ``PIPECAT_GRAFANA_PRICES_FILE`` (a ``.toml`` file is read as
TOML, anything else as JSON). The argument wins over the file, the file over the
defaults. Each entry maps a model name to its prices; the fields say which kind of
price it is::

    {"gpt-4o": {"input": 2.5, "output": 10.0, "cache_read": 1.25},
     "my-tts": {"per_character": 0.00003},
     "my-stt": {"per_minute": 0.006}}

The same in TOML, where a model name containing a dot must be quoted (``[gpt-4.1]``
would be read as a table ``1`` inside a table ``gpt-4``)::

    [gpt-4o]
    input = 2.5
    output = 10.0

    ["gpt-4.1"]
    input = 2.0
    output = 8.0

    [my-tts]
    per_character = 0.00003

Models may also be grouped under top-level sections ``llm``, ``tts`` and ``stt``,
which reads better in TOML and makes each entry's kind explicit (an entry under
``[tts]`` must be a text-to-speech price)::

    [llm.gpt-4o]
    input = 2.5
    output = 10.0

    [tts.my-tts]
    per_character = 0.00003

So ``llm``, ``tts`` and ``stt`` cannot be used as model names at the top level. A
price file that cannot be read or parsed raises ``ValueError``: a configured price
file that is silently ignored would report costs from the wrong prices.

Matching a model name
---------------------
:meth:`PriceTable.lookup` ignores case and tries, in order: the exact name; the
name without a provider prefix (``openai/gpt-4o``, ``models/gemini-2.0-flash``,
Bedrock's ``us.anthropic.claude-sonnet-4-6-v1:0``); then the longest table key
that is a prefix of the name and ends where the name's next character is ``-``,
``_``, ``:``, ``@`` or ``/`` (so a dated snapshot such as ``gpt-4o-2024-08-06``
gets ``gpt-4o``'s price, ``gpt-4o-mini-2024-07-18`` gets ``gpt-4o-mini``'s, and
``gpt-4o`` never gets ``gpt-4``'s). Only prices of the kind the service type needs
are considered.

What the estimate leaves out
----------------------------
Long-context tiers (Gemini Pro above 200k tokens, GPT-5.x above 272k), batch and
priority tiers, Anthropic's one-hour cache writes (priced here at the five-minute
rate, the default), image tokens, per-request minimums, and plan discounts.
"""

import functools
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pipecat.metrics.metrics import LLMTokenUsage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PRICES_AS_OF = "2026-11-22"
"""The date the default price table was last checked against public price lists."""

PRICE_FILE_ENV = "PIPECAT_GRAFANA_PRICES_FILE"
"""Environment variable naming a JSON or TOML file of price overrides."""

TOKENS_PER_PRICE_UNIT = 1_000_000
"""LLM prices are per this many tokens."""

_PRICE_CONFIG = ConfigDict(
    frozen=True,
    extra="forbid",
    # Strict: a price given as a string ("2.5") or a boolean is a mistake in the
    # price file, not something to coerce.
    strict=True,
    allow_inf_nan=False,
    use_attribute_docstrings=True,
)


class LLMPrice(BaseModel):
    """What an LLM costs, in US dollars per million tokens.

    Only ``input`` and ``output`` are required; each other rate falls back to one
    of them, as its field says.

    Example::

        LLMPrice(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
    """

    model_config = _PRICE_CONFIG

    input: float = Field(ge=0)
    """USD per million uncached text input tokens."""

    output: float = Field(ge=0)
    """USD per million text output tokens (reasoning tokens are billed as output)."""

    cache_read: float | None = Field(default=None, ge=0)
    """USD per million input tokens read from the prompt cache; ``None`` means ``input``."""

    cache_write: float | None = Field(default=None, ge=0)
    """USD per million input tokens written to the prompt cache; ``None`` means ``input``."""

    audio_input: float | None = Field(default=None, ge=0)
    """USD per million uncached audio input tokens; ``None`` means ``input``."""

    audio_output: float | None = Field(default=None, ge=0)
    """USD per million audio output tokens; ``None`` means ``output``."""

    audio_cache_read: float | None = Field(default=None, ge=0)
    """USD per million audio input tokens read from the cache; ``None`` means ``cache_read``."""


class TTSPrice(BaseModel):
    """What a text-to-speech service costs.

    Example::

        TTSPrice(per_character=0.00005)
    """

    model_config = _PRICE_CONFIG

    per_character: float = Field(ge=0)
    """USD per character of text sent to the service."""


class STTPrice(BaseModel):
    """What a speech-to-text service costs.

    Example::

        STTPrice(per_minute=0.0048)
    """

    model_config = _PRICE_CONFIG

    per_minute: float = Field(ge=0)
    """USD per minute of audio sent to the service."""


Price = LLMPrice | TTSPrice | STTPrice

_PRICE_KINDS: dict[str, type[LLMPrice] | type[TTSPrice] | type[STTPrice]] = {
    "llm": LLMPrice,
    "tts": TTSPrice,
    "stt": STTPrice,
}
# Service types that exist but are never priced (see instruments.SERVICE_TYPES).
_UNPRICED_SERVICE_TYPES = frozenset({"other"})

_EXPECTED_SHAPE = (
    '{"gpt-4o": {"input": 2.5, "output": 10.0}, "my-tts": {"per_character": 0.00003}, '
    '"my-stt": {"per_minute": 0.006}} (LLM prices in USD per million tokens; TTS per '
    "character; STT per minute of audio), or in TOML a table per model: "
    '[gpt-4o] input = 2.5 output = 10.0 (quote names with dots: ["gpt-4.1"]); models may '
    "also be grouped under top-level llm, tts and stt sections"
)


class TokenCounts(BaseModel):
    """The token counts of one LLM usage report, normalised across providers.

    ``prompt`` is always the gross input and ``completion`` the gross output; every
    other count is a part of one of them. A count that is ``None`` was not reported.
    """

    model_config = ConfigDict(use_attribute_docstrings=True)

    prompt: int = Field(ge=0)
    """Input tokens, gross: including cached, cache-written and audio input tokens."""

    completion: int = Field(ge=0)
    """Output tokens, including reasoning and audio output tokens."""

    cache_read: int | None = Field(default=None, ge=0)
    """Input tokens read from the prompt cache (part of ``prompt``)."""

    cache_creation: int | None = Field(default=None, ge=0)
    """Input tokens written to the prompt cache (part of ``prompt``)."""

    reasoning: int | None = Field(default=None, ge=0)
    """Output tokens spent reasoning (part of ``completion``)."""

    input_audio: int | None = Field(default=None, ge=0)
    """Input tokens that were audio, cached or not (part of ``prompt``)."""

    output_audio: int | None = Field(default=None, ge=0)
    """Output tokens that were audio (part of ``completion``)."""

    # Excluded from model_dump(): it is not one of the exported token types, only
    # what pricing needs to avoid charging cached audio twice.
    cache_read_audio: int | None = Field(default=None, ge=0, exclude=True)
    """Audio input tokens read from the cache (part of both ``cache_read`` and ``input_audio``)."""

    @classmethod
    def from_usage(cls, usage: LLMTokenUsage) -> tuple["TokenCounts", str | None]:
        """Normalise one ``LLMTokenUsage`` report.

        Pipecat's ``prompt_tokens`` is net of the prompt cache for some services
        (Anthropic, Bedrock) and gross for others (OpenAI-compatible), while
        ``total_tokens`` is gross for both, so the gross prompt is
        ``total_tokens - completion_tokens``. When the report contradicts itself
        the counts fall back to what the report can still support, and the
        problem is described in the returned warning.

        Args:
            usage: The usage report of one LLM inference.

        Returns:
            The normalised counts, and a warning naming what was inconsistent in the
            report (``None`` when it was consistent).
        """
        problems: list[str] = []

        def optional(name: str) -> int | None:
            value = getattr(usage, name)
            if value is not None and value < 0:
                problems.append(f"{name} is negative ({value}); counted as not reported")
                return None
            return value

        cache_read = optional("cache_read_input_tokens")
        cache_creation = optional("cache_creation_input_tokens")
        reasoning = optional("reasoning_tokens")
        input_audio = optional("input_audio_tokens")
        output_audio = optional("output_audio_tokens")
        cache_read_audio = optional("cache_read_input_audio_tokens")

        reported_prompt = usage.prompt_tokens
        if reported_prompt < 0:
            problems.append(f"prompt_tokens is negative ({reported_prompt}); counted as 0")
            reported_prompt = 0
        completion = usage.completion_tokens
        completion_valid = completion >= 0
        if not completion_valid:
            problems.append(f"completion_tokens is negative ({completion}); counted as 0")
            completion = 0
        total_valid = usage.total_tokens >= 0
        if not total_valid:
            problems.append(f"total_tokens is negative ({usage.total_tokens})")

        cached_parts = (cache_read or 0) + (cache_creation or 0)
        derived = usage.total_tokens - usage.completion_tokens
        floor = max(reported_prompt, cached_parts, input_audio or 0)
        if total_valid and completion_valid and derived >= floor:
            prompt = derived
        else:
            # A gross prompt can never be smaller than its cached parts, so a
            # prompt_tokens below them must be net of the cache.
            looks_net = reported_prompt < cached_parts
            prompt = max(reported_prompt + (cached_parts if looks_net else 0), input_audio or 0)
            if total_valid and completion_valid:
                problems.append(
                    f"total_tokens ({usage.total_tokens}) - completion_tokens "
                    f"({usage.completion_tokens}) = {derived} is less than the input it "
                    f"must contain ({floor})"
                )
            basis = "prompt_tokens plus the cache counts" if looks_net else "prompt_tokens"
            problems.append(f"counted prompt as {prompt} ({basis})")

        largest_part = max(reasoning or 0, output_audio or 0)
        if largest_part > completion:
            problems.append(
                f"completion_tokens ({completion}) is less than its reasoning or audio part "
                f"({largest_part}); counted completion as {largest_part}"
            )
            completion = largest_part
        if cache_read_audio is not None and cache_read_audio > min(
            cache_read if cache_read is not None else cache_read_audio,
            input_audio if input_audio is not None else cache_read_audio,
        ):
            problems.append(
                f"cache_read_input_audio_tokens ({cache_read_audio}) exceeds "
                "cache_read_input_tokens or input_audio_tokens"
            )

        counts = cls(
            prompt=prompt,
            completion=completion,
            cache_read=cache_read,
            cache_creation=cache_creation,
            reasoning=reasoning,
            input_audio=input_audio,
            output_audio=output_audio,
            cache_read_audio=cache_read_audio,
        )
        warning = "inconsistent LLMTokenUsage: " + "; ".join(problems) if problems else None
        return counts, warning


# The default table, dated PRICES_AS_OF. Entries use the price-file shape, so any
# entry can be copied into an override file. One comment per provider names the
# source; "unverified" marks a figure that could not be checked against a public
# price list on that date (the best known list price is used).
_DEFAULT_TABLE: dict[str, dict[str, float]] = {
    # OpenAI LLMs: developers.openai.com model pages and pricing page (standard tier, USD/1M
    # tokens, cache_read = cached input); gpt-4 from the project seed ($0.03/1K prompt,
    # $0.06/1K completion).
    "gpt-4": {"input": 30.0, "output": 60.0},
    "gpt-4-turbo": {"input": 10.0, "output": 30.0},  # unverified
    "gpt-4o": {"input": 2.5, "output": 10.0, "cache_read": 1.25},
    "gpt-4o-mini": {"input": 0.15, "output": 0.6, "cache_read": 0.075},
    "gpt-4.1": {"input": 2.0, "output": 8.0, "cache_read": 0.5},
    "gpt-4.1-mini": {"input": 0.4, "output": 1.6, "cache_read": 0.1},  # cache_read unverified
    "gpt-4.1-nano": {"input": 0.1, "output": 0.4, "cache_read": 0.025},  # cache_read unverified
    "gpt-5": {"input": 1.25, "output": 10.0, "cache_read": 0.125},
    "gpt-5-mini": {"input": 0.25, "output": 2.0, "cache_read": 0.025},
    "gpt-5-nano": {"input": 0.05, "output": 0.4, "cache_read": 0.005},
    "gpt-5.4": {"input": 2.5, "output": 15.0, "cache_read": 0.25},
    "gpt-5.4-mini": {"input": 0.75, "output": 4.5, "cache_read": 0.075},
    "gpt-5.4-nano": {"input": 0.2, "output": 1.25, "cache_read": 0.02},
    "gpt-5.5": {"input": 5.0, "output": 30.0, "cache_read": 0.5},
    "gpt-5.6-sol": {"input": 5.0, "output": 30.0, "cache_read": 0.5},
    "gpt-5.6-terra": {"input": 2.0, "output": 12.0, "cache_read": 0.2},
    "gpt-5.6-luna": {"input": 0.2, "output": 1.2, "cache_read": 0.02},
    "o1": {"input": 15.0, "output": 60.0, "cache_read": 7.5},
    "o1-mini": {"input": 1.1, "output": 4.4, "cache_read": 0.55},  # unverified
    "o3": {"input": 2.0, "output": 8.0, "cache_read": 0.5},
    "o3-mini": {"input": 1.1, "output": 4.4, "cache_read": 0.55},  # cache_read unverified
    "o4-mini": {"input": 1.1, "output": 4.4, "cache_read": 0.275},
    # OpenAI realtime (speech-to-speech): developers.openai.com model pages, text and audio
    # token rates; gpt-realtime as gpt-realtime-1.5's page.
    "gpt-4o-realtime-preview": {
        "input": 5.0,
        "output": 20.0,
        "cache_read": 2.5,
        "audio_input": 40.0,
        "audio_output": 80.0,
        "audio_cache_read": 2.5,
    },
    "gpt-4o-mini-realtime-preview": {
        "input": 0.6,
        "output": 2.4,
        "cache_read": 0.3,
        "audio_input": 10.0,
        "audio_output": 20.0,
        "audio_cache_read": 0.3,
    },
    "gpt-realtime": {
        "input": 4.0,
        "output": 16.0,
        "cache_read": 0.4,
        "audio_input": 32.0,
        "audio_output": 64.0,
        "audio_cache_read": 0.4,
    },
    "gpt-realtime-1.5": {
        "input": 4.0,
        "output": 16.0,
        "cache_read": 0.4,
        "audio_input": 32.0,
        "audio_output": 64.0,
        "audio_cache_read": 0.4,
    },
    "gpt-realtime-2": {
        "input": 4.0,
        "output": 24.0,
        "cache_read": 0.4,
        "audio_input": 32.0,
        "audio_output": 64.0,
        "audio_cache_read": 0.4,
    },
    "gpt-realtime-2.1": {
        "input": 4.0,
        "output": 24.0,
        "cache_read": 0.4,
        "audio_input": 32.0,
        "audio_output": 64.0,
        "audio_cache_read": 0.4,
    },
    "gpt-realtime-2.1-mini": {
        "input": 0.6,
        "output": 2.4,
        "cache_read": 0.06,
        "audio_input": 10.0,
        "audio_output": 20.0,
        "audio_cache_read": 0.3,
    },
    # input verified; the other gpt-realtime-mini rates are assumed equal to gpt-realtime-2.1-mini.
    "gpt-realtime-mini": {
        "input": 0.6,
        "output": 2.4,  # unverified
        "cache_read": 0.06,  # unverified
        "audio_input": 10.0,  # unverified
        "audio_output": 20.0,  # unverified
        "audio_cache_read": 0.3,  # unverified
    },
    # OpenAI speech: model pages. gpt-4o(-mini)-transcribe are billed by token; the figures are
    # OpenAI's per-minute estimates (unverified). gpt-4o-mini-tts is billed by token: OpenAI's
    # ~$0.015/minute estimate at ~750 characters a minute (derived, unverified).
    "whisper-1": {"per_minute": 0.006},
    "gpt-4o-transcribe": {"per_minute": 0.006},  # unverified
    "gpt-4o-mini-transcribe": {"per_minute": 0.003},  # unverified
    "gpt-realtime-whisper": {"per_minute": 0.017},
    "tts-1": {"per_character": 0.000015},
    "tts-1-hd": {"per_character": 0.00003},
    "gpt-4o-mini-tts": {"per_character": 0.00002},  # unverified
    # Anthropic Claude: platform.claude.com pricing page (cache_write = 5-minute cache writes,
    # cache_read = cache hits); dated snapshots and Bedrock/Vertex ids match by prefix.
    "claude-3-haiku": {"input": 0.25, "output": 1.25, "cache_read": 0.03, "cache_write": 0.3},
    "claude-3-5-haiku": {"input": 0.8, "output": 4.0, "cache_read": 0.08, "cache_write": 1.0},
    "claude-3-5-sonnet": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75},
    "claude-3-7-sonnet": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75},
    "claude-sonnet-4": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75},
    "claude-haiku-4-5": {"input": 1.0, "output": 5.0, "cache_read": 0.1, "cache_write": 1.25},
    "claude-opus-4": {"input": 15.0, "output": 75.0, "cache_read": 1.5, "cache_write": 18.75},
    "claude-opus-4-5": {"input": 5.0, "output": 25.0, "cache_read": 0.5, "cache_write": 6.25},
    "claude-opus-4-6": {"input": 5.0, "output": 25.0, "cache_read": 0.5, "cache_write": 6.25},
    "claude-opus-4-7": {"input": 5.0, "output": 25.0, "cache_read": 0.5, "cache_write": 6.25},
    "claude-opus-4-8": {"input": 5.0, "output": 25.0, "cache_read": 0.5, "cache_write": 6.25},
    # Google Gemini: ai.google.dev/pricing, paid tier, prompts up to 200k tokens (cache_read =
    # context-cache hits; audio rates where Google prices audio apart). 1.5, 2.0 Flash-Lite and
    # the Live models are no longer listed there (unverified).
    "gemini-1.5-flash": {"input": 0.075, "output": 0.3, "cache_read": 0.01875},  # unverified
    "gemini-1.5-pro": {"input": 1.25, "output": 5.0, "cache_read": 0.3125},  # unverified
    "gemini-2.0-flash": {
        "input": 0.1,
        "output": 0.4,
        "cache_read": 0.025,
        "audio_input": 0.7,
        "audio_cache_read": 0.175,
    },
    "gemini-2.0-flash-lite": {"input": 0.075, "output": 0.3},  # unverified
    "gemini-2.0-flash-live": {  # unverified
        "input": 0.35,
        "output": 1.5,
        "audio_input": 2.1,
        "audio_output": 8.5,
    },
    "gemini-2.5-flash": {
        "input": 0.3,
        "output": 2.5,
        "cache_read": 0.03,
        "audio_input": 1.0,
        "audio_cache_read": 0.1,
    },
    "gemini-2.5-flash-lite": {
        "input": 0.1,
        "output": 0.4,
        "cache_read": 0.01,
        "audio_input": 0.3,
        "audio_cache_read": 0.03,
    },
    "gemini-2.5-flash-native-audio": {  # unverified
        "input": 0.5,
        "output": 2.0,
        "audio_input": 3.0,
        "audio_output": 12.0,
    },
    "gemini-2.5-pro": {"input": 1.25, "output": 10.0, "cache_read": 0.125},
    "gemini-3-flash": {
        "input": 0.5,
        "output": 3.0,
        "cache_read": 0.05,
        "audio_input": 1.0,
        "audio_cache_read": 0.1,
    },
    "gemini-3.1-flash-lite": {
        "input": 0.25,
        "output": 1.5,
        "cache_read": 0.025,
        "audio_input": 0.5,
        "audio_cache_read": 0.05,
    },
    "gemini-3.1-pro": {"input": 2.0, "output": 12.0, "cache_read": 0.2},
    "gemini-3.5-flash": {"input": 1.5, "output": 9.0, "cache_read": 0.15},
    # Groq: groq.com/pricing (on-demand); llama-3.1-8b-instant only from copies of that page and
    # llama-3.1-70b-versatile is retired (both unverified). Whisper on Groq per hour / 60.
    "llama-3.1-8b-instant": {"input": 0.05, "output": 0.08},  # unverified
    "llama-3.1-70b-versatile": {"input": 0.59, "output": 0.79},  # unverified
    "llama-3.3-70b-versatile": {"input": 0.59, "output": 0.79},
    "whisper-large-v3": {"per_minute": 0.00185},
    "whisper-large-v3-turbo": {"per_minute": 0.000667},
    # Deepgram STT: deepgram.com/pricing, pay as you go, streaming, monolingual; "deepgram"
    # alone prices as Nova-3. Nova-2 is no longer listed (unverified).
    "deepgram": {"per_minute": 0.0048},
    "nova-3": {"per_minute": 0.0048},
    "nova-2": {"per_minute": 0.0058},  # unverified
    # Gladia STT: gladia.io/pricing, Starter (pay as you go) real-time, $0.75/hour.
    "gladia": {"per_minute": 0.0125},
    "solaria-1": {"per_minute": 0.0125},
    # Cartesia: docs.cartesia.ai/pricing (TTS ~1 credit/character, ink-whisper STT 1 credit/s,
    # ink-2 3 credits/s) at the Pro plan's $5 per 100K credits; larger plans cost less per
    # credit (Scale ~$37.4/1M). The project seed's $0.000015/character matches no published plan.
    "cartesia": {"per_character": 0.00005},
    "sonic": {"per_character": 0.00005},
    "sonic-2": {"per_character": 0.00005},
    "sonic-3": {"per_character": 0.00005},
    "sonic-3.5": {"per_character": 0.00005},
    "sonic-turbo": {"per_character": 0.00005},
    "ink-whisper": {"per_minute": 0.003},
    "ink-2": {"per_minute": 0.009},
    # ElevenLabs: elevenlabs.io/pricing/api, pay as you go ($0.05/1K characters Flash/Turbo,
    # $0.10/1K Multilingual v2/v3; Scribe per hour / 60); "elevenlabs" alone prices as Flash.
    "elevenlabs": {"per_character": 0.00005},
    "eleven_flash_v2": {"per_character": 0.00005},
    "eleven_flash_v2_5": {"per_character": 0.00005},
    "eleven_turbo_v2": {"per_character": 0.00005},
    "eleven_turbo_v2_5": {"per_character": 0.00005},
    "eleven_multilingual_v2": {"per_character": 0.0001},
    "eleven_v3": {"per_character": 0.0001},
    "scribe_v2": {"per_minute": 0.0036667},
    "scribe_v2_realtime": {"per_minute": 0.0065},
}


class _PriceProblem(Exception):
    """A price entry that cannot be used.

    Args:
        detail: What is wrong with the entry.
        model: The model name of the entry, once known.
    """

    def __init__(self, detail: str, model: object = None):
        super().__init__(detail)
        self.detail = detail
        self.model = model


def _parse_price(value: object, *, kind: str | None = None) -> Price:
    """Turn a price or a mapping of price fields into a price, by its fields."""
    if isinstance(value, LLMPrice | TTSPrice | STTPrice):
        price: Price = value
    elif isinstance(value, Mapping):
        fields = set(value)
        if any(isinstance(field_value, Mapping) for field_value in value.values()):
            raise _PriceProblem(
                "it holds a nested table (in TOML, quote a model name that contains a dot: "
                '["gpt-4.1"], not [gpt-4.1])'
            )
        matches = [cls for cls in _PRICE_KINDS.values() if fields & cls.model_fields.keys()]
        if len(matches) != 1:
            known = ", ".join(sorted(LLMPrice.model_fields)) + ", per_character, per_minute"
            found = ", ".join(sorted(map(str, fields))) or "nothing"
            what = "it mixes fields of different kinds of price" if matches else "no price field"
            raise _PriceProblem(f"{what} (found {found}; known fields: {known})")
        try:
            price = matches[0].model_validate(dict(value))
        except ValidationError as exc:
            raise _PriceProblem(_describe(exc)) from None
    else:
        raise _PriceProblem(f"expected a table of price fields, got {type(value).__name__}")
    if kind is not None and not isinstance(price, _PRICE_KINDS[kind]):
        raise _PriceProblem(f"it is under [{kind}] but has {_kind_of(price).upper()} price fields")
    return price


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        if error["type"] == "missing":
            parts.append(f"{field} is missing")
        elif error["type"] == "extra_forbidden":
            parts.append(f"{field} is not a price field")
        else:
            # Pydantic says "Input should be ...", where "input" is the value given.
            should = error["msg"].removeprefix("Input ").removeprefix("Value ")
            parts.append(f"{field} {should} (got {error['input']!r})")
    return "; ".join(parts)


def _kind_of(price: Price) -> str:
    return next(kind for kind, cls in _PRICE_KINDS.items() if isinstance(price, cls))


@functools.cache
def _default_prices() -> dict[str, Price]:
    # Parsed once: every call builds a table, and the defaults never change.
    return _parse_table(DEFAULT_PRICES)


def _parse_table(table: Mapping[Any, Any]) -> dict[str, Price]:
    """Parse model → price entries, with optional llm/tts/stt sections.

    Raises:
        _PriceProblem: Naming the model whose entry is wrong.
    """
    prices: dict[str, Price] = {}

    def add(model: object, value: object, kind: str | None) -> None:
        if not isinstance(model, str) or not model.strip():
            raise _PriceProblem("a model name must be a non-empty string", model)
        try:
            prices[model.strip().lower()] = _parse_price(value, kind=kind)
        except _PriceProblem as exc:
            raise _PriceProblem(exc.detail, model) from None

    for key, value in table.items():
        section = key.lower() if isinstance(key, str) else None
        if section in _PRICE_KINDS and isinstance(value, Mapping):
            for model, entry in value.items():
                add(model, entry, section)
        else:
            add(key, value, None)
    return prices


def _read_price_file(path: Path) -> dict[str, Price]:
    """Read and parse a price file; every problem raises ``ValueError`` saying how to fix it."""

    def error(problem: str) -> ValueError:
        return ValueError(
            f"{PRICE_FILE_ENV}={str(path)!r}: the price file {problem}. Fix the file, or unset "
            f"{PRICE_FILE_ENV} to use the default prices (as of {PRICES_AS_OF}). "
            f"Expected shape: {_EXPECTED_SHAPE}."
        )

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot be read ({type(exc).__name__}: {exc.strerror or exc})") from exc
    is_toml = path.suffix.lower() == ".toml"
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text) if is_toml else json.loads(text)
    except UnicodeDecodeError as exc:
        raise error(f"is not UTF-8 text ({exc.reason})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"is not valid TOML ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise error(
            f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}; name the "
            "file *.toml to write it in TOML)"
        ) from exc
    if not isinstance(data, dict):
        raise error(f"must map model names to prices at the top level, not {type(data).__name__}")
    try:
        return _parse_table(data)
    except _PriceProblem as exc:
        raise error(f"has a bad price for model {exc.model!r}: {exc.detail}") from None


DEFAULT_PRICES: Mapping[str, Price] = MappingProxyType(_parse_table(_DEFAULT_TABLE))
"""Built-in list prices as of ``PRICES_AS_OF``, keyed by lowercase model name."""

# Prefixes that hosting platforms put before a model's own name: anything up to the
# last "/" (openai/gpt-4o, models/gemini-2.0-flash), and Bedrock's optional region
# plus vendor (us.anthropic.claude-sonnet-4-6-v1:0).
_BEDROCK_PREFIX = re.compile(
    r"^(?:[a-z]{2,4}\.)?(?:anthropic|amazon|meta|mistral|cohere|ai21|deepseek|openai|qwen)\."
)
# Characters that end a model family's name inside a longer (dated or variant) name.
_NAME_BOUNDARIES = frozenset("-_:@/")


def _candidate_names(model: str) -> list[str]:
    name = model.strip().lower()
    names = [name]
    if "/" in name:
        names.append(name.rsplit("/", 1)[1])
    bare = _BEDROCK_PREFIX.sub("", names[-1])
    if bare != names[-1]:
        names.append(bare)
    return [candidate for candidate in dict.fromkeys(names) if candidate]


def _is_family_prefix(key: str, name: str) -> bool:
    """Whether ``name`` is ``key`` followed by a snapshot or variant suffix."""
    if len(name) <= len(key) or not name.startswith(key):
        return False
    return not key[-1].isalnum() or name[len(key)] in _NAME_BOUNDARIES


class PriceTable:
    """Prices by model, with lookups that tolerate dated snapshots and provider prefixes.

    The table starts from ``DEFAULT_PRICES`` (or ``prices``), then applies the file
    named by ``PIPECAT_GRAFANA_PRICES_FILE``, then ``overrides``.

    Example::

        table = PriceTable(overrides={"my-llm": {"input": 0.5, "output": 1.5}})
        counts, warning = TokenCounts.from_usage(usage)
        cost = table.llm_cost("my-llm", counts)  # None when the model is unpriced
    """

    def __init__(
        self,
        prices: Mapping[str, Price] | None = None,
        *,
        overrides: Mapping[str, Price | Mapping[str, Any]] | None = None,
        load_env: bool = True,
    ):
        """Build the table.

        Args:
            prices: The starting prices; ``DEFAULT_PRICES`` when ``None``.
            overrides: Prices that win over the starting prices and the price file:
                model name → price, or → a mapping of price fields (see the module
                docstring), optionally grouped under ``llm``/``tts``/``stt``.
            load_env: Whether to apply the file named by ``PIPECAT_GRAFANA_PRICES_FILE``.

        Raises:
            ValueError: If the price file is unreadable or malformed, or an entry of
                ``prices`` or ``overrides`` is not a valid price.
        """
        self._prices: dict[str, Price] = {}
        self.price_file: Path | None = None
        """The price file that was applied, if any."""
        if prices is None:
            self._prices.update(_default_prices())
        else:
            self._merge(prices, "prices")
        path = os.environ.get(PRICE_FILE_ENV, "").strip() if load_env else ""
        if path:
            self.price_file = Path(path).expanduser()
            self._prices.update(_read_price_file(self.price_file))
        if overrides is not None:
            self._merge(overrides, "overrides")
        self._by_kind = {
            cls: sorted(
                (key for key, price in self._prices.items() if isinstance(price, cls)),
                key=len,
                reverse=True,
            )
            for cls in _PRICE_KINDS.values()
        }
        self._lookups: dict[tuple[type[BaseModel], str], Price | None] = {}

    def _merge(self, table: Mapping[str, Any], argument: str) -> None:
        try:
            self._prices.update(_parse_table(table))
        except _PriceProblem as exc:
            raise ValueError(
                f"{argument}: bad price for model {exc.model!r}: {exc.detail}. Give each model "
                "{'input': ..., 'output': ...} (USD per million tokens), {'per_character': ...} "
                "(USD) or {'per_minute': ...} (USD), or an LLMPrice, TTSPrice or STTPrice."
            ) from None

    @property
    def prices(self) -> Mapping[str, Price]:
        """A read-only view of every price, keyed by lowercase model name."""
        return MappingProxyType(self._prices)

    def lookup(self, service_type: str, model: str | None) -> Price | None:
        """Find the price of ``model`` for a service of ``service_type``.

        Args:
            service_type: ``"llm"``, ``"tts"`` or ``"stt"`` (any case); ``"other"``
                is never priced.
            model: The model name as the service reports it.

        Returns:
            A price of the kind the service type needs, or ``None`` when the model
            is unpriced.

        Raises:
            ValueError: If ``service_type`` is not a known service type.
        """
        kind = service_type.lower()
        if kind in _UNPRICED_SERVICE_TYPES:
            return None
        if kind not in _PRICE_KINDS:
            # A typo here would silently leave every cost unpriced: fail fast.
            raise ValueError(f"service_type {service_type!r} is not one of llm, tts, stt or other")
        if not model or not model.strip():
            return None
        cls = _PRICE_KINDS[kind]
        cache_key = (cls, model)
        if cache_key not in self._lookups:
            self._lookups[cache_key] = self._find(cls, _candidate_names(model))
        return self._lookups[cache_key]

    def _find(self, cls: type[BaseModel], names: list[str]) -> Price | None:
        for name in names:
            price = self._prices.get(name)
            if isinstance(price, cls):
                return price
        for name in names:
            for key in self._by_kind[cls]:  # longest key first
                if _is_family_prefix(key, name):
                    return self._prices[key]
        return None

    def llm_cost(self, model: str | None, tokens: TokenCounts) -> float | None:
        """Estimate what one LLM usage report cost.

        Args:
            model: The model name as the service reports it.
            tokens: The normalised counts of the report.

        Returns:
            The cost in US dollars, or ``None`` when the model is unpriced.
        """
        price = self.lookup("llm", model)
        if not isinstance(price, LLMPrice):
            return None
        cache_read_rate = price.input if price.cache_read is None else price.cache_read
        cache_read = tokens.cache_read or 0
        input_audio = tokens.input_audio or 0
        # Cached audio is counted in both cache_read and input_audio; charge it once.
        cached_audio = min(tokens.cache_read_audio or 0, cache_read, input_audio)
        uncached_audio = input_audio - cached_audio
        cache_creation = tokens.cache_creation or 0
        output_audio = tokens.output_audio or 0
        uncached_text = max(tokens.prompt - cache_read - cache_creation - uncached_audio, 0)
        priced = (
            (uncached_text, price.input),
            (cache_read - cached_audio, cache_read_rate),
            (cached_audio, _or(price.audio_cache_read, cache_read_rate)),
            (cache_creation, _or(price.cache_write, price.input)),
            (uncached_audio, _or(price.audio_input, price.input)),
            (max(tokens.completion - output_audio, 0), price.output),
            (output_audio, _or(price.audio_output, price.output)),
        )
        return sum(count * rate for count, rate in priced) / TOKENS_PER_PRICE_UNIT

    def tts_cost(self, model: str | None, characters: int) -> float | None:
        """Estimate what synthesising ``characters`` characters cost.

        Args:
            model: The model name as the service reports it.
            characters: Characters sent to the service.

        Returns:
            The cost in US dollars, or ``None`` when the model is unpriced.

        Raises:
            ValueError: If ``characters`` is negative.
        """
        if characters < 0:
            raise ValueError(f"characters must not be negative, got {characters}")
        price = self.lookup("tts", model)
        return price.per_character * characters if isinstance(price, TTSPrice) else None

    def stt_cost(self, model: str | None, audio_seconds: float) -> float | None:
        """Estimate what transcribing ``audio_seconds`` of audio cost.

        Args:
            model: The model name as the service reports it.
            audio_seconds: Seconds of audio sent to the service.

        Returns:
            The cost in US dollars, or ``None`` when the model is unpriced.

        Raises:
            ValueError: If ``audio_seconds`` is negative or not finite.
        """
        if not math.isfinite(audio_seconds) or audio_seconds < 0:
            raise ValueError(f"audio_seconds must be finite and not negative, got {audio_seconds}")
        price = self.lookup("stt", model)
        return price.per_minute * audio_seconds / 60 if isinstance(price, STTPrice) else None


def _or(rate: float | None, fallback: float) -> float:
    return fallback if rate is None else rate
