"""``elemta serve delivery`` (or ``python -m elemta.delivery``): run the delivery service."""

import elemta.delivery
from elemta.cli.service import service_command

command = service_command(
    "delivery",
    "elemta.delivery.service:DeliveryService",
    lambda cfg: cfg.delivery.http_listen,
    elemta.delivery.__doc__,
)

if __name__ == "__main__":
    command.main(prog_name="python -m elemta.delivery")
