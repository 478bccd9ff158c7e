"""Configuration: the model, one section per part of the system.

Every service reads the same configuration and takes the sections it needs.
Values are typed and validated at start-up; a bad file or value raises
:class:`ConfigError` naming the key and the reason, and the service stops before
it binds a port. With no file at all the embedded defaults run the whole system
on localhost. Where values come from (a TOML file, ``ELEMTA_<SECTION>_<KEY>``
variables, ``*_FILE`` variables and a secrets directory) is
:mod:`elemta.common.settings`.

A new key is a field of its section with a default and a ``description``, and a
line in ``elemta.example.toml``; it is settable from the environment at once.
A new section is a ``_Section`` subclass and a field of :class:`Config`; its name
must not contain ``_`` (the variable ``ELEMTA_<SECTION>_<KEY>`` splits at the
first ``_`` after the prefix).

The models live in one module per part of the system and are imported from here
(``from elemta.common.config import Config``), wherever they are defined:
:mod:`~.base` (``_Section``, ``Secret``, :class:`ConfigError`), :mod:`~.routes`
(routes and ``host:port``), :mod:`~.shared` (nats, dns, telemetry),
:mod:`~.ingress` (server, ingress), :mod:`~.policy` (policy, users),
:mod:`~.queue`, :mod:`~.delivery` (delivery, transport, tlsrpt), :mod:`~.shaping`,
:mod:`~.priorities`, :mod:`~.api`, and :mod:`~.model` (:class:`Config`, which
composes them). A new section goes in the module of its part and is re-exported
here.
"""

from __future__ import annotations

from .api import ApiSettings
from .base import ConfigError, Secret
from .base import Listen as Listen
from .delivery import TLS_LEVELS as TLS_LEVELS
from .delivery import DeliverySettings, RelaySettings, TlsRptSettings, TransportSettings
from .ingress import IngressSettings, ListenerSettings, ServerSettings
from .model import Config
from .policy import DkimKey, MilterSettings, PluginSettings, PolicySettings, UsersSettings
from .priorities import PRIORITY_MAX as PRIORITY_MAX
from .priorities import PRIORITY_MIN as PRIORITY_MIN
from .priorities import PrioritySettings
from .queue import QueueSettings
from .routes import Route, parse_route
from .routes import split_hostport as split_hostport
from .shaping import ProviderRule, ShapingRule, ShapingSettings
from .shared import DnsSettings, NatsSettings, TelemetrySettings

__all__ = [
    "ApiSettings",
    "DkimKey",
    "PluginSettings",
    "Config",
    "ConfigError",
    "DeliverySettings",
    "DnsSettings",
    "IngressSettings",
    "ListenerSettings",
    "MilterSettings",
    "NatsSettings",
    "PolicySettings",
    "PrioritySettings",
    "QueueSettings",
    "RelaySettings",
    "Route",
    "ProviderRule",
    "ShapingRule",
    "ShapingSettings",
    "ServerSettings",
    "TelemetrySettings",
    "TlsRptSettings",
    "UsersSettings",
    "TransportSettings",
    "load_config",
    "parse_route",
    "redacted",
    "Secret",
]


# Loading (file, environment, secrets) lives in elemta.common.settings; imported
# last because it builds on the models above.
from ..settings import load_config, redacted  # noqa: E402
