//! The Docker labels an agent puts on the app containers it runs: the contract between the agent
//! and anything that reads a node's engine (the agent itself after a restart, chaos, operators
//! with `docker ps --filter label=deis.app`). Also the labels the builder puts on what a build
//! creates. Labels are written and read back only through here.
//!
//! | label          | on                       | value                                   |
//! |----------------|--------------------------|-----------------------------------------|
//! | `deis.managed` | app containers           | `true`                                  |
//! | `deis.node`    | app and one-off containers | the node's id                         |
//! | `deis.app`     | app and one-off containers | the app's name                        |
//! | `deis.version` | app containers           | the release, as in `v3` without the `v` |
//! | `deis.type`    | app containers           | the process type                        |
//! | `deis.index`   | app containers           | the 1-based index, as in `web.1`        |
//! | `deis.health`  | app containers with an HTTP check | the [`HealthCheck`] as JSON    |
//! | `deis.run`     | one-off (`deis run`) containers | the run's id                     |

use std::collections::HashMap;

use uuid::Uuid;

use crate::messages::{ContainerKey, HealthCheck};
use crate::names::{AppName, NodeId, ProcessType};

/// `true` on every app container an agent created (one-offs have no such label).
pub const MANAGED: &str = "deis.managed";
/// The node whose agent created the container.
pub const NODE: &str = "deis.node";
pub const APP: &str = "deis.app";
pub const VERSION: &str = "deis.version";
pub const TYPE: &str = "deis.type";
pub const INDEX: &str = "deis.index";
/// Marks a one-off (`deis run`) container with its run id; such containers are not part of the
/// formation, since no formation wants them.
pub const RUN: &str = "deis.run";
/// The container's HTTP health check (JSON), so an agent that adopts it checks it the same way.
pub const HEALTH: &str = "deis.health";

/// The builder's labels on everything a build creates (images, build containers), so it can be
/// found and cleaned up.
pub const IMAGE_APP: &str = "io.deis.app";
pub const IMAGE_BUILD: &str = "io.deis.build";
pub const IMAGE_GIT_SHA: &str = "io.deis.git-sha";

/// The labels of an app container: its identity, the node that runs it, and its health check.
pub fn for_container(
    node: &NodeId,
    key: &ContainerKey,
    health: Option<&HealthCheck>,
) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (MANAGED.to_owned(), "true".to_owned()),
        (NODE.to_owned(), node.to_string()),
        (APP.to_owned(), key.app.to_string()),
        (VERSION.to_owned(), key.version.to_string()),
        (TYPE.to_owned(), key.process_type.to_string()),
        (INDEX.to_owned(), key.index.to_string()),
    ]);
    if let Some(health) = health {
        // A struct of strings and numbers always serialises.
        labels.insert(HEALTH.to_owned(), serde_json::to_string(health).unwrap_or_default());
    }
    labels
}

/// The labels of a one-off container. It has no [`ContainerKey`], so [`container_key`] never
/// mistakes it for a formation's container.
pub fn for_one_off(node: &NodeId, app: &AppName, run_id: Uuid) -> HashMap<String, String> {
    HashMap::from([
        (RUN.to_owned(), run_id.to_string()),
        (NODE.to_owned(), node.to_string()),
        (APP.to_owned(), app.to_string()),
    ])
}

/// Reads a container's identity back from its labels; `None` when one is missing or malformed
/// (labels come from an engine anyone can write to, so they are parsed like any other input).
pub fn container_key(labels: &HashMap<String, String>) -> Option<ContainerKey> {
    Some(ContainerKey {
        app: AppName::parse(labels.get(APP)?.as_str()).ok()?,
        version: labels.get(VERSION)?.parse().ok()?,
        process_type: ProcessType::parse(labels.get(TYPE)?.as_str()).ok()?,
        index: labels.get(INDEX)?.parse().ok()?,
    })
}

/// The HTTP health check a container was started with; `None` without one or when malformed.
pub fn health_check(labels: &HashMap<String, String>) -> Option<HealthCheck> {
    serde_json::from_str(labels.get(HEALTH)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ContainerKey {
        ContainerKey {
            app: AppName::parse("shop").unwrap(),
            version: 3,
            process_type: ProcessType::web(),
            index: 2,
        }
    }

    #[test]
    fn a_container_key_round_trips_through_its_labels() {
        let node = NodeId::parse("node1").unwrap();
        let labels = for_container(&node, &key(), None);
        assert_eq!(labels.get(MANAGED).map(String::as_str), Some("true"));
        assert_eq!(labels.get(NODE).map(String::as_str), Some("node1"));
        assert_eq!(container_key(&labels), Some(key()));
        assert_eq!(health_check(&labels), None);
    }

    #[test]
    fn the_labels_are_the_ones_readers_already_know() {
        let labels = HashMap::from([
            ("deis.app".to_owned(), "shop".to_owned()),
            ("deis.version".to_owned(), "3".to_owned()),
            ("deis.type".to_owned(), "web".to_owned()),
            ("deis.index".to_owned(), "2".to_owned()),
        ]);
        assert_eq!(container_key(&labels), Some(key()));
    }

    #[test]
    fn malformed_or_missing_labels_are_refused() {
        let good = for_container(&NodeId::parse("node1").unwrap(), &key(), None);
        for (label, value) in [
            (APP, "Bad App"),
            (VERSION, "x"),
            (VERSION, "-1"),
            (TYPE, "a.b"),
            (INDEX, ""),
            (INDEX, "99999999999"),
        ] {
            let mut bad = good.clone();
            bad.insert(label.to_owned(), value.to_owned());
            assert_eq!(container_key(&bad), None, "{label}={value}");
        }
        for label in [APP, VERSION, TYPE, INDEX] {
            let mut missing = good.clone();
            missing.remove(label);
            assert_eq!(container_key(&missing), None, "without {label}");
        }
    }

    #[test]
    fn one_offs_have_no_container_key() {
        let labels =
            for_one_off(&NodeId::parse("node1").unwrap(), &AppName::parse("shop").unwrap(), Uuid::nil());
        assert!(labels.contains_key(RUN));
        assert_eq!(container_key(&labels), None);
    }

    #[test]
    fn the_health_check_round_trips_and_bad_json_is_ignored() {
        let node = NodeId::parse("node1").unwrap();
        let check = HealthCheck { path: "/healthz".into(), initial_delay_ms: 10, timeout_ms: 500 };
        let mut labels = for_container(&node, &key(), Some(&check));
        assert_eq!(health_check(&labels), Some(check));
        labels.insert(HEALTH.to_owned(), "{not json".to_owned());
        assert_eq!(health_check(&labels), None);
    }
}
