"""The vendored third-party browser code is exactly what web/vendor/README.md records: every file
listed with its package, version, licence and sha256, nothing unlisted, and a licence beside it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "web" / "vendor" / "README.md"
VENDOR_DIRS = (ROOT / "web" / "vendor", ROOT / "tests" / "web" / "vendor")
ROW = re.compile(r"^\|\s*(?P<package>[^|]+?)\s*\|\s*(?P<version>[^|]+?)\s*\|\s*(?P<licence>[^|]+?)\s*\|"
                 r"\s*(?P<file>[^|]+?)\s*\|\s*(?P<sha256>[0-9a-f]{64})\s*\|$")  # fmt: skip


def _rows() -> list[dict[str, str]]:
    return [m.groupdict() for line in TABLE.read_text().splitlines() if (m := ROW.match(line))]


def test_every_vendored_file_is_recorded_with_its_sha256() -> None:
    rows = _rows()
    assert rows, f"no rows parsed from {TABLE}"
    for row in rows:
        path = ROOT / row["file"]
        assert path.is_file(), f"{row['file']} is in the table but not in the repository"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == row["sha256"], f"{row['file']}: sha256 {digest}, the table says {row['sha256']}"
        # The folder is <package>-<version>: the version on the row is the one on disk.
        assert path.parent.name.endswith(f"-{row['version']}"), (
            f"{row['file']} is not in a *-{row['version']} folder"
        )
    recorded = {ROOT / row["file"] for row in rows}
    # Vendored files live in <package>-<version>/ folders; the table and tools beside them are ours.
    on_disk = {p for d in VENDOR_DIRS if d.is_dir() for p in d.glob("*/**/*") if p.is_file()}
    assert on_disk - recorded == set(), f"vendored files missing from the table: {sorted(on_disk - recorded)}"


def test_every_vendored_package_carries_its_licence() -> None:
    folders = {(ROOT / row["file"]).parent for row in _rows()}
    for folder in folders:
        assert any(p.name.upper().startswith(("LICENSE", "LICENCE")) for p in folder.iterdir()), (
            f"{folder.relative_to(ROOT)} has no LICENSE file"
        )


def test_test_only_code_is_not_loaded_by_the_app() -> None:
    """axe-core is for the audit: nothing under web/ loads it (its file or its folder), so it never
    ships in a page."""
    sources = [p for p in (ROOT / "web").rglob("*") if p.suffix in {".html", ".js", ".css"}]
    assert sources
    offenders = [
        str(p.relative_to(ROOT)) for p in sources if re.search(r"axe\.min\.js|vendor/axe-core", p.read_text())
    ]
    assert offenders == [], f"app files that load test-only code: {offenders}"
