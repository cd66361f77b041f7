//! Scheduled etcd backups of a tenant and restoring a new tenant from one (see
//! docs/backup.md). Everything that runs inside pods is here, beside what the
//! operator's pass does for it:
//!
//! - [`agent`]: `nestor backup-agent`, run by the tenant's backup CronJob: a snapshot
//!   from a healthy member ([`snapshot`]) into the store ([`store`]), retention, and a
//!   JSON report in its termination message ([`report`]);
//! - [`restore`]: `nestor etcd-restore`, the init container of each etcd member of a
//!   tenant created with `spec.restore`;
//! - [`keep`]: the pass's backup step: the CronJob, the backup claim and the PKI copy
//!   applied, the finished Jobs read into `status.lastBackup` and `BackupReady`, and
//!   the restore followed in `Restored`; and the PKI a restored tenant is seeded with.
//!
//! The builders of the objects are in [`crate::resources`] (`backup.rs`), like every
//! other builder.

pub mod agent;
pub mod keep;
pub mod report;
pub mod restore;
pub mod snapshot;
pub mod store;

pub use keep::{BackupStep, delete_kept_objects, keep_backups, pki_seeds};

use std::sync::OnceLock;

/// The image the backup Jobs and the restore init containers run when the operator is
/// given none: the local build's tag (hack/build-operator-image.sh).
pub const DEFAULT_AGENT_IMAGE: &str = "nestor.local/nestor-operator:dev";

static AGENT_IMAGE: OnceLock<String> = OnceLock::new();

/// Sets the image of the backup agent and the restore (the operator's own image), once,
/// at start-up (`nestor operator --agent-image`).
pub fn set_agent_image(image: &str) {
    let _ = AGENT_IMAGE.set(image.to_string());
}

/// The image of the backup agent and the restore.
pub fn agent_image() -> &'static str {
    AGENT_IMAGE.get().map_or(DEFAULT_AGENT_IMAGE, String::as_str)
}
