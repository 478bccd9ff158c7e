"""``elemta serve ingress`` (or ``python -m elemta.ingress``): run the ingress service."""

import elemta.ingress
from elemta.cli.service import service_command

command = service_command(
    "ingress",
    "elemta.ingress.service:IngressService",
    lambda cfg: cfg.ingress.http_listen,
    elemta.ingress.__doc__,
)

if __name__ == "__main__":
    command.main(prog_name="python -m elemta.ingress")
