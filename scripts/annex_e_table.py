"""Regenerate adapter/stages/annex_e.tsv, PS3.15 Table E.1-1 (the Basic Application Level
Confidentiality Profile and its options), from the machine-readable extraction of the standard
published by Innolitics (github.com/innolitics/dicom-standard, MIT licence,
standard/confidentiality_profile_attributes.json; rev2024b at the time of writing).

    python scripts/annex_e_table.py confidentiality_profile_attributes.json REVISION

The TSV is data from the standard, one row per attribute: the tag (``50XX,XXXX`` style for
repeating groups, ``private`` for the odd groups), the basic profile's action and the action
of each option column that names one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: The standard's option columns (the extraction's keys) -> our option names.
COLUMNS = {
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_longitudinal_full_dates",
    "rtnLongModifDatesOpt": "retain_longitudinal_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}


def main(source: str, revision: str) -> None:
    rows = json.loads(Path(source).read_text(encoding="utf-8"))
    out = Path(__file__).resolve().parent.parent / "adapter" / "stages" / "annex_e.tsv"
    lines = [
        f"# PS3.15 Table E.1-1, DICOM {revision}, via github.com/innolitics/dicom-standard "
        "(MIT); regenerate with scripts/annex_e_table.py",
        "\t".join(["tag", "name", "basic", *COLUMNS.values()]),
    ]
    for row in sorted(rows, key=lambda r: r["id"]):
        tag = row["tag"].strip("()")
        if tag.upper().startswith("GGGG,EEEE"):
            tag = "private"
        name = " ".join(row["name"].split())
        cells = [tag.upper() if tag != "private" else tag, name, row["basicProfile"]]
        cells += [row.get(key, "") for key in COLUMNS]
        lines.append("\t".join(cells))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{out}: {len(rows)} attributes")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
