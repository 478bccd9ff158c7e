"""OpenTelemetry set-up and context carriers, so that one message is one trace.

Context crosses process boundaries in two carriers: gRPC metadata (ingress ->
policy) and NATS message headers (ingress -> queue -> delivery -> queue), both in
W3C ``traceparent``/``tracestate`` form. The queue stores the carrier of the
original message so that retries and bounces hours later join the same trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased

from .config import TelemetrySettings

__all__ = [
    "context_from_headers",
    "context_from_metadata",
    "current_trace_id",
    "headers_with_context",
    "metadata_with_context",
    "setup_tracing",
    "shutdown_tracing",
    "tracer",
]

_provider: TracerProvider | None = None


def setup_tracing(
    service: str, settings: TelemetrySettings, exporter: SpanExporter | None = None
) -> None:
    """Install a tracer provider; spans are exported only when there is somewhere to send them."""
    global _provider
    resource = Resource.create({"service.name": f"elemta-{service}", "service.namespace": "elemta"})
    if exporter is None and settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True)
    # With nowhere to send spans, record none: spans still get trace and span ids,
    # so context still travels and logs still carry trace_id, but no attributes
    # or events are kept for each message.
    sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio)) if exporter else ALWAYS_OFF
    provider = TracerProvider(resource=resource, sampler=sampler)
    if exporter is not None:
        provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=500, max_export_batch_size=512)
        )
    trace.set_tracer_provider(provider)
    _provider = provider


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def headers_with_context(
    headers: dict[str, str] | None = None, ctx: Context | None = None
) -> dict[str, str]:
    """Return ``headers`` plus the trace context of ``ctx`` (default: the current one)."""
    out = dict(headers or {})
    inject(out, context=ctx)
    return out


def context_from_headers(headers: Mapping[str, str] | None) -> Context:
    return extract(dict(headers or {}))


def metadata_with_context(ctx: Context | None = None) -> list[tuple[str, str]]:
    carrier: dict[str, str] = {}
    inject(carrier, context=ctx)
    return list(carrier.items())


def context_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> Context:
    carrier = {k: v if isinstance(v, str) else v.decode() for k, v in (metadata or [])}
    return extract(carrier)


def attach(ctx: Context) -> object:
    return otel_context.attach(ctx)


def detach(token: object) -> None:
    otel_context.detach(token)  # type: ignore[arg-type]
