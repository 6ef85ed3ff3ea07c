# The README's two commands are `make demo` and `make test`; everything else is a convenience.
SHELL := /bin/bash
export STEPCODE_HOME ?= $(CURDIR)/.stepcode
export DAGSTER_HOME ?= $(CURDIR)
# A development copy of the reference data (CRUXEval, REval) beside the checkout, imported into the
# cache when it exists; elsewhere `stepcode data fetch` downloads it, and the demo runs without it.
SHARED_DATA := $(abspath $(CURDIR)/../shared/data)
EXTRAS := dev,train,reval

.PHONY: demo ablation test venv reference-data ui bench bench-sandbox clean

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

bench: venv
	.venv/bin/python benchmarks/bench_trace.py
	.venv/bin/python benchmarks/bench_pipeline.py
	.venv/bin/python benchmarks/bench_score.py --mode output
	.venv/bin/python benchmarks/bench_cpu_bf16.py

bench-sandbox: venv
	.venv/bin/python benchmarks/bench_sandbox.py

clean:
	rm -rf .stepcode
