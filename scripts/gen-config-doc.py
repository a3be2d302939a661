#!/usr/bin/env python3
"""Regenerate what is derived from the typed config: configs/site.schema.json, the chart's
values.schema.json (config: checked by the site schema) and docs/configuration.md.

    python scripts/gen-config-doc.py          # write the files
    python scripts/gen-config-doc.py --check  # exit 1 naming each stale file (what CI runs)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from adapter.reference import generated_files  # noqa: E402


def main() -> int:
    """Write (or with --check, compare) every generated file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args()
    stale = []
    for path, text in generated_files(REPO).items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path.relative_to(REPO))
        if not args.check:
            path.write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
