# catalogsync developer entry points. Each target installs what it needs on a fresh
# machine: the local control plane (built from pinned Go modules), the SCIM servers
# (scim2-server in a virtualenv) and the Rust build.

SHELL := /bin/bash

.PHONY: setup test demo demo-node crds lint bench bench-smoke bench-controller faults

## setup: build/cache the Go-built tools (kube-apiserver + etcd, the node's kubelet, kube-proxy,
## controller-manager and scheduler, helm, promtool, the kstatus helper), the release image
## archive for the node, create the SCIM venvs and the scimmy modules (interop peers), build
## the binary. The tests find the tools in the cache.
setup:
	@KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" && echo "control plane: $$KUBEBUILDER_ASSETS"
	@NODE="$$(hack/node/build.sh)" && echo "node components: $$NODE"
	@if [ "$$(id -u)" = 0 ]; then hack/node.sh packages && echo "node packages: containerd, runc, CNI plugins, iptables, conntrack"; fi
	@IMAGES="$$(hack/image.sh --archive target/image/images.tar)" && echo "node images: $$IMAGES"
	@hack/scim/setup.sh >/dev/null && echo "SCIM servers: ready"
	@hack/scim/setup.sh hack/canaille/requirements.txt >/dev/null && echo "Canaille (interop peer): ready"
	@hack/scimmy/setup.sh >/dev/null && echo "scimmy (interop peer): ready"
	@hack/helm.sh >/dev/null && echo "helm: ready"
	@hack/kstatus.sh >/dev/null && echo "kstatus helper: ready"
	@PROMTOOL="$$(hack/promtool.sh)" && echo "promtool: $$PROMTOOL"
	cargo build --locked --features dev

## test: unit tests and integration tests on a real control plane, a real one-node cluster
## (hack/node.sh; needs root) and real SCIM servers
test: setup
	KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" CATALOGSYNC_NODE_IMAGES="$(CURDIR)/target/image/images.tar" \
		cargo test --locked --all-targets --features dev

## demo: the whole product on this machine (control plane, SCIM servers, controller, job runner);
## does its own set-up with progress lines. `make demo DEMO_ARGS=--keep` keeps it running.
demo:
	hack/demo.sh $(DEMO_ARGS)

## demo-node: the same story on a real one-node cluster (hack/node.sh; needs root): deploy/
## installed as shipped with the locally built image, each run a Job pod. The node is torn down
## at the end (with DEMO_ARGS=--keep, at Ctrl-C).
demo-node:
	hack/demo.sh --node $(DEMO_ARGS)

## crds: regenerate crds/, the chart's crds/ and deploy/crds.yaml from the Rust types
crds:
	cargo run --locked -q --features dev -- crds --out-dir crds
	cargo run --locked -q --features dev -- crds --out-dir charts/catalogsync/crds
	cargo run --locked -q --features dev -- crds > deploy/crds.yaml
	cargo run --locked -q --features dev -- api-docs > docs/api.md

## bench: the sync engine benchmark (release build, 1,000/10,000/100,000 accounts per side, five
## shapes: 35 minutes for first/changed/steady on a quiet 2-core machine, the deleted shape's
## 1,000 confirmations at 100,000 accounts an estimated hour more: see --deletions); figures
## and how to read them in docs/benchmarks.md.
## BENCH_ARGS passes options, e.g. BENCH_ARGS="--sizes 10000 --shapes steady --runs 5".
bench:
	@hack/scim/setup.sh >/dev/null
	KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" cargo bench --locked --features dev --bench sync -- \
		--json target/bench/sync.json $(BENCH_ARGS)

## bench-controller: the controller benchmark (release build): 1,000 CatalogApps with their
## SyncPolicies to Ready, reconcile latency, writes in a quiet minute, peak RSS and CPU
## (a few minutes plus the build). CONTROLLER_BENCH_ARGS passes options, e.g. "--apps 200 --quiet-seconds 10".
bench-controller:
	@hack/scim/setup.sh >/dev/null
	KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" cargo bench --locked --features dev --bench controller -- \
		--json target/bench/controller.json $(CONTROLLER_BENCH_ARGS)

## bench-smoke: the same harness at 200 accounts, one run per shape (about a minute)
bench-smoke:
	@hack/scim/setup.sh >/dev/null
	KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" cargo bench --locked --features dev --bench sync -- \
		--sizes 200 --runs 1 $(BENCH_ARGS)

lint:
	cargo fmt --check
	cargo clippy --locked --all-targets --features dev -- -D warnings
	cargo clippy --locked -- -D warnings

## faults: the long fault campaign (300 seeded scenarios, Import and Provision, about 25 minutes; CI runs 30 in
## `make test`): prints the table of docs/reliability.md. FAULT_SEED picks another campaign.
FAULT_SCENARIOS ?= 300
FAULT_SEED ?= 1
faults: setup
	CATALOGSYNC_FAULT_SCENARIOS=$(FAULT_SCENARIOS) CATALOGSYNC_FAULT_SEED=$(FAULT_SEED) \
	KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" cargo test --locked --features dev --test integration \
		-- faults::fault_campaign --nocapture 2>&1 | grep -v '^{'
