"""The docs site's reference pages, generated from the code when `mkdocs build` runs, so they
cannot drift from it: every asset with its config, every resource, every environment variable the
code reads, the `stepcode` CLI's help, the dataset schemas and the asset graph as a diagram.

An MkDocs hook (`hooks:` in mkdocs.yml): `on_files` adds the generated pages as in-memory files
(nothing is written into docs/), `on_page_markdown` replaces `<!-- asset-graph -->` in a page with
the diagram. Run as a script it prints one page: `python scripts/docs_reference.py assets`.

Hand-written on purpose: mkdocstrings documents Python APIs, not Dagster assets' configs, argparse
trees or the environment a codebase reads; each generator below is a few lines over the objects
themselves.
"""

from __future__ import annotations

import argparse
import inspect
import io
import os
import re
import sys
import typing
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("COLUMNS", "100")  # argparse wraps help at the terminal's width

# Every STEPCODE_* variable the code reads, with its meaning. The build fails on a variable found in
# the code and missing here, or listed here and gone from the code.
ENVIRONMENT = {
    "STEPCODE_HOME": ("paths", "root of everything StepCode writes (artifacts, models, the Dagster instance's files); "
                      "`make` sets it to `.stepcode` in the checkout"),
    "STEPCODE_ARTIFACTS": ("paths", "where artifacts live (default `$STEPCODE_HOME/artifacts`); required in production "
                           "(shared storage the training pods see too)"),
    "STEPCODE_DAGSTER_DIR": ("paths", "the Dagster instance's local artifact storage (`dagster.yaml`)"),
    "STEPCODE_DAGSTER_LOGS": ("paths", "the Dagster instance's compute logs"),
    "STEPCODE_DEPLOYMENT": ("deployment", "the resource set the code location loads: `local` (default) or `production`"),
    "STEPCODE_CODE_SALT": ("deployment", "a string mixed into every asset's code version: bump it for a change outside "
                           "the tree (a library upgrade, a new sandbox image)"),
    "STEPCODE_DATA_REFRESH_CRON": ("deployment", "cron of `data_refresh_schedule` (default `0 3 * * *`; the schedule is "
                                   "off until turned on in the UI)"),
    "STEPCODE_REFERENCE_DATA": ("data", "the reference-data cache (CRUXEval, REval) that `stepcode data fetch` fills; "
                                "required in production"),
    "STEPCODE_DATA_MIRROR": ("data", "a mirror laid out as raw.githubusercontent.com for `stepcode data fetch`"),
    "STEPCODE_LIVECODEBENCH": ("data", "LiveCodeBench execution rows (JSONL or Parquet) for `eval_livecodebench` and "
                               "decontamination (optional; not bundled)"),
    "STEPCODE_EXTERNAL_CHECKPOINTS": ("training", "a folder of Hugging Face checkpoints to evaluate (default "
                                      "`$STEPCODE_HOME/checkpoints`); required in production"),
    "STEPCODE_CHECKPOINT_REGISTRY": ("training", "production: the file that registers checkpoints"),
    "STEPCODE_TRAINING_PROCESSES": ("training", "production: training ranks per run (one per GPU)"),
    "STEPCODE_TORCH_VERSION": ("training", "`scripts/bootstrap.sh`: the torch version installed first (default 2.13.0, "
                               "the CPU wheel)"),
    "STEPCODE_IMAGE_EXTRAS": ("deployment", "`scripts/project_image.sh`: the project's extras installed in the "
                              "project image (default `train`)"),
    "STEPCODE_SANDBOX_BACKEND": ("sandbox", "`auto` (default: Docker when a daemon answers), `docker` or `local`"),
    "STEPCODE_SANDBOX_IMAGE": ("sandbox", "the sandbox's Docker image (default: built from `sandbox/Dockerfile`)"),
    "STEPCODE_WORKER_SECRET": ("sandbox", "internal: the per-worker secret the Docker sandbox's supervisor passes its "
                               "worker; never set it yourself"),
    "STEPCODE_MLFLOW_TRACKING_URI": ("training", "an MLflow tracking URI (`http://mlflow:5000`, `sqlite:///mlflow.db`): "
                                     "SFT and GRPO runs are logged there too; unset (default): nothing is logged"),
    "STEPCODE_MLFLOW_EXPERIMENT": ("training", "the MLflow experiment those runs go to (default `stepcode`)"),
    "STEPCODE_TRACE_RUNNER": ("ray", "where `execution_traces` traces: `local` (default) or `ray`"),
    "STEPCODE_RAY_ADDRESS": ("ray", "a running Ray cluster (`ray://host:10001`, `host:6379`, `auto`); unset: a local "
                             "cluster started for the step; required in production with `ray`"),
    "STEPCODE_RAY_CPUS": ("ray", "CPUs of the local Ray cluster (default: all)"),
    "STEPCODE_RAY_WORKERS": ("ray", "Ray actors to start (default 0: one per CPU the cluster has when the step starts)"),
    "STEPCODE_POSTGRES_HOST": ("production instance", "PostgreSQL host of `deploy/dagster.yaml`"),
    "STEPCODE_POSTGRES_PORT": ("production instance", "its port"),
    "STEPCODE_POSTGRES_USER": ("production instance", "its role"),
    "STEPCODE_POSTGRES_PASSWORD": ("production instance", "the role's password"),
    "STEPCODE_POSTGRES_DB": ("production instance", "its database"),
    "STEPCODE_TEST_POSTGRES_URL": ("tests", "a PostgreSQL server for the `postgres` tests (a role that may create "
                                   "databases); `make test` starts a local one"),
    "STEPCODE_PYTHON310": ("tests", "a CPython 3.10 interpreter: the REval test then also gets REval's own answers "
                           "(3.11 differs on 2 Path questions)"),
    "STEPCODE_TEST_SECRET": ("tests", "a canary a sandbox test puts in the pipeline's environment, to show that no "
                             "program sees it"),
    "STEPCODE_CLI_SECRET": ("tests", "the same canary for `stepcode sandbox run`"),
    "STEPCODE_TEST_ARTIFACTS": ("tests", "where the UI tests leave their screenshots (default `.test-artifacts/`)"),
}
SCANNED = ("pipelines", "stepcode_core", "sandbox", "scripts", "deploy", "configs", "tests", "Makefile")
VARIABLE = re.compile(r"\bSTEPCODE_[A-Z0-9_]+\b")


def _definitions():
    from pipelines.definitions import defs

    return defs


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _type_name(annotation) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _config_rows(model, prefix: str = "") -> list[str]:
    """One table row per field of a pydantic (Dagster Config) model, nested models flattened."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _config_rows(annotation, f"{prefix}{name}.")
            continue
        default = "required" if field.default is PydanticUndefined and field.default_factory is None else \
            repr(field.default_factory() if field.default_factory else field.default)
        rows.append(f"| `{prefix}{name}` | `{_cell(_type_name(annotation))}` | `{_cell(default)}` | "
                    f"{_cell(field.description or '')} |")
    return rows


def _config_class(assets_def):
    import dagster as dg

    hints = typing.get_type_hints(assets_def.op.compute_fn.decorated_fn)
    return next((hint for hint in hints.values() if isinstance(hint, type) and issubclass(hint, dg.Config)), None)


GROUPS = ("data", "training", "evaluation", "ablation")  # the order a reader meets them


def _assets_in_order(defs) -> list:
    graph = defs.resolve_asset_graph()
    order = {key: index for index, key in enumerate(graph.toposorted_asset_keys)}
    group = {name: index for index, name in enumerate(GROUPS)}
    return sorted(defs.resolve_all_asset_specs(),
                  key=lambda spec: (group.get(spec.group_name, len(GROUPS)), order[spec.key]))


def assets_page() -> str:
    defs = _definitions()
    graph = defs.resolve_asset_graph()
    lines = ["# Assets", "", "Generated from `pipelines.definitions` when the site is built. Config fields are "
             "what the launchpad (shift-click *Materialize*) and `--config-json '{\"ops\": {ASSET: {\"config\": "
             "{...}}}}'` take; what each asset records is on [Asset metadata](metadata.md).", ""]
    for spec in _assets_in_order(defs):
        node = graph.get(spec.key)
        name = spec.key.to_user_string()
        lines += [f"## `{name}`", "", f"*group* `{spec.group_name}`"]
        if node.parent_keys:
            lines[-1] += " · *reads* " + ", ".join(f"`{k.to_user_string()}`" for k in sorted(node.parent_keys))
        if spec.partitions_def is not None:
            lines[-1] += f" · *partitioned* ({type(spec.partitions_def).__name__})"
        if getattr(node, "pools", None):
            lines[-1] += " · *pool* " + ", ".join(f"`{p}`" for p in sorted(node.pools))
        lines += ["", inspect.cleandoc(spec.description or "").strip(), ""]
        config = _config_class(defs.get_assets_def(spec.key))
        if config is not None:
            lines += [f"Config `{config.__name__}`:", "", "| field | type | default | meaning |", "|---|---|---|---|",
                      *_config_rows(config), ""]
        else:
            lines += ["No config.", ""]
    lines += ["## Jobs", "", "| job | description |", "|---|---|"]
    for job in sorted(defs.jobs or [], key=lambda j: j.name):
        lines.append(f"| `{job.name}` | {_cell(getattr(job, 'description', '') or '')} |")
    lines += ["", "## Asset checks", "", "| check | on | description |", "|---|---|---|"]
    for checks in defs.asset_checks or []:
        for check in checks.check_specs:
            lines.append(f"| `{check.name}` | `{check.asset_key.to_user_string()}` | {_cell(check.description or '')} |")
    lines += ["", "## Schedules and sensors", "", "| name | kind | default status |", "|---|---|---|"]
    for schedule in defs.schedules or []:
        lines.append(f"| `{schedule.name}` | schedule `{schedule.cron_schedule}` | {schedule.default_status.value} |")
    for sensor in defs.sensors or []:
        lines.append(f"| `{sensor.name}` | sensor | {sensor.default_status.value} |")
    return "\n".join(lines) + "\n"


def resources_page() -> str:
    defs = _definitions()
    lines = ["# Resources", "", "Generated from the `local` deployment's resource set (`pipelines/deployments.py`); "
             "`STEPCODE_DEPLOYMENT=production` binds the same keys to the production values "
             "([Production instance](../guides/production.md)). An asset takes a resource by its key.", ""]
    for key, resource in sorted(defs.resources.items()):
        cls = type(resource)
        lines += [f"## `{key}`: `{cls.__module__}.{cls.__name__}`", "", inspect.cleandoc(cls.__doc__ or "").strip(), ""]
        fields = getattr(cls, "model_fields", {})
        if fields:
            lines += ["| field | type | default | meaning |", "|---|---|---|---|", *_config_rows(cls), ""]
    return "\n".join(lines) + "\n"


def variables_in_code() -> dict[str, list[str]]:
    found: dict[str, set[str]] = {}
    for top in SCANNED:
        path = ROOT / top
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and p.suffix in
                                                 (".py", ".sh", ".yaml", ".yml", ".toml", "")]
        for file in files:
            if "__pycache__" in file.parts or file == Path(__file__).resolve():
                continue
            try:
                text = file.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            for name in VARIABLE.findall(text):
                found.setdefault(name, set()).add(str(file.relative_to(ROOT)))
    return {name: sorted(paths) for name, paths in sorted(found.items())}


def environment_page() -> str:
    found = variables_in_code()
    undocumented = sorted(set(found) - set(ENVIRONMENT))
    gone = sorted(set(ENVIRONMENT) - set(found))
    if undocumented or gone:
        raise RuntimeError(f"scripts/docs_reference.py ENVIRONMENT is out of date: undocumented {undocumented}, "
                           f"no longer in the code {gone}")
    lines = ["# Environment variables", "", "Every `STEPCODE_*` variable the code reads, found by a scan of the "
             "tree when the site is built (the build fails on one without a description). Dagster's own "
             "(`DAGSTER_HOME`) and Ray's (`RAY_AUTH_TOKEN`) are described where they are used.", ""]
    for topic in dict.fromkeys(topic for topic, _ in ENVIRONMENT.values()):
        lines += [f"## {topic[0].upper()}{topic[1:]}", "", "| variable | meaning | read in |", "|---|---|---|"]
        for name, (where, meaning) in ENVIRONMENT.items():
            if where == topic:
                files = ", ".join(f"`{p}`" for p in found[name][:4]) + (" ..." if len(found[name]) > 4 else "")
                lines.append(f"| `{name}` | {_cell(meaning)} | {files} |")
        lines.append("")
    return "\n".join(lines)


def _cli_parser() -> argparse.ArgumentParser:
    from pipelines.cli import build_full_parser

    return build_full_parser()


def _walk(parser: argparse.ArgumentParser, path: list[str]):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, [*path, name])


def cli_page() -> str:
    lines = ["# The `stepcode` command", "", "Generated from the parser (`pipelines/cli.py`, subcommands beside "
             "their code). Exit status: 0 the work was done, 1 the work found a failure, 2 input it cannot use "
             "(`stepcode <command>: <message>` on stderr).", ""]
    for path, parser in _walk(_cli_parser(), ["stepcode"]):
        buffer = io.StringIO()
        with redirect_stdout(buffer):
            parser.print_help()
        lines += [f"## `{' '.join(path)}`", "", "```text", buffer.getvalue().rstrip(), "```", ""]
    return "\n".join(lines)


def _field_comments(source: str, schema_name: str) -> dict[str, str]:
    """The `# comment` after each `pa.field("name", ...)` inside `NAME = pa.schema(...)` or `pa.struct`."""
    block = re.search(rf"^{schema_name} = pa\.(?:schema|struct)\(\n(.*?)^\)", source, re.S | re.M)
    comments = {}
    for line in (block.group(1) if block else "").splitlines():
        match = re.search(r'pa\.field\("(\w+)".*#\s*(.+)$', line)
        if match:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def schema_page() -> str:
    import pyarrow as pa

    from stepcode_core.data import schemas

    source = (ROOT / "stepcode_core/data/schemas.py").read_text()
    lines = ["# Dataset schemas", "", "Generated from `stepcode_core/data/schemas.py`: the explicit pyarrow schemas "
             "every Parquet artifact is written with, so pandas, DuckDB and `datasets.load_dataset(\"parquet\", ...)` "
             "read them without this package. Where each lands: "
             "`$STEPCODE_HOME/artifacts/<asset>/<cache key>/`.", ""]
    known: dict[str, str] = {}  # a column's first comment, for schemas that reuse it (`*RAW_PROGRAMS`)
    for name, value in vars(schemas).items():
        if not name.isupper() or not isinstance(value, (pa.Schema, pa.StructType)):
            continue
        own = _field_comments(source, name)
        comments = {**known, **own}
        known = {**own, **known}
        kind = "schema" if isinstance(value, pa.Schema) else "struct"
        lines += [f"## `{name}` ({kind})", "", "| column | type | nullable | meaning |", "|---|---|---|---|"]
        fields = list(value) if isinstance(value, pa.Schema) else [value.field(i) for i in range(value.num_fields)]
        for field in fields:
            lines.append(f"| `{field.name}` | `{_cell(field.type)}` | {'yes' if field.nullable else 'no'} | "
                         f"{_cell(comments.get(field.name, ''))} |")
        lines.append("")
    return "\n".join(lines)


def asset_graph_mermaid() -> str:
    """The asset graph as a Mermaid flowchart, one subgraph per asset group."""
    defs = _definitions()
    graph = defs.resolve_asset_graph()
    specs = _assets_in_order(defs)
    lines = ["```mermaid", "flowchart LR"]
    for group in dict.fromkeys(spec.group_name for spec in specs):
        lines.append(f"  subgraph {group}")
        lines += [f"    {spec.key.to_user_string()}" for spec in specs if spec.group_name == group]
        lines.append("  end")
    for spec in specs:
        for parent in sorted(graph.get(spec.key).parent_keys):
            lines.append(f"  {parent.to_user_string()} --> {spec.key.to_user_string()}")
    lines.append("```")
    return "\n".join(lines)


PAGES = {
    "reference/assets.md": assets_page,
    "reference/resources.md": resources_page,
    "reference/environment.md": environment_page,
    "reference/cli.md": cli_page,
    "reference/schemas.md": schema_page,
}
ASSET_GRAPH_MARKER = "<!-- asset-graph -->"


def on_files(files, config):
    from mkdocs.structure.files import File

    for uri, make in PAGES.items():
        files.append(File.generated(config, uri, content=make()))
    return files


def on_page_markdown(markdown, page, config, files):
    if ASSET_GRAPH_MARKER in markdown:
        markdown = markdown.replace(ASSET_GRAPH_MARKER, asset_graph_mermaid())
    return markdown


if __name__ == "__main__":
    choice = sys.argv[1] if len(sys.argv) > 1 else ""
    makers = {uri.split("/")[-1][:-3]: make for uri, make in PAGES.items()} | {"graph": asset_graph_mermaid}
    if choice not in makers:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(makers)}}}")
    print(makers[choice]())
