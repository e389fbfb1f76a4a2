# The two commands a newcomer needs are `make demo` and `make test`; both set themselves up.
.PHONY: setup test demo bench rehearse

setup:
	./scripts/setup.sh

# The whole suite (unit, integration against real PostgreSQL + the simulator, acceptance).
test: setup
	.venv/bin/pytest --durations=15

# The whole fleet locally (simulator, 4 PostgreSQL clusters, 3 gatherers, deduplicator) with a
# live view; Ctrl-C stops everything. Options: make demo ARGS="--preset tiny --chaos".
demo: setup
	.venv/bin/kalshi-data demo $(ARGS)

# Benchmarks (never pass/fail): raw limits and our figures in the same run, ratios, CPU s per
# million, peak RSS; ~18 minutes; ARGS="--quick" for a smoke run, ARGS="--soak" for the 30-minute
# soak (not in the default run). Writes bench/results/latest.json. The [bench] extra holds the
# alternative stacks the run measures (uvloop, msgspec, picows).
bench: setup
	.venv/bin/pip install -q -e ".[bench]"
	.venv/bin/python -m bench $(ARGS)

# The road to production on one machine (also part of `make test`): build the wheel, install it
# into a fresh virtualenv, render terraform's host files, and boot a healthy fleet from them with
# the units' own ExecStart lines; then every runnable block of docs/runbook.md runs against it.
rehearse: setup
	.venv/bin/pytest tests/ops/test_host_files.py tests/ops/test_rehearsal.py -v -s --durations=0
