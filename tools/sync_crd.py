"""Write the operator's CRD into the Helm chart (``make chart`` runs this).

The chart gets the CRD expanded (no YAML anchors), so any YAML reader takes it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from elemta.operator.schema import crd

TARGET = Path(__file__).resolve().parents[1] / "charts/elemta/crds/elemtaclusters.elemta.io.yaml"


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True


def main() -> None:
    header = "# Generated from operator/elemta/operator/crd.yaml by `make chart`; edit that file.\n"
    body = yaml.dump(crd(), Dumper=_NoAliases, sort_keys=False, width=100)
    TARGET.write_text(header + body, encoding="utf-8")


if __name__ == "__main__":
    main()
