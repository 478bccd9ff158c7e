"""Policy latency: end-of-DATA checks of a 10 KB DKIM-signed message over gRPC.

Starts a nats-server, a DNS server on loopback serving the sender's SPF, DKIM and
DMARC records, and the policy service as its own process; then calls
``PolicyService/CheckData`` from one client, as ingress does, for a message from
an untrusted address (so SPF, DKIM, ARC and DMARC all run). The first calls warm
the DNS caches; the measured calls print p50/p90/p99 in milliseconds.

    make bench-policy            # or: python bench/policy.py --calls 2000
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import dkim  # noqa: E402
import grpc  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from elemta.rpc.policy.v1 import policy_pb2 as pb  # noqa: E402
from elemta.rpc.policy.v1 import policy_pb2_grpc as pb_grpc  # noqa: E402

from support.dnsserver import DnsServer  # noqa: E402
from support.natsserver import NatsServer  # noqa: E402
from support.stack import Stack  # noqa: E402


def signed_message(size: int) -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    line = b"All work and no play makes Jack a dull boy, " * 2 + b"\r\n"
    body = line * (size // len(line) + 1)
    msg = (
        b"From: Ann <ann@good.test>\r\nTo: bob@local.test\r\nSubject: figures\r\n"
        b"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <b@good.test>\r\n\r\n" + body
    )
    sig = dkim.sign(msg, b"sel", b"good.test", pem)
    return sig + msg, f"v=DKIM1; k=rsa; p={base64.b64encode(pub).decode()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="measured calls")
    parser.add_argument("--warmup", type=int, default=50, help="calls before measuring")
    parser.add_argument("--size", type=int, default=10 * 1024, help="message size, bytes")
    args = parser.parse_args()

    message, key_record = signed_message(args.size)
    with tempfile.TemporaryDirectory(prefix="elemta-policy-bench-") as tmp:
        work = Path(tmp)
        dns = DnsServer()
        dns.start()
        dns.add("good.test", "TXT", '"v=spf1 ip4:192.0.2.0/24 -all"')
        dns.add("_dmarc.good.test", "TXT", '"v=DMARC1; p=reject"')
        chunks = " ".join(f'"{key_record[i : i + 255]}"' for i in range(0, len(key_record), 255))
        dns.add("sel._domainkey.good.test", "TXT", chunks)
        nats = NatsServer(work / "nats")
        nats.start()
        stack = Stack(work / "stack", nats.url, dns.port, {"telemetry": {"log_level": "WARNING"}})
        try:
            stack.start("policy")
            channel = grpc.insecure_channel(stack.config["policy"]["address"])
            stub = pb_grpc.PolicyServiceStub(channel)
            request = pb.CheckDataRequest(
                session=pb.Session(client_ip="192.0.2.10", helo="mail.good.test"),
                sender="ann@good.test",
                recipients=["bob@local.test"],
                message=message,
            )
            first = stub.CheckData(request, timeout=30).verdict
            results = [h.value for h in first.add_headers if h.name == "Authentication-Results"]
            for _ in range(args.warmup):
                stub.CheckData(request, timeout=30)
            times = []
            for _ in range(args.calls):
                started = time.perf_counter()
                stub.CheckData(request, timeout=30)
                times.append((time.perf_counter() - started) * 1000)
        finally:
            stack.stop()
            nats.stop()
            dns.stop()
    times.sort()
    q = statistics.quantiles(times, n=100)
    print(f"policy CheckData, {len(message)} byte DKIM-signed message, warm DNS cache")
    print(f"  verdict: action={pb.Action.Name(first.action)}")
    print(f"  Authentication-Results: {' '.join(results[0].split()) if results else '-'}")
    print(
        f"  {args.calls} calls: p50 {q[49]:.2f} ms  p90 {q[89]:.2f} ms  p99 {q[98]:.2f} ms"
        f"  mean {statistics.fmean(times):.2f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
