#!/usr/bin/env bash
# The Nestor demo (`make demo`): from nothing to a tenant control plane that
# answers kubectl, on the local meta cluster.
#
#   1. start the meta cluster (hack/meta-up.sh; nothing to do when it runs)
#   2. build the operator image and import it (hack/build-operator-image.sh)
#   3. deploy the operator (deploy/: CRD, RBAC, a 2-replica Deployment)
#   4. create the TenantCluster of examples/tenant.yaml and follow it to Ready
#   5. fetch its admin kubeconfig and list the tenant's namespaces through it
#   6. a worker joins it: `nestor join` prints the kubeadm join line, hack/worker-up.sh
#      runs it on a worker host (root only); a Deployment (examples/hello.yaml, busybox
#      httpd) runs on the worker; `kubectl get nodes,pods -A` through the kubeconfig
#   7. say where the nestor CLI is (the release build of step 2)
#
# Re-running is safe: every step is idempotent, and a changed operator rolls out
# (the Deployment names the image by its sha tag). A worker still Ready in the tenant
# is reused; any other worker of that name (a dead one, or one of an earlier tenant of
# the same name) is removed, its Node deleted, and a new one joins.
#
# Environment:
#   NESTOR_WATCH_NAMESPACE=ns  the operator watches only this namespace (set it on a
#                              meta cluster shared with other operators; must hold
#                              the example tenant, i.e. "tenants")
#   NESTOR_SKIP_META_UP=1      use the running meta cluster as it is (no root needed)
#   DEMO_READY_TIMEOUT=300     seconds to wait for the tenant to become Ready
#   DEMO_WORKER=demo-w1        name of the worker host (and its Node)
set -euo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

TENANT_MANIFEST="$REPO_ROOT/examples/tenant.yaml"
WORKLOAD_MANIFEST="$REPO_ROOT/examples/hello.yaml"
WORKER_NAME=${DEMO_WORKER:-demo-w1}
FIELD_MANAGER=nestor-demo
OPERATOR_NAMESPACE=nestor-system
OPERATOR_DEPLOYMENT=nestor-operator
READY_TIMEOUT=${DEMO_READY_TIMEOUT:-300}

STARTED=$(date +%s)
elapsed() { echo "$(( $(date +%s) - STARTED ))s"; }
step() { log "[$(elapsed)] $*"; }

# "NAMESPACE NAME" of the example's TenantCluster, read from the manifest so the two never disagree.
tenant_in_manifest() {
  meta_kubectl create --dry-run=client -f "$TENANT_MANIFEST" \
    -o jsonpath='{.kind} {.metadata.namespace} {.metadata.name}{"\n"}' | awk '$1 == "TenantCluster" { print $2, $3 }'
}

# deploy/ as `kubectl apply -k deploy/` would apply it, with the image pinned to
# this build's sha tag (so new code rolls out) and, when asked, one watched namespace.
deploy_operator() {
  local image=$1 rendered
  rendered=$(meta_kubectl kustomize "$REPO_ROOT/deploy")
  rendered=$(sed "s|image: $LOCAL_IMAGE_REPOSITORY/nestor-operator:dev\$|image: $image|" <<<"$rendered")
  if [[ -n ${NESTOR_WATCH_NAMESPACE:-} ]]; then
    rendered=$(sed "s|^\( *\)- --metrics-addr=\(.*\)\$|&\n\1- --watch-namespace=$NESTOR_WATCH_NAMESPACE|" <<<"$rendered")
  fi
  grep -q "image: $image\$" <<<"$rendered" || die "deploy/ does not name $LOCAL_IMAGE_REPOSITORY/nestor-operator:dev"
  meta_kubectl apply --server-side --force-conflicts --field-manager="$FIELD_MANAGER" -f - <<<"$rendered" >/dev/null
  meta_kubectl wait --for=condition=Established --timeout=60s crd/tenantclusters.nestor.dev >/dev/null
  meta_kubectl -n "$OPERATOR_NAMESPACE" rollout status "deployment/$OPERATOR_DEPLOYMENT" --timeout=180s >&2 ||
    { meta_kubectl -n "$OPERATOR_NAMESPACE" get pods -o wide >&2; die "the operator did not roll out"; }
}

# One line per phase or condition change until Ready.
follow_until_ready() {
  local namespace=$1 name=$2 since last="" now state
  since=$(date +%s)
  local format='{.status.phase}{range .status.conditions[*]} {.type}={.status}{end}'
  while :; do
    state=$(meta_kubectl -n "$namespace" get tenantcluster "$name" -o jsonpath="$format" 2>/dev/null || true)
    if [[ $state != "$last" ]]; then
      step "  $namespace/$name: ${state:-(no status yet)}"
      last=$state
    fi
    [[ ${state%% *} == Ready ]] && break
    now=$(date +%s)
    if (( now - since >= READY_TIMEOUT )); then
      meta_kubectl -n "$namespace" get tenantcluster,pods,pvc -o wide >&2 || true
      meta_kubectl -n "$OPERATOR_NAMESPACE" logs "deployment/$OPERATOR_DEPLOYMENT" --tail=30 >&2 || true
      die "$namespace/$name not Ready after ${READY_TIMEOUT}s"
    fi
    sleep 1
  done
  TENANT_READY_SECONDS=$(( $(date +%s) - since ))
}

# tenant_kubectl ARGS...: kubectl through the demo's rewritten tenant kubeconfig.
tenant_kubectl() { "$(k8s_bin kubectl)" --kubeconfig "$TENANT_KUBECONFIG" "$@"; }

worker_node_ready() {
  [[ $(tenant_kubectl get node "$WORKER_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' \
    2>/dev/null) == True ]]
}

# join_worker NAMESPACE NAME CLI: worker $WORKER_NAME is a Ready node of the tenant.
join_worker() {
  local namespace=$1 name=$2 cli=$3 line join_started
  # worker-up without a join line succeeds only for a healthy worker (and leaves it alone).
  if worker_node_ready && "$HACK_DIR/worker-up.sh" "$WORKER_NAME" 2>/dev/null; then
    step "worker $WORKER_NAME: already a Ready node of $namespace/$name"
    return
  fi
  # What is left of an earlier worker of that name goes, and so does its Node: kubeadm
  # refuses to join under the name of a Node that is still Ready.
  "$HACK_DIR/worker-down.sh" "$WORKER_NAME" 2>/dev/null
  tenant_kubectl delete node "$WORKER_NAME" --ignore-not-found --wait=true >/dev/null
  step "worker $WORKER_NAME: nestor join $name -n $namespace"
  line=$(KUBECONFIG=$META_KUBECONFIG "$cli" join "$name" -n "$namespace" --ttl 1h)
  echo "  $line" >&2
  local -a join
  read -ra join <<<"$line"
  join_started=$(date +%s)
  "$HACK_DIR/worker-up.sh" "$WORKER_NAME" -- "${join[@]}"
  WORKER_JOIN_SECONDS=$(( $(date +%s) - join_started ))
}

# run_workload: examples/hello.yaml (with this checkout's busybox tag) rolled out on the worker.
run_workload() {
  step "workload: kubectl apply -f ${WORKLOAD_MANIFEST#"$REPO_ROOT"/} (through the tenant kubeconfig)"
  sed "s|image: $LOCAL_IMAGE_REPOSITORY/busybox:.*\$|image: $LOCAL_IMAGE_REPOSITORY/busybox:$BUSYBOX_TAG|" \
    "$WORKLOAD_MANIFEST" | tenant_kubectl apply --server-side --field-manager="$FIELD_MANAGER" -f - >/dev/null
  tenant_kubectl rollout status deployment/hello --timeout=180s >&2 ||
    { tenant_kubectl get pods -o wide >&2; die "deployment/hello did not roll out in the tenant"; }
  # exec goes through the tenant apiserver to the kubelet, which it verifies against the
  # tenant CA: the kubelet serves once the operator approved its serving CSR (every 10 s).
  wait_until "the kubelet of $WORKER_NAME to serve exec" 90 tenant_kubectl exec deploy/hello -- true
  step "the page it serves (kubectl exec, through the tenant apiserver and the worker's kubelet):"
  tenant_kubectl exec deploy/hello -- wget -qO- http://localhost:8080/
}

main() {
  if [[ -z ${NESTOR_SKIP_META_UP:-} ]]; then
    step "meta cluster"
    "$HACK_DIR/meta-up.sh"
  fi
  meta_kubectl get --raw /readyz >/dev/null 2>&1 || die "the meta cluster does not answer ($META_KUBECONFIG)"

  step "operator image"
  local image
  image=$("$HACK_DIR/build-operator-image.sh")

  step "operator: deploy/ with $image${NESTOR_WATCH_NAMESPACE:+, watching $NESTOR_WATCH_NAMESPACE only}"
  deploy_operator "$image"

  local namespace name
  read -r namespace name < <(tenant_in_manifest) || true
  [[ -n $name ]] || die "no TenantCluster in $TENANT_MANIFEST"
  step "tenant $namespace/$name: kubectl apply -f ${TENANT_MANIFEST#"$REPO_ROOT"/}"
  meta_kubectl apply --server-side --field-manager="$FIELD_MANAGER" -f "$TENANT_MANIFEST" >/dev/null
  follow_until_ready "$namespace" "$name"

  # The kubeconfig names the apiserver at the tenant's endpoint. A NodePort endpoint
  # (examples/tenant.yaml: the meta node address, where nodes join too) works from this
  # host as it is. An in-cluster DNS name (serviceType ClusterIP) does not resolve here:
  # the Service's ClusterIP is routed to the host, and the name stays the TLS server
  # name the serving certificate is checked against.
  local secret endpoint server_host server cluster kubeconfig
  secret=$(meta_kubectl -n "$namespace" get tenantcluster "$name" -o jsonpath='{.status.kubeconfigSecretName}')
  endpoint=$(meta_kubectl -n "$namespace" get tenantcluster "$name" -o jsonpath='{.status.endpoint}')
  server_host=${endpoint#https://}
  server_host=${server_host%:*}
  server=$endpoint
  kubeconfig="$NESTOR_CACHE/demo/$namespace-$name.kubeconfig"
  TENANT_KUBECONFIG=$kubeconfig
  mkdir -p "$(dirname "$kubeconfig")"
  (umask 077 && meta_kubectl -n "$namespace" get secret "$secret" -o jsonpath='{.data.value}' | base64 -d >"$kubeconfig")
  if [[ $server_host == *.svc ]]; then
    local cluster_ip
    cluster_ip=$(meta_kubectl -n "$namespace" get service "${server_host%%.*}" -o jsonpath='{.spec.clusterIP}')
    server="https://$cluster_ip:${endpoint##*:}"
    cluster=$(meta_kubectl --kubeconfig "$kubeconfig" config view -o jsonpath='{.contexts[0].context.cluster}')
    meta_kubectl --kubeconfig "$kubeconfig" config set-cluster "$cluster" \
      --server="$server" --tls-server-name="$server_host" >/dev/null
  fi

  # The nestor CLI: the release binary hack/build-operator-image.sh built (or packed) for the image.
  local cli=${NESTOR_OPERATOR_BINARY:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/nestor}

  step "the tenant's namespaces, through its admin kubeconfig:"
  "$(k8s_bin kubectl)" --kubeconfig "$kubeconfig" get namespaces

  local worker_note
  if [[ $(id -u) == 0 ]]; then
    join_worker "$namespace" "$name" "$cli"
    run_workload
    step "the tenant's nodes and pods, through its admin kubeconfig:"
    tenant_kubectl get nodes,pods -A -o wide
    worker_note="Worker host $WORKER_NAME is its node${WORKER_JOIN_SECONDS:+ (worker-up took ${WORKER_JOIN_SECONDS}s)}, running deployment/hello.
Remove it with hack/worker-down.sh $WORKER_NAME (its Node stays, NotReady, as a
switched-off machine's does). Not there yet: pods on workers cannot reach the tenant's
kubernetes Service, so in-cluster clients and cluster DNS do not work on them."
  else
    log "not root: no worker host (hack/worker-up.sh needs root); the tenant has no node"
    worker_note="The tenant has no node (a worker host needs root: run the demo as root, or
hack/worker-up.sh NAME -- <the line nestor join prints>): pods stay Pending."
  fi

  cat <<EOF

Tenant $namespace/$name is Ready: $(elapsed) in all, ${TENANT_READY_SECONDS}s from apply to Ready.

Its admin kubeconfig, from Secret $namespace/$secret (server $server,
TLS server name $server_host):

  export KUBECONFIG=$kubeconfig
  kubectl get nodes,pods -A
  kubectl exec deploy/hello -- wget -qO- http://localhost:8080/

(kubectl: $(k8s_bin kubectl).)
$worker_note

More nodes: $cli --kubeconfig $META_KUBECONFIG -n $namespace join $name
prints the kubeadm join line; hack/worker-up.sh NAME -- <that line> runs it.

Inside the meta cluster the Secret's kubeconfig works as is. Watch the tenant with
  kubectl --kubeconfig $META_KUBECONFIG -n $namespace get tenantcluster,pods
and remove it with
  kubectl --kubeconfig $META_KUBECONFIG delete -f ${TENANT_MANIFEST#"$REPO_ROOT"/}

The nestor CLI is the binary the operator image was built from, $cli
('make install' puts nestor in ~/.cargo/bin):
  $cli --kubeconfig $META_KUBECONFIG -n $namespace describe $name
EOF
}

main "$@"
