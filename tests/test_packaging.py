"""One installable distribution built from the folders of the tree: every service
folder is packaged, typed, runnable through `elemta serve` and kept independent,
and nothing finds Elemta through a search-path variable."""

from __future__ import annotations

import configparser
import subprocess
import tomllib
from importlib.metadata import entry_points

from support.stack import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
WHEEL = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]


def package_folders() -> dict[str, str]:
    """name -> source root of every Elemta component in the tree."""
    found = {"common": "common", "operator": "operator"}
    found.update(
        {p.name: f"services/{p.name}" for p in (ROOT / "services").iterdir() if p.is_dir()}
    )
    return found


def services() -> list[str]:
    names = [p.name for p in (ROOT / "services").iterdir() if (p / "elemta" / p.name).is_dir()]
    if (ROOT / "operator" / "elemta" / "operator").is_dir():
        names.append("operator")
    return sorted(names)


def test_every_source_folder_is_in_the_wheel_and_in_the_editable_install() -> None:
    for root in package_folders().values():
        assert f"{root}/elemta" in WHEEL["only-include"], root
        assert root in WHEEL["sources"], root
        assert root in WHEEL["dev-mode-dirs"], root


def test_every_service_is_an_elemta_serve_entry_point_and_is_installed() -> None:
    declared = PYPROJECT["project"]["entry-points"]["elemta.services"]
    assert sorted(declared) == services()
    installed = {ep.name: ep.value for ep in entry_points(group="elemta.services")}
    for name, target in declared.items():
        assert installed.get(name) == target, f"{name}: run `make install` (stale metadata)"


def test_every_package_is_typed() -> None:
    roots = [ROOT / "common" / "elemta" / p for p in ("common", "cli", "launcher", "rpc")]
    roots += [ROOT / "services" / s / "elemta" / s for s in services() if s != "operator"]
    if "operator" in services():
        roots.append(ROOT / "operator" / "elemta" / "operator")
    for package in roots:
        assert (package / "py.typed").exists(), package


def test_import_linter_keeps_every_service_independent() -> None:
    parser = configparser.ConfigParser()
    parser.read(ROOT / ".importlinter")
    independent = parser["importlinter:contract:services-independent"]["modules"].split()
    assert sorted(independent) == sorted(f"elemta.{s}" for s in services())


def test_nothing_in_the_repository_sets_a_pythonpath() -> None:
    tracked = subprocess.run(
        ["git", "grep", "-l", "-I", "PYTHON" + "PATH", "--", ":!*.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert tracked.returncode in (0, 1), tracked.stderr  # 1: no match
    assert tracked.stdout.split() == []


def test_the_architecture_document_names_every_stream_bucket_and_subject() -> None:
    import elemta.common.names as names

    text = (ROOT / "docs" / "architecture.md").read_text()
    for attr in names.__all__:
        value = getattr(names, attr)
        for name in value if isinstance(value, tuple) else (value,):
            assert name in text, f"{attr} = {name!r} is not in docs/architecture.md"
