//! The model's error: what went wrong in the model's own terms. The API maps each kind to an
//! HTTP status in one place (`api::error`); the bus consumers decide from it whether a message is
//! retried (the database was away) or set aside (it can never apply).

/// Why a model operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller is not who they must be (no token, a bad one).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with what exists (a taken name, a duplicate key).
    #[error("{0}")]
    Conflict(String),
    /// The content is refused (a bad app name, bad PEM …).
    #[error("{0}")]
    Invalid(String),
    /// A dependency (Postgres) is unavailable; the same operation may succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected state; details go to the log.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Error::NotFound(format!("{what} not found"))
    }

    /// Whether the same operation can never succeed (what it names is gone, or it is refused),
    /// so retrying it is pointless.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::NotFound(_) | Error::Invalid(_))
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.is_closed() || e.as_db_error().is_none() && e.to_string().contains("connection") {
            return Error::Unavailable(format!("database unavailable: {e}"));
        }
        Error::Internal(format!("database: {e}"))
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::Unavailable(format!("database unavailable: {e}"))
    }
}

impl From<bus_schema::CodecError> for Error {
    fn from(e: bus_schema::CodecError) -> Self {
        Error::Internal(format!("encoding an event: {e}"))
    }
}

/// Whether a Postgres error is a unique-constraint violation (someone else took the name).
pub fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}
