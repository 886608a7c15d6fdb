"""One node's tracing: a TracerProvider of its own, its tracer, its meter and its metrics.

Every node gets its own ``TracerProvider`` (never the global one) whose resource names the
node, so spans from many nodes in one process stay apart. The SDK is imported only when
something consumes spans -- a :class:`~flarelab.tracing.bus.SpanBus`, a trace file, or OTLP
(on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set);
otherwise the tracer is the API's no-op tracer and a node pays next to nothing.

Processor order on the provider: the bus, then the file (both synchronous, so records
arrive in the order spans start and end), then OTLP (batched, on its own thread).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import trio
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.metrics import Meter, MeterProvider
from opentelemetry.trace import Tracer, TracerProvider

from ..errors import LocalProtocolError
from .clock import Clock, ClockedTracer
from .records import short_peer_id
from .spans import LIBP2P_NODE_LABEL, LIBP2P_PEER_ID, NO_TRACER

if TYPE_CHECKING:
    from .bus import SpanBus
    from .metrics import NodeMetrics

__all__ = ["OTLP_ENV_VARS", "SERVICE_NAME", "NodeTracing", "TracingConfig", "otlp_configured"]

SERVICE_NAME: Final = "flarelab"
#: Either of these turns OTLP export on when ``TracingConfig.otlp`` is None.
OTLP_ENV_VARS: Final = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
#: The instrumentation scope of every flarelab span and metric.
SCOPE: Final = "flarelab"


def otlp_configured() -> bool:
    """Return True if the environment names an OTLP endpoint."""
    return any(os.environ.get(name, "").strip() for name in OTLP_ENV_VARS)


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """How one node traces.

    ``label`` names the node in traces ("A", "relay"; default: its short peer id).
    ``enabled=False`` turns everything off. Spans go to ``bus`` (a live
    :class:`~flarelab.tracing.bus.SpanBus`, may be shared by many nodes), to ``trace_file``
    (JSON lines, appended) and to OTLP (``otlp``: True, False, or None = on when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set). ``clock`` stamps spans instead of the wall clock
    (e.g. :class:`~flarelab.tracing.clock.TrioClock` for simulations on MockClock).
    ``meter_provider`` receives the node's metrics; without it metrics go to OTLP when that
    is on, and nowhere otherwise.
    """

    label: str | None = None
    enabled: bool = True
    bus: SpanBus | None = None
    trace_file: str | Path | None = None
    otlp: bool | None = None
    clock: Clock | None = field(default=None, compare=False)
    meter_provider: MeterProvider | None = None

    def __post_init__(self) -> None:
        if self.label is not None and not self.label.strip():
            raise LocalProtocolError("a node label must not be blank")

    def wants_otlp(self) -> bool:
        """Return whether OTLP export is on (resolving ``otlp=None`` from the environment)."""
        if not self.enabled:
            return False
        return otlp_configured() if self.otlp is None else self.otlp

    def wants_spans(self) -> bool:
        """Return whether anything will consume this node's spans."""
        if not self.enabled or _sdk_disabled():
            return False
        return self.bus is not None or self.trace_file is not None or self.wants_otlp()


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


class NodeTracing:
    """The tracer, meter and metrics of one node, and the providers behind them.

    Make it with :meth:`create`; close it with :meth:`shutdown` (or ``with``, or
    ``await aclose()`` from trio). Spans still open at shutdown are not exported: close the
    node's connections first.
    """

    def __init__(
        self,
        *,
        label: str,
        peer_id: str,
        tracer: Tracer,
        provider: TracerProvider,
        meter: Meter,
        meter_provider: MeterProvider | None = None,
        owns_meter_provider: bool = False,
        resource_attributes: dict[str, Any] | None = None,
        batched: bool = False,
    ) -> None:
        self.label = label
        self.peer_id = peer_id
        self.tracer = tracer
        self.provider = provider
        self.meter = meter
        self.meter_provider = meter_provider
        self.resource_attributes: dict[str, Any] = resource_attributes or {}
        self._owns_meter_provider = owns_meter_provider
        self._batched = batched
        self._metrics: NodeMetrics | None = None
        self._closed = False

    @classmethod
    def create(cls, config: TracingConfig, peer_id: str) -> NodeTracing:
        """Build the tracing of the node whose (base58) peer id is ``peer_id``."""
        label = config.label or short_peer_id(peer_id)
        resource_attributes = {
            "service.name": SERVICE_NAME,
            "service.instance.id": peer_id,
            LIBP2P_PEER_ID: peer_id,
            LIBP2P_NODE_LABEL: label,
        }
        otlp = config.wants_otlp() and not _sdk_disabled()
        meter_provider, owns_meter_provider = config.meter_provider, False
        if meter_provider is None and otlp and config.enabled:
            meter_provider, owns_meter_provider = _otlp_meter_provider(resource_attributes), True
        meter = (
            meter_provider.get_meter(SCOPE, _version())
            if meter_provider is not None and config.enabled
            else otel_metrics.NoOpMeter(SCOPE)
        )
        if not config.wants_spans():
            return cls(
                label=label, peer_id=peer_id, tracer=NO_TRACER,
                provider=trace.NoOpTracerProvider(), meter=meter,
                meter_provider=meter_provider, owns_meter_provider=owns_meter_provider,
                resource_attributes=resource_attributes,
            )
        provider = _sdk_provider(config, resource_attributes, otlp)
        tracer: Tracer = provider.get_tracer(SCOPE, _version())
        if config.clock is not None:
            tracer = ClockedTracer(tracer, config.clock)
        return cls(
            label=label, peer_id=peer_id, tracer=tracer, provider=provider, meter=meter,
            meter_provider=meter_provider, owns_meter_provider=owns_meter_provider,
            resource_attributes=resource_attributes, batched=otlp,
        )

    @property
    def enabled(self) -> bool:
        """True when spans are recorded (something consumes them)."""
        return self.tracer is not NO_TRACER

    @property
    def metrics(self) -> NodeMetrics:
        """Return the node's metric families (made on first use)."""
        if self._metrics is None:
            from .metrics import NodeMetrics

            self._metrics = NodeMetrics(self.meter)
        return self._metrics

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything pending now; False if the timeout passed first."""
        ok = True
        owned = (self.provider, self.meter_provider if self._owns_meter_provider else None)
        for provider in owned:
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                ok = bool(flush(timeout_millis)) and ok
        return ok

    def shutdown(self) -> None:
        """Flush and close every exporter and file of this node (a shared bus stays open).

        With OTLP on this waits for the last export (up to the exporter's timeout); from
        trio, prefer :meth:`aclose`, which waits in a worker thread.
        """
        if self._closed:
            return
        self._closed = True
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()
        if self._owns_meter_provider:
            shutdown = getattr(self.meter_provider, "shutdown", None)
            if shutdown is not None:
                shutdown()

    async def aclose(self) -> None:
        """Shut down from trio without blocking it on a network export."""
        if self._batched or self._owns_meter_provider:
            await trio.to_thread.run_sync(self.shutdown)
        else:
            await trio.lowlevel.checkpoint()
            self.shutdown()

    def __enter__(self) -> NodeTracing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"<NodeTracing {self.label} ({short_peer_id(self.peer_id)}) spans {state}>"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flarelab")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return ""


def _sdk_provider(config: TracingConfig, resource_attributes: dict[str, Any], otlp: bool) -> Any:
    """Build the node's SDK TracerProvider with the bus, file and OTLP processors."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from .export import JsonLinesSpanExporter, otlp_processor

    processors: list[Any] = []
    if config.bus is not None:
        processors.append(config.bus)
    if config.trace_file is not None:
        processors.append(SimpleSpanProcessor(JsonLinesSpanExporter(config.trace_file)))
    if otlp:
        processors.append(otlp_processor())  # raises ImportError with the hint if missing
    provider = SdkTracerProvider(
        sampler=ALWAYS_ON,  # the bus and the views need every span
        resource=Resource.create(resource_attributes),
        span_limits=SpanLimits(
            max_attributes=128, max_events=1024, max_event_attributes=32,
            max_attribute_length=4096,
        ),
        meter_provider=otel_metrics.NoOpMeterProvider(),  # no SDK self-metrics
    )
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def _otlp_meter_provider(resource_attributes: dict[str, Any]) -> MeterProvider:
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.resources import Resource

    from .export import otlp_metric_reader

    return SdkMeterProvider(
        metric_readers=[otlp_metric_reader()],
        resource=Resource.create(resource_attributes),
        shutdown_on_exit=True,
    )
