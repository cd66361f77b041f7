#!/usr/bin/env bash
# The Nestor demo (`make demo`): from nothing to a tenant control plane that
# answers kubectl, on the local meta cluster.
#
#   1. start the meta cluster (hack/meta-up.sh; nothing to do when it runs)
#   2. build the operator image and import it (hack/build-operator-image.sh)
#   3. deploy the operator (deploy/: CRD, RBAC, a 2-replica Deployment)
#   4. create the TenantCluster of examples/tenant.yaml and follow it to Ready
#   5. fetch its admin kubeconfig and list the tenant's namespaces through it
#   6. say where the nestor CLI is (the release build of step 2)
#
# Re-running is safe: every step is idempotent, and a changed operator rolls out
# (the Deployment names the image by its sha tag).
#
# Environment:
#   NESTOR_WATCH_NAMESPACE=ns  the operator watches only this namespace (set it on a
#                              meta cluster shared with other operators; must hold
#                              the example tenant, i.e. "tenants")
#   NESTOR_SKIP_META_UP=1      use the running meta cluster as it is (no root needed)
#   DEMO_READY_TIMEOUT=300     seconds to wait for the tenant to become Ready
set -euo pipefail
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"

TENANT_MANIFEST="$REPO_ROOT/examples/tenant.yaml"
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

  # The kubeconfig names the apiserver by its in-cluster DNS name, which the host
  # cannot resolve; the Service's ClusterIP is routed to the host, and the name
  # stays the TLS server name the serving certificate is checked against.
  local secret endpoint server_host service cluster_ip cluster kubeconfig
  secret=$(meta_kubectl -n "$namespace" get tenantcluster "$name" -o jsonpath='{.status.kubeconfigSecretName}')
  endpoint=$(meta_kubectl -n "$namespace" get tenantcluster "$name" -o jsonpath='{.status.endpoint}')
  server_host=${endpoint#https://}
  server_host=${server_host%:*}
  service=${server_host%%.*}
  cluster_ip=$(meta_kubectl -n "$namespace" get service "$service" -o jsonpath='{.spec.clusterIP}')
  kubeconfig="$NESTOR_CACHE/demo/$namespace-$name.kubeconfig"
  mkdir -p "$(dirname "$kubeconfig")"
  (umask 077 && meta_kubectl -n "$namespace" get secret "$secret" -o jsonpath='{.data.value}' | base64 -d >"$kubeconfig")
  cluster=$(meta_kubectl --kubeconfig "$kubeconfig" config view -o jsonpath='{.contexts[0].context.cluster}')
  meta_kubectl --kubeconfig "$kubeconfig" config set-cluster "$cluster" \
    --server="https://$cluster_ip:${endpoint##*:}" --tls-server-name="$server_host" >/dev/null

  # The nestor CLI: the release binary hack/build-operator-image.sh built (or packed) for the image.
  local cli=${NESTOR_OPERATOR_BINARY:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/nestor}

  step "the tenant's namespaces, through its admin kubeconfig:"
  "$(k8s_bin kubectl)" --kubeconfig "$kubeconfig" get namespaces

  cat <<EOF

Tenant $namespace/$name is Ready: $(elapsed) in all, ${TENANT_READY_SECONDS}s from apply to Ready.

Its admin kubeconfig, from Secret $namespace/$secret, rewritten for this host
(server https://$cluster_ip:${endpoint##*:}, TLS server name $server_host):

  export KUBECONFIG=$kubeconfig
  kubectl get namespaces
  kubectl create namespace hello

(kubectl: $(k8s_bin kubectl). The tenant is a control plane without nodes:
objects are stored and controllers run, pods stay Pending.)
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
