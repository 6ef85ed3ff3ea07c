"""`stepcode data fetch`: the reference data downloaded from a real HTTP server laid out as GitHub's
raw files (served from the pinned copies), each file checked against its pin; a corrupted file
refused naming it and both checksums; no network answered with the offline option; a folder
imported offline under the same checks."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from stepcode_core.data import reference
from stepcode_core.data.reference import MANIFEST

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _upstream_bytes(entry: reference.ReferenceFile, cache: Path) -> bytes:
    """The bytes the repository serves: the stored copy, or for the re-serialised sample
    generations the repository's indented JSON (``json.dumps(..., indent=4)`` reproduces it)."""
    stored = (cache / entry.path).read_bytes()
    return json.dumps(json.loads(stored), indent=4).encode() if entry.compact_json else stored


class _Server:
    """A real HTTP server on localhost serving ``root``; ``requests`` lists the paths asked for."""

    def __init__(self, root: Path):
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mirror(tmp_path, cruxeval_data, reval_data):
    """A folder laid out as raw.githubusercontent.com ({owner}/{repo}/{commit}/{path}), served."""
    root = tmp_path / "mirror"
    for entry in MANIFEST:
        served = root / entry.repo / entry.commit / entry.source
        served.parent.mkdir(parents=True, exist_ok=True)
        served.write_bytes(_upstream_bytes(entry, cruxeval_data))
    server = _Server(root)
    yield server, root
    server.close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_pins_are_the_development_copies(cruxeval_data):
    """Every pinned sha256 is the file this project was developed against, and the samples' source
    pins are the repository's indented originals."""
    for entry in MANIFEST:
        assert reference.sha256_of(cruxeval_data / entry.path) == entry.sha256, entry.path
        if entry.compact_json:
            assert _sha(_upstream_bytes(entry, cruxeval_data)) == entry.source_sha256, entry.path


def test_fetch_downloads_checks_and_stores_every_file_once(tmp_path, mirror, cruxeval_data):
    server, _ = mirror
    cache = tmp_path / "cache"
    lines = []
    stored = reference.fetch(cache, server.url, report=lines.append)
    assert sorted(stored) == sorted(entry.path for entry in MANIFEST)
    for entry in MANIFEST:
        assert (cache / entry.path).read_bytes() == (cruxeval_data / entry.path).read_bytes(), entry.path
    assert [row["state"] for row in reference.status(cache)] == ["ok"] * len(MANIFEST)
    assert reference.missing_benchmarks(cache) == []
    assert len(lines) == len(MANIFEST) and all(line.startswith("downloading ") for line in lines)

    asked = len(server.requests)
    assert reference.fetch(cache, server.url) == []  # intact files are kept: nothing downloaded again
    assert len(server.requests) == asked

    (cache / "reval" / "prompts" / "cot_state.txt").write_text("tampered")  # a damaged cache is repaired
    assert reference.fetch(cache, server.url) == ["reval/prompts/cot_state.txt"]
    assert [row["state"] for row in reference.status(cache)] == ["ok"] * len(MANIFEST)


def test_a_corrupted_download_is_refused_naming_the_file_and_both_checksums(tmp_path, mirror):
    server, root = mirror
    entry = MANIFEST[0]  # cruxeval/cruxeval.jsonl
    served = root / entry.repo / entry.commit / entry.source
    served.write_bytes(served.read_bytes() + b'{"id": "sample_800", "code": "def f(): pass"}\n')
    cache = tmp_path / "cache"
    with pytest.raises(reference.ReferenceDataCorrupt) as caught:
        reference.fetch(cache, server.url, benchmarks=("cruxeval",))
    message = str(caught.value)
    assert entry.path in message and entry.sha256 in message and _sha(served.read_bytes()) in message
    assert not (cache / entry.path).exists()  # nothing of it stored


def test_a_corrupted_sample_file_is_refused_too(tmp_path, mirror):
    server, root = mirror
    entry = next(e for e in MANIFEST if e.compact_json)
    served = root / entry.repo / entry.commit / entry.source
    served.write_bytes(served.read_bytes().replace(b"sample_1", b"sample_X", 1))
    with pytest.raises(reference.ReferenceDataCorrupt, match=entry.source_sha256):
        reference.fetch(tmp_path / "cache", server.url, benchmarks=("cruxeval",))
    assert not (tmp_path / "cache" / entry.path).exists()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stepcode(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=PROJECT_ROOT, env={**os.environ, **env})


def test_no_network_is_a_clear_message_with_the_offline_option(tmp_path):
    done = _stepcode(["data", "fetch", "--mirror", f"http://127.0.0.1:{_closed_port()}"],
                     {"STEPCODE_REFERENCE_DATA": str(tmp_path / "cache")})
    assert done.returncode == 2
    assert "could not download cruxeval/cruxeval.jsonl" in done.stderr
    assert "stepcode data fetch --from DIR" in done.stderr and "Traceback" not in done.stderr


def test_a_missing_file_on_the_server_is_named(tmp_path, mirror):
    server, root = mirror
    entry = reference.files_of("reval")[0]
    (root / entry.repo / entry.commit / entry.source).unlink()
    with pytest.raises(reference.ReferenceDataUnavailable, match=rf"{entry.path} .*\(HTTP 404\)"):
        reference.fetch(tmp_path / "cache", server.url, benchmarks=("reval",))


def test_the_command_downloads_from_a_mirror_into_the_users_cache(tmp_path, mirror):
    server, _ = mirror
    home = tmp_path / "home"
    env = {"STEPCODE_HOME": str(home), "STEPCODE_DATA_MIRROR": server.url, "STEPCODE_REFERENCE_DATA": ""}
    done = _stepcode(["data", "fetch"], env)
    assert done.returncode == 0, done.stderr
    assert f"{len(MANIFEST)} files downloaded" in done.stderr
    status = _stepcode(["data", "status"], env)
    assert status.returncode == 0 and status.stdout.count(" ok ") == len(MANIFEST)
    assert str(home / "reference-data") in status.stdout


def test_import_from_a_folder_checks_every_file(tmp_path, cruxeval_data):
    cache, source = tmp_path / "cache", tmp_path / "copy"
    shutil.copytree(cruxeval_data, source)
    env = {"STEPCODE_REFERENCE_DATA": str(cache)}
    done = _stepcode(["data", "fetch", "--from", str(source)], env)
    assert done.returncode == 0, done.stderr
    assert reference.missing_benchmarks(cache) == []

    # The repository's own indented sample file is accepted and stored in the pinned form.
    entry = next(e for e in MANIFEST if e.compact_json)
    (source / entry.path).write_bytes(_upstream_bytes(entry, cruxeval_data))
    (cache / entry.path).unlink()
    assert _stepcode(["data", "fetch", "--from", str(source)], env).returncode == 0
    assert reference.sha256_of(cache / entry.path) == entry.sha256

    # A corrupted copy is refused, named with both checksums, and the cache keeps its good file.
    damaged = source / "reval" / "DREval_tasks.jsonl"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    refused = _stepcode(["data", "fetch", "--from", str(source)], env)
    assert refused.returncode == 2
    assert "reval/DREval_tasks.jsonl" in refused.stderr and reference.sha256_of(damaged) in refused.stderr
    assert reference.files_of("reval")[1].sha256 in refused.stderr
    assert [row for row in reference.status(cache) if row["state"] != "ok"] == []

    # A folder with only one benchmark imports it and says what it lacked.
    partial = tmp_path / "partial"
    shutil.copytree(cruxeval_data / "cruxeval", partial / "cruxeval")
    incomplete = _stepcode(["data", "fetch", "--from", str(partial)], {"STEPCODE_REFERENCE_DATA": str(tmp_path / "c2")})
    assert incomplete.returncode == 1 and "reval/DREval_data.jsonl" in incomplete.stderr
    assert reference.missing_benchmarks(tmp_path / "c2") == ["reval"]


def test_the_cache_folder_follows_the_users_variables(monkeypatch, tmp_path):
    monkeypatch.delenv("STEPCODE_REFERENCE_DATA", raising=False)
    monkeypatch.delenv("STEPCODE_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert reference.reference_data_dir() == tmp_path / "xdg" / "stepcode" / "reference-data"
    monkeypatch.setenv("STEPCODE_HOME", str(tmp_path / "home"))
    assert reference.reference_data_dir() == tmp_path / "home" / "reference-data"
    monkeypatch.setenv("STEPCODE_REFERENCE_DATA", str(tmp_path / "shared"))
    assert reference.reference_data_dir() == tmp_path / "shared"


def test_a_missing_file_names_the_command_that_gets_it(tmp_path):
    with pytest.raises(reference.ReferenceDataMissing, match=r"stepcode data fetch"):
        reference.cruxeval_path(tmp_path)
    with pytest.raises(reference.ReferenceDataMissing, match=r"DREval_data.jsonl is missing: run `stepcode data fetch`"):
        reference.reval_dir(tmp_path)
    done = _stepcode(["score", "cruxeval", str(tmp_path / "g.json"), "--mode", "output"],
                     {"STEPCODE_REFERENCE_DATA": str(tmp_path)})
    assert done.returncode == 2 and "run `stepcode data fetch`" in done.stderr
