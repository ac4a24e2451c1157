"""An OTLP/gRPC endpoint that accepts every export and keeps nothing, for
measuring what telemetry costs the gateway (BENCHMARKS.md, "Telemetry
cost"). Counts what it received and prints the totals every 10 s.

    python3 -m venv /tmp/sink && /tmp/sink/bin/pip install grpcio
    /tmp/sink/bin/python benches/otlp_sink.py 4317

Messages are taken as bytes (no protobuf classes needed): an empty reply is
a valid Export*ServiceResponse."""
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICES = [
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "opentelemetry.proto.collector.trace.v1.TraceService",
]
counts = {name: [0, 0] for name in SERVICES}
lock = threading.Lock()


def handler(service):
    def export(request, _context):
        with lock:
            counts[service][0] += 1
            counts[service][1] += len(request)
        return b""

    return grpc.method_handlers_generic_handler(
        service, {"Export": grpc.unary_unary_rpc_method_handler(export)}
    )


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4317
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers([handler(s) for s in SERVICES])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"OTLP sink on 127.0.0.1:{port}", flush=True)
    while True:
        time.sleep(10)
        with lock:
            summary = ", ".join(
                f"{s.split('.')[-1]}: {n} exports, {b} bytes" for s, (n, b) in counts.items()
            )
        print(summary, flush=True)


if __name__ == "__main__":
    main()
