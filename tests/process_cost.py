"""What one bot process serving one call costs on Grafana Cloud, from what a receiver got.

Pipecat Cloud and per-room runners start a process per call, and each process has its
own ``service.instance.id``: every series it sends is a new series, active for 20
minutes after its last point. ``run_call_process`` runs the offline call
(``pipecat-grafana demo``) in a fresh process against a real OTLP receiver and
``ProcessCost`` counts what a Prometheus-style backend (Grafana Cloud's Mimir) makes
of its points: a classic histogram point is one series per bucket (``+Inf`` included)
plus ``_sum`` and ``_count``; an exponential one is one native-histogram series whose
buckets Mimir also counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipecat_grafana import instruments as m
from tests.otlp_receiver import OtlpReceiver, Point

ROOT = Path(__file__).resolve().parent.parent
SEED = 7
COMMAND = ("-m", "pipecat_grafana.cli", "demo", "--turns", "8", "--speed", "4", "--no-incidents")
"""The offline call issue 18 measures: eight turns at a quarter of the pace, no incidents."""
CALL_TIMEOUT_S = 300  # the call takes under a minute; a hung process fails, never waits
MAX_EMPTY_RUN = 2
"""Mimir's OTLP translation keeps a run of up to two empty buckets between populated ones
as zero buckets of one span; a longer run starts a new span."""


def native_buckets(point: Point) -> int:
    """Buckets Mimir counts for an exponential point: its span lengths, positive and negative.

    The populated buckets plus the empty ones kept inside a span; the zero bucket is not
    a span bucket.
    """
    kept = 0
    for _, counts in (point.positive, point.negative):
        used = [i for i, count in enumerate(counts) if count]
        gaps = (b - a - 1 for a, b in zip(used, used[1:], strict=False))
        kept += len(used) + sum(gap for gap in gaps if gap <= MAX_EMPTY_RUN)
    return kept


def prometheus_series(point: Point) -> list[str]:
    """The Prometheus series names one OTLP point becomes (one sample each)."""
    if point.kind == "histogram":
        buckets = [f"{point.name}_bucket{{le={b}}}" for b in (*point.explicit_bounds, "+Inf")]
        return [*buckets, f"{point.name}_sum", f"{point.name}_count"]
    return [point.name]


@dataclass(frozen=True)
class ProcessCost:
    """What one process sent, as a Prometheus-style backend stores it."""

    series: int
    """Distinct series (a native histogram counts one)."""
    native_histograms: int
    """Of those, native-histogram series."""
    native_buckets: int
    """Buckets of the native histograms' latest points, by Mimir's span rule."""
    samples: int
    """Data points received (a classic histogram point is one per series it becomes)."""
    call_seconds: float
    """The call's length, from its ``voice.session.duration.seconds`` point."""

    @classmethod
    def of(cls, points: list[Point]) -> ProcessCost:
        """Count the series, samples and native buckets of one process's points."""
        series: set[tuple[str, frozenset]] = set()
        latest_native: dict[tuple[str, frozenset], Point] = {}
        samples, durations = 0, []
        for point in points:
            key = frozenset(point.attributes.items())
            names = prometheus_series(point)
            series.update((name, key) for name in names)
            samples += len(names)
            if point.kind == "exponential_histogram":
                latest = latest_native.get((point.name, key))
                if latest is None or point.time_unix_nano >= latest.time_unix_nano:
                    latest_native[(point.name, key)] = point
            if point.name == m.SESSION_DURATION.name and point.value:
                durations.append(point.sum / point.value)
        if len(set(durations)) != 1:
            raise ValueError(f"expected one call's duration, got {sorted(set(durations))}")
        return cls(
            series=len(series),
            native_histograms=len(latest_native),
            native_buckets=sum(native_buckets(p) for p in latest_native.values()),
            samples=samples,
            call_seconds=durations[0],
        )

    @property
    def plain_series(self) -> int:
        """Series that are not native histograms."""
        return self.series - self.native_histograms

    def billable_at(self, bucket_share: float) -> float:
        """Series if each native histogram is billed at ``bucket_share`` of its buckets."""
        return self.plain_series + bucket_share * self.native_buckets

    @property
    def dpm(self) -> float:
        """Data points per minute over the call (its final export included)."""
        return self.samples / (self.call_seconds / 60)


def run_call_process(histograms: str, *, seed: int = SEED, repo: Path = ROOT) -> ProcessCost:
    """Run the offline call in a fresh process of ``repo`` and count what it sent.

    Default settings otherwise: the environment's ``OTEL_*``, ``PIPECAT_*`` and
    ``GRAFANA_*`` variables are left out, the endpoint is a local receiver, and call
    summaries are not sent as logs (they are billed by Loki, not as series).

    Args:
        histograms: ``"classic"`` or ``"native"`` (``PIPECAT_GRAFANA_HISTOGRAMS``).
        seed: The offline call's seed.
        repo: The checkout whose package runs (another commit's, to measure it alike).
    """
    ours = ("OTEL_", "PIPECAT_", "GRAFANA_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    with OtlpReceiver() as receiver:
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            PIPECAT_GRAFANA_HISTOGRAMS=histograms,
            PIPECAT_GRAFANA_LOGS="false",
        )
        command = [sys.executable, *COMMAND, "--seed", str(seed)]
        done = subprocess.run(
            command, cwd=repo, env=env, capture_output=True, text=True, timeout=CALL_TIMEOUT_S
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr}")
        return ProcessCost.of(receiver.points())
