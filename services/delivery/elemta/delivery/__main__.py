"""``elemta serve delivery`` (or ``python -m elemta.delivery``): run the delivery service."""

from elemta.cli.service import service_command

command = service_command("delivery", "elemta.delivery.service:DeliveryService")

if __name__ == "__main__":
    command.main(prog_name="python -m elemta.delivery")
