"""The Dockerfile and the Docker-free build (tools/image) describe the same image."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
BUILD = (ROOT / "tools/image/build.sh").read_text()


def test_image_runs_elemta_as_a_non_root_user() -> None:
    assert re.search(r"^USER 10001:10001$", DOCKERFILE, re.M)
    assert 'ENTRYPOINT ["/opt/elemta/bin/elemta"]' in DOCKERFILE
    assert "--config.user 10001:10001" in BUILD
    assert "--config.entrypoint /opt/elemta/bin/elemta" in BUILD


def test_both_recipes_install_the_same_debian_packages_and_venv() -> None:
    # The last apt-get install is the final stage's: what the image holds.
    final = re.findall(r"--no-install-recommends ([^\n]+?) \\", DOCKERFILE)[-1]
    for package in final.split():
        assert package in BUILD, package
    for step in [
        "--no-index --no-compile --find-links",
        "compileall -q /opt/elemta/lib",
        "pip uninstall -q -y pip setuptools",
        "useradd -u 10001 -g 10001",
    ]:
        assert step in DOCKERFILE and step in BUILD, step


def test_image_exposes_the_unprivileged_smtp_and_api_ports() -> None:
    assert "EXPOSE 2525 2587 2465 8025" in DOCKERFILE
    for port in (2525, 2587, 2465, 8025):
        assert f"--config.exposedports {port}/tcp" in BUILD
