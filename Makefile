# The README's two commands are `make demo` and `make test`; everything else is a convenience.
SHELL := /bin/bash
export STEPCODE_HOME ?= $(CURDIR)/.stepcode
export DAGSTER_HOME ?= $(CURDIR)
# A development copy of the reference data (CRUXEval, REval) beside the checkout, imported into the
# cache when it exists; elsewhere `stepcode data fetch` downloads it, and the demo runs without it.
SHARED_DATA := $(abspath $(CURDIR)/../shared/data)
EXTRAS := dev,train,reval,ray,mlflow,docs

.PHONY: demo ablation test venv reference-data ui docs bench bench-sandbox clean

venv:
	@scripts/bootstrap.sh $(EXTRAS)

reference-data: venv
	@if [ -d "$(SHARED_DATA)" ]; then .venv/bin/stepcode data fetch --from "$(SHARED_DATA)"; fi

demo: venv reference-data
	@.venv/bin/stepcode demo

ablation: venv reference-data
	@.venv/bin/stepcode ablation

test:
	@scripts/test.sh

ui: venv
	.venv/bin/dagster dev -m pipelines.definitions

# The docs site on http://127.0.0.1:8000 (reference pages generated from the code as it is now).
docs: venv
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs serve

# `make bench` measures the README's figures (minutes); `make bench QUICK=1` only checks each script runs.
BENCH_FLAGS := $(if $(QUICK),--quick,)
bench: venv reference-data
	.venv/bin/python benchmarks/bench_trace.py $(BENCH_FLAGS)
	.venv/bin/python benchmarks/bench_pipeline.py $(BENCH_FLAGS)
	.venv/bin/python benchmarks/bench_score.py --mode output --baseline-problems 100 $(BENCH_FLAGS)
	.venv/bin/python benchmarks/bench_score.py --mode input --baseline-problems 100 $(BENCH_FLAGS)
	.venv/bin/python benchmarks/bench_cpu_bf16.py $(BENCH_FLAGS)
	.venv/bin/python benchmarks/bench_sft.py --fast-path $(BENCH_FLAGS)
	.venv/bin/python benchmarks/bench_grpo.py --fast-path $(BENCH_FLAGS)
	.venv/bin/python benchmarks/bench_ray.py $(BENCH_FLAGS)

bench-sandbox: venv reference-data
	.venv/bin/python benchmarks/bench_sandbox.py $(BENCH_FLAGS)

clean:
	rm -rf .stepcode
