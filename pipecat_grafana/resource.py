"""The OpenTelemetry resource every series of a process carries.

``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` are read by the SDK;
arguments win over them; ``voice-rag-bot`` is the service name when neither
sets one. Each process has its own ``service.instance.id`` (from the SDK since
1.43, from here before), so two bot processes never write the same series, and a
restarted process starts new series instead of resetting old ones.

A process forked from one that already built its resource (a pre-fork server's
worker) is a new process too: its resources are built again, and it never keeps
an ID its parent used, even one set in ``OTEL_RESOURCE_ATTRIBUTES`` (the SDK's
own providers do the same after a fork).
"""

import functools
import os
import threading
import uuid

from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, Resource

from pipecat_grafana import runtime

DEFAULT_SERVICE_NAME = "voice-rag-bot"


class _InstanceIds:
    """The instance IDs of this process's resources, and of its parents (a runtime part).

    A forked child must use none of its parents' ``service.instance.id``.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.own: set[str] = set()  # under lock
        self.inherited: set[str] = set()  # under lock

    def after_fork_in_child(self) -> None:
        self.lock = threading.Lock()
        self.inherited |= self.own
        self.own = set()
        _resource.cache_clear()
        _new_instance_id.cache_clear()


_IDS = runtime.own(_InstanceIds())


def default_resource(
    service_name: str | None,
    *,
    service_version: str | None = None,
    environment: str | None = None,
) -> Resource:
    """The resource of the process's series, from the arguments and the environment."""
    # The SDK's resource detection takes milliseconds (a thread pool per call):
    # do it once per distinct input, not once per call.
    return _resource(
        service_name,
        service_version,
        environment,
        os.environ.get("OTEL_SERVICE_NAME"),
        os.environ.get("OTEL_RESOURCE_ATTRIBUTES"),
    )


@functools.lru_cache(maxsize=64)
def _resource(
    service_name: str | None,
    service_version: str | None,
    environment: str | None,
    *_environment_inputs: str | None,
) -> Resource:
    attributes: dict[str, str] = {}
    if service_version:
        attributes["service.version"] = service_version
    if environment:
        attributes["deployment.environment.name"] = environment
    resource = Resource.create(attributes)
    name = service_name or resource.attributes.get("service.name", "")
    if not name or str(name).startswith("unknown_service"):
        name = DEFAULT_SERVICE_NAME
    resource = resource.merge(Resource({"service.name": name}))
    with _IDS.lock:
        instance_id = resource.attributes.get(SERVICE_INSTANCE_ID)
        if instance_id is None or instance_id in _IDS.inherited:
            resource = resource.merge(Resource({SERVICE_INSTANCE_ID: _new_instance_id()}))
        _IDS.own.add(str(resource.attributes.get(SERVICE_INSTANCE_ID)))
    return resource


@functools.cache
def _new_instance_id() -> str:
    """One ID for this process: where the SDK gives none, or replacing an inherited one."""
    return str(uuid.uuid4())
