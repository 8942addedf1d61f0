# Set-up and everyday commands. Each target installs what the build needs
# (cmake and libclang for HiGHS) if the machine lacks it; without root they
# come from PyPI and target/deps.env says where (read before each cargo).
.PHONY: deps services demo test lint bench fuzz

BUILD_ENV = set -a; . ./target/deps.env; set +a;

deps:
	@./scripts/deps.sh

# Only what the build needs (no browser, no Prometheus): the story starts sooner.
demo:
	@./scripts/deps.sh build
	$(BUILD_ENV) cargo run --release -- demo

# PostgreSQL and nats-server on loopback for the cluster tests (installed
# from Debian's packages if missing); their URLs in target/services.env.
services:
	@./scripts/services.sh start

test: deps services
	$(BUILD_ENV) set -a; . ./target/services.env; set +a; cargo test --workspace

# Each fuzz target for FUZZ_SECONDS (CI: 30).
fuzz:
	scripts/fuzz.sh $(or $(FUZZ_SECONDS),60)

lint: deps
	python3 scripts/structure.py
	scripts/proto_check.sh
	cargo fmt --all -- --check
	$(BUILD_ENV) cargo clippy --workspace --all-targets -- -D warnings

bench: deps
	$(BUILD_ENV) cargo bench --bench planner
	$(BUILD_ENV) cargo bench --bench exact_solver
	$(BUILD_ENV) cargo bench --bench whatif
