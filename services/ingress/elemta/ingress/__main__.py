"""``elemta serve ingress`` (or ``python -m elemta.ingress``): run the ingress service."""

from elemta.cli.service import service_command

command = service_command("ingress", "elemta.ingress.service:IngressService")

if __name__ == "__main__":
    command.main(prog_name="python -m elemta.ingress")
