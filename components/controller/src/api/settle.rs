//! Deis v1 answered a change once it ran: `config:set`, `rollback`, `pull`, `scale` and `destroy`
//! returned when the new release (or formation) served, or the app's containers were gone, so the next command, or a script's `curl`, saw it.
//! A handler marks its response with what it changed ([`Settle`]); before the answer leaves, the
//! controller waits, bounded (`settle_secs`, under the routers' request timeout), until the
//! scheduler reports it done. Clients that show their own
//! progress (this project's CLI, through `controller-api`) send `Prefer: respond-async` and get
//! the answer at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_schema::messages::{AppStatus, DeployState};

use warp::http::HeaderMap;

use super::Response;
use crate::ctx::Ctx;

/// What a response's change waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// The release `version` of `app` serves, or its deploy failed.
    Release { app: String, version: u32 },
    /// Exactly this many containers of each process type run and are up.
    Formation { app: String, structure: BTreeMap<String, u32> },
    /// A destroyed app runs nothing any more.
    Gone { app: String },
}

impl Settle {
    fn app(&self) -> &str {
        match self {
            Self::Release { app, .. } | Self::Formation { app, .. } | Self::Gone { app } => app,
        }
    }

    /// Whether the scheduler's view shows the change done.
    pub fn done(&self, status: &AppStatus) -> bool {
        match self {
            Self::Release { version, .. } => match &status.deploy {
                Some(DeployState::Deployed { version: v } | DeployState::Failed { version: v, .. }) => {
                    v >= version
                }
                _ => false,
            },
            Self::Gone { .. } => status.containers.is_empty(),
            Self::Formation { structure, .. } => {
                let current = match &status.deploy {
                    // A failed release will not come up: the answer need not wait for it.
                    Some(DeployState::Failed { .. }) => return true,
                    Some(DeployState::Deployed { version } | DeployState::Deploying { version }) => {
                        Some(*version)
                    }
                    None => status.containers.iter().map(|c| c.key.version).max(),
                };
                structure.iter().all(|(ptype, want)| {
                    let of_type: Vec<_> =
                        status.containers.iter().filter(|c| c.key.process_type.as_str() == ptype).collect();
                    // Exactly the asked count, all of the current release (an older one's
                    // containers still stopping after a deploy do not count) and up.
                    of_type.len() == *want as usize
                        && of_type.iter().all(|c| c.state == "up" && Some(c.key.version) == current)
                })
            }
        }
    }
}

/// Marks a response with the change it made.
pub fn mark(mut resp: Response, settle: Settle) -> Response {
    resp.extensions_mut().insert(settle);
    resp
}

/// Whether the client asked for the answer at once (RFC 7240 `Prefer: respond-async`).
pub fn at_once(prefer: Option<&str>) -> bool {
    prefer.is_some_and(|p| p.split(',').any(|v| v.trim().eq_ignore_ascii_case("respond-async")))
}

/// Holds a marked response until its change is done, the scheduler stops answering (nothing
/// would carry the change out now; the answer says what was accepted), or `patience` runs out.
pub async fn settle(ctx: Arc<Ctx>, headers: HeaderMap, resp: Response) -> Response {
    let Some(settle) = resp.extensions().get::<Settle>().cloned() else { return resp };
    // Every `Prefer` line counts; one that is not text is ignored, never a reason to refuse.
    let prefer = headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).any(|v| at_once(Some(v)));
    if prefer || !resp.status().is_success() {
        return resp;
    }
    let patience = Duration::from_secs(ctx.config.settle_secs.min(3600));
    let deadline = Instant::now().checked_add(patience).unwrap_or_else(Instant::now);
    loop {
        match super::processes::ask(&ctx, settle.app()).await {
            Ok(status) if settle.done(&status) => return resp,
            Ok(_) if Instant::now() < deadline => {}
            Ok(_) => {
                tracing::info!(app = settle.app(), ?settle, "answering before the change was carried out");
                return resp;
            }
            Err(_) => return resp,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_schema::messages::{ContainerKey, ContainerView};
    use bus_schema::{AppName, NodeId, ProcessType, Timestamp};

    fn status(deploy: Option<DeployState>, containers: &[(&str, &str)]) -> AppStatus {
        let app = AppName::parse("shop").unwrap();
        AppStatus {
            app: app.clone(),
            containers: containers
                .iter()
                .enumerate()
                .map(|(i, (ptype, state))| ContainerView {
                    key: ContainerKey {
                        app: app.clone(),
                        version: 3,
                        process_type: ProcessType::parse(*ptype).unwrap(),
                        index: u32::try_from(i).unwrap() + 1,
                    },
                    node: NodeId::parse("node1").unwrap(),
                    state: (*state).to_owned(),
                    since: Timestamp::now(),
                })
                .collect(),
            deploy,
        }
    }

    #[test]
    fn a_release_is_done_once_it_or_a_newer_one_is_deployed_or_failed() {
        let release = Settle::Release { app: "shop".into(), version: 3 };
        assert!(!release.done(&status(None, &[])));
        assert!(!release.done(&status(Some(DeployState::Deploying { version: 3 }), &[])));
        assert!(!release.done(&status(Some(DeployState::Deployed { version: 2 }), &[])));
        assert!(release.done(&status(Some(DeployState::Deployed { version: 3 }), &[])));
        assert!(release.done(&status(Some(DeployState::Deployed { version: 4 }), &[])));
        let failed = DeployState::Failed { version: 3, serving: Some(2), reason: "x".into() };
        assert!(release.done(&status(Some(failed), &[])));
    }

    #[test]
    fn a_formation_is_done_when_each_type_runs_exactly_its_count_all_up() {
        let web2 = Settle::Formation { app: "shop".into(), structure: BTreeMap::from([("web".into(), 2)]) };
        assert!(!web2.done(&status(None, &[("web", "up")])));
        assert!(!web2.done(&status(None, &[("web", "up"), ("web", "starting")])));
        assert!(web2.done(&status(None, &[("web", "up"), ("web", "up"), ("worker", "crashed")])));
        assert!(!web2.done(&status(None, &[("web", "up"), ("web", "up"), ("web", "up")])));
        let none = Settle::Formation { app: "shop".into(), structure: BTreeMap::from([("web".into(), 0)]) };
        assert!(none.done(&status(None, &[])));
        // Containers of another release than the one deploying do not count.
        let deploying = Some(DeployState::Deploying { version: 4 });
        assert!(!web2.done(&status(deploying, &[("web", "up"), ("web", "up")])));
        let failed = Some(DeployState::Failed { version: 4, serving: Some(3), reason: "x".into() });
        assert!(web2.done(&status(failed, &[("web", "up")])), "a failed release will not come up");
        let gone = Settle::Gone { app: "shop".into() };
        assert!(!gone.done(&status(None, &[("web", "up")])));
        assert!(gone.done(&status(None, &[])));
    }

    #[test]
    fn only_respond_async_asks_for_the_answer_at_once() {
        assert!(at_once(Some("respond-async")));
        assert!(at_once(Some("wait=10, Respond-Async")));
        assert!(!at_once(Some("return=minimal")));
        assert!(!at_once(None));
    }
}
