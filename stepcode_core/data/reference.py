"""Reference benchmark data (CRUXEval, REval), obtained the way evaluation harnesses obtain it:
downloaded from the benchmarks' public repositories at pinned commits, each file checked against its
pinned sha256, and kept in a cache folder of the user's. An offline machine imports a folder that
already holds the files (``stepcode data fetch --from DIR``), checked the same way.

Downloading and hash checking are pooch's (the scientific-Python data fetcher: streamed download to
a temp file, moved into place only when the hash matches). This module holds what pooch cannot
know: the manifest, where the cache lies, the import of a folder, and the message that names the
command when a file is missing.

The cache folder: ``$STEPCODE_REFERENCE_DATA`` when set (a deployment's shared copy), else
``$STEPCODE_HOME/reference-data``, else the XDG cache (``$XDG_CACHE_HOME/stepcode/reference-data``,
by default ``~/.cache/stepcode/reference-data``). Its layout::

    cruxeval/cruxeval.jsonl  cruxeval/LICENSE  cruxeval/samples/codellama-7b_temp0.2_{input,output}_generations.json
    reval/DREval_data.jsonl  reval/DREval_tasks.jsonl  reval/prompts/{direct,cot}_{coverage,state,path,output}.txt
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REFERENCE_DATA_VARIABLE = "STEPCODE_REFERENCE_DATA"
MIRROR_VARIABLE = "STEPCODE_DATA_MIRROR"
# Files are addressed as {base}/{owner}/{repo}/{commit}/{path}; a mirror keeps that layout.
GITHUB_RAW = "https://raw.githubusercontent.com"
FETCH_HINT = "run `stepcode data fetch` (offline: `stepcode data fetch --from DIR`)"
SKIPPED_REASON = "no reference data (run `stepcode data fetch`)"

CRUXEVAL_REPO, CRUXEVAL_COMMIT = "facebookresearch/cruxeval", "190faf16d175b5847b0af05d937872b1fb395942"
REVAL_REPO, REVAL_COMMIT = "r-eval/REval", "2f148b913deb4ae0e0ce41f0245ef35054ede8d6"


@dataclass(frozen=True)
class ReferenceFile:
    """One pinned file. ``sha256`` is the stored file's; a file stored re-serialised (the sample
    generations, kept as compact JSON) also pins the downloaded bytes (``source_sha256``)."""

    path: str  # inside the cache folder
    benchmark: str
    repo: str
    commit: str
    source: str  # inside the repository
    sha256: str
    source_sha256: str = ""

    @property
    def compact_json(self) -> bool:
        return bool(self.source_sha256)

    def url(self, base: str = GITHUB_RAW) -> str:
        return f"{base.rstrip('/')}/{self.repo}/{self.commit}/{self.source}"


def _reval_prompt(style: str, kind: str, sha256: str) -> ReferenceFile:
    name = f"{style}_{kind}.txt"
    return ReferenceFile(f"reval/prompts/{name}", "reval", REVAL_REPO, REVAL_COMMIT, f"prompts/{name}", sha256)


def _cruxeval_samples(mode: str, sha256: str, source_sha256: str) -> ReferenceFile:
    return ReferenceFile(f"cruxeval/samples/codellama-7b_temp0.2_{mode}_generations.json", "cruxeval",
                         CRUXEVAL_REPO, CRUXEVAL_COMMIT,
                         f"samples/model_generations/sample_codellama-7b_temp0.2_{mode}/generations.json",
                         sha256, source_sha256)


# The pins are the sha256 of the copies this project was developed and measured against.
MANIFEST = (
    ReferenceFile("cruxeval/cruxeval.jsonl", "cruxeval", CRUXEVAL_REPO, CRUXEVAL_COMMIT, "data/cruxeval.jsonl",
                  "8368b81047dc5014e4caf5a2f97604eff7644e0ecd7415e3ceeb184bbc2e0c96"),
    ReferenceFile("cruxeval/LICENSE", "cruxeval", CRUXEVAL_REPO, CRUXEVAL_COMMIT, "LICENSE",
                  "055ca9e3fa33562173156e02e2350ceff4089deab480b368a849b6bc04f09719"),
    _cruxeval_samples("input", "567cb11fbca2b4734f35947362bcd0c5a364569d102b9a86180d19d2a519360f",
                      "fdb8f6140996c29663a6bb4319262f42a445d698bb88de173b709af2dbd4ef85"),
    _cruxeval_samples("output", "3afaf4a034df70bc15387bff2715f91bc890796b1bba79823ced75a8c3f72ec8",
                      "e0a70dc1b041212d17b41e28e3184c23662401fead1212b0b6748677f74ee412"),
    ReferenceFile("reval/DREval_data.jsonl", "reval", REVAL_REPO, REVAL_COMMIT, "data/DREval_data.jsonl",
                  "b8e72ef344cd575b220363e7a361e892ef2bdfcee1cab79f702d60e255844965"),
    ReferenceFile("reval/DREval_tasks.jsonl", "reval", REVAL_REPO, REVAL_COMMIT, "data/DREval_tasks.jsonl",
                  "a4fea071a4e3108ae00cc8a6a586505bff4237244b2dc8433b22303948fe7fa5"),
    _reval_prompt("cot", "coverage", "3809a152403f7fd116f5f6724dbdf6abc0479689eb999cad1d814bf6d6214f3b"),
    _reval_prompt("cot", "output", "26c0dc3c18a2c5ec458b619fa359892b55c68dff1e038afc9982beb1535f2a90"),
    _reval_prompt("cot", "path", "295f1813facfc67659968e7ba1a00eb6abdab65a9ae930d4e5331406c054c301"),
    _reval_prompt("cot", "state", "b7627043bb502b260398f0a1f81ceb128027895b4f7c8fd3780aa36b3840e253"),
    _reval_prompt("direct", "coverage", "1a96d57e3d7eec08c8b757381ba7d9d3ee4b77dfd631a009aae685f504a7629d"),
    _reval_prompt("direct", "output", "4bf741cf64666b4468684f4c08a06a0026586173d1d1df6af138793ebd522ff9"),
    _reval_prompt("direct", "path", "ecf6b4df7c14f2aac495e943a5c531a7f2dca554455440415fccafca08e3d30e"),
    _reval_prompt("direct", "state", "eea297983e6bafd51ed950d599efe7151eba01815e744efe243eae647074e353"),
)
BENCHMARKS = ("cruxeval", "reval")


class ReferenceDataMissing(FileNotFoundError):
    """A reference file is not in the cache; the message names the command that gets it."""


class ReferenceDataCorrupt(ValueError):
    """A file's sha256 is not the pinned one; the message names the file and both checksums."""


class ReferenceDataUnavailable(OSError):
    """The source could not be reached (no network, a mirror that does not answer)."""


def reference_data_dir() -> Path:
    """The cache folder (see the module's docstring); it need not exist yet."""
    if configured := os.environ.get(REFERENCE_DATA_VARIABLE):
        return Path(configured).expanduser().resolve()
    if home := os.environ.get("STEPCODE_HOME"):
        return Path(home).expanduser().resolve() / "reference-data"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser().resolve() / "stepcode" / "reference-data"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_of(benchmark: str) -> list[ReferenceFile]:
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; reference data exists for {', '.join(BENCHMARKS)}")
    return [entry for entry in MANIFEST if entry.benchmark == benchmark]


def reference_file(relative: str, folder: Path | None = None) -> Path:
    """A cached file by its path in the cache (``cruxeval/cruxeval.jsonl``); ReferenceDataMissing,
    naming the fetch command, when it is not there."""
    path = (folder or reference_data_dir()) / relative
    if not path.is_file():
        raise ReferenceDataMissing(f"{path} is missing: {FETCH_HINT}")
    return path


def cruxeval_path(folder: Path | None = None) -> Path:
    return reference_file("cruxeval/cruxeval.jsonl", folder)


def reval_dir(folder: Path | None = None) -> Path:
    """REval's folder (data, tasks, prompts), checked complete."""
    folder = folder or reference_data_dir()
    for entry in files_of("reval"):
        reference_file(entry.path, folder)
    return folder / "reval"


def missing_benchmarks(folder: Path | None = None) -> list[str]:
    """The benchmarks whose files are not all in ``folder`` (default: the cache)."""
    folder = folder or reference_data_dir()
    return [name for name in BENCHMARKS if not all((folder / entry.path).is_file() for entry in files_of(name))]


def status(folder: Path | None = None) -> list[dict]:
    """Each manifest file: ``path``, ``state`` (ok, missing or corrupt) and, when corrupt, ``sha256``."""
    folder = folder or reference_data_dir()
    rows = []
    for entry in MANIFEST:
        path = folder / entry.path
        if not path.is_file():
            rows.append({"path": entry.path, "state": "missing"})
            continue
        found = sha256_of(path)
        rows.append({"path": entry.path, "state": "ok" if found == entry.sha256 else "corrupt",
                     **({} if found == entry.sha256 else {"sha256": found})})
    return rows


def _corrupt(entry: ReferenceFile, where: str, found: str, expected: str) -> ReferenceDataCorrupt:
    return ReferenceDataCorrupt(f"{entry.path}: sha256 of {where} is {found}, the pinned sha256 is {expected}; "
                                "the file was not stored")


def _store_compact_json(entry: ReferenceFile, upstream: Path, folder: Path, where: str) -> None:
    """The downloaded JSON re-serialised compactly (the stored form), checked against its own pin."""
    text = json.dumps(json.loads(upstream.read_text(encoding="utf-8")))
    found = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if found != entry.sha256:
        raise _corrupt(entry, f"{where} re-serialised", found, entry.sha256)
    _replace_with(folder / entry.path, text.encode("utf-8"))


def _replace_with(target: Path, content: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    temporary.write_bytes(content)
    os.replace(temporary, target)


def fetch(folder: Path | None = None, base_url: str | None = None, benchmarks: tuple[str, ...] = BENCHMARKS,
          report: Callable[[str], None] = print, timeout_s: float = 60.0) -> list[str]:
    """Download every file of ``benchmarks`` that the cache lacks or holds corrupt, checking each
    against its pin. Returns the paths stored. ``base_url`` (else ``$STEPCODE_DATA_MIRROR``, else
    GitHub) replaces ``https://raw.githubusercontent.com`` and keeps its layout."""
    import pooch
    import requests

    pooch.get_logger().setLevel(logging.WARNING)  # its own "Downloading data from" lines; ours say it
    folder = folder or reference_data_dir()
    base = base_url or os.environ.get(MIRROR_VARIABLE) or GITHUB_RAW
    downloader = pooch.HTTPDownloader(timeout=timeout_s, progressbar=False)
    stored = []
    for entry in (e for name in benchmarks for e in files_of(name)):
        target = folder / entry.path
        if target.is_file() and sha256_of(target) == entry.sha256:
            continue
        url = entry.url(base)
        report(f"downloading {entry.path} from {url}")
        # The downloaded bytes are pinned; a re-serialised file keeps its download under .upstream/.
        into = folder / ".upstream" / entry.path if entry.compact_json else target
        try:
            pooch.retrieve(url, known_hash=f"sha256:{entry.source_sha256 or entry.sha256}", fname=into.name,
                           path=into.parent, downloader=downloader)
        except ValueError as exc:  # pooch: the hash does not match (the download is deleted)
            raise ReferenceDataCorrupt(f"{entry.path}: {exc}") from None
        except requests.exceptions.RequestException as exc:
            response = getattr(exc, "response", None)
            reason = f"HTTP {response.status_code}" if response is not None else type(exc).__name__
            raise ReferenceDataUnavailable(
                f"could not download {entry.path} from {url} ({reason}). Without network, "
                f"copy the files from a machine that has them and run `stepcode data fetch --from DIR`, "
                f"or set ${MIRROR_VARIABLE} to a mirror") from None
        if entry.compact_json:
            _store_compact_json(entry, into, folder, url)
        stored.append(entry.path)
    return stored


def import_folder(source: Path, folder: Path | None = None, benchmarks: tuple[str, ...] = BENCHMARKS,
                  report: Callable[[str], None] = print) -> tuple[list[str], list[str]]:
    """Copy the files of ``benchmarks`` from ``source`` (the cache's layout; the sample generations
    may also be the repository's indented originals) into the cache, each checked against its pin.
    A file that does not match is refused (ReferenceDataCorrupt, nothing of it stored). Returns
    (stored, absent from ``source``)."""
    source = Path(source).expanduser().resolve()
    if not source.is_dir():
        raise ReferenceDataMissing(f"{source} is not a folder")
    folder = folder or reference_data_dir()
    if folder == source:
        raise ValueError(f"{source} is the cache folder itself")
    stored, absent = [], []
    for entry in (e for name in benchmarks for e in files_of(name)):
        given = source / entry.path
        if not given.is_file():
            absent.append(entry.path)
            continue
        found = sha256_of(given)
        if found == entry.sha256:
            target = folder / entry.path
            if not (target.is_file() and sha256_of(target) == entry.sha256):
                _replace_with(target, given.read_bytes())
        elif entry.compact_json and found == entry.source_sha256:
            _store_compact_json(entry, given, folder, str(given))
        else:
            raise _corrupt(entry, str(given), found, entry.sha256)
        stored.append(entry.path)
    report(f"imported {len(stored)} files from {source} into {folder}"
           + (f"; {len(absent)} not there: {', '.join(absent)}" if absent else ""))
    return stored, absent
