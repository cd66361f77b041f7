#!/usr/bin/env bash
# The peer benchmark (`make bench-peer`, BENCH_PARTS=peer; never part of `make test`):
# Nestor and Kamaji, its closest peer, on the same meta cluster in the same run, given the
# same work, each figure for both and as the ratio Nestor / Kamaji.
#
# Kamaji KAMAJI_VERSION is built from the Go module proxy (hack/build-peer.sh) and installed
# from its own chart, charts/kamaji of the same module, rendered by `helm template`:
#   - its CRDs, RBAC, Deployment, webhook Service and webhook configurations as rendered;
#   - its DataStore `default`: the chart's own etcd (a 3-member StatefulSet with TLS), run
#     from the same etcd build as Nestor's tenants (PEER_ETCD_VERSION);
#   - the chart's two steps that need images from registries are done on this host with the
#     same inputs instead: the cfssl pre-install Job's certificates (CA, server, peer and root
#     client, from the chart's own CSR ConfigMap: names, hosts, usages) are made with openssl,
#     and the post-install Job's etcdctl commands (a `root` user and role, auth enabled) run
#     in etcd-0 through `kubectl exec`;
#   - cert-manager, which the chart uses for the webhook's serving certificate and to inject
#     its CA into the webhook configurations and the TenantControlPlane CRD's conversion
#     webhook, is replaced by openssl here: a self-signed CA, a serving certificate for the
#     same DNS names in the Secret the Deployment mounts, and that CA written as caBundle.
#   - Telemetry is off (--disable-telemetry): nothing may leave this machine.
# Everything installed is removed when the part ends, also on failure or Ctrl-C.
#
# Both sides run Kubernetes PEER_KUBERNETES_VERSION: the newest Kamaji KAMAJI_VERSION accepts.
# A tenant is "Ready" for both when its /readyz answers `ok` through the admin kubeconfig its
# operator emitted (server, CA and client certificate from it; a server name that does not
# resolve on this host is reached at its Service's ClusterIP under that name).
#
# Measured, alternating Nestor and Kamaji so that the noise of a shared machine hits both:
#   time_to_ready     PEER_RUNS (5) single tenants each, create -> /readyz answers
#   healing           the Ready tenant's apiserver Deployment deleted -> /readyz answers again
#                     from a recreated Deployment (one per single run)
#   burst             PEER_BURST (10) tenants created at once -> all answer /readyz
#   operator          RSS and CPU of each operator process (/proc) idle with 0 and with the
#                     burst's tenants, and the difference per tenant
#   tenant_pods       memory (working set) and CPU of each idle tenant's pods (kubelet
#                     summary); Kamaji's shared etcd is counted once and divided over its tenants
#   density           PEER_DENSITY_MAX (0: skipped) tenants added one at a time until one is
#                     not Ready within PEER_READY_TIMEOUT
# The kwok scale benchmark has no Kamaji counterpart: see docs/benchmarks.md.
#
# Usage: bench/peer.sh OUTPUT.json
# Knobs: PEER_RUNS (5), PEER_BURST (10), PEER_READY_TIMEOUT (300 s), PEER_IDLE_SECONDS (60),
#   PEER_DENSITY_MAX (0), PEER_KEEP (1: leave Kamaji installed, for debugging), NESTOR_BIN.
# If Kamaji cannot be built or installed, OUTPUT records the part as failed with the reason.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

OUTPUT=${1:?usage: bench/peer.sh OUTPUT.json}
RUNS=${PEER_RUNS:-5}
BURST=${PEER_BURST:-10}
READY_TIMEOUT=${PEER_READY_TIMEOUT:-300}
IDLE_SECONDS=${PEER_IDLE_SECONDS:-60}
DENSITY_MAX=${PEER_DENSITY_MAX:-0}
TENANT_VERSION=${PEER_KUBERNETES_VERSION#v}
SUFFIX=$(random_suffix)
# Each side's tenants in a namespace of their own; Kamaji itself in the namespace its chart
# names (its etcd certificates and DataStore refer to kamaji-system).
NAMESPACE=nestor-peer-$SUFFIX
KAMAJI_TENANTS=kamaji-peer-$SUFFIX
KAMAJI_NAMESPACE=kamaji-system
WORK=$(mktemp -d /tmp/nestor-peer.XXXXXX)
KAMAJI_RENDERED="$WORK/kamaji-rendered.yaml"
KAMAJI_INSTALLED=no

# fail_part STAGE REASON: the part's result is a failure with its reason; exits 0 so that
# `make bench` goes on with the other parts.
fail_part() {
  log "peer: $1 failed: $2"
  jq -n --arg stage "$1" --arg reason "$2" --arg kamaji "$KAMAJI_VERSION" --arg kubernetes "$PEER_KUBERNETES_VERSION" \
    '{failed: true, stage: $stage, reason: $reason, versions: {kamaji: $kamaji, kubernetes: $kubernetes}}' >"$OUTPUT"
  exit 0
}

# --- Kamaji: build, render, certificates, install, uninstall ---

kamaji_module() { upstream_bin_dir kamaji "$KAMAJI_VERSION"; }

# render_kamaji: the chart as Kamaji's install renders it, with the local images.
render_kamaji() {
  "$(upstream_bin_dir helm "$HELM_VERSION")/helm" template kamaji "$NESTOR_CACHE/src/kamaji-$KAMAJI_VERSION/charts/kamaji" \
    --kube-version "$KUBERNETES_VERSION" --namespace "$KAMAJI_NAMESPACE" --include-crds \
    --set image.repository="$LOCAL_IMAGE_REPOSITORY/kamaji",image.tag="$KAMAJI_VERSION",image.pullPolicy=Never \
    --set etcd.image.repository="$LOCAL_IMAGE_REPOSITORY/etcd",etcd.image.tag="${PEER_ETCD_VERSION#v}-0" \
    --set etcd.image.pullPolicy=Never,telemetry.disabled=true >"$KAMAJI_RENDERED"
}

# split_rendered CA_BUNDLE_FILE: from the rendered chart, writes $WORK/kamaji-crds.json,
# kamaji-objects.json (everything Helm applies outside hooks, less cert-manager's Certificate
# and Issuer; the webhook configurations and the CRD's conversion webhook given CA_BUNDLE),
# kamaji-datastore.json and etcd-csr.json (the chart's CSR ConfigMap data).
split_rendered() {
  python3 - "$KAMAJI_RENDERED" "$1" "$WORK" <<'PY'
import base64, json, sys, yaml
rendered, ca_file, work = sys.argv[1:4]
ca = base64.b64encode(open(ca_file, "rb").read()).decode()
crds, objects, datastore, csr = [], [], None, None
for doc in yaml.safe_load_all(open(rendered)):
    if not doc:
        continue
    kind = doc["kind"]
    hook = (doc["metadata"].get("annotations") or {}).get("helm.sh/hook")
    for key in ("cert-manager.io/inject-ca-from",):
        (doc["metadata"].get("annotations") or {}).pop(key, None)
    if kind == "CustomResourceDefinition":
        webhook = doc["spec"].get("conversion", {}).get("webhook")
        if webhook:
            webhook["clientConfig"]["caBundle"] = ca
        crds.append(doc)
    elif kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for hook_entry in doc["webhooks"]:
            hook_entry["clientConfig"]["caBundle"] = ca
        objects.append(doc)
    elif kind == "DataStore":
        doc["metadata"]["annotations"].pop("helm.sh/hook", None)
        datastore = doc
    elif kind == "ConfigMap" and doc["metadata"]["name"] == "etcd-csr":
        csr = doc["data"]
    elif kind in ("Certificate", "Issuer", "Job"):
        continue  # cert-manager's and the hook Jobs' work is done by bench/peer.sh instead
    else:
        objects.append(doc)
for name, value in (("kamaji-crds", crds), ("kamaji-objects", objects), ("kamaji-datastore", datastore), ("etcd-csr", csr)):
    json.dump({"apiVersion": "v1", "kind": "List", "items": value} if isinstance(value, list) else value,
              open(f"{work}/{name}.json", "w"))
PY
}

# openssl_cert DIR NAME CA SUBJECT SANS USAGES: an RSA 2048 key and a certificate signed by
# DIR/CA.{crt,key} (or self-signed when CA is "self"), valid one year, as cfssl's profiles.
openssl_cert() {
  local dir=$1 name=$2 ca=$3 subject=$4 sans=$5 usages=$6
  local ext="$dir/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usages"
    [[ -z $sans ]] || echo "subjectAltName=$sans"
  } >"$ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$dir/$name-key.pem" -subj "$subject" -out "$dir/$name.csr" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/$ca.crt" -CAkey "$dir/$ca.key" -CAcreateserial \
    -days 365 -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
  pkcs1 "$dir/$name-key.pem"
}

# pkcs1 KEY: rewrites an RSA key in PKCS#1 ("BEGIN RSA PRIVATE KEY"), as cfssl writes them;
# Kamaji parses its DataStore CA key as PKCS#1 only, and openssl 3 writes PKCS#8.
pkcs1() { openssl rsa -in "$1" -traditional -out "$1" 2>/dev/null; }

# sans_of CSR_JSON: cfssl "hosts" as an openssl subjectAltName list.
sans_of() {
  jq -r '[.hosts[] | if test("^[0-9.]+$") then "IP:\(.)" else "DNS:\(.)" end] | join(",")' <<<"$1"
}

# kamaji_certificates: the webhook's serving certificate (cert-manager's job in the chart) and
# etcd's (the cfssl Job's), from the same names. The webhook CA is made before, by install_kamaji.
kamaji_certificates() {
  local dir="$WORK/pki"
  mkdir -p "$dir"
  # Webhook: a leaf for the Service from the CA install_kamaji made (cert-manager's selfSigned
  # Issuer makes the certificate its own CA; a separate CA keeps the serving certificate a leaf).
  local service=kamaji-webhook-service.$KAMAJI_NAMESPACE
  openssl_cert "$dir" webhook webhook-ca "/CN=$service.svc" "DNS:$service.svc,DNS:$service.svc.cluster.local" serverAuth
  # etcd, from the chart's CSR ConfigMap (ca-csr, server-csr, peer-csr, root-client-csr).
  local csr="$WORK/etcd-csr.json"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 1825 \
    -subj "/C=IT/ST=Italy/L=Milan/CN=$(jq -r '."ca-csr.json" | fromjson | .CN' "$csr")" 2>/dev/null
  pkcs1 "$dir/ca.key"
  local server peer
  server=$(jq -r '."server-csr.json"' "$csr"); peer=$(jq -r '."peer-csr.json"' "$csr")
  # The chart signs both the server and the peer certificate with its peer-authentication profile.
  openssl_cert "$dir" server ca "/CN=$(jq -r .CN <<<"$server")" "$(sans_of "$server")" serverAuth,clientAuth
  openssl_cert "$dir" peer ca "/CN=$(jq -r .CN <<<"$peer")" "$(sans_of "$peer")" serverAuth,clientAuth
  openssl_cert "$dir" root-client ca "/O=system:masters/CN=root" "" clientAuth
}

# start_registry: bench/local-registry.py for the peer images, and a hosts.toml that sends
# containerd's pulls of LOCAL_IMAGE_REPOSITORY there (Kamaji's kube-apiserver pulls Always).
REGISTRY_PID=
REGISTRY_HOSTS_FILE="$REGISTRY_HOSTS_DIR/$LOCAL_IMAGE_REPOSITORY/hosts.toml"
start_registry() {
  local port
  port=$(free_port)
  setsid python3 "$BENCH_DIR/local-registry.py" "$port" "$LOCAL_IMAGE_REPOSITORY" \
    "$NESTOR_CACHE/images/kube-apiserver-$PEER_KUBERNETES_VERSION.oci.tar" >"$WORK/registry.log" 2>&1 &
  REGISTRY_PID=$!
  mkdir -p "$META_RUN_DIR/pids"
  echo "$REGISTRY_PID" >"$(pid_file peer-registry)"
  wait_until "the loopback registry" 20 curl -fsS "http://127.0.0.1:$port/v2/" || fail_part install "bench/local-registry.py did not start"
  mkdir -p "${REGISTRY_HOSTS_FILE%/*}"
  printf 'server = "http://127.0.0.1:%s"\n[host."http://127.0.0.1:%s"]\n  capabilities = ["pull", "resolve"]\n' \
    "$port" "$port" >"$REGISTRY_HOSTS_FILE"
}
stop_registry() {
  rm -rf "${REGISTRY_HOSTS_FILE%/*}"
  [[ -n $REGISTRY_PID ]] || return 0
  kill "$REGISTRY_PID" 2>/dev/null || true
  wait "$REGISTRY_PID" 2>/dev/null || true
  rm -f "$(pid_file peer-registry)"
  REGISTRY_PID=
}

install_kamaji() {
  log "peer: building Kamaji $KAMAJI_VERSION, Kubernetes $PEER_KUBERNETES_VERSION and etcd $PEER_ETCD_VERSION (cached by version)"
  "$HACK_DIR/build-peer.sh" >"$WORK/build.log" 2>&1 || fail_part build "hack/build-peer.sh failed: $(tail -3 "$WORK/build.log" | tr '\n' ' ')"
  render_kamaji 2>"$WORK/render.log" || fail_part install "helm template failed: $(tail -3 "$WORK/render.log" | tr '\n' ' ')"
  KAMAJI_INSTALLED=yes
  kc get namespace "$KAMAJI_NAMESPACE" >/dev/null 2>&1 && {
    log "peer: $KAMAJI_NAMESPACE exists (an earlier run left it): removing it first"
    uninstall_kamaji
    KAMAJI_INSTALLED=yes
  }
  local dir="$WORK/pki"
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/webhook-ca.key" -out "$dir/webhook-ca.crt" \
    -subj "/CN=kamaji-webhook-ca" -days 365 2>/dev/null
  split_rendered "$dir/webhook-ca.crt"
  kamaji_certificates
  start_registry
  log "peer: installing Kamaji from its chart into $KAMAJI_NAMESPACE"
  kc create namespace "$KAMAJI_NAMESPACE" >/dev/null
  kc -n "$KAMAJI_NAMESPACE" create secret tls kamaji-webhook-server-cert --cert="$dir/webhook.pem" --key="$dir/webhook-key.pem" \
    --dry-run=client -o json | jq --arg ca "$(base64 -w0 "$dir/webhook-ca.crt")" '.data["ca.crt"] = $ca' | kc apply -f - >/dev/null
  kc -n "$KAMAJI_NAMESPACE" create secret generic etcd-certs --from-file="$dir/ca.crt" --from-file="$dir/ca.key" \
    --from-file="$dir/peer.pem" --from-file="$dir/peer-key.pem" --from-file="$dir/server.pem" --from-file="$dir/server-key.pem" >/dev/null
  kc -n "$KAMAJI_NAMESPACE" create secret tls root-client-certs --cert="$dir/root-client.pem" --key="$dir/root-client-key.pem" >/dev/null
  kc apply --server-side --field-manager=nestor-bench-peer -f "$WORK/kamaji-crds.json" >/dev/null
  wait_until "Kamaji's CRDs served" 60 kc get tenantcontrolplanes.kamaji.clastix.io,datastores.kamaji.clastix.io -A ||
    fail_part install "Kamaji's CRDs were not served within 60 s"
  # The DataStore is a pre-install hook in the chart: it exists before the manager (which
  # exits when its --datastore is missing) and before the webhook that validates it.
  kc apply --server-side --field-manager=nestor-bench-peer -f "$WORK/kamaji-datastore.json" >/dev/null ||
    fail_part install "the DataStore was refused"
  kc apply --server-side --field-manager=nestor-bench-peer -f "$WORK/kamaji-objects.json" >"$WORK/apply.log" 2>&1 ||
    fail_part install "applying Kamaji's chart failed: $(tail -3 "$WORK/apply.log" | tr '\n' ' ')"
  kc -n "$KAMAJI_NAMESPACE" rollout status statefulset/etcd --timeout=300s >/dev/null ||
    fail_part install "Kamaji's etcd StatefulSet did not roll out in 300 s"
  # The chart's post-install Job: a root user and role, then auth on.
  local etcdctl=(kc -n "$KAMAJI_NAMESPACE" exec etcd-0 -- etcdctl --endpoints=https://127.0.0.1:2379
    --cacert=/etc/etcd/pki/ca.crt --cert=/etc/etcd/pki/peer.pem --key=/etc/etcd/pki/peer-key.pem)
  "${etcdctl[@]}" user add --no-password=true root >/dev/null && "${etcdctl[@]}" role add root >/dev/null &&
    "${etcdctl[@]}" user grant-role root root >/dev/null && "${etcdctl[@]}" auth enable >/dev/null ||
    fail_part install "etcd's root user and auth could not be set up"
  kc -n "$KAMAJI_NAMESPACE" rollout status deployment/kamaji --timeout=180s >/dev/null ||
    fail_part install "Kamaji's Deployment did not become available in 180 s"
  wait_until "Kamaji's webhook" 60 kc apply --server-side --field-manager=nestor-bench-peer --dry-run=server \
    -f "$WORK/kamaji-datastore.json" || fail_part install "Kamaji's webhook does not answer"
  log "peer: Kamaji $KAMAJI_VERSION installed, DataStore default on its etcd"
}

uninstall_kamaji() {
  [[ $KAMAJI_INSTALLED == yes ]] || return 0
  KAMAJI_INSTALLED=no
  log "peer: removing Kamaji (tenants, DataStore, chart objects, CRDs, $KAMAJI_NAMESPACE)"
  kc get namespace "$KAMAJI_TENANTS" >/dev/null 2>&1 && {
    kc -n "$KAMAJI_TENANTS" delete tenantcontrolplanes --all --wait=true --timeout=180s >/dev/null 2>&1 ||
      log "warning: Kamaji tenants not all deleted in 180 s"
    kc delete namespace "$KAMAJI_TENANTS" --wait=false >/dev/null 2>&1 || true
  }
  kc delete datastores.kamaji.clastix.io --all --wait=true --timeout=60s >/dev/null 2>&1 || true
  # The webhooks first: with Kamaji gone they would refuse (Fail) or slow down requests.
  kc delete mutatingwebhookconfiguration kamaji-mutating-webhook-configuration --ignore-not-found >/dev/null 2>&1 || true
  kc delete validatingwebhookconfiguration kamaji-validating-webhook-configuration --ignore-not-found >/dev/null 2>&1 || true
  [[ ! -f $WORK/kamaji-objects.json ]] || kc delete -f "$WORK/kamaji-objects.json" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kc delete namespace "$KAMAJI_NAMESPACE" --ignore-not-found --wait=true --timeout=180s >/dev/null 2>&1 ||
    log "warning: namespace $KAMAJI_NAMESPACE not gone in 180 s"
  # Finalizers of leftover objects would keep the CRDs; the objects are gone by now.
  kc delete crd tenantcontrolplanes.kamaji.clastix.io datastores.kamaji.clastix.io --ignore-not-found --timeout=60s >/dev/null 2>&1 || true
  kc delete clusterrole kamaji-manager-role kamaji-metrics-reader kamaji-proxy-role --ignore-not-found >/dev/null 2>&1 || true
  kc delete clusterrolebinding kamaji-manager-rolebinding kamaji-proxy-rolebinding --ignore-not-found >/dev/null 2>&1 || true
  stop_registry
}

# --- tenants of both sides ---

# ensure_nestor_crd: Nestor's CRD of this checkout (it accepts PEER_KUBERNETES_VERSION). Tests
# of other checkouts on a shared meta cluster apply theirs too; this puts it back before each
# Nestor tenant is created (outside every timing).
ensure_nestor_crd() {
  kc apply --server-side --force-conflicts --field-manager=nestor-bench-peer \
    -f "$REPO_ROOT/crds/nestor.dev_tenantclusters.yaml" >/dev/null
}

kamaji_yaml() {
  cat <<YAML
apiVersion: kamaji.clastix.io/v1alpha1
kind: TenantControlPlane
metadata: {name: $1, namespace: $KAMAJI_TENANTS}
spec:
  dataStore: default
  controlPlane:
    deployment:
      replicas: 1
      registrySettings: {registry: $LOCAL_IMAGE_REPOSITORY}
    service: {serviceType: ClusterIP}
  kubernetes:
    version: $PEER_KUBERNETES_VERSION
    kubelet: {cgroupfs: cgroupfs}
  networkProfile: {port: 6443}
  addons: {coreDNS: {}, kubeProxy: {}}
---
YAML
}

# tenant_manifest SIDE NAME EPHEMERAL: one tenant of SIDE (nestor|kamaji). Nestor's: 1 etcd
# member (PVC, or emptyDir when EPHEMERAL is true), 1 apiserver, 1 controller-manager, 1
# scheduler; Kamaji's: one pod of apiserver, controller-manager and scheduler on the shared
# DataStore. Both with the CoreDNS and kube-proxy addons (objects inside the tenant; no node
# runs them here).
tenant_manifest() {
  case $1 in
    nestor) tenant_yaml "$2" 1 1 "$3" ;;
    kamaji) kamaji_yaml "$2" ;;
  esac
}
tenant_namespace() { if [[ $1 == nestor ]]; then echo "$NAMESPACE"; else echo "$KAMAJI_TENANTS"; fi; }
# apiserver_deployment SIDE NAME: the Deployment that runs the tenant's kube-apiserver.
apiserver_deployment() { if [[ $1 == nestor ]]; then echo "$2-apiserver"; else echo "$2"; fi; }
# pod_selector SIDE NAME: the tenant's pods.
pod_selector() { if [[ $1 == nestor ]]; then echo "$TENANT_LABEL=$2"; else echo "kamaji.clastix.io/name=$2"; fi; }

# tenant_client SIDE NAME: once the admin kubeconfig exists, writes its CA, client certificate
# and key to $WORK/clients/SIDE-NAME.* and the curl arguments that reach its server to
# SIDE-NAME.args; fails while there is no kubeconfig yet.
tenant_client() {
  local side=$1 name=$2 namespace secret key dir="$WORK/clients" base
  namespace=$(tenant_namespace "$side")
  base="$dir/$side-$name"
  [[ -s $base.args ]] && return 0
  mkdir -p "$dir"
  if [[ $side == nestor ]]; then
    secret=$(kc -n "$namespace" get tenantcluster "$name" -o jsonpath='{.status.kubeconfigSecretName}' 2>/dev/null) || return 1
    key=value
  else
    secret=$(kc -n "$namespace" get tenantcontrolplane "$name" -o jsonpath='{.status.kubeconfig.admin.secretName}' 2>/dev/null) || return 1
    key=admin.conf
  fi
  [[ -n $secret ]] || return 1
  kc -n "$namespace" get secret "$secret" -o json 2>/dev/null | jq -r --arg key "$key" '.data[$key] // empty' | base64 -d >"$base.kubeconfig" 2>/dev/null || return 1
  [[ -s $base.kubeconfig ]] || return 1
  python3 - "$base" <<'PY' || return 1
import base64, sys, yaml
base = sys.argv[1]
config = yaml.safe_load(open(base + ".kubeconfig"))
cluster = config["clusters"][0]["cluster"]
user = config["users"][0]["user"]
for suffix, data in ((".ca", cluster["certificate-authority-data"]), (".crt", user["client-certificate-data"]), (".key", user["client-key-data"])):
    open(base + suffix, "wb").write(base64.b64decode(data))
open(base + ".server", "w").write(cluster["server"])
PY
  local server host port ip args
  server=$(cat "$base.server")
  host=${server#https://}; host=${host%%/*}; port=${host##*:}; host=${host%:*}
  args="--cacert $base.ca --cert $base.crt --key $base.key"
  if [[ ! $host =~ ^[0-9.]+$ ]]; then
    # A Service DNS name: this host resolves no cluster names; its ClusterIP is routed here.
    ip=$(kc -n "$(cut -d. -f2 <<<"$host")" get service "${host%%.*}" -o jsonpath='{.spec.clusterIP}' 2>/dev/null) || return 1
    args+=" --connect-to $host:$port:$ip:$port"
  fi
  echo "$args $server/readyz" >"$base.args"
}

# readyz SIDE NAME: the tenant's /readyz answers ok through its admin kubeconfig.
readyz() {
  tenant_client "$1" "$2" || return 1
  # shellcheck disable=SC2046 # the arguments are paths without spaces
  [[ $(curl -sS --max-time 2 $(cat "$WORK/clients/$1-$2.args") 2>/dev/null) == ok ]]
}

# wait_readyz SIDE NAME STARTED: polls every 0.5 s; prints seconds since STARTED, or fails
# after READY_TIMEOUT.
wait_readyz() {
  local side=$1 name=$2 started=$3 elapsed
  while :; do
    readyz "$side" "$name" && { seconds "$started" "$(now)"; return 0; }
    elapsed=$(seconds "$started" "$(now)")
    (( $(echo "$elapsed > $READY_TIMEOUT" | bc) )) && return 1
    sleep 0.5
  done
}

create_tenants() { # SIDE EPHEMERAL NAME...
  local side=$1 ephemeral=$2 name
  shift 2
  [[ $side != nestor ]] || ensure_nestor_crd
  for name in "$@"; do tenant_manifest "$side" "$name" "$ephemeral"; done >"$WORK/create.yaml"
}

delete_tenants() { # SIDE NAME...
  local side=$1 namespace kind name
  shift
  namespace=$(tenant_namespace "$side")
  if [[ $side == nestor ]]; then kind=tenantcluster; else kind=tenantcontrolplane; fi
  kc -n "$namespace" delete "$kind" "$@" --wait=true --timeout=180s >/dev/null 2>&1 || log "warning: $side tenants $* not deleted in 180 s"
  for name in "$@"; do
    wait_until "pods of $side tenant $name gone" 180 no_pods "$namespace" "$(pod_selector "$side" "$name")" ||
      log "warning: pods of $side tenant $name still there"
    rm -f "$WORK/clients/$side-$name".*
  done
}
no_pods() { [[ -z $(kc -n "$1" get pods,pvc -l "$2" -o name 2>/dev/null) ]]; }

# single SIDE NAME: one tenant created, time until /readyz answers; then its apiserver
# Deployment deleted, time until /readyz answers from a new one. One JSON line.
single() {
  local side=$1 name=$2 namespace started ready_s heal_s=null old_uid
  namespace=$(tenant_namespace "$side")
  create_tenants "$side" false "$name"
  started=$(now)
  kc create -f "$WORK/create.yaml" >/dev/null
  if ! ready_s=$(wait_readyz "$side" "$name" "$started"); then
    jq -nc --arg side "$side" --arg name "$name" --argjson t "$READY_TIMEOUT" '{side: $side, name: $name, error: "no /readyz within \($t) s"}'
    return
  fi
  sleep 5 # settle: the controller-manager and scheduler start, the operator's status writes
  local deployment
  deployment=$(apiserver_deployment "$side" "$name")
  old_uid=$(kc -n "$namespace" get deployment "$deployment" -o jsonpath='{.metadata.uid}')
  started=$(now)
  kc -n "$namespace" delete deployment "$deployment" --wait=false >/dev/null
  if wait_until "$side $name apiserver Deployment recreated" "$READY_TIMEOUT" recreated "$namespace" "$deployment" "$old_uid" &&
     heal_s=$(wait_readyz "$side" "$name" "$started"); then :; else heal_s=null; fi
  jq -nc --arg side "$side" --arg name "$name" --argjson ready "$ready_s" --argjson heal "$heal_s" \
    '{side: $side, name: $name, ready_s: $ready, heal_s: $heal}'
}
# recreated NAMESPACE DEPLOYMENT OLD_UID: a Deployment of that name with another UID has a
# ready replica (so /readyz is not answered by the deleted one's terminating pod).
recreated() {
  local state
  state=$(kc -n "$1" get deployment "$2" -o jsonpath='{.metadata.uid} {.status.readyReplicas}' 2>/dev/null) || return 1
  [[ ${state%% *} != "$3" && ${state#* } =~ ^[1-9] ]]
}

# --- operator and tenant footprints ---

# operator_pid SIDE: Nestor's host process; Kamaji's manager container's process.
operator_pid() {
  if [[ $1 == nestor ]]; then echo "$OPERATOR_PID"; return; fi
  local id
  id=$(kc -n "$KAMAJI_NAMESPACE" get pods -l app.kubernetes.io/name=kamaji -o jsonpath='{.items[0].status.containerStatuses[0].containerID}')
  ctr --address "$META_CONTAINERD_SOCKET" -n k8s.io tasks ls | awk -v id="${id#containerd://}" '$1 == id {print $2}'
}
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
proc_kib() { awk -v field="$2:" '$1 == field {print $2}' "/proc/$1/status"; }

# operators_idle TENANTS WINDOW: both operators' RSS (and its anonymous part) at the end of
# the window and CPU averaged over it, measured in the same window. One JSON object.
operators_idle() {
  local tenants=$1 window=$2 nestor_pid kamaji_pid n0 k0 started n1 k1 elapsed
  nestor_pid=$(operator_pid nestor); kamaji_pid=$(operator_pid kamaji)
  n0=$(proc_ticks "$nestor_pid"); k0=$(proc_ticks "$kamaji_pid"); started=$(now)
  sleep "$window"
  n1=$(proc_ticks "$nestor_pid"); k1=$(proc_ticks "$kamaji_pid"); elapsed=$(seconds "$started" "$(now)")
  jq -nc --argjson tenants "$tenants" --argjson window "$elapsed" --argjson hz "$CLOCK_TICKS" \
    --argjson n_ticks $((n1 - n0)) --argjson k_ticks $((k1 - k0)) \
    --argjson n_rss "$(proc_kib "$nestor_pid" VmRSS)" --argjson n_anon "$(proc_kib "$nestor_pid" RssAnon)" \
    --argjson k_rss "$(proc_kib "$kamaji_pid" VmRSS)" --argjson k_anon "$(proc_kib "$kamaji_pid" RssAnon)" '
    def mib: . / 1024 * 100 | round / 100;
    def mcpu($ticks): ($ticks / $hz) / $window * 1000 * 10 | round / 10;
    {tenants: $tenants, window_s: $window,
     nestor: {rss_mib: ($n_rss | mib), rss_anon_mib: ($n_anon | mib), cpu_mcpu: mcpu($n_ticks)},
     kamaji: {rss_mib: ($k_rss | mib), rss_anon_mib: ($k_anon | mib), cpu_mcpu: mcpu($k_ticks)}}'
}

# tenant_pods SIDE: per tenant, the working set and CPU of its pods (kubelet summary); for
# Kamaji also its etcd (the DataStore's three members) once, and its share per tenant.
tenant_pods() {
  local side=$1 namespace label
  namespace=$(tenant_namespace "$side")
  if [[ $side == nestor ]]; then label=$TENANT_LABEL; else label=kamaji.clastix.io/name; fi
  kc -n "$namespace" get pods -l "$label" -o json >"$WORK/pods.json"
  kc get --raw "/api/v1/nodes/$META_NODE_NAME/proxy/stats/summary" >"$WORK/summary.json"
  jq -c --slurpfile pods "$WORK/pods.json" --arg namespace "$namespace" --arg lbl "$label" \
    '
    def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
                else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def r: . * 10 | round / 10;
    ($pods[0].items | map({key: .metadata.name, value: .metadata.labels[$lbl]}) | from_entries) as $owner
    | [.pods[] | select(.podRef.namespace == $namespace and $owner[.podRef.name] != null)
       | {tenant: $owner[.podRef.name], memory_mib: ((.memory.workingSetBytes // 0) / 1048576),
          cpu_mcpu: ((.cpu.usageNanoCores // 0) / 1e6)}]
    | group_by(.tenant) | map({tenant: .[0].tenant, memory_mib: (map(.memory_mib) | add | r), cpu_mcpu: (map(.cpu_mcpu) | add | r)})
    | . as $tenants
    | {tenants: ($tenants | length),
       own_pods: {memory_mib: ([$tenants[].memory_mib] | median), cpu_mcpu: ([$tenants[].cpu_mcpu] | median)},
       per_tenant: $tenants}' "$WORK/summary.json" >"$WORK/tenant-pods.json"
  if [[ $side == kamaji ]]; then
    jq -c --arg ns "$KAMAJI_NAMESPACE" --slurpfile own "$WORK/tenant-pods.json" '
      def r: . * 10 | round / 10;
      [.pods[] | select(.podRef.namespace == $ns and (.podRef.name | startswith("etcd-")))
       | {memory_mib: ((.memory.workingSetBytes // 0) / 1048576), cpu_mcpu: ((.cpu.usageNanoCores // 0) / 1e6)}] as $etcd
      | ($own[0]) as $own
      | {memory_mib: ($etcd | map(.memory_mib) | add | r), cpu_mcpu: ($etcd | map(.cpu_mcpu) | add | r), members: ($etcd | length)} as $ds
      | $own + {datastore: $ds,
                datastore_share: {memory_mib: ($ds.memory_mib / $own.tenants | r), cpu_mcpu: ($ds.cpu_mcpu / $own.tenants | r),
                                  note: "the shared etcd counted once, divided over \($own.tenants) tenants"},
                with_datastore_share: {memory_mib: ($own.own_pods.memory_mib + $ds.memory_mib / $own.tenants | r),
                                       cpu_mcpu: ($own.own_pods.cpu_mcpu + $ds.cpu_mcpu / $own.tenants | r)}}' \
      "$WORK/summary.json"
  else
    jq -c '. + {with_datastore_share: .own_pods}' "$WORK/tenant-pods.json"
  fi
}

# burst SIDE: BURST tenants (Nestor's with ephemeral etcd storage, as bench/cluster.sh's burst)
# created in one request; polls each until its /readyz answers. Leaves them running.
burst() {
  local side=$1 names=() i started name pending ready_count=0 elapsed
  for ((i = 1; i <= BURST; i++)); do names+=("burst-$i"); done
  create_tenants "$side" true "${names[@]}"
  log "peer: $side burst of $BURST tenants"
  started=$(now)
  kc create -f "$WORK/create.yaml" >/dev/null
  : >"$WORK/burst-$side.jsonl"
  pending=("${names[@]}")
  while (( ${#pending[@]} > 0 )); do
    elapsed=$(seconds "$started" "$(now)")
    (( $(echo "$elapsed > $READY_TIMEOUT * 2" | bc) )) && break
    local still=()
    for name in "${pending[@]}"; do
      if readyz "$side" "$name"; then
        ready_count=$((ready_count + 1))
        jq -nc --arg name "$name" --argjson at "$(seconds "$started" "$(now)")" '{name: $name, ready_s: $at}' >>"$WORK/burst-$side.jsonl"
      else
        still+=("$name")
      fi
    done
    pending=("${still[@]}")
    (( ${#pending[@]} == 0 )) || sleep 0.5
  done
  log "peer: $side burst: $ready_count/$BURST answer /readyz"
  jq -sc --argjson count "$BURST" '
    def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
                else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    {tenants: $count, ready: length,
     all_ready_s: (if length == $count then (map(.ready_s) | max) else null end),
     per_tenant_ready_s: {median: (map(.ready_s) | median), min: (map(.ready_s) | min), max: (map(.ready_s) | max)},
     samples: .}' "$WORK/burst-$side.jsonl"
}

# density SIDE: tenants added one at a time until one does not answer /readyz within
# READY_TIMEOUT, or DENSITY_MAX answer. Deletes them at the end.
density() {
  local side=$1 i name started ready_s ready=0 stopped_by=cap names=()
  : >"$WORK/density-$side.jsonl"
  for ((i = 1; i <= DENSITY_MAX; i++)); do
    name="density-$i"
    names+=("$name")
    create_tenants "$side" true "$name"
    started=$(now)
    kc create -f "$WORK/create.yaml" >/dev/null
    if ready_s=$(wait_readyz "$side" "$name" "$started"); then
      ready=$i
      log "peer: $side density $i/$DENSITY_MAX: /readyz after ${ready_s}s"
      jq -nc --arg name "$name" --argjson ready_s "$ready_s" '{tenant: $name, ready_s: $ready_s}' >>"$WORK/density-$side.jsonl"
    else
      stopped_by=failure
      log "peer: $side density: $name not Ready within ${READY_TIMEOUT}s"
      break
    fi
  done
  local node
  node=$(kc get --raw "/api/v1/nodes/$META_NODE_NAME/proxy/stats/summary" | jq -c '.node | {
    memory_working_set_mib: ((.memory.workingSetBytes // 0) / 1048576 | round),
    memory_available_mib: ((.memory.availableBytes // 0) / 1048576 | round)}')
  delete_tenants "$side" "${names[@]}"
  jq -sc --argjson cap "$DENSITY_MAX" --argjson ready "$ready" --arg stopped "$stopped_by" --argjson node "$node" \
    '{cap: $cap, ready: $ready, stopped_by: $stopped, node_at_end: $node, steps: .}' "$WORK/density-$side.jsonl"
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  kc -n "$NAMESPACE" delete tenantclusters --all --wait=true --timeout=180s >/dev/null 2>&1 || true
  stop_operator
  kc delete namespace "$NAMESPACE" --wait=false >/dev/null 2>&1 || true
  if [[ ${PEER_KEEP:-0} == 1 ]]; then log "peer: PEER_KEEP=1: Kamaji left installed"; else uninstall_kamaji; fi
  log "peer: work files in $WORK"
  exit "$status"
}

main() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  install_kamaji
  ensure_nestor_crd
  kc create namespace "$NAMESPACE" >/dev/null
  kc create namespace "$KAMAJI_TENANTS" >/dev/null
  start_operator "$NAMESPACE" "$WORK/operator.log"
  sleep 5
  log "peer: both operators idle with no tenant (${IDLE_SECONDS}s)"
  operators_idle 0 "$IDLE_SECONDS" >"$WORK/idle-0.json"

  # One tenant at a time, alternating which side goes first.
  local run side sides
  : >"$WORK/single.jsonl"
  for ((run = 1; run <= RUNS; run++)); do
    if (( run % 2 == 1 )); then sides="nestor kamaji"; else sides="kamaji nestor"; fi
    for side in $sides; do
      log "peer: $side single run $run/$RUNS"
      single "$side" "single-$run" | tee -a "$WORK/single.jsonl" >&2
      delete_tenants "$side" "single-$run"
    done
  done

  local burst_names=() i
  for ((i = 1; i <= BURST; i++)); do burst_names+=("burst-$i"); done
  for side in nestor kamaji; do
    burst "$side" >"$WORK/burst-$side.json"
    sleep 10
    log "peer: $side tenants idle (${IDLE_SECONDS}s)"
    operators_idle "$(jq .ready "$WORK/burst-$side.json")" "$IDLE_SECONDS" >"$WORK/idle-$side.json"
    tenant_pods "$side" >"$WORK/pods-$side.json"
    delete_tenants "$side" "${burst_names[@]}"
  done

  for side in nestor kamaji; do
    if (( DENSITY_MAX > 0 )); then density "$side" >"$WORK/density-$side.json"; else echo null >"$WORK/density-$side.json"; fi
  done

  jq -n --slurpfile single "$WORK/single.jsonl" --slurpfile idle0 "$WORK/idle-0.json" \
    --slurpfile idle_n "$WORK/idle-nestor.json" --slurpfile idle_k "$WORK/idle-kamaji.json" \
    --slurpfile burst_n "$WORK/burst-nestor.json" --slurpfile burst_k "$WORK/burst-kamaji.json" \
    --slurpfile pods_n "$WORK/pods-nestor.json" --slurpfile pods_k "$WORK/pods-kamaji.json" \
    --slurpfile density_n "$WORK/density-nestor.json" --slurpfile density_k "$WORK/density-kamaji.json" \
    --arg kamaji "$KAMAJI_VERSION" --arg kubernetes "$PEER_KUBERNETES_VERSION" --arg etcd "$PEER_ETCD_VERSION" \
    --arg helm "$HELM_VERSION" --argjson runs "$RUNS" '
    def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
                else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def stats: {median: median, min: min, max: max, n: length};
    def ratio($a; $b): if $a == null or $b == null or $b == 0 then null else ($a / $b * 1000 | round / 1000) end;
    def side($s; f): [$single[] | select(.side == $s) | f | select(. != null)];
    def per_tenant($idle; $s): if $idle.tenants > 0 then
        {rss_mib: (($idle[$s].rss_mib - $idle0[0][$s].rss_mib) / $idle.tenants * 1000 | round / 1000),
         rss_anon_mib: (($idle[$s].rss_anon_mib - $idle0[0][$s].rss_anon_mib) / $idle.tenants * 1000 | round / 1000),
         cpu_mcpu: (($idle[$s].cpu_mcpu - $idle0[0][$s].cpu_mcpu) / $idle.tenants * 100 | round / 100)} else null end;
    (side("nestor"; .ready_s) | stats) as $rn | (side("kamaji"; .ready_s) | stats) as $rk
    | (side("nestor"; .heal_s) | stats) as $hn | (side("kamaji"; .heal_s) | stats) as $hk
    | per_tenant($idle_n[0]; "nestor") as $on | per_tenant($idle_k[0]; "kamaji") as $ok
    | {
        versions: {kamaji: $kamaji, kubernetes: $kubernetes, etcd: $etcd, helm: $helm},
        readiness: "GET /readyz answers ok through the admin kubeconfig the operator emitted",
        single_runs: $runs,
        time_to_ready_s: {nestor: $rn, kamaji: $rk, ratio_median: ratio($rn.median; $rk.median),
                          note: "Nestor: 1 etcd member on a PVC, 1 apiserver, 1 controller-manager, 1 scheduler; Kamaji: 1 pod (apiserver, controller-manager, scheduler) on the shared DataStore"},
        healing_s: {nestor: $hn, kamaji: $hk, ratio_median: ratio($hn.median; $hk.median),
                    note: "apiserver Deployment deleted -> /readyz answers from a recreated Deployment"},
        burst: {nestor: $burst_n[0], kamaji: $burst_k[0],
                ratio_all_ready: ratio($burst_n[0].all_ready_s; $burst_k[0].all_ready_s),
                note: "Nestor tenants with ephemeral etcd storage (emptyDir), as bench/cluster.sh burst"},
        operator: {idle_0: $idle0[0], idle_nestor_tenants: $idle_n[0], idle_kamaji_tenants: $idle_k[0],
                   per_tenant: {nestor: $on, kamaji: $ok,
                                ratio_rss: ratio($on.rss_mib; $ok.rss_mib), ratio_rss_anon: ratio($on.rss_anon_mib; $ok.rss_anon_mib),
                                ratio_cpu: ratio($on.cpu_mcpu; $ok.cpu_mcpu)},
                   idle_ratio: {rss: ratio($idle0[0].nestor.rss_mib; $idle0[0].kamaji.rss_mib),
                                cpu: ratio($idle0[0].nestor.cpu_mcpu; $idle0[0].kamaji.cpu_mcpu)},
                   note: "RSS from /proc of each operator process (Nestor: host process; Kamaji: its manager container, chart limits 200m CPU / 100Mi); per tenant = (idle with the burst tenants - idle with none) / tenants"},
        tenant_pods: {nestor: $pods_n[0], kamaji: $pods_k[0],
                      ratio_memory: ratio($pods_n[0].with_datastore_share.memory_mib; $pods_k[0].with_datastore_share.memory_mib),
                      ratio_cpu: ratio($pods_n[0].with_datastore_share.cpu_mcpu; $pods_k[0].with_datastore_share.cpu_mcpu),
                      note: "median per idle tenant, working set (kubelet summary); Kamaji: its pod plus its share of the shared etcd (3 members, counted once, divided over its tenants)"},
        density: {nestor: $density_n[0], kamaji: $density_k[0]},
        scale_kwok: {skipped: "not run: Kamaji cannot be driven as bench/scale.sh drives Nestor. Its TenantControlPlane stays Provisioning until Kamaji has run kubeadm phases against the running apiserver, which kwok-simulated pods do not serve, and each tenant also writes a user and role into the shared etcd; timing only until each Deployment exists would take its pods pinned to kwok nodes (nodeSelector, tolerations), not built here"}
      }' >"$OUTPUT"
  log "peer benchmark written to $OUTPUT"
}

main "$@"
