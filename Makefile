# Thin aliases for the scripts; the README names the scripts themselves.
.PHONY: setup run test bench bench-quick stress driver-table
setup:
	./scripts/setup
run:
	./scripts/run
test:
	./scripts/test
bench:
	./scripts/bench
bench-quick:
	./scripts/bench --quick
stress:
	./scripts/stress
# rewrite the README's driver table from the last driver-tier run (.cache/driver-results.json)
driver-table:
	.venv/bin/python scripts/driver_table.py --update README.md
