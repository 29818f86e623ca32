//! The API's error type: each variant knows its HTTP status, and the body is
//! `{"detail": "…"}` with a message the user can act on.

use controller_api::ErrorBody;

use crate::model::Error;
use warp::http::StatusCode;
use warp::reply::Response;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad JSON, unknown field, bad query).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The path exists, not with this method.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// The change conflicts with what exists (a taken name, a duplicate key).
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {0} bytes")]
    TooLarge(u64),
    /// The request is well-formed but its content is refused (a bad app name, bad PEM …).
    #[error("{0}")]
    Invalid(String),
    /// A dependency (Postgres, the registry) is unavailable; the request may be retried.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected state; details go to the log, not the client.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let status = self.status();
        let body = ErrorBody { detail: self.to_string() };
        warp::reply::with_status(warp::reply::json(&body), status).into_response()
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }
}

use warp::Reply as _;

impl From<Error> for ApiError {
    /// The one place the model's errors become HTTP statuses.
    fn from(e: Error) -> Self {
        match e {
            Error::Unauthorized(m) => ApiError::Unauthorized(m),
            Error::Forbidden(m) => ApiError::Forbidden(m),
            Error::NotFound(m) => ApiError::NotFound(m),
            Error::Conflict(m) => ApiError::Conflict(m),
            Error::Invalid(m) => ApiError::Invalid(m),
            Error::Unavailable(m) => ApiError::Unavailable(m),
            Error::Internal(m) => ApiError::Internal(m),
        }
    }
}

/// A write's result, with a unique-constraint violation (the name is someone else's already) as
/// a conflict that says so.
pub fn unless_taken<T>(
    result: Result<T, tokio_postgres::Error>,
    taken: impl FnOnce() -> String,
) -> Result<T, ApiError> {
    result.map_err(
        |e| {
            if crate::model::is_unique_violation(&e) { ApiError::Conflict(taken()) } else { e.into() }
        },
    )
}

// Handlers that query directly classify database errors as the model does.
impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::from(e).into()
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::from(e).into()
    }
}

impl From<bus_schema::CodecError> for ApiError {
    fn from(e: bus_schema::CodecError) -> Self {
        Error::from(e).into()
    }
}
