//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator
//! replicas exactly one writes to the API at a time.
//!
//! The policy is deliberately blunt: once the lease is held, any doubt about still
//! holding it (lost to another replica, or a renewal that failed) ends leadership
//! for good, and the caller exits so Kubernetes restarts the pod as a fresh
//! candidate. Retrying a failed renewal in place could outlive the lease and let
//! two replicas write at once; a restart costs a few seconds of standby.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{DurationSeconds, LeaseCreateMode, LeaseManager, LeaseManagerError, LeaseParams};

/// How long a lease stays valid without renewal.
pub const LEASE_DURATION_SECONDS: DurationSeconds = 15;
/// The holder renews this long before expiry; also the clock skew tolerated between nodes.
pub const LEASE_GRACE_SECONDS: DurationSeconds = 5;
// LeaseParams::new panics unless 0 < grace < duration; check it when compiling instead.
const _: () = assert!(LEASE_GRACE_SECONDS > 0 && LEASE_GRACE_SECONDS < LEASE_DURATION_SECONDS);

/// Pause between attempts while a standby cannot reach the API.
const STANDBY_RETRY: Duration = Duration::from_secs(5);

/// Where the lease lives and who we are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Name of the Lease object.
    pub name: String,
    /// Namespace of the Lease object.
    pub namespace: String,
    /// Holder identity written into the lease; unique per process.
    pub identity: String,
}

/// Why leadership could not be obtained or kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The lease could not be read or created at startup.
    #[error("cannot use lease {namespace}/{name}: {source}")]
    Setup {
        /// Lease name.
        name: String,
        /// Lease namespace.
        namespace: String,
        /// What the lease manager reported.
        #[source]
        source: LeaseManagerError,
    },
    /// Another replica took the lease.
    #[error("lost lease {namespace}/{name} to another replica")]
    Lost {
        /// Lease name.
        name: String,
        /// Lease namespace.
        namespace: String,
    },
    /// Renewing the lease failed; we can no longer prove we hold it.
    #[error("cannot renew lease {namespace}/{name}: {source}")]
    RenewFailed {
        /// Lease name.
        name: String,
        /// Lease namespace.
        namespace: String,
        /// What the lease manager reported.
        #[source]
        source: LeaseManagerError,
    },
}

/// One process's candidacy for the lease.
pub struct LeaderElector {
    manager: LeaseManager,
    config: LeaseConfig,
}

impl LeaderElector {
    /// Creates the Lease if it does not exist and joins the election (without acquiring yet).
    pub async fn new(client: Client, config: LeaseConfig) -> Result<Self, LeaderError> {
        let params = LeaseParams::new(config.identity.clone(), LEASE_DURATION_SECONDS, LEASE_GRACE_SECONDS);
        let manager = LeaseManager::new(
            client,
            config.name.clone(),
            config.namespace.clone(),
            params,
            LeaseCreateMode::AutoCreate,
        )
        .await
        .map_err(|source| LeaderError::Setup {
            name: config.name.clone(),
            namespace: config.namespace.clone(),
            source,
        })?;
        Ok(Self { manager, config })
    }

    /// Waits until this process holds the lease. API errors while standing by are
    /// logged and retried: a standby writes nothing, so waiting longer is harmless.
    pub async fn acquire(&self) {
        loop {
            match self.manager.changed().await {
                Ok(true) => {
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "acquired lease");
                    return;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, lease = %self.config.name, "cannot check lease, retrying");
                    tokio::time::sleep(STANDBY_RETRY).await;
                }
            }
        }
    }

    /// Keeps renewing the held lease. Resolves only when leadership ends, with the reason.
    pub async fn hold(&self) -> LeaderError {
        loop {
            match self.manager.changed().await {
                Ok(true) => {}
                Ok(false) => {
                    return LeaderError::Lost {
                        name: self.config.name.clone(),
                        namespace: self.config.namespace.clone(),
                    };
                }
                Err(source) => {
                    return LeaderError::RenewFailed {
                        name: self.config.name.clone(),
                        namespace: self.config.namespace.clone(),
                        source,
                    };
                }
            }
        }
    }

    /// Gives the lease up so a standby takes over now rather than after expiry.
    pub async fn release(&self) -> Result<(), LeaseManagerError> {
        self.manager.release().await
    }
}

/// A holder identity unique per process: the pod name (or host name) plus a random
/// suffix, so that two processes on one host, or a pod restarted in place, never
/// mistake each other's lock for their own.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "nestor-operator".to_string());
    let suffix: String = {
        use rand::Rng;
        use rand::distr::Alphanumeric;
        rand::rng().sample_iter(&Alphanumeric).take(6).map(|c| char::from(c).to_ascii_lowercase()).collect()
    };
    format!("{host}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_unique_per_call_and_name_the_host() {
        let first = default_identity();
        let second = default_identity();
        assert_ne!(first, second);
        let (host, suffix) = first.rsplit_once('-').expect("has suffix");
        assert!(!host.is_empty());
        assert_eq!(suffix.len(), 6);
        assert!(suffix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()), "{suffix}");
    }
}
