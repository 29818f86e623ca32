//! The controller's HTTP API (`/v1/`, Deis v1's paths and JSON shapes) as types, plus a typed
//! client. The controller serves these types, the `deis` CLI and the builder call the API through
//! [`Client`], and the OpenAPI document is generated from the same types, so the three agree.

mod client;
pub mod endpoints;
mod types;

pub use client::{ApiError, Client};
pub use endpoints::{Endpoint, Unmatched, Verb};
pub use types::*;
