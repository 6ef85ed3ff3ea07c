"""The Dagster UI as a person uses it: ``stepcode ui`` (webserver and daemon) on a fresh instance,
driven in headless Chromium: the catalog lists every asset of ``defs``, *Materialize selected* on
the data group runs the real data stages, the asset pages show their previews and charts, the
Automation page lists the schedules and sensors; training refused on a contaminated dataset shows
why (the failed check, the step not executed, the refusal). Then how it stops: Ctrl-C in its
terminal, and SIGINT or SIGTERM to a ``stepcode ui &`` started by a script, leave no process of it
running.
Screenshots of each page go to ``$STEPCODE_TEST_ARTIFACTS/ui`` (default ``.test-artifacts/ui``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from pipelines.instance import PROJECT_ROOT

pytestmark = pytest.mark.ui

STEPCODE = Path(sys.executable).with_name("stepcode")
START_TIMEOUT_S = 240  # loading the code location on a busy machine
DATA_RUN_TIMEOUT_S = 480  # the data stages on the default config, a few hundred programs
STOP_TIMEOUT_S = 60  # the supervisor's own grace is 30 s, then SIGKILL
PAGE_TIMEOUT_S = 60
WINDOW = (1800, 2400)  # tall enough that the virtualized catalog renders every row
SMALL_GENERATION = {"max_new_tokens": 8, "engine": "transformers"}
SMALL_EVALUATION = {"ops": {
    "eval_cruxeval": {"config": {"limit": 2, "modes": ["output"], "styles": ["direct"], "generation": SMALL_GENERATION}},
    "eval_livecodebench": {"config": {"limit": 1, "generation": SMALL_GENERATION}},
    "eval_reval": {"config": {"limit": 1, "generation": SMALL_GENERATION}},
    "eval_trace_gap": {"config": {"limit": 2, "generation": SMALL_GENERATION}},
}}


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("STEPCODE_TEST_ARTIFACTS") or PROJECT_ROOT / ".test-artifacts") / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def instance_environment(home: Path) -> dict[str, str]:
    """The variables dagster.yaml reads, all pointing into ``home``: set explicitly, since values
    inherited from the caller (or set by an earlier import of the code location) would win."""
    return {"STEPCODE_HOME": str(home), "DAGSTER_HOME": str(PROJECT_ROOT),
            "STEPCODE_DAGSTER_DIR": str(home / "dagster"), "STEPCODE_DAGSTER_LOGS": str(home / "dagster" / "logs")}


# --- processes ------------------------------------------------------------------------------------


@dataclass
class Process:
    pid: int
    ppid: int
    session: int
    state: str
    command: str


def processes() -> dict[int, Process]:
    """Every process of this machine, from /proc (no dependency for a table the kernel keeps)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # exited while we looked
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ", which may hold spaces
        found[int(entry.name)] = Process(int(entry.name), int(fields[1]), int(fields[3]), fields[0], command)
    return found


def descendants(root: int) -> list[Process]:
    table = processes()
    children: dict[int, list[int]] = {}
    for process in table.values():
        children.setdefault(process.ppid, []).append(process.pid)
    found, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found.append(table[pid])
        stack.extend(children.get(pid, []))
    return found


def alive(pids: set[int]) -> list[Process]:
    """Those of ``pids`` still running; a zombie (exited, not yet reaped by its new parent) is not."""
    return [p for pid, p in processes().items() if pid in pids and p.state != "Z"]


@dataclass
class RunningUI:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def tree(self) -> list[Process]:
        return descendants(self.process.pid)

    def kill_everything(self) -> None:
        """After a failure: SIGKILL every process of the tree and their groups, so nothing leaks
        (never this process's own group, which a background start shares)."""
        tree = self.tree()
        groups = set()
        for process in [*tree, self.process]:
            try:
                groups.add(os.getpgid(process.pid))
            except ProcessLookupError:
                pass
        groups.discard(os.getpgrp())
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for process in [*tree, self.process]:
            try:
                os.kill(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.process.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_a_background_job() -> None:
    """What a shell does to ``cmd &`` in a script (no job control): SIGINT and SIGQUIT ignored,
    which the child inherits. A bare ``dagster dev`` started so outlives every SIGINT and SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


def start_ui(home: Path, log: Path, *, background: bool, env: dict[str, str] | None = None) -> RunningUI:
    """``stepcode ui`` as a terminal's foreground job (a process group of its own, default signal
    dispositions) or, ``background``, as a script's ``stepcode ui &`` (this process's group)."""
    assert STEPCODE.is_file(), f"{STEPCODE} is not installed (scripts/bootstrap.sh installs the project)"
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen([str(STEPCODE), "ui", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **instance_environment(home), **(env or {})}, cwd=PROJECT_ROOT,
                                   start_new_session=not background,
                                   preexec_fn=_as_a_background_job if background else None)
    return RunningUI(process, port, log)


def wait_until_serving(ui: RunningUI) -> None:
    """Until the webserver answers and the daemon's process runs."""
    deadline = time.monotonic() + START_TIMEOUT_S
    serving = False
    while time.monotonic() < deadline:
        if ui.process.poll() is not None:
            pytest.fail(f"stepcode ui exited ({ui.process.returncode}) before serving:\n{ui.log_tail()}")
        if not serving:
            try:
                with urllib.request.urlopen(f"{ui.url}/server_info", timeout=5) as answer:
                    serving = "dagster_webserver_version" in json.loads(answer.read())
            except OSError:
                pass
        if serving and any("dagster._daemon" in p.command for p in ui.tree()):
            return
        time.sleep(1)
    pytest.fail(f"the UI did not come up within {START_TIMEOUT_S}s (serving: {serving}); "
                f"processes: {[p.command[:80] for p in ui.tree()]}\n{ui.log_tail()}")


def stop_and_check_nothing_is_left(ui: RunningUI, signum: int, *, to_group: bool = False) -> None:
    """Send ``signum`` to ``stepcode ui`` (``to_group``: to its process group, as a terminal's Ctrl-C
    does); it must exit 0 within the bound, with no process of its tree left running."""
    tree = ui.tree()
    names = " ".join(p.command for p in tree)
    # What a stop must reach: the daemon, the webserver, and the code servers they load.
    assert "dagster._daemon" in names and "dagster_webserver" in names and "code-server" in names, names
    # `dagster dev`'s session: whatever it starts later, short of a session of its own, is in it.
    dev_sessions = {p.session for p in tree if p.ppid == ui.process.pid}
    started = time.monotonic()
    if to_group:
        os.killpg(ui.process.pid, signum)
    else:
        os.kill(ui.process.pid, signum)
    try:
        status = ui.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"stepcode ui did not exit within {STOP_TIMEOUT_S}s of {signal.Signals(signum).name}:\n"
                    f"{ui.log_tail()}")
    took = time.monotonic() - started
    print(f"stepcode ui stopped on {signal.Signals(signum).name} in {took:.1f}s, exit status {status}")
    left = alive({p.pid for p in tree}) + [p for p in processes().values()
                                           if p.session in dev_sessions and p.state != "Z"]
    assert not left, f"left running after {signal.Signals(signum).name}: {[(p.pid, p.command[:100]) for p in left]}"
    assert status == 0, f"exit status {status}:\n{ui.log_tail()}"


@pytest.fixture
def ui_starter(tmp_path):
    """``start(name)``: a ``stepcode ui`` on its own instance under tmp_path; whatever is still
    running at the end of the test is killed with its whole tree."""
    started: list[RunningUI] = []

    def start(name: str, *, background: bool, env: dict[str, str] | None = None) -> RunningUI:
        home = tmp_path / name
        home.mkdir()
        ui = start_ui(home, tmp_path / f"{name}.log", background=background, env=env)
        started.append(ui)
        return ui

    yield start
    for ui in started:
        if ui.process.poll() is None or alive({p.pid for p in ui.tree()}):
            ui.kill_everything()


# --- the browser ----------------------------------------------------------------------------------


@contextlib.contextmanager
def browsing(browser, ui: RunningUI):
    """The browser on ``ui`` at the test's window size, the first-visit dialog skipped; a failure
    inside leaves a screenshot and prints the UI's log."""
    size = browser.get_window_size()
    browser.set_window_size(*WINDOW)
    try:
        skip_the_community_dialog(browser, ui)
        yield
    except BaseException:
        print(f"stepcode ui log:\n{ui.log_tail()}")
        screenshot(browser, "failure")
        raise
    finally:
        browser.set_window_size(size["width"], size["height"])


def screenshot(browser, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    browser.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def open_page(browser, ui: RunningUI, route: str):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(ui.url + route)
    return WebDriverWait(browser, PAGE_TIMEOUT_S)


def skip_the_community_dialog(browser, ui: RunningUI) -> None:
    """The first-visit "Join the Dagster community" dialog covers the page; its Skip button would
    record the choice in a file under DAGSTER_HOME (the checkout), so the browser's own storage
    says "seen" instead, as the UI does itself after a Skip."""
    browser.get(ui.url + "/server_info")
    browser.execute_script("window.localStorage.setItem('communityNux', JSON.stringify('1'));")


def metadata_row(key: str) -> str:
    return f"//tr[td[1][normalize-space()='{key}']]"


def loaded_image_width(browser, wait, key: str) -> int:
    """The width of the markdown image in metadata entry ``key``, once loaded: shown inline, or,
    where the markdown is long (a data URL), in the dialog that *[Show Markdown]* opens."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    row = wait.until(EC.presence_of_element_located((By.XPATH, metadata_row(key))))
    inline = row.find_elements(By.TAG_NAME, "img")
    if inline:
        image = inline[0]
    else:
        row.find_element(By.XPATH, ".//a[contains(normalize-space(), 'Show Markdown')]").click()
        image = wait.until(EC.visibility_of_element_located((By.XPATH, "//div[@role='dialog']//img")))
    return wait.until(lambda _: browser.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth;", image))


def shows(browser, wait, text: str) -> None:
    """Until the page's visible text contains ``text``."""
    from selenium.webdriver.common.by import By

    wait.until(lambda _: text in browser.find_element(By.TAG_NAME, "body").text)


def close_dialog(browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element(By.XPATH, "//div[@role='dialog']//button[normalize-space()='Close']").click()
    WebDriverWait(browser, 10).until(EC.invisibility_of_element_located((By.XPATH, "//div[@role='dialog']")))


# --- the instance ---------------------------------------------------------------------------------


def run_failure(instance: dg.DagsterInstance, run_id: str) -> str:
    failures = instance.all_logs(run_id, of_type={dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.STEP_FAILURE})
    lines = []
    for record in failures:
        event = record.dagster_event
        error = getattr(event.event_specific_data, "error", None)
        lines.append(f"{event.step_key or 'run'}: {event.message}" + (f"\n{error.to_string()}" if error else ""))
    return "\n".join(lines) or "no failure event recorded"


def wait_for_run(instance: dg.DagsterInstance, assets: set[dg.AssetKey]) -> dg.DagsterRun:
    """The run that materializes ``assets``, once it has finished."""
    deadline = time.monotonic() + DATA_RUN_TIMEOUT_S
    run = None
    while time.monotonic() < deadline:
        matching = [r for r in instance.get_runs() if set(r.asset_selection or ()) == assets]
        if matching:
            assert len(matching) == 1, f"one click launched {len(matching)} runs"
            run = instance.get_run_by_id(matching[0].run_id)
            if run.is_finished:
                return run
        time.sleep(2)
    pytest.fail(f"no finished run of {sorted(k.to_user_string() for k in assets)} within {DATA_RUN_TIMEOUT_S}s "
                f"(run: {run.run_id + ' ' + run.status.value if run else 'none launched'})")


def evaluate_tiny_checkpoint(instance: dg.DagsterInstance, defs: dg.Definitions, folder: Path) -> None:
    """Registers ``folder`` as a checkpoint partition, evaluates it on small limits and writes
    eval_report, in this process, on the UI's instance. Registered from a folder of its own (not
    the external folder the daemon's checkpoint sensor watches), so the sensor does not launch a
    full evaluation of it."""
    from pipelines.checkpoints import CheckpointRegistry, register_new_checkpoints

    (checkpoint,) = register_new_checkpoints(instance, CheckpointRegistry(external_dir=str(folder.parent)))
    evaluation = defs.resolve_job_def("evaluation").execute_in_process(
        instance=instance, partition_key=checkpoint.key, run_config=SMALL_EVALUATION, raise_on_error=False)
    assert evaluation.success, run_failure(instance, evaluation.run_id)
    report = defs.resolve_job_def("eval_report_job").execute_in_process(instance=instance, raise_on_error=False)
    assert report.success, run_failure(instance, report.run_id)


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_the_ui_lists_materializes_and_shows_every_asset_then_stops_on_ctrl_c(
        ui_starter, browser, tiny_checkpoint, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    ui = ui_starter("browser", background=False)
    for name, value in instance_environment(tmp_path / "browser").items():
        monkeypatch.setenv(name, value)  # this process's instance and store: the UI's
    from pipelines.definitions import defs

    asset_graph = defs.resolve_asset_graph()
    every_asset = asset_graph.get_all_asset_keys()
    data_assets = dg.AssetSelection.groups("data").resolve(asset_graph)
    assert dg.AssetKey("raw_programs") in data_assets and len(data_assets) >= 4
    automations = {d.name for d in [*defs.schedules, *defs.sensors]}
    assert {"data_refresh_schedule", "checkpoint_sensor"} <= automations

    wait_until_serving(ui)
    with browsing(browser, ui):
        # (a) The catalog lists every asset of defs, and nothing else.
        wait = open_page(browser, ui, "/assets")
        expected_links = {"/assets/" + "/".join(key.path) for key in every_asset}

        def listed(_) -> set[str]:
            hrefs = {a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a[href*='/assets/']")}
            return {h.removeprefix(ui.url).split("?")[0] for h in hrefs if h}

        wait.until(lambda driver: listed(driver) >= expected_links)
        screenshot(browser, "catalog")
        assert listed(browser) == expected_links

        # (b) Select the data group's assets, Materialize selected: one run, and it succeeds.
        for key in data_assets:
            checkbox = f"//input[@data-testid='checkbox-{key.to_user_string()}']/parent::label"
            wait.until(EC.element_to_be_clickable((By.XPATH, checkbox))).click()
        button = wait.until(EC.element_to_be_clickable(
            (By.XPATH, f"//button[contains(normalize-space(), 'Materialize selected ({len(data_assets)})')]")))
        screenshot(browser, "catalog_selected")
        button.click()
        started = time.monotonic()
        with dg.DagsterInstance.get() as instance:
            run = wait_for_run(instance, data_assets)
            print(f"the data run {run.run_id} took {time.monotonic() - started:.0f}s: {run.status.value}")
            wait = open_page(browser, ui, f"/runs/{run.run_id}")
            wait.until(EC.presence_of_element_located((By.XPATH, f"//*[contains(text(), '{run.run_id[:8]}')]")))
            screenshot(browser, "data_run")
            assert run.status == dg.DagsterRunStatus.SUCCESS, run_failure(instance, run.run_id)
            wait.until(EC.presence_of_element_located((By.XPATH, "//*[normalize-space(text())='Success']")))

            # (c) trace_dataset's page: the preview table and the anchor-lines histogram, loaded.
            wait = open_page(browser, ui, "/assets/trace_dataset")
            preview = wait.until(EC.presence_of_element_located((By.XPATH, metadata_row("preview") + "//table")))
            headers = [th.text for th in preview.find_elements(By.TAG_NAME, "th")]
            assert "program_id" in headers and preview.find_elements(By.XPATH, ".//tbody/tr"), preview.text
            width = loaded_image_width(browser, wait, "anchor_lines_histogram")
            screenshot(browser, "trace_dataset")
            assert width > 0
            close_dialog(browser)

            # (d) eval_report's page: its chart, loaded (a tiny checkpoint evaluated on this instance).
            evaluate_tiny_checkpoint(instance, defs, tiny_checkpoint(tmp_path / "staging" / "tiny", seed=1))
        wait = open_page(browser, ui, "/assets/eval_report")
        width = loaded_image_width(browser, wait, "plot")
        screenshot(browser, "eval_report")
        assert width > 0
        close_dialog(browser)

        # The Automation page: every schedule and sensor of defs.
        wait = open_page(browser, ui, "/automation")
        for name in automations:
            wait.until(EC.presence_of_element_located((By.XPATH, f"//*[normalize-space(text())='{name}']")))
        screenshot(browser, "automation")

    stop_and_check_nothing_is_left(ui, signal.SIGINT, to_group=True)  # Ctrl-C in its terminal


@pytest.mark.timeout(900)
def test_training_refused_on_a_contaminated_dataset_says_why_in_the_ui(
        ui_starter, browser, contaminated_training, tmp_path, monkeypatch):
    """A dataset that failed a blocking check, seen as a person sees it: the failed verdict and its
    numbers on trace_dataset's Checks tab, sft_checkpoint not executed in the run that failed it,
    and a later run of sft_checkpoint alone failing with the reason on its run page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    from pipelines.checks import DATA_CHECKS

    assets, resources, run_config = contaminated_training
    ui = ui_starter("blocked", background=False)
    for name, value in instance_environment(tmp_path / "blocked").items():
        monkeypatch.setenv(name, value)
    wait_until_serving(ui)
    with dg.DagsterInstance.get() as instance:  # the UI's instance
        checked = dg.materialize([*assets, *DATA_CHECKS], instance=instance, resources=resources,
                                 run_config=run_config, raise_on_error=False)
        alone = dg.materialize(assets, selection=["sft_checkpoint"], instance=instance, resources=resources,
                               run_config={"ops": {"sft_checkpoint": run_config["ops"]["sft_checkpoint"]}},
                               raise_on_error=False)
    assert not checked.success and not alone.success
    def started(result) -> set[str]:
        return {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}

    assert "trace_dataset" in started(checked) and "sft_checkpoint" not in started(checked)
    assert started(alone) == {"sft_checkpoint"}  # started, then refused before any training process

    def verdict_of(result):
        (found,) = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                    and e.event_specific_data.check_name == "trace_dataset_not_contaminated"]
        return found
    assert not (tmp_path / "store" / "sft_checkpoint").exists()

    with browsing(browser, ui):
        # The Checks tab: the contamination check failed, the others passed; its numbers on selecting it.
        wait = open_page(browser, ui, "/assets/trace_dataset?view=checks")

        def verdict(check: str, status: str) -> tuple[str, str]:  # an entry of the list: name, then status
            return By.XPATH, f"//div[@title='{check}']/following-sibling::span[normalize-space()='{status}']"

        wait.until(EC.presence_of_element_located(verdict("trace_dataset_not_contaminated", "Failed")))
        for name in ("trace_dataset_schema", "trace_dataset_nonempty_splits", "trace_dataset_anchor_counts"):
            wait.until(EC.presence_of_element_located(verdict(name, "Succeeded")))
        entry = "//div[@title='trace_dataset_not_contaminated']"
        wait.until(EC.element_to_be_clickable((By.XPATH, entry))).click()
        contaminated = wait.until(EC.presence_of_element_located((By.XPATH, metadata_row("contaminated") + "/td[2]")))
        assert contaminated.text.strip() == "2"
        shows(browser, wait, "This is a blocking asset check.")
        shows(browser, wait, f"2 of {verdict_of(checked).metadata['checked'].value} programs overlap an evaluation set")
        screenshot(browser, "blocked_checks")

        # The run that failed it: sft_checkpoint not executed, because of that check.
        wait = open_page(browser, ui, f"/runs/{checked.run_id}")
        shows(browser, wait, "Dependencies for step sft_checkpoint failed: ['trace_dataset_trace_dataset_not_contaminated']")
        screenshot(browser, "blocked_run")

        # sft_checkpoint alone, later: refused, naming the check and its count.
        wait = open_page(browser, ui, f"/runs/{alone.run_id}")
        shows(browser, wait, "the trace dataset failed blocking data checks; training refuses it")
        shows(browser, wait, "trace_dataset: trace_dataset_not_contaminated failed (2 of")
        screenshot(browser, "refused_run")
    stop_and_check_nothing_is_left(ui, signal.SIGINT, to_group=True)


@pytest.mark.timeout(400)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_background_stepcode_ui_stops_its_webserver_and_daemon_on(ui_starter, signum):
    """Started as ``stepcode ui &`` in a script (SIGINT ignored on entry), stopped by ``kill``."""
    ui = ui_starter(signal.Signals(signum).name, background=True)
    wait_until_serving(ui)
    stop_and_check_nothing_is_left(ui, signum)


STUBBORN_CHILD = """
import signal, subprocess, sys, time
for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(signum, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # inherits the ignoring
print("ready", flush=True)
time.sleep(600)
"""


def test_the_supervisor_kills_a_group_that_ignores_its_signals(tmp_path):
    """The last resort: what still runs ``grace_s`` after the signal is killed, grandchildren too,
    and the exit status says so (128 + SIGKILL)."""
    supervisor = subprocess.Popen(
        [sys.executable, "-c", "import os, sys; from pipelines.ui import run_supervised; "
         f"sys.exit(run_supervised([sys.executable, '-c', {STUBBORN_CHILD!r}], os.environ, grace_s=2))"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    tree: list[Process] = []
    try:
        assert supervisor.stdout.readline().strip() == "ready"
        tree = descendants(supervisor.pid)
        assert len(tree) == 2, tree  # the stubborn child and its grandchild
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 128 + signal.SIGKILL
        assert not alive({p.pid for p in tree})
    finally:
        for process in alive({p.pid for p in tree}):
            os.kill(process.pid, signal.SIGKILL)
        supervisor.kill()
        supervisor.wait()


# --- cancelling a run whose shards are traced on Ray -----------------------------------------------


def ray_processes() -> list[Process]:
    """Ray's own processes (GCS, raylet, workers and actors) anywhere on this machine."""
    return [p for p in processes().values() if p.state != "Z" and (
        p.command.startswith("ray::") or "gcs_server" in p.command or "/raylet" in p.command
        or "ray/_private/workers" in p.command or "ray/autoscaler" in p.command or "ray/_private/log_monitor" in p.command)]


def sandbox_containers() -> list[str]:
    from sandbox.docker_backend import LABEL, docker_client, docker_unavailable_reason

    if docker_unavailable_reason() is not None:
        return []
    client = docker_client(timeout=10)
    try:
        return [c.name for c in client.containers.list(all=True, filters={"label": LABEL})
                if (c.labels or {}).get(f"{LABEL}.host") == socket.gethostname()]
    finally:
        client.close()


@pytest.mark.ray
@pytest.mark.parametrize("backend", ["local", pytest.param("docker", marks=pytest.mark.docker)])
def test_cancelling_a_run_traced_on_ray_from_the_ui_leaves_no_worker_or_sandbox(ui_starter, ray_installed, backend):
    """The data refresh launched from the UI with shards on a local Ray cluster (STEPCODE_TRACE_RUNNER=ray),
    terminated while Ray workers trace (the UI's Terminate: GraphQL's terminateRun): the run ends
    canceled, and no Ray process, sandbox worker or sandbox container is left."""
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    assert not ray_processes(), "Ray processes were running before the test"
    ui = ui_starter("ray", background=False, env={"STEPCODE_TRACE_RUNNER": "ray", "STEPCODE_RAY_CPUS": "2",
                                                  "STEPCODE_SANDBOX_BACKEND": backend})
    wait_until_serving(ui)
    client = DagsterGraphQLClient("127.0.0.1", port_number=ui.port)
    run_id = client.submit_job_execution("data_refresh", run_config={"ops": {
        "raw_programs": {"config": {"generator_count": 6000, "generator_seed": 11}},
        "execution_traces": {"config": {"num_shards": 24}}}})
    deadline = time.monotonic() + DATA_RUN_TIMEOUT_S
    tracing: list[Process] = []
    while time.monotonic() < deadline and not tracing:
        tracing = [p for p in ray_processes() if p.command.startswith("ray::ShardWorker.trace")]
        assert client.get_run_status(run_id) not in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS), \
            ui.log_tail()
        time.sleep(0.2)
    assert tracing, f"no Ray worker traced a shard within {DATA_RUN_TIMEOUT_S}s:\n{ui.log_tail()}"
    workers_and_sandboxes = {p.pid for p in ray_processes()} | {d.pid for p in tracing for d in descendants(p.pid)}
    if backend == "docker":
        assert sandbox_containers(), "the Docker backend started no container"

    try:
        client.terminate_run(run_id)
    except DagsterGraphQLClientError as exc:
        pytest.fail(f"terminateRun refused: {exc}")
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and (client.get_run_status(run_id) != dg.DagsterRunStatus.CANCELED or
                                           alive(workers_and_sandboxes) or ray_processes() or sandbox_containers()):
        time.sleep(0.5)
    assert client.get_run_status(run_id) == dg.DagsterRunStatus.CANCELED, ui.log_tail()
    assert not alive(workers_and_sandboxes), [p.command[:80] for p in alive(workers_and_sandboxes)]
    assert not ray_processes(), [p.command[:80] for p in ray_processes()]
    assert not sandbox_containers()
    stop_and_check_nothing_is_left(ui, signal.SIGINT, to_group=True)
