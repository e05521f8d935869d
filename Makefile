# negvol: the two commands of the README, and their parts.
#
#   make demo   the main job, from nothing on the CPU: phantoms -> train a small MC + TB
#               network (bounded time) -> segment an unseen phantom -> NV report + metrics
#   make demo-nv   the NV step alone, from a built-in phantom's true masks (into DEMO_OUT/nv-only)
#   make test   every test of the workspace (installs libtorch first if needed)
#
# libtorch (torch==2.11.0 from PyPI, for tch =0.24.0) is installed once into
# ~/.cache/negvol and linked as .libtorch; see scripts/libtorch.sh.

CARGO ?= cargo
# Test and example processes find libtorch here even where a binary's run path does not
# reach it (cargo's [env] table does not pass LD_LIBRARY_PATH on to test processes).
export LD_LIBRARY_PATH := $(CURDIR)/.libtorch/torch/lib$(if $(LD_LIBRARY_PATH),:$(LD_LIBRARY_PATH))
DEMO_OUT ?= demo-out

.PHONY: all demo demo-nv test test-pure libtorch lint fmt bench doc clean

all: test

libtorch:
	@scripts/libtorch.sh

demo: libtorch
	$(CARGO) run --release --example demo -- --out $(DEMO_OUT)

demo-nv: libtorch
	$(CARGO) run --release --example negvol -- --out $(DEMO_OUT)/nv-only

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
