# Set-up and everyday commands. Each target installs what the build needs
# (cmake and libclang for HiGHS) if the machine lacks it.
.PHONY: deps demo test lint bench fuzz

deps:
	@./scripts/deps.sh

demo: deps
	cargo run --release -- demo

test: deps
	cargo test

# Each fuzz target for FUZZ_SECONDS (CI: 60).
fuzz:
	scripts/fuzz.sh $(or $(FUZZ_SECONDS),60)

lint: deps
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

bench: deps
	cargo bench --bench planner
	cargo bench --bench exact_solver
	cargo bench --bench whatif
