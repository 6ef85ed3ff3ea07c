"""Code versions derived from the code (pipelines.versions): an edit recomputes the assets whose code
it touches, and only those; every asset carries its derived version."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipelines.versions import ROOT, CodeIndex, code_version

ASSET_MODULES = {
    "pipelines.assets.data": ["raw_programs", "instrumented_programs", "execution_traces", "trace_dataset"],
    "pipelines.assets.training": ["base_model", "sft_checkpoint", "grpo_checkpoint"],
    "pipelines.assets.evaluation": ["eval_cruxeval", "eval_livecodebench", "eval_reval", "eval_trace_gap", "eval_report"],
    "pipelines.assets.ablation": ["ablation_tasks", "ablation_base", "ablation_start", "ablation_checkpoint",
                                  "ablation_report"],
    "pipelines.assets.real_ablation": ["real_ablation_start", "real_ablation_checkpoint", "real_ablation_scores",
                                       "real_ablation_report"],
}
NOOP = "\n_NOOP_FOR_A_TEST = None  # an edit that changes no behaviour\n"


def _copy_project(destination: Path) -> Path:
    for package in ("stepcode_core", "sandbox", "pipelines"):
        shutil.copytree(ROOT / package, destination / package, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def _versions(root: Path) -> dict[str, str]:
    index = CodeIndex(root)
    return {name: index.code_version(module, name) for module, names in ASSET_MODULES.items() for name in names}


def _edit_and_diff(root: Path, relative: str, text: str = NOOP, replace: tuple[str, str] | None = None) -> set[str]:
    """Append ``text`` to the file (or make the ``replace`` edit); the assets whose version moved."""
    before = _versions(root)
    path = root / relative
    source = path.read_text(encoding="utf-8")
    if replace is not None:
        assert replace[0] in source
        path.write_text(source.replace(replace[0], replace[1]), encoding="utf-8")
    else:
        path.write_text(source + text, encoding="utf-8")
    after = _versions(root)
    return {name for name in before if before[name] != after[name]}


def test_every_asset_carries_its_derived_code_version():
    from pipelines.definitions import defs

    found = {}
    for assets_def in defs.assets:
        for key, version in assets_def.code_versions_by_key.items():
            found[key.to_user_string()] = version
    expected = {name: code_version(module, name) for module, names in ASSET_MODULES.items() for name in names}
    assert {name: found.get(name) for name in expected} == expected
    assert set(found) <= set(expected), f"assets without a derived code version: {set(found) - set(expected)}"


def test_an_edit_recomputes_what_runs_the_edited_code_and_nothing_else(tmp_path, monkeypatch):
    root = _copy_project(tmp_path)
    engine = _edit_and_diff(root, "stepcode_core/tracing/anchors.py")
    assert {"instrumented_programs", "execution_traces", "trace_dataset", "sft_checkpoint", "grpo_checkpoint",
            "eval_cruxeval", "eval_trace_gap"} <= engine
    assert not engine & {"raw_programs", "base_model", "eval_report"}

    # the real ablation scores through eval_trace_gap's module, and the unit there is the module: it
    # scores again (its GRPO runs do not train again)
    assert _edit_and_diff(root, "stepcode_core/evaluation/reval_tracer.py") == {
        "eval_reval", "real_ablation_start", "real_ablation_scores"}
    # program text sent to the sandbox is code of the assets that send it
    assert _edit_and_diff(root, "stepcode_core/tracing/runtime.py") >= {"execution_traces", "sft_checkpoint"}
    assert "raw_programs" not in _edit_and_diff(root, "sandbox/worker.py")
    # within an asset module, a helper counts for the assets that call it
    histogram = ('axis.set_ylabel("programs")', 'axis.set_ylabel("programs")  # edited')
    assert _edit_and_diff(root, "pipelines/assets/data.py", replace=histogram) == {"trace_dataset"}
    assert _edit_and_diff(root, "pipelines/assets/data.py", "\ndef _helper_nobody_calls():\n    return 1\n") == set()
    # a function-level import is a dependency too: the training child imports its trainer inside a
    # function; and the child, launched by module name, is code of both checkpoint assets
    trained = {"sft_checkpoint", "grpo_checkpoint", "ablation_start", "ablation_checkpoint", "real_ablation_checkpoint"}
    assert _edit_and_diff(root, "stepcode_core/training/trainer.py") == trained
    assert _edit_and_diff(root, "pipelines/training_child.py") == trained
    # the ablation's summary is its reports' code alone: no run trains again
    assert _edit_and_diff(root, "stepcode_core/training/ablation.py") == {"ablation_report", "real_ablation_report"}

    before = _versions(root)
    monkeypatch.setenv("STEPCODE_CODE_SALT", "a library upgrade")
    salted = _versions(root)
    assert all(before[name] != salted[name] for name in before)


def test_a_parameter_named_like_an_upstream_asset_is_not_that_asset(tmp_path):
    """``instrumented_programs(raw_programs: ArtifactRef)`` reads a parameter, not the raw_programs
    function: editing the generator must not recompute it."""
    root = _copy_project(tmp_path)
    changed = _edit_and_diff(root, "stepcode_core/data/generator.py")
    assert "raw_programs" in changed and "instrumented_programs" not in changed


_MATERIALIZE = textwrap.dedent("""
    import json, sys
    import dagster as dg
    from pipelines.assets import data
    from pipelines.storage import ArtifactStore
    result = dg.materialize(
        [data.raw_programs, data.instrumented_programs],
        resources={"store": ArtifactStore(root=sys.argv[1])},
        run_config={"ops": {"raw_programs": {"config": {"generator_count": 12}}}},
    )
    reused = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        reused[materialization.asset_key.to_user_string()] = materialization.metadata["reused"].value
    print(json.dumps(reused))
""")


def test_in_a_copy_of_the_checkout_an_engine_edit_recomputes_instrumented_programs_only(tmp_path):
    """End to end, as a user would see it: materialize, edit the anchor engine, materialize again."""
    root = _copy_project(tmp_path / "checkout")
    artifacts = tmp_path / "artifacts"

    def materialize() -> dict:
        done = subprocess.run([sys.executable, "-c", _MATERIALIZE, str(artifacts)], cwd=root, capture_output=True,
                              text=True, timeout=300, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin",
                                                           "HOME": str(tmp_path)})
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert materialize() == {"raw_programs": False, "instrumented_programs": False}
    assert materialize() == {"raw_programs": True, "instrumented_programs": True}
    with (root / "stepcode_core/tracing/anchors.py").open("a") as handle:
        handle.write(NOOP)
    assert materialize() == {"raw_programs": True, "instrumented_programs": False}
    with (root / "stepcode_core/evaluation/reval_tracer.py").open("a") as handle:
        handle.write(NOOP)
    assert materialize() == {"raw_programs": True, "instrumented_programs": True}


@pytest.mark.parametrize("module", sorted(ASSET_MODULES))
def test_asset_modules_hold_no_hand_written_versions(module):
    source = (ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
    assert "-v1\"" not in source and "-v2\"" not in source and "code_version=\"" not in source
