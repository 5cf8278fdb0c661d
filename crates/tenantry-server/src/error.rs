//! The service layer's error: what went wrong, in the API's vocabulary.
//! It is mapped to problem+json once, in `api::problem`.

use tenantry::store::StoreError;

/// One field that failed validation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("this route needs a tenant")]
    TenantRequired,
    #[error("tenant not found")]
    TenantNotFound,
    #[error("the request names more than one tenant")]
    TenantMismatch,
    #[error("tenant is suspended")]
    TenantSuspended,
    #[error("the plan does not include the feature `{0}`")]
    FeatureNotEnabled(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("the resource changed since it was read")]
    PreconditionFailed,
    #[error("the request is not valid")]
    Validation(Vec<FieldError>),
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the body exceeds the size limit")]
    PayloadTooLarge,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The client did not send its request (the body) in time.
    #[error("the request was not received in time")]
    RequestTimeout,
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("service temporarily unavailable")]
    Unavailable(String),
    /// The tenant's data is sealed by a job (a move's freeze, an import):
    /// writers wait and retry (`control::data`); past the wait, a 503.
    #[error("the tenant's data is being moved or restored; retry shortly")]
    Sealed,
    /// The tenant's data is not where the request looked (moved away or
    /// purged): looked up again and retried; if it escapes, the tenant is gone.
    #[error("tenant not found")]
    Absent,
    /// Anything unexpected. The message is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A 422 for one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation(vec![FieldError::new(field, message)])
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(field) => Error::Conflict(field),
            StoreError::Unavailable(msg) => Error::Unavailable(msg),
            StoreError::NotFound => Error::NotFound("resource".into()),
            StoreError::VersionMismatch => Error::PreconditionFailed,
            StoreError::QuotaExceeded => Error::QuotaExceeded("quota exhausted".into()),
            StoreError::Sealed => Error::Sealed,
            StoreError::Absent => Error::Absent,
            StoreError::Internal(msg) | StoreError::Pending(msg) => Error::Internal(msg),
        }
    }
}

/// Collects field errors so a client learns every problem at once.
#[derive(Default)]
pub struct Validator(Vec<FieldError>);

impl Validator {
    pub fn check(&mut self, ok: bool, field: &str, message: &str) -> &mut Self {
        if !ok {
            self.0.push(FieldError::new(field, message));
        }
        self
    }

    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(self.0))
        }
    }
}
