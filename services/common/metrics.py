"""Metrics through OpenTelemetry, exported for Prometheus on an HTTP /metrics endpoint."""

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server

_serving = False


def serving() -> bool:
    """Is anything collecting? Hot paths skip recording when not."""
    return _serving


def serve_metrics(service: str, listen: str) -> None:
    """Publish every meter's instruments at http://LISTEN/metrics."""
    global _serving
    _serving = True
    host, _, port = listen.rpartition(":")
    reader = PrometheusMetricReader()
    metrics.set_meter_provider(MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": service})))
    start_http_server(int(port), addr=host)


def meter() -> metrics.Meter:
    return metrics.get_meter("mooseng")
