"""Evaluate PromQL with promtool on histograms in either form, built from real OTLP points.

Native histograms need no Mimir here: ``promtool test rules`` (2.53 or later) reads them in its
series notation, ``{{schema:3 count:12 sum:4021.5 buckets:[1 0 2] offset:57}}``. This module
turns what ``tests/otlp_receiver.py`` decoded, an OTLP exponential histogram point, into that
notation (``native``), and an explicit-bucket point into the classic ``_bucket``, ``_count``
and ``_sum`` series a backend makes of it (``classic``). ``evaluate`` runs queries and alert
rules over such series and reads back what promtool computed: each query is asked for a
result it cannot have, so that promtool prints what it got.

The two bucket numberings differ by one: OTLP's bucket ``k`` holds ``(base**k, base**(k+1)]``,
Prometheus's bucket ``i`` holds ``(base**(i-1), base**i]`` (both with ``base = 2**2**-scale``
and the scale as the schema), so Prometheus's offset is OTLP's plus one, on either side of zero
(as Mimir's OTLP translation does it).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.otlp_receiver import ExponentialBuckets, Point

INTERVAL = "15s"
STEPS = 40  # 10 minutes of samples at INTERVAL
EVAL_TIME = "10m"
# Prometheus's native histogram schemas: a point at a finer scale must be downscaled first.
SCHEMAS = range(-4, 9)

Labels = frozenset[tuple[str, str]]


def _label_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", key)


def labels_of(point: Point) -> dict[str, str]:
    """The labels a backend stores ``point`` with: its attributes, ``job`` and ``instance``.

    As Grafana Cloud (Mimir) does: ``service.name`` becomes ``job``, ``service.instance.id``
    becomes ``instance``, dots in attribute names become underscores.
    """
    labels = {_label_name(key): str(value) for key, value in point.attributes.items()}
    labels["job"] = str(point.resource["service.name"])
    labels["instance"] = str(point.resource.get("service.instance.id", ""))
    return labels


def prometheus_name(point: Point) -> str:
    """The Prometheus name of ``point``'s metric: ``voice.ttfb.milliseconds`` ->
    ``voice_ttfb_milliseconds`` (the contract puts the unit in the name already)."""
    return _label_name(point.name)


def _buckets(buckets: ExponentialBuckets | None, counts_key: str, offset_key: str) -> list[str]:
    if buckets is None or not any(buckets.counts):
        return []
    counts = " ".join(str(count) for count in buckets.counts)
    return [f"{counts_key}:[{counts}]", f"{offset_key}:{buckets.offset + 1}"]


def native(point: Point) -> str:
    """``point``, an OTLP exponential histogram point, in promtool's native histogram notation.

    Raises:
        ValueError: ``point`` is not an exponential histogram point, or its scale is finer
            than Prometheus keeps (schema 8).
    """
    if point.kind != "exponential_histogram" or point.scale is None:
        raise ValueError(f"{point.name}: not an exponential histogram point ({point.kind})")
    if point.scale not in SCHEMAS:
        raise ValueError(f"{point.name}: scale {point.scale} is outside Prometheus's {SCHEMAS}")
    parts = [f"schema:{point.scale}", f"count:{point.value:g}", f"sum:{point.sum!r}"]
    if point.zero_count:
        parts.append(f"z_bucket:{point.zero_count}")
    if point.zero_threshold:
        parts.append(f"z_bucket_w:{point.zero_threshold!r}")
    parts += _buckets(point.positive, "buckets", "offset")
    parts += _buckets(point.negative, "n_buckets", "n_offset")
    return "{{" + " ".join(parts) + "}}"


def _series_text(name: str, labels: Mapping[str, str]) -> str:
    inner = ", ".join(f"{key}={json.dumps(value)}" for key, value in sorted(labels.items()))
    return f"{name}{{{inner}}}"


@dataclass(frozen=True)
class Series:
    """One input series of a promtool test: its selector text and its values."""

    series: str
    values: str


def growing_native(point: Point, labels: Mapping[str, str]) -> Series:
    """A native series that starts at zero and grows by ``point`` at every step.

    Every window then holds ``point``'s distribution: its quantiles are ``point``'s.
    """
    zero = f"{{{{schema:{point.scale} count:0 sum:0}}}}"
    return Series(_series_text(prometheus_name(point), labels), f"{zero}+{native(point)}x{STEPS}")


def growing_classic(point: Point, labels: Mapping[str, str]) -> list[Series]:
    """The classic series of ``point``, an explicit-bucket point, growing likewise.

    Raises:
        ValueError: ``point`` is not an explicit-bucket histogram point.
    """
    if point.kind != "histogram":
        raise ValueError(f"{point.name}: not an explicit-bucket histogram point ({point.kind})")
    name = prometheus_name(point)
    cumulative = 0
    out = []
    for bound, count in zip(
        (*point.explicit_bounds, float("inf")), point.bucket_counts, strict=True
    ):
        cumulative += count
        le = "+Inf" if bound == float("inf") else f"{bound:g}"
        out.append(
            Series(_series_text(f"{name}_bucket", {**labels, "le": le}), f"0+{cumulative}x{STEPS}")
        )
    out.append(Series(_series_text(f"{name}_count", labels), f"0+{point.value:g}x{STEPS}"))
    out.append(Series(_series_text(f"{name}_sum", labels), f"0+{point.sum!r}x{STEPS}"))
    return out


# --------------------------------------------------------------------------------------------
# Running promtool

_NEVER = "promtool_native_never"
"""A label no result has: every test fails, so promtool prints what it got."""
_RESULT = re.compile(r"(\{[^{}]*\}) (\S+?)(?:, (?=\{)|$)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _labels(text: str) -> Labels:
    return frozenset((key, json.loads(f'"{value}"')) for key, value in _LABEL.findall(text))


@dataclass
class Evaluation:
    """What promtool computed at ``EVAL_TIME``: each query's samples, each alert's firings."""

    samples: dict[str, dict[Labels, float]]
    firing: dict[str, set[Labels]]


def evaluate(
    promtool: Path,
    workdir: Path,
    series: Iterable[Series],
    queries: Iterable[str],
    rules: Mapping[str, Any] | None = None,
) -> Evaluation:
    """Run ``queries`` and the alerts of ``rules`` over ``series`` with ``promtool test rules``.

    Args:
        promtool: The promtool binary (2.53 or later).
        workdir: A directory for the test and rule files.
        series: The input series.
        queries: PromQL queries, evaluated at ``EVAL_TIME``.
        rules: A rule file (``{"groups": [...]}``) whose alerts are evaluated at
            ``EVAL_TIME``, their ``for`` included.

    Returns:
        The samples of each query (by its text) and the labels of each alert's firings (by
        its name), ``alertname`` and ``severity`` included.

    Raises:
        AssertionError: promtool failed otherwise than by the results it was asked for.
    """
    queries = list(dict.fromkeys(queries))
    alert_names = [
        rule["alert"] for group in (rules or {}).get("groups", []) for rule in group["rules"]
    ]
    rule_file = workdir / "rules.yml"
    rule_file.write_text(yaml.safe_dump(dict(rules or {"groups": []}), width=10_000))
    never = {"labels": f'{{{_NEVER}="1"}}', "value": 0}
    test = {
        "rule_files": [rule_file.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": INTERVAL,
                "input_series": [{"series": s.series, "values": s.values} for s in series],
                "alert_rule_test": [
                    {
                        "eval_time": EVAL_TIME,
                        "alertname": name,
                        "exp_alerts": [{"exp_labels": {_NEVER: "1"}}],
                    }
                    for name in alert_names
                ],
                "promql_expr_test": [
                    {"expr": query, "eval_time": EVAL_TIME, "exp_samples": [never]}
                    for query in queries
                ],
            }
        ],
    }
    test_file = workdir / "test.yml"
    test_file.write_text(yaml.safe_dump(test, width=10_000))
    result = subprocess.run(
        [str(promtool), "test", "rules", test_file.name],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return _parse(result.stdout + result.stderr, queries, alert_names)


def _parse(output: str, queries: list[str], alert_names: list[str]) -> Evaluation:
    samples: dict[str, dict[Labels, float]] = {}
    firing: dict[str, set[Labels]] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if expr := re.match(r'\s+expr: (".*"), time: ', line):
            query = json.loads(expr.group(1))
            got = next(text for text in lines[i + 1 : i + 4] if text.strip().startswith("got:"))
            found = _RESULT.findall(got.split("got:", 1)[1].strip())
            samples[query] = {_labels(labels): float(value) for labels, value in found}
        elif alert := re.match(r"\s+alertname: (\w+), time: ", line):
            got = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("got:"))
            fired = set()
            for text in lines[got:]:
                if labels := re.match(r"\s+Labels:(\{.*\})$", text):
                    fired.add(_labels(labels.group(1)))
                if text.strip().endswith("]"):
                    break
            firing[alert.group(1)] = fired
    missing = [q for q in queries if q not in samples] + [a for a in alert_names if a not in firing]
    assert not missing, f"promtool did not evaluate {missing}:\n{output}"
    return Evaluation(samples, firing)
