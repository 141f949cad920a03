"""The process's export pipelines: one per configuration, rebuilt after a fork, shut at exit.

Every exporter of a process that shares a configuration and a resource shares one
pipeline, so a process serving a hundred calls runs one export thread, not a hundred.

A process forked after export started (gunicorn's pre-fork workers, ``multiprocessing``'s
``fork`` start method) inherits the parent's pipelines but not their threads. The child
forgets them without a word on the wire, and builds its own on first use, with its own
threads and ``service.instance.id``: the child's series start from zero, as a new
process's would, and nothing of the parent's is sent again.
"""

import atexit
import contextlib
import os
import signal
import sys
import threading
import time
import weakref

from loguru import logger
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

from pipecat_grafana import otlp, runtime
from pipecat_grafana.config import DEFAULT_FLUSH_TIMEOUT_S, ExportConfig
from pipecat_grafana.export.pipeline import ExportPipeline


class _Pipelines:
    """The process's pipelines (a runtime part).

    The shared ones by configuration and resource, and one per application provider.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.shared: dict[tuple[object, ...], ExportPipeline] = {}  # under lock
        self.provided: weakref.WeakKeyDictionary[MeterProvider, ExportPipeline] = (
            weakref.WeakKeyDictionary()
        )  # under lock
        # Set in a forked child whose parent was exporting, until the child exports too.
        self.forked_from: int | None = None  # under lock

    def after_fork_in_child(self) -> None:
        """Leave the parent's pipelines to the parent; build new ones on use."""
        self.lock = threading.Lock()
        # An application's provider goes on in the child as the application set it up: its
        # pipeline has no thread of ours and stays.
        inherited = list(self.shared.values())
        self.shared = {}
        if any(p.config.enabled and not p.closed for p in inherited):
            self.forked_from = os.getppid()
        for pipeline in inherited:
            pipeline.forget_after_fork()


_PIPELINES = runtime.own(_Pipelines())


def shared_pipeline(config: ExportConfig, resource: Resource) -> tuple[ExportPipeline, bool]:
    """The process's pipeline for ``config`` and ``resource``, created on first use.

    Returns:
        The pipeline, and whether this call created it.
    """
    key = (config.key, tuple(sorted(resource.attributes.items())))
    with _PIPELINES.lock:
        pipeline = _PIPELINES.shared.get(key)
        if pipeline is not None and not pipeline.closed:
            return pipeline, False
        pipeline = _PIPELINES.shared[key] = ExportPipeline(config, resource)
        parent = _PIPELINES.forked_from if config.enabled else None
        if parent is not None:
            _PIPELINES.forked_from = None
    if parent is not None:
        logger.info(
            f"pipecat-grafana: metrics export restarted after fork from process {parent}, "
            f"with this process's own threads and service.instance.id "
            f"{resource.attributes.get('service.instance.id')}"
        )
    return pipeline, True


def provider_pipeline(
    meter_provider: MeterProvider, config: ExportConfig, resource: Resource
) -> ExportPipeline:
    """The pipeline recording into an application's provider, one per provider.

    An instrument is created once per provider: a second exporter creating its own
    would get the first one's instrument back, and its callbacks would be ignored.
    """
    with _PIPELINES.lock:
        pipeline = _PIPELINES.provided.get(meter_provider)
        if pipeline is None:
            pipeline = ExportPipeline(config, resource, meter_provider=meter_provider)
            _PIPELINES.provided[meter_provider] = pipeline
        return pipeline


def pipelines() -> list[ExportPipeline]:
    """The process's shared pipelines, as they are now."""
    with _PIPELINES.lock:
        return list(_PIPELINES.shared.values())


def shutdown(timeout_s: float | None = None) -> None:
    """Export what is left and stop every pipeline of the process, within ``timeout_s``.

    Registered to run at exit; applications and tests may call it earlier. Whatever the
    endpoints do, it returns within the timeout (by default the longest flush timeout of
    the pipelines), plus the moment it takes to let go of what is left: each signal sends
    on a thread of its own, every request is cut short at the deadline, and the
    Prometheus endpoint, if one runs, waits as long for a scrape to read the calls that
    ended.

    Ctrl-C during the wait ends it at once: what is dropped is said in one line, a second
    Ctrl-C is ignored meanwhile, and the ``KeyboardInterrupt`` goes on to the caller (at
    exit, the process just ends).
    """
    if _shutdown(timeout_s):
        raise KeyboardInterrupt


def _shutdown(timeout_s: float | None, *, at_exit: bool = False) -> bool:
    """``shutdown``; returns whether Ctrl-C interrupted the wait.

    At exit, once interrupted, Ctrl-C stays ignored for the rest of the exit: the process is
    ending, and the other exit handlers must not end it with a traceback either.
    """
    with _PIPELINES.lock:
        closing = list(_PIPELINES.shared.values())
        _PIPELINES.shared.clear()
    if timeout_s is None:
        timeout_s = max((p.config.flush_timeout_s for p in closing), default=None)
    if timeout_s is None:
        timeout_s = DEFAULT_FLUSH_TIMEOUT_S
    deadline = time.monotonic() + timeout_s
    otlp.exit_by(deadline)
    finished = 0
    try:
        with _OneInterrupt(keep_ignoring=at_exit):
            try:
                for pipeline in closing:
                    pipeline.begin_shutdown()
                # Loaded only if pull was asked for.
                scrape = sys.modules.get("pipecat_grafana.scrape")
                if scrape is not None:
                    scrape.stop(max(deadline - time.monotonic(), 0.0))  # it reads these pipelines
                for pipeline in closing:
                    pipeline.finish_shutdown(deadline)
                    finished += 1
            except KeyboardInterrupt:
                # Let go of everything now; each pipeline says what it dropped, and why.
                now = time.monotonic()
                otlp.exit_by(now, interrupted=True)
                left = closing[finished:]
                # A pipeline says what it drops of calls and summaries; with none waiting,
                # what is lost is the series' values since the last export: said here.
                calls_waiting = any(p.config.enabled and p.calls.pending() for p in left)
                for pipeline in left:
                    pipeline.begin_shutdown()  # a no-op for those already begun
                    pipeline.finish_shutdown(now)
                if not calls_waiting and any(p.config.enabled for p in left):
                    logger.warning(
                        "pipecat-grafana: at exit, dropped the values of the process's series "
                        "since its last export: the exit was interrupted (Ctrl-C) before the "
                        "OTLP endpoint answered"
                    )
                return True
        return False
    finally:
        otlp.exit_by(None)


class _OneInterrupt:
    """Within the block, the first Ctrl-C raises ``KeyboardInterrupt`` and later ones do nothing.

    So a second Ctrl-C while the first is handled cannot end the exit with a traceback
    ("Exception ignored in atexit callback"). Only in the main thread (the one signals go
    to), and only over Python's own handler: an application's handler is left alone.
    """

    def __init__(self, *, keep_ignoring: bool = False) -> None:
        self._previous: object = None
        self._interrupted = False
        self._keep_ignoring = keep_ignoring

    def __enter__(self) -> "_OneInterrupt":
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, OSError):  # no signals in this interpreter
                if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                    self._previous = signal.signal(signal.SIGINT, self._on_interrupt)
        return self

    def _on_interrupt(self, signum: int, frame: object) -> None:
        if not self._interrupted:
            self._interrupted = True
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            keep = self._interrupted and self._keep_ignoring
            signal.signal(signal.SIGINT, signal.SIG_IGN if keep else self._previous)  # type: ignore[arg-type]


def _shutdown_at_exit() -> None:
    # An interrupted exit has said what it dropped; the process ends anyway.
    _shutdown(None, at_exit=True)


atexit.register(_shutdown_at_exit)
