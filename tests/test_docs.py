"""The docs site and the README: `mkdocs build --strict` passes (no broken link, no page outside the
nav), the generated reference names every asset, resource and subcommand, the README stays short and
its links and asset graph are true, and the metadata page names every key the data assets record."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import docs_reference  # noqa: E402


def test_the_site_builds_strictly_and_its_reference_pages_name_everything(tmp_path):
    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                           capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, build.stderr[-4000:]
    from pipelines.definitions import defs

    assets = (site / "reference/assets/index.html").read_text()
    for spec in defs.resolve_all_asset_specs():
        assert f"<code>{spec.key.to_user_string()}</code>" in assets
    resources = (site / "reference/resources/index.html").read_text()
    for key in defs.resources:
        assert f"<code>{key}</code>" in resources
    cli = (site / "reference/cli/index.html").read_text()
    for path, _ in docs_reference._walk(docs_reference._cli_parser(), ["stepcode"]):
        assert f"<code>{' '.join(path)}</code>" in cli
    graph = (site / "concepts/asset-graph/index.html").read_text()
    assert 'class="mermaid"' in graph and "trace_dataset --&gt; sft_checkpoint" in graph


def test_a_broken_link_fails_the_build(tmp_path):
    """The strict build is a real check: a page linking to a page that does not exist fails it."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[gone](missing.md)\n")
    (tmp_path / "mkdocs.yml").write_text("site_name: t\nstrict: true\ntheme: {name: material}\n")
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode != 0 and "missing.md" in build.stderr


def test_every_environment_variable_the_code_reads_is_described():
    found = docs_reference.variables_in_code()
    assert set(found) == set(docs_reference.ENVIRONMENT)
    assert "STEPCODE_HOME" in found and "pipelines/instance.py" in found["STEPCODE_HOME"]


def test_the_readme_is_short_its_links_resolve_and_its_asset_graph_is_the_codes():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert "make demo" in readme and "make test" in readme
    links = re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", readme)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        assert (ROOT / link).exists(), link
    assert docs_reference.asset_graph_mermaid() in readme


def test_the_metadata_page_names_every_key_the_data_assets_record(tmp_path):
    from pipelines.assets import data
    from pipelines.resources import BenchmarkFiles, SandboxResource, TraceRunner
    from pipelines.storage import ArtifactStore

    result = dg.materialize(
        [data.raw_programs, data.instrumented_programs, data.execution_traces, data.trace_dataset],
        resources={"store": ArtifactStore(root=str(tmp_path)), "sandbox": SandboxResource(backend="local"),
                   "trace_runner": TraceRunner(), "benchmark_files": BenchmarkFiles()},
        run_config={"ops": {"raw_programs": {"config": {"generator_count": 40}}}},
    )
    page = (ROOT / "docs/reference/metadata.md").read_text()
    recorded = {event.asset_key.to_user_string(): set(event.step_materialization_data.materialization.metadata)
                for event in result.get_asset_materialization_events()}
    assert set(recorded) == {"raw_programs", "instrumented_programs", "execution_traces", "trace_dataset"}
    missing = {asset: sorted(key for key in keys if f"`{key}`" not in page) for asset, keys in recorded.items()}
    assert not any(missing.values()), missing


@pytest.mark.parametrize("page", sorted(docs_reference.PAGES))
def test_each_generated_page_is_made_without_the_site(page):
    text = docs_reference.PAGES[page]()
    assert text.startswith("# ") and len(text.splitlines()) > 10
