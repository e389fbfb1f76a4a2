# The two commands a newcomer needs are `make demo` and `make test`; both set themselves up.
.PHONY: setup test

setup:
	./scripts/setup.sh

# The whole suite (unit, integration against real PostgreSQL + the simulator, acceptance).
test: setup
	.venv/bin/pytest --durations=15
