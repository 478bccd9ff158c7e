"""``elemta serve queue`` (or ``python -m elemta.queue``): run the queue service."""

import elemta.queue
from elemta.cli.service import service_command

command = service_command(
    "queue",
    "elemta.queue.service:QueueService",
    lambda cfg: cfg.queue.http_listen,
    elemta.queue.__doc__,
)

if __name__ == "__main__":
    command.main(prog_name="python -m elemta.queue")
