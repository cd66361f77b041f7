//! Cost of the tenant PKI, measured with criterion (`make bench`, never `make test`).
//!
//! - `full_pki/<algorithm>`: a new tenant's first `desired_state` pass: three CAs, the
//!   service-account key, the encryption key, every leaf and every kubeconfig. Goal for
//!   ECDSA: at most 5 ms.
//! - `steady_state/<algorithm>`: a pass fed the Secrets of the previous one, with
//!   `PKIReady=True` in status: nothing to issue, which is what every reconcile of an
//!   established tenant costs.
//!
//! hack/bench.sh reads the medians from criterion's `estimates.json` files.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use nestor::api::{TenantCluster, TenantClusterSpec, TenantClusterStatus};
use nestor::desired::{ObservedRollout, ObservedSecrets, PKI_READY_CONDITION, desired_state};

/// Key algorithms as spelled in `spec.pki.keyAlgorithm`, with a short benchmark label.
const ALGORITHMS: [(&str, &str); 2] = [("ecdsa", "ECDSA-P256"), ("rsa", "RSA-2048")];

/// A tenant as the API server would hand it over: name, namespace and uid set,
/// one etcd member, every other field defaulted.
fn tenant(key_algorithm: &str) -> TenantCluster {
    let spec: TenantClusterSpec = serde_json::from_value(serde_json::json!({
        "version": "1.34.2",
        "etcd": {"replicas": 1},
        "pki": {"keyAlgorithm": key_algorithm},
    }))
    .expect("benchmark spec deserializes");
    let mut tenant = TenantCluster::new("bench", spec);
    tenant.metadata.namespace = Some("bench".into());
    tenant.metadata.uid = Some("00000000-0000-4000-8000-000000000000".into());
    tenant
}

/// `tenant` after its first successful pass: status proves the PKI exists.
fn established(mut tenant: TenantCluster, now: Timestamp) -> TenantCluster {
    tenant.status = Some(TenantClusterStatus {
        conditions: vec![Condition {
            type_: PKI_READY_CONDITION.into(),
            status: "True".into(),
            reason: "Ready".into(),
            message: "every PKI Secret exists".into(),
            observed_generation: None,
            last_transition_time: Time(now),
        }],
        ..TenantClusterStatus::default()
    });
    tenant
}

fn full_pki(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("full_pki");
    // RSA key generation takes tens of milliseconds per key: few, long samples.
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    for (label, algorithm) in ALGORITHMS {
        let tenant = tenant(algorithm);
        let nothing = ObservedSecrets::new();
        group.bench_with_input(BenchmarkId::from_parameter(label), &tenant, |bencher, tenant| {
            bencher.iter(|| {
                let state = desired_state(
                    tenant,
                    &nothing,
                    &ObservedRollout::default(),
                    Timestamp::now(),
                    Some("nestor-system"),
                )
                .expect("desired state builds");
                assert_eq!(state.generated.len(), 5, "three CAs, the SA key and the encryption key");
                state
            })
        });
    }
    group.finish();
}

fn steady_state(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("steady_state");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for (label, algorithm) in ALGORITHMS {
        let now = Timestamp::now();
        let first = desired_state(
            &tenant(algorithm),
            &ObservedSecrets::new(),
            &ObservedRollout::default(),
            now,
            Some("nestor-system"),
        )
        .expect("first pass");
        let observed = ObservedSecrets::from_secrets(first.secrets());
        let tenant = established(tenant(algorithm), now);
        group.bench_with_input(BenchmarkId::from_parameter(label), &tenant, |bencher, tenant| {
            bencher.iter(|| {
                let state =
                    desired_state(tenant, &observed, &ObservedRollout::default(), now, Some("nestor-system"))
                        .expect("desired state builds");
                assert!(state.issued.is_empty() && state.generated.is_empty(), "nothing to issue");
                state
            })
        });
    }
    group.finish();
}

criterion_group!(benches, full_pki, steady_state);
criterion_main!(benches);
