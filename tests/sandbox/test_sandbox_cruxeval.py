"""Every CRUXEval program through each backend: the sandbox runs real programs faithfully."""

from __future__ import annotations

import pytest

from sandbox import ExecutionRequest


@pytest.mark.slow
def test_all_cruxeval_programs_print_their_expected_output(sb, cruxeval_rows):
    rows = cruxeval_rows
    reqs = [ExecutionRequest(code=r["code"] + "\nprint(repr(f(" + r["input"] + ")))", timeout_s=10) for r in rows]
    results = sb.run_batch(reqs)
    wrong = [(r["id"], res.status, res.stdout[:80], res.stderr[-200:])
             for r, res in zip(rows, results) if res.status != "ok" or res.stdout.strip() != r["output"]]
    assert len(rows) == 800
    assert not wrong, wrong[:5]


@pytest.mark.docker
def test_cruxeval_scoring_fits_the_docker_pool_the_pipeline_opens(docker_image):
    """The evaluation assets' Docker pool (the resource's defaults) accepts the scorer's batch
    requests; it once refused them (memory_mb 2048 against a 1024 MiB pool)."""
    from pipelines.resources import SandboxResource
    from stepcode_core.evaluation.cruxeval import Problem, score_generations

    problem = Problem("sample_0", "def f(xs):\n    return sorted(xs)\n", "[3, 1]", "[1, 3]")
    with SandboxResource(backend="docker", workers=1, docker_image=docker_image).open() as sb:
        scored = score_generations({"sample_0": ["[1, 3]", "[3, 1]"]}, [problem], "output", sb)
    assert scored["raw_scored_generations"]["sample_0"] == [True, False]
