//! The controller's model: what apps, builds, releases, formations, config and the outbox are,
//! and the rules for changing them, independent of HTTP. The API, the bus consumers and the
//! desired-state snapshot all go through it; its errors say what went wrong in the model's terms
//! and the API alone turns them into statuses.

pub mod auth;
pub mod builds;
mod error;
pub mod log_credentials;
pub mod login_lockouts;
pub mod outbox;
pub mod releases;
pub mod validate;

use bus_schema::messages::DeployState;
use controller_api::{DeployPhase, DeployStatus};

pub use error::{Error, is_unique_violation};

/// The API's view of a rollout the scheduler reports.
pub fn deploy_status(state: DeployState) -> DeployStatus {
    match state {
        DeployState::Deploying { version } => {
            DeployStatus { version, state: DeployPhase::Deploying, serving: None, reason: None }
        }
        DeployState::Deployed { version } => {
            DeployStatus { version, state: DeployPhase::Deployed, serving: None, reason: None }
        }
        DeployState::Failed { version, serving, reason } => {
            DeployStatus { version, state: DeployPhase::Failed, serving, reason: Some(reason) }
        }
    }
}
