"""The whole configuration: one field per section, each section from its own module."""

from __future__ import annotations

from pathlib import Path

from .api import ApiSettings
from .base import _Section
from .delivery import DeliverySettings, TlsRptSettings, TransportSettings
from .ingress import IngressSettings, ServerSettings
from .policy import PolicySettings, UsersSettings
from .priorities import PrioritySettings
from .queue import QueueSettings
from .shaping import ShapingSettings
from .shared import DnsSettings, NatsSettings, TelemetrySettings


class Config(_Section):
    server: ServerSettings = ServerSettings()
    nats: NatsSettings = NatsSettings()
    ingress: IngressSettings = IngressSettings()
    policy: PolicySettings = PolicySettings()
    queue: QueueSettings = QueueSettings()
    delivery: DeliverySettings = DeliverySettings()
    dns: DnsSettings = DnsSettings()
    transport: TransportSettings = TransportSettings()
    tlsrpt: TlsRptSettings = TlsRptSettings()
    shaping: ShapingSettings = ShapingSettings()
    priorities: PrioritySettings = PrioritySettings()
    users: UsersSettings = UsersSettings()
    api: ApiSettings = ApiSettings()
    telemetry: TelemetrySettings = TelemetrySettings()

    @property
    def maildir_root(self) -> Path:
        return Path(self.delivery.maildir_root or Path(self.server.state_dir) / "mail")
