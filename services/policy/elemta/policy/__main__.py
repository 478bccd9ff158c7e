"""``elemta serve policy`` (or ``python -m elemta.policy``): run the policy service.

The service re-reads the same configuration file on SIGHUP (plugins and milters):
``PolicyService`` takes the path as ``config_path``.
"""

from elemta.cli.service import service_command

command = service_command("policy", "elemta.policy.service:PolicyService")

if __name__ == "__main__":
    command.main(prog_name="python -m elemta.policy")
