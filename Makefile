# Nestor: every entry point a developer or CI needs. See README.md and docs/development.md.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

.PHONY: help install demo test unit bench bench-scale bench-density bench-workers bench-tunnel bench-etcd-space bench-backup bench-peer meta-up meta-down meta-status s3-up s3-down worker-up worker-down upstream images operator-image crds lint

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

install: ## build the nestor CLI (and operator) and put it in ~/.cargo/bin
	cargo install --path operator --locked

demo: ## start the local meta cluster and the operator, create examples/tenant.yaml, print its namespaces
	hack/demo.sh

test: ## every test tier: unit, meta cluster up, integration and e2e, smoke, meta-down clean-up check
	hack/test.sh

unit: ## pure unit tests only (no cluster)
	cargo test --lib --bins

bench: ## benchmarks (see docs/benchmarks.md); never part of `make test`
	hack/bench.sh

bench-scale: ## the scale benchmark only: SCALE_TENANTS (1000) tenants, pods simulated by kwok
	BENCH_PARTS=scale hack/bench.sh

bench-density: ## the density benchmark only: real tenants one by one (DENSITY_MAX, 12)
	BENCH_PARTS=density hack/bench.sh

bench-workers: ## the workloads benchmark only: tenant created -> pod Running on a joined worker (root)
	BENCH_PARTS=workers hack/bench.sh

bench-tunnel: ## the tunnel benchmark only: kubectl exec through konnectivity vs direct, memory added (root)
	BENCH_PARTS=tunnel hack/bench.sh

bench-etcd-space: ## the etcd space benchmark only: defragmentation time, tenant API availability during it
	BENCH_PARTS=etcd-space hack/bench.sh

bench-backup: ## the backup benchmark only: 100 MiB tenant backed up to a volume and to local S3, restored
	BENCH_PARTS=backup hack/bench.sh

bench-peer: ## the peer benchmark only: Nestor and Kamaji side by side on the same meta cluster
	BENCH_PARTS=peer hack/bench.sh

meta-up: ## start the local meta cluster (builds upstream binaries and images on first use)
	hack/meta-up.sh

meta-down: ## stop the meta cluster and remove everything it created
	hack/meta-down.sh

meta-status: ## show the meta cluster's processes, node and system pods
	hack/meta-status.sh

s3-up: ## start the local S3 store for backup tests (versitygw on 10.200.0.1:9343; needs meta-up)
	hack/s3-up.sh

s3-down: ## stop the local S3 store; PURGE=1 also removes its objects
	hack/s3-down.sh $(if $(PURGE),--purge)

worker-up: ## a worker host joins a tenant: make worker-up NAME=w1 JOIN="<kubeadm join command>"
	hack/worker-up.sh $(NAME) -- $(JOIN)

worker-down: ## remove worker host NAME (make worker-down NAME=w1), or every worker without NAME
	hack/worker-down.sh $(if $(NAME),$(NAME),--all)

upstream: ## build the pinned upstream binaries into ~/.cache/nestor (no-op when cached)
	hack/build-upstream.sh

images: upstream ## build the local OCI images from those binaries
	hack/build-images.sh

operator-image: ## build the operator image and import it into the meta cluster
	hack/build-operator-image.sh

crds: ## regenerate crds/ from the Rust types
	cargo run --quiet -- crd > crds/nestor.dev_tenantclusters.yaml

lint: ## rustfmt and clippy as CI runs them
	cargo fmt --all --check
	cargo clippy --all-targets --locked -- -D warnings
