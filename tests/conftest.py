"""Fixtures shared by the whole suite."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stepcode_core.data.reference import REFERENCE_DATA_VARIABLE, missing_benchmarks, reference_data_dir

# The reference-data cache, fixed for the session and the subprocesses it starts: a test that moves
# $STEPCODE_HOME still reads the same benchmarks (scripts/test.sh imports them there first).
os.environ.setdefault(REFERENCE_DATA_VARIABLE, str(reference_data_dir()))


def _require(benchmark: str) -> Path:
    """The reference-data folder when ``benchmark``'s files are there; else a skip, under CI a failure."""
    folder = reference_data_dir()
    if benchmark in missing_benchmarks(folder):
        message = (f"{benchmark} reference data not in {folder}: run `stepcode data fetch` "
                   "(make test imports ../shared/data when it exists)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def cruxeval_data() -> Path:
    """The reference-data folder, holding every CRUXEval file (the problems and the sample generations)."""
    return _require("cruxeval")


@pytest.fixture(scope="session")
def reval_data() -> Path:
    """The reference-data folder, holding every REval file (data, tasks, prompts)."""
    return _require("reval")


@pytest.fixture(scope="session")
def local_sandbox():
    """The local (namespaced, forked-worker) sandbox: every test that runs a program goes through it."""
    from sandbox import open_sandbox

    with open_sandbox(backend="local") as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def cruxeval_rows(cruxeval_data) -> list[dict]:
    with (cruxeval_data / "cruxeval" / "cruxeval.jsonl").open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="session")
def tiny_model():
    """:func:`stepcode_core.training.tiny_task.tiny_model`: ``tiny_model(folder, tokenizer_dir, corpus, ...)``
    saves a tiny random Llama."""
    from stepcode_core.training.tiny_task import tiny_model as build

    return build


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Selenium (Debian's chromium and chromium-driver, which
    scripts/ensure_browser.sh installs). Missing, it skips, except under CI, where it fails."""
    import shutil

    binary = shutil.which("chromium")
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if binary is None or not Path(driver_path).is_file():
        message = "chromium and chromium-driver are not installed (scripts/ensure_browser.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def ray_installed():
    """Ray and dagster-ray (the ray extra, which make test installs). Missing, the Ray tests skip,
    except under CI, where they fail."""
    try:
        import dagster_ray  # noqa: F401
        import ray  # noqa: F401
    except ImportError as exc:
        message = f"Ray is not installed ({exc}): pip install -e '.[ray]' (scripts/test.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
