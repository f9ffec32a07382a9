//! The operator's error type, with a bounded category for metric labels.

use hearth_crds::validation::SpecError;

/// Errors a reconcile can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API call failed: {0}")]
    Kube(#[source] kube::Error),
    /// Writing (applying or deleting) a child of kind `kind` failed.
    #[error("writing the {kind} failed: {source}")]
    Apply {
        /// Kind of the child.
        kind: &'static str,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// An object could not be serialised for apply.
    #[error("could not serialise {kind}: {source}")]
    Serialize {
        /// Kind being serialised.
        kind: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The object has no namespace or name where one is required.
    #[error("object is missing metadata.{0}")]
    MissingMetadata(&'static str),
    /// The primary object failed to deserialise (schema drift); recorded as a condition.
    #[error("invalid object: {0}")]
    InvalidObject(String),
    /// The spec failed validation; recorded as a condition.
    #[error("invalid spec: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidSpec(Vec<SpecError>),
    /// A Secret another object points to is missing.
    #[error("secret {0} is missing or has no key")]
    SecretMissing(String),
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Self::Kube(error)
    }
}

impl Error {
    /// A bounded label for the errors metric (never an object name or a message).
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(error) | Self::Apply { source: error, .. } => kube_category(error),
            Self::Serialize { .. } => "serialize",
            Self::MissingMetadata(_) => "metadata",
            Self::InvalidObject(_) => "invalid_object",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::SecretMissing(_) => "secret_missing",
        }
    }
}

/// The category of a failed API call. A 404 whose body was not a Kubernetes `Status` (an API
/// group the server does not serve answers plain text) counts as `not_found` too.
fn kube_category(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) if status.is_not_found() || status.code == 404 => "not_found",
        kube::Error::Api(status) if status.code == 409 => "conflict",
        kube::Error::Api(_) => "api",
        _ => "transport",
    }
}

/// Result with the operator's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
