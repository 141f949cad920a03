"""Small, strict checkers for the LogQL and TraceQL the dashboard uses.

No Loki or Tempo runs where the tests do, so the dashboard's Loki and Tempo queries are
checked for form only: each must parse as the small subset below, and parse it whole. The
subset is what ``pipecat_grafana.grafana.logql`` writes, and nothing more, so that a query
outside it (a parser stage, a line filter, a metric query) fails here rather than passing
unchecked:

- LogQL: a stream selector ``{label="v", label=~"re", label!="", ...}`` with at least one
  matcher that does not match the empty string (Loki refuses the query otherwise), then label
  filter stages ``| key="v"``, ``| key=~"re"``, ``| key!="v"``, ``| key!~"re"`` and numeric
  ones ``| key > 1.5`` (``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=``).
- LogQL metric queries of one form only: a range aggregation of one unwrapped key of such a
  log query, grouped by labels,
  ``quantile_over_time(0.95, <log query> | unwrap key [1h]) by (turn)`` (``avg_``, ``min_``,
  ``max_``, ``sum_`` and ``quantile_over_time``; the quantile between 0 and 1).
- TraceQL: one span filter comparing one attribute with a string,
  ``{ span.conversation.id = "..." }`` (``=``, ``!=``, ``=~``, ``!~``).

Grafana variables must be substituted first, as Grafana does before it sends a query.
"""

import json
import re
from dataclasses import dataclass

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_STRING = r'"(?:[^"\\]|\\.)*"'
_NUMBER = r"-?[0-9]+(?:\.[0-9]+)?"
_SPACE = re.compile(r"\s*")
_MATCHER = re.compile(rf"\s*({_NAME})\s*(=~|!~|!=|=)\s*({_STRING})\s*")
_STRING_STAGE = re.compile(rf"\|\s*({_NAME})\s*(=~|!~|!=|=)\s*({_STRING})")
_NUMBER_STAGE = re.compile(rf"\|\s*({_NAME})\s*(>=|<=|==|!=|>|<)\s*({_NUMBER})(?![\w.])")
_SPAN_FILTER = re.compile(
    rf"\{{\s*(span|resource)\.({_NAME}(?:\.{_NAME})*)\s*(=~|!~|!=|=)\s*({_STRING})\s*\}}"
)


class FormError(ValueError):
    """A query outside the subset, or not valid."""


@dataclass(frozen=True)
class Comparison:
    """``key op value``: a stream matcher, a label filter or a span filter."""

    key: str
    op: str
    value: str | float

    @property
    def regex(self) -> bool:
        return self.op in ("=~", "!~")

    def matches_empty(self) -> bool:
        """Whether a missing label (the empty string) satisfies it."""
        assert isinstance(self.value, str)
        if self.regex:
            found = re.fullmatch(self.value, "") is not None
            return found if self.op == "=~" else not found
        return (self.value == "") == (self.op == "=")


@dataclass(frozen=True)
class LogQuery:
    """A parsed LogQL log query: its stream matchers and its label filter stages."""

    selector: tuple[Comparison, ...]
    stages: tuple[Comparison, ...]


def _string(literal: str, where: str) -> str:
    value = json.loads(literal)  # a Go string literal, as far as the subset goes
    if "\\" in literal:
        raise FormError(f"{where}: escapes are outside the subset: {literal}")
    return value


def _check_regex(comparison: Comparison, where: str) -> None:
    if comparison.regex:
        try:
            re.compile(str(comparison.value))
        except re.error as e:
            raise FormError(f"{where}: bad regex {comparison.value!r}: {e}") from e


def parse_logql(query: str) -> LogQuery:
    """Parse ``query`` as the subset, or raise ``FormError`` saying where it leaves it."""
    if "$" in query:
        raise FormError(f"a Grafana variable is left: {query}")
    pos = _SPACE.match(query).end()
    if not query.startswith("{", pos):
        raise FormError(f"no stream selector: {query}")
    pos += 1
    selector: list[Comparison] = []
    while True:
        matcher = _MATCHER.match(query, pos)
        if not matcher:
            raise FormError(f"bad stream matcher at {pos}: {query}")
        name, op, literal = matcher.groups()
        comparison = Comparison(name, op, _string(literal, query))
        _check_regex(comparison, query)
        selector.append(comparison)
        pos = matcher.end()
        if query.startswith(",", pos):
            pos += 1
        elif query.startswith("}", pos):
            pos += 1
            break
        else:
            raise FormError(f"expected ',' or '}}' at {pos}: {query}")
    if all(comparison.matches_empty() for comparison in selector):
        raise FormError(f"every stream matcher matches the empty string (Loki refuses): {query}")
    stages: list[Comparison] = []
    while True:
        pos = _SPACE.match(query, pos).end()
        if pos == len(query):
            return LogQuery(tuple(selector), tuple(stages))
        if stage := _STRING_STAGE.match(query, pos):
            key, op, literal = stage.groups()
            comparison = Comparison(key, op, _string(literal, query))
        elif stage := _NUMBER_STAGE.match(query, pos):
            key, op, number = stage.groups()
            comparison = Comparison(key, op, float(number))
        else:
            raise FormError(f"not a label filter stage at {pos}: {query[pos:]!r} in {query}")
        _check_regex(comparison, query)
        stages.append(comparison)
        pos = stage.end()


_UNWRAPPED = ("avg_over_time", "min_over_time", "max_over_time", "sum_over_time")
_METRIC = re.compile(
    rf"\s*(quantile_over_time|{'|'.join(_UNWRAPPED)})\(\s*(?:({_NUMBER})\s*,\s*)?"
    rf"(.*?)\s*\|\s*unwrap\s+({_NAME})\s*\[([0-9]+(?:ms|s|m|h|d|w|y))\]\s*\)"
    rf"\s*by\s*\(\s*({_NAME}(?:\s*,\s*{_NAME})*)\s*\)\s*",
    re.DOTALL,
)


@dataclass(frozen=True)
class MetricQuery:
    """A parsed LogQL metric query: an unwrapped range aggregation of a log query."""

    function: str
    quantile: float | None
    records: LogQuery
    unwrap: str
    window: str
    by: tuple[str, ...]


def parse_logql_metric(query: str) -> MetricQuery:
    """Parse ``query`` as the metric subset, or raise ``FormError``."""
    if "$" in query:
        raise FormError(f"a Grafana variable is left: {query}")
    found = _METRIC.fullmatch(query)
    if not found:
        raise FormError(f"not an unwrapped range aggregation of the subset: {query}")
    function, quantile, records, unwrap, window, by = found.groups()
    if (quantile is None) != (function != "quantile_over_time"):
        raise FormError(f"quantile_over_time, and only it, takes a quantile: {query}")
    if quantile is not None and not 0 <= float(quantile) <= 1:
        raise FormError(f"a quantile is between 0 and 1: {query}")
    return MetricQuery(
        function,
        None if quantile is None else float(quantile),
        parse_logql(records),
        unwrap,
        window,
        tuple(label.strip() for label in by.split(",")),
    )


def parse_traceql(query: str) -> Comparison:
    """Parse ``query`` as one span filter, or raise ``FormError``."""
    if "$" in query:
        raise FormError(f"a Grafana variable is left: {query}")
    found = _SPAN_FILTER.fullmatch(query.strip())
    if not found:
        raise FormError(f"not a span filter of the subset: {query}")
    scope, attribute, op, literal = found.groups()
    comparison = Comparison(f"{scope}.{attribute}", op, _string(literal, query))
    _check_regex(comparison, query)
    return comparison
