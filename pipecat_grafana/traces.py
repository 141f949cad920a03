"""Pipecat's own traces, sent where the metrics go: what happened in each call, turn by turn.

Pipecat traces a call when its worker runs with ``enable_tracing=True``: a
``conversation`` span (attribute ``conversation.id``), a ``turn`` span per turn
and ``stt``/``llm``/``tts`` spans under it. Its spans come from the *global*
tracer provider, so when the application asks for traces
(``PIPECAT_GRAFANA_TRACES=true`` or ``traces=True``) and has not installed a
provider itself, this module installs one: the one place this package sets a
global provider, and only because the application asked. It is built with the
metrics' resource (Pipecat's ``setup_tracing`` would give the spans another
``service.instance.id``) and an OTLP/HTTP span exporter with the metrics'
credentials, batched on the SDK's own thread, off the event loop. An
application's own provider is used as it is.

Pipecat's spans carry the conversation's words (the STT's ``transcript``, the LLM's
``input`` and ``output`` messages and system prompt, the TTS's ``text``). The spans this
module sends leave those attributes out (``WORD_ATTRIBUTES``): the words leave the process
only in the turn records, when the application asks for them, through its ``redact``.
"""

import threading
from collections.abc import Sequence

from loguru import logger
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from pipecat_grafana import runtime
from pipecat_grafana.config import ExportConfig
from pipecat_grafana.otlp import FailureLog, OutcomeSession, build_span_client


class _Tracing:
    """The tracer provider this package installed, if any (a runtime part).

    With the thread that sends a call's spans soon after it ends.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.installed: TracerProvider | None = None  # under lock
        self.flush_timeout_s = 5.0
        self.wake = threading.Event()
        self.flusher: threading.Thread | None = None  # under lock

    def after_fork_in_child(self) -> None:
        # The SDK's span processor restarts its own thread in the child; ours is gone.
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.flusher = None


TRACING = runtime.own(_Tracing())


def ensure_tracing(config: ExportConfig, resource: Resource) -> TracerProvider | None:
    """Install the tracer provider Pipecat's spans go through, once per process.

    Returns:
        The provider this package installed (now or before), or ``None`` when the
        application installed its own, which is then used as it is.
    """
    with TRACING.lock:
        if TRACING.installed is not None:
            return TRACING.installed
        current = trace.get_tracer_provider()
        if not isinstance(current, trace.ProxyTracerProvider):
            logger.info(
                "pipecat-grafana: tracing uses the tracer provider the application installed "
                f"({type(current).__name__}); its spans go where that provider sends them"
            )
            return None
        session = OutcomeSession()
        endpoint = str(config.traces_endpoint)
        exporter = _HealthyExporter(
            build_span_client(endpoint, config, session),
            FailureLog(endpoint, session, signal="traces"),
        )
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        provider.add_span_processor(
            BatchSpanProcessor(exporter, export_timeout_millis=config.flush_timeout_s * 1000)
        )
        trace.set_tracer_provider(provider)
        TRACING.installed = provider
        TRACING.flush_timeout_s = config.flush_timeout_s
        logger.info(f"pipecat-grafana: Pipecat's traces go to {endpoint}")
        return provider


def request_flush() -> None:
    """Send the spans ended so far soon, on a thread of their own (at a call's end)."""
    with TRACING.lock:
        if TRACING.installed is None:
            return
        if TRACING.flusher is None:
            TRACING.flusher = threading.Thread(
                target=_flush_loop, name="pipecat-grafana-traces", daemon=True
            )
            TRACING.flusher.start()
    TRACING.wake.set()


def _flush_loop() -> None:
    while True:
        TRACING.wake.wait()
        TRACING.wake.clear()
        try:
            flush(TRACING.flush_timeout_s)
        except Exception as e:  # the SDK contains export failures; this is a bug of ours
            logger.error(f"pipecat-grafana: sending spans failed: {type(e).__name__}: {e}")


def flush(timeout_s: float) -> None:
    """Send the spans ended so far."""
    provider = TRACING.installed
    if provider is not None:
        provider.force_flush(timeout_millis=int(timeout_s * 1000))


def shutdown(timeout_s: float) -> None:
    """Send what is left; the provider stays installed (a global can be set only once)."""
    flush(timeout_s)


WORD_ATTRIBUTES = frozenset(
    {
        "text",
        "transcript",
        "input",
        "output",
        "text_output",
        "gen_ai.system_instructions",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
    }
)
"""Attributes of Pipecat's spans that hold what was said or written in the call."""


def without_words(span: ReadableSpan) -> ReadableSpan:
    """``span`` without its ``WORD_ATTRIBUTES`` (the same span when it has none)."""
    attributes = span.attributes or {}
    if not WORD_ATTRIBUTES.intersection(attributes):
        return span
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes={k: v for k, v in attributes.items() if k not in WORD_ATTRIBUTES},
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class _HealthyExporter(SpanExporter):
    """The OTLP client, with its failures said once in plain words."""

    def __init__(self, client: SpanExporter, health: FailureLog):
        self._client = client
        self._health = health

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._health.unserved:
            return SpanExportResult.SUCCESS  # no traces here: off, said once
        spans = [without_words(span) for span in spans]
        with self._health as health:
            result = self._client.export(spans)
        ok = health.report(result is SpanExportResult.SUCCESS) or health.unserved
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._client.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
