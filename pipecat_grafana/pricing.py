"""Estimated cost: a dated default price table, user overrides, and lookups by model name.

``voice.cost.usd`` is an estimate, never a bill: providers change prices, give
volume discounts and bill some things (long prompts, one-hour cache writes, batch
jobs) at rates a usage report cannot tell apart. This module keeps that estimate
honest: the default table (``prices.toml``, shipped beside this module) says when
it was checked (``PRICES_AS_OF``) and where each figure comes from, a user can
replace any figure, and a model with no known price is *unpriced* (``None``),
never a cost of zero.

Prices are in US dollars: per million tokens for an LLM, per character for
text-to-speech, per minute of audio for speech-to-text. The default table is read
by the same code as a user's price file (``PIPECAT_GRAFANA_PRICES_FILE``, JSON or
TOML, shaped like ``prices.toml``); the docs' Pricing page shows both.

:meth:`PriceTable.lookup` ignores case and tries, in order: the exact name; the
name without a provider prefix (``openai/gpt-4o``, ``models/gemini-2.0-flash``,
Bedrock's ``us.anthropic.claude-sonnet-4-6-v1:0``); then the longest table key
that is a prefix of the name and ends where the name's next character is ``-``,
``_``, ``:``, ``@`` or ``/`` (so ``gpt-4o-2024-08-06`` gets ``gpt-4o``'s price and
``gpt-4o`` never gets ``gpt-4``'s).

Left out of the estimate: long-context tiers, batch and priority tiers,
Anthropic's one-hour cache writes (priced at the five-minute rate), image tokens,
per-request minimums and plan discounts.
"""

import atexit
import json
import math
import os
import re
import threading
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipecat_grafana import notices, runtime
from pipecat_grafana.tokens import TokenCounts

PRICES_AS_OF = "2026-11-22"
"""The date the default price table was last checked against public price lists."""

PRICE_FILE_ENV = "PIPECAT_GRAFANA_PRICES_FILE"
"""Environment variable naming a JSON or TOML file of price overrides."""

TOKENS_PER_PRICE_UNIT = 1_000_000
"""LLM prices are per this many tokens."""

UNPRICED_NAMED = 5
"""Models without a price that a process names in its log; later ones are counted."""

MAX_LLM_PRICE = 10_000.0
"""The most a price of an LLM may be, in USD per million tokens: the dearest list price is
some 600 (2026); more is a mistake of unit (per token, per thousand) or of digits."""
MAX_TTS_PRICE = 1.0
"""The most a TTS price may be, in USD per character (list prices are below 0.001)."""
MAX_STT_PRICE = 100.0
"""The most an STT price may be, in USD per minute of audio (list prices are below 0.1)."""

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

    input: float = Field(ge=0, le=MAX_LLM_PRICE)
    """USD per million uncached text input tokens."""

    output: float = Field(ge=0, le=MAX_LLM_PRICE)
    """USD per million text output tokens (reasoning tokens are billed as output)."""

    cache_read: float | None = Field(default=None, ge=0, le=MAX_LLM_PRICE)
    """USD per million input tokens read from the prompt cache; ``None`` means ``input``."""

    cache_write: float | None = Field(default=None, ge=0, le=MAX_LLM_PRICE)
    """USD per million input tokens written to the prompt cache; ``None`` means ``input``."""

    audio_input: float | None = Field(default=None, ge=0, le=MAX_LLM_PRICE)
    """USD per million uncached audio input tokens; ``None`` means ``input``."""

    audio_output: float | None = Field(default=None, ge=0, le=MAX_LLM_PRICE)
    """USD per million audio output tokens; ``None`` means ``output``."""

    audio_cache_read: float | None = Field(default=None, ge=0, le=MAX_LLM_PRICE)
    """USD per million audio input tokens read from the cache; ``None`` means ``cache_read``."""


class TTSPrice(BaseModel):
    """What a text-to-speech service costs.

    Example::

        TTSPrice(per_character=0.00005)
    """

    model_config = _PRICE_CONFIG

    per_character: float = Field(ge=0, le=MAX_TTS_PRICE)
    """USD per character of text sent to the service."""


class STTPrice(BaseModel):
    """What a speech-to-text service costs.

    Example::

        STTPrice(per_minute=0.0048)
    """

    model_config = _PRICE_CONFIG

    per_minute: float = Field(ge=0, le=MAX_STT_PRICE)
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
        elif error["type"] == "less_than_equal":
            # Refused rather than used: one absurd figure makes every total infinite.
            parts.append(
                f"{field} = {_shown(error['input'])} is not a plausible price (at most "
                f"{error['ctx']['le']:g}): check its unit (LLM per million tokens, TTS per "
                "character, STT per minute) and its digits"
            )
        else:
            # Pydantic says "Input should be ...", where "input" is the value given.
            should = error["msg"].removeprefix("Input ").removeprefix("Value ")
            parts.append(f"{field} {should} (got {_shown(error['input'])})")
    return "; ".join(parts)


def _shown(value: object) -> str:
    """A value given in a price file, bounded for a message (a 4,000-digit number, say)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _kind_of(price: Price) -> str:
    return next(kind for kind, cls in _PRICE_KINDS.items() if isinstance(price, cls))


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


class PriceFileError(ValueError):
    """A price file cannot be used; the message names it and says how to fix it."""


def _read_price_file(path: Path) -> dict[str, Price]:
    """Read and parse a price file; every problem raises ``PriceFileError``."""

    def error(problem: str) -> PriceFileError:
        return PriceFileError(
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
    except ValueError as exc:  # an integer of more than 4,300 digits, say
        raise error(f"cannot be read as {'TOML' if is_toml else 'JSON'} ({exc})") from None
    except RecursionError:
        raise error("is nested too deeply to be a price table") from None
    if not isinstance(data, dict):
        raise error(f"must map model names to prices at the top level, not {type(data).__name__}")
    try:
        return _parse_table(data)
    except _PriceProblem as exc:
        raise error(f"has a bad price for model {exc.model!r}: {exc.detail}") from None


class _ParsedTables:
    """Price tables already built in this process (a runtime part), by price file.

    Parsing a price file of 50,000 models takes a second or so; a process building an
    exporter per call parses it once. A file is known by its path, modification time and
    size, so an edited file is read again.
    """

    LIMIT = 4  # files remembered: a process uses one, a test suite a few

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # (path, mtime_ns, size) -> _Parsed; under lock.
        self.tables: dict[tuple[object, ...], _Parsed] = {}

    def get(self, path: Path | None) -> "_Parsed":
        """The file at ``path`` parsed (``None``: no file), and DEFAULT_PRICES with it applied.

        Raises:
            PriceFileError: The file cannot be read or parsed.
        """
        key: tuple[object, ...] = ()
        if path is not None:
            try:
                stat = path.stat()
            except OSError:
                _read_price_file(path)  # raises the error that names the variable
                raise
            key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        with self.lock:
            table = self.tables.get(key)
        if table is None:
            own = _read_price_file(path) if path is not None else {}
            prices = {**DEFAULT_PRICES, **own}
            table = _Parsed(own, prices, _by_kind(prices))
            with self.lock:
                if len(self.tables) >= self.LIMIT:
                    self.tables.pop(next(iter(self.tables)))
                self.tables[key] = table
        return table

    def after_fork_in_child(self) -> None:
        """A new lock; the tables stay."""
        self.lock = threading.Lock()


@dataclass(frozen=True)
class _Parsed:
    """A price file's own entries, the default table with them applied, and its index."""

    own: dict[str, "Price"]
    prices: dict[str, "Price"]
    by_kind: dict[type, list[str]]  # the keys of each kind of price, longest first


def _by_kind(prices: Mapping[str, "Price"]) -> dict[type, list[str]]:
    return {
        cls: sorted(
            (key for key, price in prices.items() if isinstance(price, cls)), key=len, reverse=True
        )
        for cls in _PRICE_KINDS.values()
    }


DEFAULT_PRICE_FILE = Path(__file__).with_name("prices.toml")
"""The default price table, in the price-file shape; shipped with the package."""

DEFAULT_PRICES: Mapping[str, Price] = MappingProxyType(_read_price_file(DEFAULT_PRICE_FILE))
"""Built-in list prices as of ``PRICES_AS_OF``, keyed by lowercase model name."""

_PARSED = runtime.own(_ParsedTables())
"""The process's price tables, parsed once per file."""

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
        self.price_file: Path | None = None
        """The price file that was applied, if any."""
        path = os.environ.get(PRICE_FILE_ENV, "").strip() if load_env else ""
        if path:
            self.price_file = Path(path).expanduser()
        if prices is None:
            # Shared, never changed: the table of the file parsed once per process.
            parsed = _PARSED.get(self.price_file)
            self._prices, self._by_kind = parsed.prices, parsed.by_kind
            if overrides is not None:
                self._prices = dict(self._prices)
        else:
            self._prices = {}
            self._merge(prices, "prices")
            if self.price_file is not None:
                self._prices.update(_PARSED.get(self.price_file).own)
        if overrides is not None:
            self._merge(overrides, "overrides")
        if prices is not None or overrides is not None:
            self._by_kind = _by_kind(self._prices)
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
        return _finite(lambda: sum(count * rate for count, rate in priced) / TOKENS_PER_PRICE_UNIT)

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
        if not isinstance(price, TTSPrice):
            return None
        return _finite(lambda: price.per_character * characters)

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
        if not isinstance(price, STTPrice):
            return None
        return _finite(lambda: price.per_minute * audio_seconds / 60)


def _finite(cost: Callable[[], float]) -> float | None:
    """``cost()``, or ``None`` (not priced) where counts beyond any real usage make it infinite.

    Prices are bounded (``MAX_LLM_PRICE``...), so only an absurd count gets here: an infinite
    cost would poison every total it is added to, in the summary, OTLP, Loki and the scrape.
    """
    try:
        value = cost()
    except OverflowError:  # an integer count too large for a float
        return None
    return value if math.isfinite(value) else None


def _or(rate: float | None, fallback: float) -> float:
    return fallback if rate is None else rate


class UnpricedModels:
    """Warns about models without a price: the first ``named`` by name, the rest counted.

    A model name that changes with every call (a fine-tune per customer, a version in
    the name) would otherwise add a warning line per name for as long as the process
    runs. The count of the rest is logged once, when the process exits; each call's
    summary (``unpriced_models``) keeps every name.

    Parameters:
        named: How many models are named in the log.
        limit: How many distinct names are remembered (a bound on memory); later
            ones are counted as new.
    """

    def __init__(self, named: int = UNPRICED_NAMED, limit: int = 10_000):
        self._named = named
        self._limit = limit
        self.lock = threading.Lock()
        self._seen: set[str] = set()  # under lock, as is _more
        self._more = 0

    def add(self, service_type: str, model: str) -> None:
        """Note that ``model`` of ``service_type`` has no price; warn if it is among the first."""
        name = f"{service_type}:{model}"
        with self.lock:
            if name in self._seen:
                return
            if len(self._seen) < self._limit:
                self._seen.add(name)
            if len(self._seen) > self._named or name not in self._seen:
                self._more += 1
                return
        notices.warn(
            f"no price for {service_type} model {model!r}: its cost is "
            f"reported as unpriced. Add it with the prices= argument or {PRICE_FILE_ENV}. "
            f"(The first {self._named} such models are named here; later ones are counted "
            "and the count logged at exit.)"
        )

    def log_the_rest(self) -> None:
        """Log how many models beyond the named ones had no price, if any (once)."""
        with self.lock:
            more, self._more = self._more, 0
        if more:
            notices.warn(
                f"{more} more models had no price (not named in the log: "
                "each call summary's unpriced_models lists its own). Add them with the "
                f"prices= argument or {PRICE_FILE_ENV}."
            )

    def clear(self) -> None:
        """Forget every model (a test that expects the warnings again uses this)."""
        with self.lock:
            self._seen.clear()
            self._more = 0

    def after_fork_in_child(self) -> None:
        """A new lock; the models already named stay named."""
        self.lock = threading.Lock()


unpriced = runtime.own(UnpricedModels())
"""The process's record of models without a price."""
atexit.register(unpriced.log_the_rest)
