//! Scaling etcd against the real meta cluster: a tenant with one persistent etcd
//! member is scaled to three and back to one by editing `spec.etcd.replicas`, while
//! the tenant API is read every second. The operator adds each member as a learner
//! and promotes it, moves leadership off and removes each member before its pod goes,
//! and deletes the claims of the removed members. Data written before and during the
//! scaling reads back at the end.
//!
//! Needs the local meta cluster (KUBECONFIG, nestor.local images, a default storage
//! class). Prints the time each step took.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, PersistentVolumeClaim, Pod};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use nestor::api::{Phase, TenantCluster};
use serde_json::json;
use support::{Operator, TestNamespace, in_namespace, poll_for, runnable_spec};

const TENANT: &str = "grow";
/// Bound of every wait: creation, each scaling, the cleanup after it.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);
/// Namespace inside the tenant holding the test's data.
const DATA_NAMESPACE: &str = "scaling-data";

/// One failed read of the tenant API, when and in which phase.
#[derive(Debug)]
struct Failure {
    at: Duration,
    phase: String,
    error: String,
}

/// The tenant's EtcdReady condition as `status reason: message`.
fn etcd_ready(tenant: &TenantCluster) -> (String, String, String) {
    tenant
        .status
        .as_ref()
        .and_then(|status| status.conditions.iter().find(|condition| condition.type_ == "EtcdReady"))
        .map(|condition| (condition.status.clone(), condition.reason.clone(), condition.message.clone()))
        .unwrap_or_default()
}

fn phase(tenant: &TenantCluster) -> Option<Phase> {
    tenant.status.as_ref().and_then(|status| status.phase)
}

/// Settled at `members`: Ready, EtcdReady for exactly that many healthy members, the
/// size recorded in status. The meta cluster is shared: a test of another branch may
/// have installed a CRD without `status.etcdMembers` meanwhile, and the apiserver then
/// prunes the field; that is said, not failed on (the members are checked anyway).
fn settled_at(tenant: &TenantCluster, members: i32) -> bool {
    let (status, reason, message) = etcd_ready(tenant);
    let recorded = tenant.status.as_ref().and_then(|status| status.etcd_members);
    if recorded.is_none() {
        eprintln!("status.etcdMembers not recorded: not yet, or pruned by a CRD without it");
    }
    phase(tenant) == Some(Phase::Ready)
        && status == "True"
        && reason == "Ready"
        && message.contains(&format!("{members}/{members} members healthy"))
        && message.contains(&format!("member list has {members}"))
        && recorded.is_none_or(|recorded| recorded == members)
}

/// Polls the tenant once a second until `done` holds (at most [`STEP_TIMEOUT`]),
/// printing every new EtcdReady message with the time since `since`. Returns the
/// messages seen. [`STEP_TIMEOUT`] is above the harness's [`support::MAX_WAIT`], so
/// this calls the uncapped [`poll_for`].
async fn follow(
    ns: &TestNamespace,
    operator: &Operator,
    what: &str,
    since: Instant,
    mut done: impl AsyncFnMut(&TenantCluster) -> Result<(), String>,
) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut last_shown = None;
    let outcome = poll_for(STEP_TIMEOUT, Duration::from_secs(1), async || {
        let tenant = ns.tenant(TENANT).await?;
        let (status, reason, message) = etcd_ready(&tenant);
        let line = format!("EtcdReady={status} {reason}: {message}");
        let shown = format!("phase {:?}, {line}", phase(&tenant));
        if seen.last() != Some(&line) || last_shown.as_ref() != Some(&shown) {
            eprintln!("[{what} +{:>5.1}s] {shown}", since.elapsed().as_secs_f64());
            if seen.last() != Some(&line) {
                seen.push(line);
            }
            last_shown = Some(shown);
        }
        done(&tenant).await.map_err(|state| {
            format!("{state}; status {}", serde_json::to_string(&tenant.status).unwrap_or_default())
        })
    })
    .await;
    if let Err(state) = outcome {
        panic!("{what}: not within {STEP_TIMEOUT:?}: {state}; operator log:\n{}", operator.log_tail());
    }
    seen
}

/// Names of the tenant's etcd pods and volume claims, sorted.
async fn etcd_pods_and_claims(ns: &TestNamespace) -> (Vec<String>, Vec<String>) {
    let names = ns.names(TENANT);
    let selector = ListParams::default().labels(&names.tenant_selector());
    let mut pods: Vec<String> = ns
        .api::<Pod>()
        .list(&selector)
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter_map(|pod| pod.metadata.name)
        .filter(|name| name.starts_with(&names.etcd()))
        .collect();
    let mut claims: Vec<String> = ns
        .api::<PersistentVolumeClaim>()
        .list(&selector)
        .await
        .expect("claims")
        .items
        .into_iter()
        .filter_map(|claim| claim.metadata.name)
        .collect();
    pods.sort();
    claims.sort();
    (pods, claims)
}

/// Hosts of the members (`<pod>.<service>.<namespace>.svc`, ordinals 0 to 4) the
/// etcd peer certificate names.
async fn peer_certificate_members(ns: &TestNamespace) -> Vec<String> {
    use x509_parser::extensions::GeneralName;

    let names = ns.names(TENANT);
    let secret = ns.secret(&names.etcd_peer_secret()).await.expect("read").expect("Secret");
    let pem = secret.data.expect("data").get(nestor::resources::TLS_CERT_KEY).expect("tls.crt").0.clone();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
    let certificate = pem.parse_x509().expect("X.509");
    let extension = certificate.subject_alternative_name().expect("one SAN extension").expect("SANs");
    let dns: Vec<&str> = extension
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(*dns),
            _ => None,
        })
        .collect();
    (0..5)
        .map(|ordinal| names.etcd_member_host(ordinal))
        .filter(|host| dns.contains(&host.as_str()))
        .collect()
}

/// The apiserver's `--etcd-servers`.
async fn etcd_servers(ns: &TestNamespace) -> String {
    let deployment = ns.api::<Deployment>().get(&ns.names(TENANT).apiserver()).await.expect("Deployment");
    let args = deployment
        .spec
        .and_then(|spec| spec.template.spec)
        .and_then(|spec| spec.containers.into_iter().next())
        .and_then(|container| container.args)
        .unwrap_or_default();
    args.iter().find_map(|arg| arg.strip_prefix("--etcd-servers=")).unwrap_or_default().to_string()
}

async fn scale(ns: &TestNamespace, replicas: i32) {
    let patch = json!({"spec": {"etcd": {"replicas": replicas}}});
    ns.api::<TenantCluster>()
        .patch(TENANT, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch spec.etcd.replicas");
}

async fn write_config_map(client: &Client, name: &str, value: &str) {
    let config_map: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"value": value}}))
            .expect("ConfigMap");
    Api::<ConfigMap>::namespaced(client.clone(), DATA_NAMESPACE)
        .create(&PostParams::default(), &config_map)
        .await
        .unwrap_or_else(|error| panic!("write ConfigMap {name} into the tenant: {error}"));
}

async fn read_config_map(client: &Client, name: &str) -> Option<String> {
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), DATA_NAMESPACE)
        .get(name)
        .await
        .unwrap_or_else(|error| panic!("read ConfigMap {name} from the tenant: {error}"));
    config_map.data?.remove("value")
}

/// Reason, first note and occurrences of each scaling Event, oldest first. The
/// recorder folds repeats of a reason into one Event with a series count.
async fn scaling_events(ns: &TestNamespace) -> Vec<(String, String, i32)> {
    let mut events: Vec<Event> = ns.api::<Event>().list(&ListParams::default()).await.expect("events").items;
    events.sort_by_key(|event| event.metadata.creation_timestamp.clone().map(|time| time.0));
    events
        .into_iter()
        .filter(|event| event.action.as_deref() == Some("Scale"))
        .map(|event| {
            let count =
                event.series.as_ref().and_then(|series| series.count).or(event.count).unwrap_or(1).max(1);
            (event.reason.unwrap_or_default(), event.message.unwrap_or_default(), count)
        })
        .collect()
}

/// Makes member `ordinal` the etcd leader, through the gateway of the current leader
/// with the healthcheck client certificate, as the operator talks to etcd. Returns
/// the leader's member ID.
async fn move_leadership_to(ns: &TestNamespace, ordinal: i32) -> u64 {
    use nestor::resources::{CA_CERT_KEY, ETCD_CLIENT_PORT, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY};
    use nestor::transport::TlsClient;

    let names = ns.names(TENANT);
    let secret = ns.secret(&names.etcd_healthcheck_client_secret()).await.expect("read").expect("Secret");
    let data = secret.data.expect("data");
    let value = |key: &str| data.get(key).expect(key).0.clone();
    let tls = TlsClient::new(&value(CA_CERT_KEY), &value(TLS_CERT_KEY), &value(TLS_PRIVATE_KEY_KEY))
        .expect("client");
    let call = async |member: i32, path: &str, body: serde_json::Value| -> serde_json::Value {
        let pod = ns.api::<Pod>().get(&names.etcd_member_name(member)).await.expect("member pod");
        let ip: std::net::IpAddr =
            pod.status.and_then(|status| status.pod_ip).expect("pod IP").parse().expect("IP");
        let address = std::net::SocketAddr::new(ip, ETCD_CLIENT_PORT as u16);
        let host = names.etcd_member_host(member);
        let response = tls
            .request(
                address,
                &host,
                hyper::Method::POST,
                path,
                Some(&body.to_string()),
                Duration::from_secs(5),
            )
            .await
            .expect("gateway call");
        assert_eq!(response.status, hyper::StatusCode::OK, "{path}: {:?}", response.body);
        serde_json::from_slice(&response.body).expect("JSON")
    };
    let id = |value: &serde_json::Value, field: &str| -> u64 {
        value["header"][field].as_str().or(value[field].as_str()).expect(field).parse().expect("u64")
    };
    let target = call(ordinal, "/v3/maintenance/status", json!({})).await;
    let target_id = id(&target, "member_id");
    let leader_id = id(&target, "leader");
    if leader_id != target_id {
        let mut leader_ordinal = None;
        for member in 0..3 {
            if id(&call(member, "/v3/maintenance/status", json!({})).await, "member_id") == leader_id {
                leader_ordinal = Some(member);
            }
        }
        let leader = leader_ordinal.expect("the leader is a member");
        let body = json!({"targetID": target_id.to_string()});
        call(leader, "/v3/maintenance/transfer-leadership", body).await;
    }
    let status = call(ordinal, "/v3/maintenance/status", json!({})).await;
    assert_eq!(id(&status, "leader"), target_id, "member {ordinal} leads");
    target_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_scales_from_one_to_three_and_back_while_the_tenant_api_answers() {
    in_namespace("scaling", async |ns| {
        let operator = Operator::start(&ns.name, "scaling").await;
        let names = ns.names(TENANT);
        let mut spec = runnable_spec();
        spec["etcd"] = json!({"replicas": 1, "storage": {"ephemeral": false}});
        ns.create_tenant(TENANT, spec).await;

        let started = Instant::now();
        follow(&ns, &operator, "create", started, async |tenant| {
            if settled_at(tenant, 1) { Ok(()) } else { Err("not settled at 1 member".into()) }
        })
        .await;
        eprintln!("tenant Ready with 1 member after {:.1}s", started.elapsed().as_secs_f64());

        // Data written before any scaling.
        let client = support::wait_for("the tenant API", support::MAX_WAIT, async || {
            let client = ns.tenant_client(TENANT).await?;
            let namespace: Namespace =
                serde_json::from_value(json!({"metadata": {"name": DATA_NAMESPACE}})).expect("Namespace");
            match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await {
                Ok(_) => Ok(client),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(client),
                Err(error) => Err(error.to_string()),
            }
        })
        .await;
        write_config_map(&client, "before", "written at 1 member").await;

        // Use the tenant API every second: a quorum read of the data and a write. /readyz
        // is asked too but only counted: an apiserver being rolled answers it with
        // "shutdown failed" on purpose while it still serves requests.
        let phase_label = Arc::new(Mutex::new("1 member".to_string()));
        let failures = Arc::new(Mutex::new(Vec::<Failure>::new()));
        let probes = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let readyz_failures = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        write_config_map(&client, "heartbeat", "0").await;
        let prober = tokio::spawn({
            let (client, phase_label, failures, probes, readyz_failures, stop) = (
                client.clone(),
                phase_label.clone(),
                failures.clone(),
                probes.clone(),
                readyz_failures.clone(),
                stop.clone(),
            );
            async move {
                let api = Api::<ConfigMap>::namespaced(client.clone(), DATA_NAMESPACE);
                // Bounded: STEP_TIMEOUT for each of the three waits, once a second.
                for beat in 0..(3 * STEP_TIMEOUT.as_secs() + 60) {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let write = json!({"data": {"value": beat.to_string()}});
                    let result = match api.get("before").await {
                        Ok(_) => api
                            .patch("heartbeat", &PatchParams::default(), &Patch::Merge(&write))
                            .await
                            .map(drop)
                            .map_err(|error| format!("write: {error}")),
                        Err(error) => Err(format!("read: {error}")),
                    };
                    if let Err(error) = result {
                        let phase = phase_label.lock().expect("lock").clone();
                        eprintln!("tenant API failed during {phase}: {error}");
                        failures.lock().expect("lock").push(Failure { at: started.elapsed(), phase, error });
                    }
                    let request = hyper::Request::get("/readyz").body(Vec::new()).expect("request");
                    if !matches!(client.request_text(request).await.as_deref(), Ok("ok")) {
                        readyz_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });

        // 1 -> 3. This branch's CRD again, should a test of another branch have replaced it.
        support::install_crd(&ns.client).await;
        *phase_label.lock().expect("lock") = "1 -> 3".into();
        let up = Instant::now();
        scale(&ns, 3).await;
        let messages = follow(&ns, &operator, "1 -> 3", up, async |tenant| {
            if !settled_at(tenant, 3) {
                return Err("not settled at 3 members".into());
            }
            let servers = etcd_servers(&ns).await;
            if servers.split(',').count() != 3 {
                return Err(format!("--etcd-servers={servers}"));
            }
            let certified = peer_certificate_members(&ns).await;
            if certified.len() != 3 {
                return Err(format!("the etcd peer certificate names {certified:?}"));
            }
            Ok(())
        })
        .await;
        let up_took = up.elapsed();
        eprintln!("1 -> 3 took {:.1}s", up_took.as_secs_f64());
        assert!(
            messages.iter().any(|message| message.contains("Scaling: scaling 1 -> 3: 2 of 3 members")),
            "progress was reported: {messages:#?}"
        );
        let (pods, claims) = etcd_pods_and_claims(&ns).await;
        assert_eq!(pods, (0..3).map(|ordinal| names.etcd_member_name(ordinal)).collect::<Vec<_>>());
        assert_eq!(claims, (0..3).map(|ordinal| names.etcd_data_claim(ordinal)).collect::<Vec<_>>());
        write_config_map(&client, "during", "written at 3 members").await;

        // The highest member leads: the operator moves leadership off it before removing it.
        let leader = move_leadership_to(&ns, 2).await;
        eprintln!("member 2 ({leader:x}) leads");

        // 3 -> 1.
        support::install_crd(&ns.client).await;
        *phase_label.lock().expect("lock") = "3 -> 1".into();
        let down = Instant::now();
        scale(&ns, 1).await;
        let messages = follow(&ns, &operator, "3 -> 1", down, async |tenant| {
            if !settled_at(tenant, 1) {
                return Err("not settled at 1 member".into());
            }
            let (pods, claims) = etcd_pods_and_claims(&ns).await;
            if pods != [names.etcd_member_name(0)] || claims != [names.etcd_data_claim(0)] {
                return Err(format!("pods {pods:?}, claims {claims:?}"));
            }
            let servers = etcd_servers(&ns).await;
            if servers.split(',').count() != 1 {
                return Err(format!("--etcd-servers={servers}"));
            }
            // Shrunk one member at a time, after each removal (see `desired::pki_inputs`).
            let certified = peer_certificate_members(&ns).await;
            if certified != [names.etcd_member_host(0)] {
                return Err(format!("the etcd peer certificate names {certified:?}"));
            }
            Ok(())
        })
        .await;
        let down_took = down.elapsed();
        eprintln!("3 -> 1 took {:.1}s", down_took.as_secs_f64());
        assert!(
            messages.iter().any(|message| message.contains("Scaling: scaling 3 -> 1")),
            "progress was reported: {messages:#?}"
        );

        *phase_label.lock().expect("lock") = "1 member again".into();
        // Not a wait for a condition: the prober keeps using the tenant API for a few more
        // beats, so a failure right after the last member left is caught too.
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        prober.await.expect("prober");

        // Everything written reads back through a fresh client.
        let fresh = ns.tenant_client(TENANT).await.expect("tenant client");
        assert_eq!(read_config_map(&fresh, "before").await.as_deref(), Some("written at 1 member"));
        assert_eq!(read_config_map(&fresh, "during").await.as_deref(), Some("written at 3 members"));

        let events = scaling_events(&ns).await;
        for (reason, note, count) in &events {
            eprintln!("event {reason} x{count}: {note}");
        }
        let count = |reason: &str| -> i32 {
            events.iter().filter(|(seen, _, _)| seen == reason).map(|(_, _, count)| count).sum()
        };
        assert_eq!(count("EtcdMemberAdded"), 2, "{events:#?}");
        assert_eq!(count("EtcdMemberPromoted"), 2, "{events:#?}");
        assert_eq!(count("EtcdLeadershipMoved"), 1, "{events:#?}");
        assert_eq!(count("EtcdMemberRemoved"), 2, "{events:#?}");
        assert_eq!(count("EtcdClaimDeleted"), 2, "{events:#?}");
        assert_eq!(count("EtcdMemberReplaced"), 0, "no repair: {events:#?}");
        let all_events: Vec<Event> =
            ns.api::<Event>().list(&ListParams::default()).await.expect("events").items;
        assert!(
            all_events.iter().all(|event| event.reason.as_deref() != Some("EtcdMemberReplaced")),
            "no member repair happened"
        );

        let probes = probes.load(std::sync::atomic::Ordering::Relaxed);
        let failures = failures.lock().expect("lock");
        for failure in failures.iter() {
            eprintln!(
                "failed read at +{:.1}s ({}): {}",
                failure.at.as_secs_f64(),
                failure.phase,
                failure.error
            );
        }
        let readyz_failures = readyz_failures.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "measured: create {:.1}s, 1 -> 3 {:.1}s, 3 -> 1 {:.1}s; tenant API probes (read + write) {probes}, \
             failed {}; /readyz not ok {readyz_failures} times",
            (up - started).as_secs_f64(),
            up_took.as_secs_f64(),
            down_took.as_secs_f64(),
            failures.len()
        );
        assert!(
            failures.is_empty(),
            "the tenant API failed {} of {probes} reads: {failures:#?}",
            failures.len()
        );
    })
    .await;
}
