"""The ``elemta`` command: subcommands found through entry points, help for a mail
administrator, and `config check` / `config show`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from elemta.cli.main import cli

from support.stack import ELEMTA

SERVICES = ["api", "delivery", "ingress", "policy", "queue"]


def elemta(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, with a clean environment (no ELEMTA_* of ours)."""
    return subprocess.run(
        [ELEMTA, *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
    )


def test_the_installed_command_lists_its_subcommands() -> None:
    proc = elemta("--help")
    assert proc.returncode == 0, proc.stderr
    for name in ("config", "run", "serve"):
        assert f"\n  {name} " in proc.stdout


def test_serve_lists_every_service_with_a_one_line_summary() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    listed = result.output.split("Commands:", 1)[1]
    for name in SERVICES:
        assert f"\n  {name} " in listed
    assert "the SMTP server that takes mail in" in listed


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_explains_itself_and_its_config_option(service: str) -> None:
    result = CliRunner().invoke(cli, ["serve", service, "--help"])
    assert result.exit_code == 0, result.output
    assert f"serve {service} [OPTIONS]" in result.output
    assert "DESCRIPTION" in result.output  # the man-page header of the service
    assert "--config FILE" in result.output
    assert "ELEMTA_CONFIG" in result.output


def test_an_unknown_service_is_a_usage_error_naming_the_choices() -> None:
    result = CliRunner().invoke(cli, ["serve", "mailer"])
    assert result.exit_code == 2
    assert "No such command 'mailer'" in result.output


def _third_party(tmp_path: Path, target: str) -> Path:
    """A package installed beside Elemta that adds `elemta hello` (an entry point)."""
    site = tmp_path / "site"
    dist = site / "elemta_hello-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: elemta-hello\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[elemta.commands]\nhello = {target}\n")
    (site / "elemta_hello.py").write_text(
        "import click\n"
        "@click.command()\n"
        "@click.argument('name')\n"
        "def hello(name):\n"
        "    '''Greet a postmaster.'''\n"
        "    click.echo(f'hello {name}')\n"
    )
    return site


def test_a_third_party_package_adds_a_subcommand_through_the_entry_point_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(_third_party(tmp_path, "elemta_hello:hello")))
    runner = CliRunner()
    listing = runner.invoke(cli, ["--help"])
    assert "hello" in listing.output and "Greet a postmaster." in listing.output
    result = runner.invoke(cli, ["hello", "postmaster"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello postmaster\n"


def test_a_broken_third_party_command_breaks_only_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(_third_party(tmp_path, "elemta_hello:missing")))
    runner = CliRunner()
    listing = runner.invoke(cli, ["--help"])
    assert listing.exit_code == 0
    assert "unavailable" in listing.output
    result = runner.invoke(cli, ["hello", "x"])
    assert result.exit_code == 1
    assert "cannot load elemta_hello:missing" in result.output
    assert runner.invoke(cli, ["config", "check"], env={"ELEMTA_CONFIG": ""}).exit_code == 0


def test_config_check_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "elemta.toml"
    path.write_text('[server]\nhostname = "mx.example.org"\n')
    proc = elemta("config", "check", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout


def test_config_check_exits_78_naming_the_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "elemta.toml"
    path.write_text("[delivery]\nconcurrency = 0\n")
    proc = elemta("config", "check", "--config", str(path))
    assert proc.returncode == 78
    assert "delivery.concurrency" in proc.stderr


def test_config_check_names_a_bad_environment_variable() -> None:
    proc = elemta("config", "check", env={"ELEMTA_QUEUE_LIFETIME": "forever"})
    assert proc.returncode == 78
    assert "queue.lifetime" in proc.stderr


def test_config_show_prints_the_effective_configuration_with_passwords_hidden(
    tmp_path: Path,
) -> None:
    path = tmp_path / "elemta.toml"
    path.write_text('[server]\nhostname = "mx.example.org"\n')
    proc = elemta(
        "config",
        "show",
        "--config",
        str(path),
        env={"ELEMTA_NATS_URL": "nats://elemta:s3cret@nats.internal:4222"},
    )
    assert proc.returncode == 0, proc.stderr
    assert 'hostname = "mx.example.org"' in proc.stdout
    assert 'url = "nats://elemta:***@nats.internal:4222"' in proc.stdout
    assert "s3cret" not in proc.stdout
    import tomllib

    assert tomllib.loads(proc.stdout)["server"]["hostname"] == "mx.example.org"


def test_config_show_non_default_lists_only_what_was_changed() -> None:
    result = CliRunner().invoke(
        cli,
        ["config", "show", "-n"],
        env={"ELEMTA_CONFIG": "", "ELEMTA_DELIVERY_CONCURRENCY": "8"},
    )
    assert result.exit_code == 0, result.output
    assert result.output == "[delivery]\nconcurrency = 8\n"


def test_python_m_elemta_cli_is_the_same_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "elemta.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ingress" in proc.stdout
