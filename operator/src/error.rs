//! The reconcile path's error type.
//!
//! Every failure is either *permanent* (the spec or the stored state is wrong and
//! retrying the same input fails the same way: surface it as a condition and an
//! Event, retry slowly) or *transient* (the API server is busy, unreachable or
//! racing with someone else: retry soon with backoff). The split drives the
//! controller's error policy; `metric_label` feeds `reconcile_errors_total`.

use std::time::Duration;

use kube::runtime::finalizer;

use crate::api::validation::SpecError;
use crate::desired::DesiredStateError;

/// Result of any step of the reconcile path.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why one reconcile of a TenantCluster failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec asks for something Nestor cannot build.
    #[error("invalid spec: {field}: {reason}")]
    InvalidSpec {
        /// JSON path of the offending field, for example `spec.etcd.replicas`.
        field: String,
        /// What is wrong with it, written for the owner of the spec.
        reason: String,
    },

    /// The spec fails the operator's own checks (what admission rules cannot express).
    /// Every problem is listed, each message naming its field.
    #[error("invalid spec: {}", join_messages(.0))]
    Spec(Vec<SpecError>),

    /// The tenant's stored PKI is unusable (a CA or key invalid or missing) or the
    /// desired objects could not be built. See [`DesiredStateError::is_permanent`].
    #[error("{0}")]
    Desired(DesiredStateError),

    /// A certificate authority disappeared while certificates it signed are still in use.
    /// Regenerating it silently would break every client of the tenant, so a human decides.
    #[error("certificate authority Secret {secret} is missing")]
    CaMissing {
        /// Name of the missing Secret.
        secret: String,
    },

    /// A Secret holding key material this pass loaded (a CA, the service-account key,
    /// the encryption key) was deleted before the pass could apply it. It is not
    /// re-created from the pass's snapshot: the next pass reads the cluster again and
    /// reports the loss (CAMissing) rather than quietly restoring it.
    #[error("Secret {secret} disappeared during this pass; re-reading")]
    KeyMaterialGone {
        /// Name of the Secret.
        secret: String,
    },

    /// The object lacks a name or namespace; cannot happen for a namespaced custom
    /// resource read from the API, so it points at a bug rather than a bad spec.
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),

    /// An object Nestor built could not be serialized, or a cached one parsed again
    /// (see [`crate::reconcile::compact`]); a bug, retrying will not help.
    #[error("cannot convert {kind} to or from JSON: {source}")]
    Serialization {
        /// Kind of the object.
        kind: String,
        /// What serde reported.
        #[source]
        source: serde_json::Error,
    },

    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// A step did not finish in time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What was being waited for.
        operation: String,
        /// How long we waited.
        after: Duration,
    },

    /// Adding or removing the finalizer failed, or the wrapped reconcile failed.
    #[error("{0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

fn join_messages(errors: &[SpecError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl From<DesiredStateError> for Error {
    fn from(error: DesiredStateError) -> Self {
        match error {
            DesiredStateError::CaMissing { secret } => Error::CaMissing { secret },
            DesiredStateError::InvalidSpec { field, reason } => {
                Error::InvalidSpec { field: field.into(), reason }
            }
            other => Error::Desired(other),
        }
    }
}

impl From<finalizer::Error<Error>> for Error {
    fn from(error: finalizer::Error<Error>) -> Self {
        // Unwrap the reconcile's own error so classification and labels see it directly.
        match error {
            finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => inner,
            other => Error::Finalizer(Box::new(other)),
        }
    }
}

impl Error {
    /// True when retrying the same input cannot succeed: the fix is a spec edit or a
    /// human action, so the controller reports it and retries slowly instead of storming.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Desired(error) => error.is_permanent(),
            Error::InvalidSpec { .. }
            | Error::Spec(_)
            | Error::CaMissing { .. }
            | Error::MissingObjectKey(_)
            | Error::Serialization { .. } => true,
            // The API server validated the object we sent and rejected it (400/422): the
            // same spec produces the same object, so it will be rejected again.
            Error::Kube(kube::Error::Api(status)) => matches!(status.code, 400 | 422),
            Error::Kube(_) | Error::Timeout { .. } | Error::KeyMaterialGone { .. } => false,
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(error) | finalizer::Error::CleanupFailed(error) => {
                    error.is_permanent()
                }
                finalizer::Error::AddFinalizer(_) | finalizer::Error::RemoveFinalizer(_) => false,
                finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => true,
            },
        }
    }

    /// Low-cardinality label for `reconcile_errors_total{reason}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec { .. } | Error::Spec(_) => "invalid_spec",
            Error::Desired(DesiredStateError::CaInvalid { .. }) => "ca_invalid",
            Error::Desired(DesiredStateError::KeyMissing { .. }) => "key_missing",
            Error::Desired(DesiredStateError::KeyInvalid { .. }) => "key_invalid",
            Error::Desired(DesiredStateError::Pki(_)) => "pki_failed",
            Error::Desired(_) => "build_failed",
            Error::CaMissing { .. } => "ca_missing",
            Error::MissingObjectKey(_) => "missing_object_key",
            Error::Serialization { .. } => "serialization",
            Error::Kube(kube::Error::Api(status)) => match status.code {
                400 | 422 => "api_rejected",
                404 => "api_not_found",
                409 => "api_conflict",
                403 => "api_forbidden",
                429 => "api_throttled",
                500..=599 => "api_server_error",
                _ => "api_other",
            },
            Error::Kube(_) => "api_unreachable",
            Error::Timeout { .. } => "timeout",
            Error::KeyMaterialGone { .. } => "key_material_gone",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(error) | finalizer::Error::CleanupFailed(error) => {
                    error.metric_label()
                }
                finalizer::Error::AddFinalizer(_) | finalizer::Error::RemoveFinalizer(_) => "finalizer",
                finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => "finalizer_invalid",
            },
        }
    }

    /// CamelCase reason for the Ready condition and the Warning Event of a permanent error.
    pub fn condition_reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec { .. } | Error::Spec(_) => crate::reconcile::conditions::reason::INVALID_SPEC,
            Error::Desired(error) => error.reason(),
            Error::CaMissing { .. } => crate::reconcile::conditions::reason::CA_MISSING,
            Error::Kube(kube::Error::Api(_)) => crate::reconcile::conditions::reason::API_REJECTED,
            _ => crate::reconcile::conditions::reason::RECONCILE_FAILED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> Error {
        Error::Kube(kube::Error::Api(Box::new(kube::core::Status::failure("boom", "Reason").with_code(code))))
    }

    #[test]
    fn bad_spec_and_missing_ca_are_permanent() {
        let invalid = Error::InvalidSpec { field: "spec.etcd.replicas".into(), reason: "must be odd".into() };
        assert!(invalid.is_permanent());
        assert_eq!(invalid.metric_label(), "invalid_spec");
        assert_eq!(invalid.to_string(), "invalid spec: spec.etcd.replicas: must be odd");

        let missing = Error::CaMissing { secret: "team-a-ca".into() };
        assert!(missing.is_permanent());
        assert_eq!(missing.metric_label(), "ca_missing");
        assert_eq!(missing.condition_reason(), "CAMissing");
    }

    #[test]
    fn api_validation_rejections_are_permanent_other_api_errors_transient() {
        assert!(api_error(422).is_permanent());
        assert!(api_error(400).is_permanent());
        for code in [403, 404, 409, 429, 500, 503] {
            assert!(!api_error(code).is_permanent(), "HTTP {code} should be retried");
        }
        assert_eq!(api_error(409).metric_label(), "api_conflict");
        assert_eq!(api_error(503).metric_label(), "api_server_error");
        assert_eq!(api_error(422).metric_label(), "api_rejected");
    }

    #[test]
    fn timeouts_are_transient() {
        let timeout = Error::Timeout { operation: "apply".into(), after: Duration::from_secs(10) };
        assert!(!timeout.is_permanent());
        assert_eq!(timeout.metric_label(), "timeout");
    }

    #[test]
    fn finalizer_wrapping_keeps_the_inner_classification() {
        let wrapped: Error = finalizer::Error::ApplyFailed(Error::CaMissing { secret: "x".into() }).into();
        assert!(matches!(wrapped, Error::CaMissing { .. }), "apply failures unwrap to the inner error");

        let add_failed: Error = finalizer::Error::<Error>::AddFinalizer(kube::Error::Api(Box::new(
            kube::core::Status::failure("conflict", "Conflict").with_code(409),
        )))
        .into();
        assert!(!add_failed.is_permanent());
        assert_eq!(add_failed.metric_label(), "finalizer");

        let boxed = Error::Finalizer(Box::new(finalizer::Error::CleanupFailed(api_error(422))));
        assert!(boxed.is_permanent());
        assert_eq!(boxed.metric_label(), "api_rejected");
    }
}
