"""OpenTelemetry tracing for every service: one trace per client operation.

The exporter is chosen by configuration: `otlp` (to an OpenTelemetry collector;
OTEL_EXPORTER_OTLP_ENDPOINT says where), `console`, or `none` (the default: no
provider, every span a no-op). Context crosses the multiplexed client stream in
each request's `traceparent` field, since one stream carries many operations.
"""

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

EXPORTERS = ("none", "console", "otlp")
_propagator = TraceContextTextMapPropagator()
_enabled = False


def configure(service: str, exporter: str = "none",
              span_exporter: SpanExporter | None = None) -> None:
    """Install a tracer provider. `span_exporter` (tests: an in-memory one) wins."""
    global _enabled
    if exporter == "none" and span_exporter is None:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if span_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    elif exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        raise ValueError(f"unknown trace exporter {exporter!r}: use one of {EXPORTERS}")
    trace.set_tracer_provider(provider)
    _enabled = True


def enabled() -> bool:
    """Spans cost something to build: callers skip the optional ones when off."""
    return _enabled


def tracer() -> trace.Tracer:
    return trace.get_tracer("mooseng")


def inject() -> str:
    """The current span as a W3C traceparent ("" when not tracing)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", "")


def extract(traceparent: str) -> otel_context.Context:
    return _propagator.extract({"traceparent": traceparent} if traceparent else {})
