# Thin aliases for the scripts; the README names the scripts themselves.
.PHONY: setup run test bench bench-quick stress
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
