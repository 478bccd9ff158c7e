"""``elemta serve queue`` (or ``python -m elemta.queue``): run the queue service."""

from elemta.cli.service import service_command

command = service_command("queue", "elemta.queue.service:QueueService")

if __name__ == "__main__":
    command.main(prog_name="python -m elemta.queue")
