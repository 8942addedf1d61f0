# Set-up and everyday commands. Each target installs what the build needs
# (cmake and libclang for HiGHS) if the machine lacks it.
.PHONY: deps demo test lint bench

deps:
	@./scripts/deps.sh

demo: deps
	cargo run --release -- gen --sites 12 --workloads 80 --seed 7 --out target/demo-instance.json
	cargo run --release -- solve --instance target/demo-instance.json --out target/demo-placement.json --plan-out target/demo-plan.json --time-limit 30
	cargo run --release -- verify --instance target/demo-instance.json --placement target/demo-placement.json > /dev/null
	cargo run --release -- verify-plan --instance target/demo-instance.json --plan target/demo-plan.json > /dev/null
	cargo run --release -- whatif --scenarios examples/what-if.yaml --out target/demo-whatif.csv

test: deps
	cargo test

lint: deps
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

bench: deps
	cargo bench --bench planner
	cargo bench --bench exact_solver
	cargo bench --bench whatif
