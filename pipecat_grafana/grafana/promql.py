"""The PromQL of the dashboard and the alert rules, built from the metric contract.

Two layers: plain PromQL over a fixed window (``series``, ``aggregate``, ``window_total``,
``window_rate``, ``histogram_quantile``, ``either_quantile``), which the alert rules are
written in, and the dashboard's queries, which add Grafana's filter variables and time ranges
(``selector``, ``range_total``, ``histogram_total``, ``rate``, ``quantile``).

Four things shape the queries:

- Where the service name lands depends on the backend: Grafana Cloud (Mimir) and
  Prometheus's OTLP receiver put ``service.name`` in ``job``, VictoriaMetrics keeps it as
  ``service_name`` (``SERVICE_LABELS``). Grafana interpolates variables anywhere in a query,
  label names included, so the dashboard's ``service_label`` variable (``job`` by default)
  names the label and every selector reads ``{${service_label}=~"([^/]+/)?$service"}``
  (``job`` is ``namespace/name`` when ``service.namespace`` is set). The alert
  rules group by both labels instead: a label missing from a series groups as empty.
- ``call_id`` may be switched off. A regex matcher also matches a missing label, so the
  variables' "All" value is ``.*`` and fleet queries work in both modes.
- Per-call series are short-lived. ``increase()`` extrapolates past the end of a series that
  ends inside its window (Prometheus and Mimir; not VictoriaMetrics), so totals over a window
  use ``max_over_time(x[w]) - min_over_time(x[w])`` per series, which is exact here: every
  cumulative series is exported first with a zero at its start, and never resets (a restarted
  process writes new series). The dashboard uses rates over ``$__rate_interval`` for trends
  only.
- A histogram comes in two forms: classic (``x_bucket{le}``, ``x_count``, ``x_sum``) and native
  (one series ``x``, an OTLP exponential histogram in Mimir), and a fleet may have both for a
  while, even one process (a native export refused, then sent classic). Quantiles read
  ``classic or native`` per group: a native histogram cannot be added to buckets, so a group
  with classic buckets reads those and one with only native histograms reads these. Totals of
  a histogram's count or sum read ``classic or native`` per series, then add up: a process
  counts once, by its classic series if it has both (they count the same things, and the
  classic one since the fallback holds everything), and a fleet half classic, half native
  adds up both halves. VictoriaMetrics has no native histograms and refuses
  ``histogram_count`` and ``histogram_sum``, so the dashboard writes the native half of a
  total on its own line after the ``$native_histograms`` variable: ``or`` reads it, ``#``
  makes it a comment (``NATIVE_READ``, ``NATIVE_SKIP``). Quantiles need no switch: every
  backend runs ``histogram_quantile`` on a native selector, which finds nothing where there
  are none.
"""

import re
from collections.abc import Mapping

from pipecat_grafana import instruments as m
from pipecat_grafana.instruments import InstrumentSpec

__all__ = [
    "ALL",
    "CALL_ID_VAR",
    "INSTANCE_LABELS",
    "MODEL_FILTER",
    "MODEL_VAR",
    "NATIVE_READ",
    "NATIVE_SKIP",
    "NATIVE_VAR",
    "RANGE",
    "RANGE_SECONDS",
    "RATE_INTERVAL",
    "SERVICE_FILTER",
    "SERVICE_LABELS",
    "SERVICE_LABEL_VAR",
    "SERVICE_NAME_REGEX",
    "SERVICE_VAR",
    "USAGE",
    "WITH_MODEL",
    "aggregate",
    "either_quantile",
    "histogram_quantile",
    "histogram_total",
    "quantile",
    "range_total",
    "rate",
    "selector",
    "series",
    "substitute",
    "window_rate",
    "window_total",
]

SERVICE_LABELS = ("job", "service_name")
"""Where ``service.name`` lands: ``job`` on Grafana Cloud (Mimir) and Prometheus's OTLP
receiver, ``service_name`` on VictoriaMetrics and vmagent. The first is the dashboard's
default."""
INSTANCE_LABELS = ("instance", "service_instance_id")
"""Where ``service.instance.id`` (one bot process) lands, likewise."""

USAGE = (m.LLM_TOKENS, m.TTS_CHARACTERS, m.TTS_AUDIO, m.STT_AUDIO)
"""The usage counters."""
WITH_MODEL = frozenset((*m.LATENCY, *USAGE, m.COST))
"""The instruments whose points carry the ``model`` label: the latency histograms, the usage
counters and the cost."""

# The Grafana variables the dashboard's queries use.
SERVICE_LABEL_VAR = "${service_label}"
SERVICE_VAR = "$service"
MODEL_VAR = "$model"
CALL_ID_VAR = "$call_id"
RANGE = "$__range"
RANGE_SECONDS = "$__range_s"
RATE_INTERVAL = "$__rate_interval"
SERVICE_FILTER = f'{SERVICE_LABEL_VAR}=~"([^/]+/)?{SERVICE_VAR}"'
"""The matcher every dashboard selector has: the chosen services, in any namespace.

With ``service.namespace`` set, Grafana Cloud (Mimir) and Prometheus's OTLP receiver make
``job`` of ``namespace/name``, while Loki's ``service_name`` is the bare name. The service
variable lists bare names (``SERVICE_NAME_REGEX``), which this matcher finds behind a
namespace too, so one choice selects the same bots in the Prometheus and the Loki panels."""
SERVICE_NAME_REGEX = "/^(?:[^/]+/)?(.+)$/"
"""The service variable's regex (Grafana's ``/.../`` form): the bare ``service.name`` of a
``job`` value, without the ``namespace/`` before it."""
NATIVE_VAR = "${native_histograms}"
"""Starts the line of a histogram total that reads native histograms: ``NATIVE_READ`` or
``NATIVE_SKIP``."""
NATIVE_READ = "or"
"""``NATIVE_VAR`` on a backend with native histograms (Grafana Cloud, Mimir, Prometheus)."""
NATIVE_SKIP = "#"
"""``NATIVE_VAR`` on VictoriaMetrics, which refuses ``histogram_count``: a comment."""
MODEL_FILTER = f'{m.MODEL}=~"{MODEL_VAR}"'
"""The matcher of the chosen models, on the instruments in ``WITH_MODEL``."""

ALL = ".*"
"""The "All" value of every filter variable: a regex that also matches a missing label."""

# --------------------------------------------------------------------------------------------
# Plain PromQL


def series(spec: InstrumentSpec, suffix: str = "", **matchers: str) -> str:
    """A series selector with equality matchers only, or the bare name without any.

    Args:
        spec: The instrument.
        suffix: ``_bucket``, ``_sum`` or ``_count`` for histograms.
        **matchers: Equality matchers, e.g. ``error_type="rate_limit"``.

    Returns:
        For example ``voice_errors_total{error_type="rate_limit"}``.
    """
    return _selector(spec.prometheus_name + suffix, _equal(matchers))


def aggregate(op: str, by: tuple[str, ...], expr: str) -> str:
    """``op by (labels) (expr)``, or ``op (expr)`` when ``by`` is empty."""
    grouping = f" by ({', '.join(by)})" if by else ""
    return f"{op}{grouping} ({expr})"


def window_total(series: str, window: str, by: tuple[str, ...] = ()) -> str:
    """How much the cumulative ``series`` grew during ``window``, summed by ``by``.

    ``max_over_time - min_over_time`` per series: exact for per-call series that start inside
    the window (each starts with an exported zero and never resets), where ``increase()``
    would extrapolate past the series' last sample on Prometheus and Mimir.
    """
    growth = f"max_over_time({series}[{window}]) - min_over_time({series}[{window}])"
    return aggregate("sum", by, growth)


def window_rate(series: str, window: str, by: tuple[str, ...] = ()) -> str:
    """The per-second rate of the cumulative ``series`` over ``window``, summed by ``by``."""
    return aggregate("sum", by, f"rate({series}[{window}])")


def histogram_quantile(q: float, buckets: str) -> str:
    """The ``q`` quantile of ``buckets``, an expression summed by ``le``."""
    return f"histogram_quantile({q:g}, {buckets})"


def either_quantile(q: float, classic: str, native: str) -> str:
    """The ``q`` quantile of a histogram in either form, per group.

    Args:
        q: The quantile, a fraction.
        classic: The ``_bucket`` series' rates summed by ``le`` and the group's labels.
        native: The native histograms' rates summed by the group's labels alone.

    Returns:
        ``(classic quantile >= 0 or native quantile)``, parenthesised so that a comparison
        applies to both. ``>= 0`` drops a group's NaN: classic processes that saw nothing
        in the window (a fleet moving to native) would otherwise hide the native quantile.
    """
    return f"({histogram_quantile(q, classic)} >= 0 or {histogram_quantile(q, native)})"


# --------------------------------------------------------------------------------------------
# The dashboard's queries: Grafana's filters and time ranges


def selector(spec: InstrumentSpec, suffix: str = "", **matchers: str) -> str:
    """A series selector for ``spec`` with the dashboard's filters.

    Every selector filters by service; ``model`` and ``call_id`` filters are added only to
    instruments that carry those labels, so that choosing a model does not hide the calls
    gauges.

    Args:
        spec: The instrument.
        suffix: ``_bucket``, ``_sum`` or ``_count`` for histograms.
        **matchers: Extra equality matchers, e.g. ``token_type="prompt"``.

    Returns:
        For example ``voice_cost_usd_total{${service_label}=~"$service", model=~"$model"}``.
    """
    parts = [SERVICE_FILTER]
    if spec in WITH_MODEL:
        parts.append(MODEL_FILTER)
    if spec.per_call:
        parts.append(f'{m.CALL_ID}=~"{CALL_ID_VAR}"')
    return _selector(spec.prometheus_name + suffix, parts + _equal(matchers))


def range_total(
    spec: InstrumentSpec, by: tuple[str, ...] = (), suffix: str = "", **matchers: str
) -> str:
    """How much a cumulative instrument grew during the dashboard's range (``window_total``)."""
    return window_total(selector(spec, suffix, **matchers), RANGE, by)


def rate(spec: InstrumentSpec, by: tuple[str, ...] = (), suffix: str = "", **matchers: str) -> str:
    """Per-second rate of a cumulative instrument, summed, for trend panels."""
    return window_rate(selector(spec, suffix, **matchers), RATE_INTERVAL, by)


def histogram_total(spec: InstrumentSpec, field: str, by: tuple[str, ...] = ()) -> str:
    """How much a histogram's ``count`` or ``sum`` grew during the dashboard's range.

    Per series, the classic ``_count`` (or ``_sum``) as ``range_total`` measures it, or else
    the native histogram's: its last value in the range less its value when the range began
    (zero for a series that began inside it, as per-call series do). Then summed by ``by``.
    The native line starts with ``NATIVE_VAR``: ``or``, or a comment on VictoriaMetrics.

    Args:
        spec: The histogram.
        field: ``count`` or ``sum``.
        by: The labels to sum by.

    Returns:
        A multi-line query.
    """
    classic = selector(spec, f"_{field}")
    native = selector(spec)
    function = f"histogram_{field}"
    classic_growth = f"max_over_time({classic}[{RANGE}]) - min_over_time({classic}[{RANGE}])"
    last = f"{function}(last_over_time({native}[{RANGE}]))"
    native_growth = f"{last} - ({function}({native} offset {RANGE}) or {last} * 0)"
    return aggregate("sum", by, f"\n  {classic_growth}\n  {NATIVE_VAR} {native_growth}\n")


def quantile(q: float, spec: InstrumentSpec, by: tuple[str, ...] = (m.PROCESSOR,)) -> str:
    """The ``q`` quantile of a histogram over ``$__rate_interval``, by ``by``, in either form."""
    return either_quantile(q, rate(spec, ("le", *by), "_bucket"), rate(spec, by))


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana's variables in ``expr`` with ``values``, as Grafana does before a query.

    Grafana substitutes text, anywhere (label names included). Tests use this to run the
    dashboard's queries against a database directly: ``$__rate_interval`` and ``$__range``
    become durations (``"1m"``, ``"45s"``), ``$__range_s`` a number of seconds, and the
    filter variables a regex (``.*`` for All).

    Args:
        expr: A query with ``$name`` or ``${name}`` variables.
        values: The value of each variable, by name without ``$``
            (``{"service_label": "job", "__range": "1h", ...}``).

    Returns:
        The query Grafana would send.

    Raises:
        KeyError: A variable of ``expr`` has no value.
    """
    return _VARIABLE.sub(lambda match: values[match.group(1) or match.group(2)], expr)


def _equal(matchers: Mapping[str, str]) -> list[str]:
    return [f'{key}="{value}"' for key, value in matchers.items()]


def _selector(name: str, matchers: list[str]) -> str:
    return f"{name}{{{', '.join(matchers)}}}" if matchers else name
