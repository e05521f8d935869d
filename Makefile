# negvol: the two commands of the README, and their parts.
#
#   make demo   the main job: runs the pipeline end to end on a built-in phantom
#   make test   every test of the workspace (installs libtorch first if needed)
#
# libtorch (torch==2.11.0 from PyPI, for tch =0.24.0) is installed once into
# ~/.cache/negvol and linked as .libtorch; see scripts/libtorch.sh.

CARGO ?= cargo
DEMO_OUT ?= demo-out

.PHONY: all demo test test-pure libtorch lint fmt bench doc clean

all: test

libtorch:
	@scripts/libtorch.sh

demo: libtorch
	$(CARGO) run --release --example negvol -- --out $(DEMO_OUT)

test: libtorch
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

# The pure crates, without libtorch.
test-pure:
	$(CARGO) test --no-default-features -p negvol-volume -p negvol-metrics -p negvol -p negvol-phantom

lint: libtorch
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: libtorch
	$(CARGO) bench --workspace

doc: libtorch
	$(CARGO) doc --workspace --no-deps

clean:
	$(CARGO) clean
