"""Fixtures shared by the whole suite."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stepcode_core.paths import SHARED_DATA_VARIABLE, cruxeval_path

# The reference data beside the checkout, unless the caller points elsewhere (scripts/test.sh and the
# Makefile set it too); subprocesses the tests start inherit it.
os.environ.setdefault(SHARED_DATA_VARIABLE, str(Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def local_sandbox():
    """The local (namespaced, forked-worker) sandbox: every test that runs a program goes through it."""
    from sandbox import open_sandbox

    with open_sandbox(backend="local") as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def cruxeval_rows() -> list[dict]:
    path = cruxeval_path()
    if not path.is_file():
        pytest.skip(f"CRUXEval reference data not found at {path} (set STEPCODE_SHARED_DATA)")
    with path.open(encoding="utf-8") as lines:
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
