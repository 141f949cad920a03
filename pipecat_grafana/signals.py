"""Whether SIGTERM would kill the bot's process mid-call, and what to do about it.

SIGTERM is how ``docker stop``, Kubernetes, systemd and a platform scaling down end a
process. With Python's default disposition it kills the process on the spot: no
``CancelFrame`` reaches the pipelines, so the calls in progress log no summary, send no
summary record and are never counted as ended, and ``atexit`` does not run. Pipecat's
``WorkerRunner`` handles SIGTERM only when asked (``handle_sigterm=True``).

The package installs no signal handler in a user's process (the process's signals are
the application's, or its server's); it says once per process, when a call starts, what
to pass to Pipecat.
"""

import signal

from pipecat_grafana.notices import warn_once

NOTICE = (
    "SIGTERM (docker stop, Kubernetes, systemd) would end this process on the spot: the "
    "calls in progress would log no summary and export nothing more. Run the pipeline "
    "with WorkerRunner(handle_sigterm=True) (from the main thread), so that SIGTERM "
    "cancels the calls as Ctrl-C does. (logged once)"
)


def sigterm_kills() -> bool:
    """Whether SIGTERM has its default disposition: no handler, Python's or the event loop's.

    ``loop.add_signal_handler`` installs a Python-level handler too, so one check covers
    both; an ignored SIGTERM (``SIG_IGN``) does not kill.
    """
    sigterm = getattr(signal, "SIGTERM", None)
    return sigterm is not None and signal.getsignal(sigterm) == signal.SIG_DFL


def warn_if_sigterm_kills() -> None:
    """Say once per process what to pass to Pipecat, if SIGTERM would kill the process."""
    if sigterm_kills():
        warn_once("sigterm", NOTICE)
