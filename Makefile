# catalogsync developer entry points. Each target installs what it needs on a fresh
# machine: the local control plane (built from pinned Go modules), the SCIM servers
# (scim2-server in a virtualenv) and the Rust build.

SHELL := /bin/bash

.PHONY: setup test demo crds lint bench

## setup: build/cache kube-apiserver + etcd, create the SCIM venv, build the binary
setup:
	@KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" && echo "control plane: $$KUBEBUILDER_ASSETS"
	@hack/scim/setup.sh >/dev/null && echo "SCIM servers: ready"
	cargo build --locked

## test: unit tests and integration tests on a real control plane and real SCIM servers
test: setup
	KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" cargo test --locked --all-targets

## demo: the whole product on this machine (control plane, SCIM servers, controller, job runner);
## does its own set-up with progress lines. `make demo DEMO_ARGS=--keep` keeps it running.
demo:
	hack/demo.sh $(DEMO_ARGS)

## crds: regenerate crds/ and deploy/crds.yaml from the Rust types
crds:
	cargo run --locked -q -- crds --out-dir crds
	cargo run --locked -q -- crds > deploy/crds.yaml
	cargo run --locked -q -- api-docs > docs/api.md

lint:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings
