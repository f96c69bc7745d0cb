# Everyday commands. Each runs the same lines as .ci/run (a test checks that the `lint` and
# `bench-smoke` recipes match it), against the virtualenv of the README's install:
#   python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'
# .ci/run does not call make: CI must pass on a machine with nothing but python3 and git.

.PHONY: test test-fast test-slow lint fmt docs bench-smoke

# The default run: everything but the `slow` tests, on every core, with coverage.
test:
	.venv/bin/pytest

# Without the browser tests or coverage: a quick run while working.
test-fast:
	.venv/bin/pytest -m "not slow and not browser" --no-cov

# Real server processes killed mid-run, Redis faults, a fresh locked install; one at a time.
test-slow:
	.venv/bin/pytest -m slow -n 0 --no-cov

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy --strict src
	.venv/bin/pyloto statecharts check
	.venv/bin/pyloto config docs --check
	.venv/bin/pyloto docs architecture --check
	.venv/bin/hadolint Dockerfile

fmt:
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

# Regenerate what the drift checks compare: the state diagrams, the configuration reference,
# and the generated parts of docs/architecture.md and the README.
docs:
	.venv/bin/pyloto statecharts render
	.venv/bin/pyloto config docs
	.venv/bin/pyloto docs architecture

# Each benchmark, tiny, so they keep working; no timing is asserted.
bench-smoke:
	.venv/bin/pip install --quiet -e '.[bench]'
	.venv/bin/python bench/ingest.py --smoke
	if command -v wrk >/dev/null 2>&1; then .venv/bin/python bench/ingest.py --smoke --client python; fi
	.venv/bin/python bench/pipeline.py --smoke
	.venv/bin/python bench/latency.py --smoke
	.venv/bin/python bench/client_cost.py --smoke
	.venv/bin/python bench/redis_cost.py --smoke
	.venv/bin/python bench/log_cost.py --lines 500 --repeat 1
	.venv/bin/python bench/ops_console.py --smoke
	.venv/bin/python bench/media_step.py --smoke
	.venv/bin/python bench/bursts.py --smoke
