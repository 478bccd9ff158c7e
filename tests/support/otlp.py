"""An in-process OTLP/gRPC trace receiver: what the services export, we collect.

It stands where Jaeger's OTLP port would be, so a test can check that the spans
of every service belong to one trace.
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as pb_grpc

from .dnsserver import free_port

__all__ = ["OtlpReceiver", "SpanRecord"]


@dataclass
class SpanRecord:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, str]


class _Collector(pb_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        for rs in request.resource_spans:
            service = next(
                (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"),
                "",
            )
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attrs = {
                        a.key: str(getattr(a.value, a.value.WhichOneof("value")))
                        for a in span.attributes
                        if a.value.WhichOneof("value")
                    }
                    rec = SpanRecord(
                        service,
                        span.name,
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex(),
                        attrs,
                    )
                    with self.receiver.lock:
                        self.receiver.spans.append(rec)
        return pb.ExportTraceServiceResponse()


class OtlpReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list[SpanRecord] = []
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_TraceServiceServicer_to_server(_Collector(self), self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(0)

    def snapshot(self) -> list[SpanRecord]:
        with self.lock:
            return list(self.spans)
