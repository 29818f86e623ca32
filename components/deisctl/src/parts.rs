//! The cluster's parts as containers: found by their labels (`io.deis.component`,
//! `io.deis.instance`, `io.deis.node`) within the cluster's compose project, then started,
//! stopped, restarted or read. A node is a whole host: stopping it stops everything on it.

use std::collections::HashMap;
use std::fmt;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{
    ListContainersOptions, LogsOptions, StartContainerOptions, StopContainerOptions,
};
use futures::StreamExt;

pub const LABEL_COMPONENT: &str = "io.deis.component";
pub const LABEL_INSTANCE: &str = "io.deis.instance";
pub const LABEL_NODE: &str = "io.deis.node";
pub const LABEL_PROJECT: &str = "com.docker.compose.project";

/// The component of the containers that play the nodes.
pub const NODE: &str = "node";

/// One part's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub component: String,
    pub instance: String,
    pub node: Option<String>,
    /// The engine's state: `running`, `exited`, `restarting` …
    pub state: String,
    /// The engine's human status: `Up 3 minutes`, `Exited (137) 5 seconds ago`.
    pub status: String,
}

impl Container {
    pub fn part(&self) -> String {
        part_name(&self.component, &self.instance)
    }

    pub fn is_node(&self) -> bool {
        self.component == NODE
    }

    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

/// How a part is written: a node by its name (`node2`), a part that is the only one of its kind
/// by its component (`lb`), anything else as `component@instance`.
pub fn part_name(component: &str, instance: &str) -> String {
    if component == NODE || component == instance {
        instance.to_owned()
    } else {
        format!("{component}@{instance}")
    }
}

/// What a command applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every part of the cluster.
    Platform,
    /// A node's name or a component's: which one is decided against the parts that exist.
    Name(String),
    /// One instance of a component: `router@node2`.
    Part { component: String, instance: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "'{0}' is not a part: expected platform, a node (node2), a component (router) or component@instance (router@node2)"
    )]
    Malformed(String),
    #[error("no part of this cluster is called '{target}'; its parts are: {known}")]
    Unknown { target: String, known: String },
}

/// Whether a text may be a part's component or instance (from a container's labels, a target
/// or an announcer's spec): lowercase letters, digits and `-`, so `<component>@<instance>`
/// always parses back.
pub(crate) fn label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Target {
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        let text = text.trim();
        if text == "platform" {
            return Ok(Self::Platform);
        }
        match text.split_once('@') {
            Some((component, instance)) if label(component) && label(instance) => {
                Ok(Self::Part { component: component.to_owned(), instance: instance.to_owned() })
            }
            None if label(text) => Ok(Self::Name(text.to_owned())),
            _ => Err(TargetError::Malformed(text.to_owned())),
        }
    }

    /// The containers a target names, in the order to start them: each node before what runs on
    /// it (they share its network namespace). Stop in the reverse order.
    pub fn select<'a>(&self, all: &'a [Container]) -> Result<Vec<&'a Container>, TargetError> {
        let mut chosen: Vec<&Container> = match self {
            Self::Platform => all.iter().collect(),
            Self::Name(name) => {
                let node = all.iter().any(|c| c.is_node() && &c.instance == name);
                all.iter()
                    .filter(|c| {
                        if node {
                            c.node.as_deref() == Some(name.as_str()) || (c.is_node() && &c.instance == name)
                        } else {
                            &c.component == name
                        }
                    })
                    .collect()
            }
            Self::Part { component, instance } => {
                all.iter().filter(|c| &c.component == component && &c.instance == instance).collect()
            }
        };
        if chosen.is_empty() {
            let mut known: Vec<String> = all.iter().map(Container::part).collect();
            known.sort();
            known.dedup();
            return Err(TargetError::Unknown { target: self.to_string(), known: known.join(", ") });
        }
        chosen.sort_by(|a, b| {
            (!a.is_node(), &a.node, &a.component, &a.instance).cmp(&(
                !b.is_node(),
                &b.node,
                &b.component,
                &b.instance,
            ))
        });
        Ok(chosen)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Platform => f.write_str("platform"),
            Self::Name(name) => f.write_str(name),
            Self::Part { component, instance } => write!(f, "{component}@{instance}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PartsError {
    #[error("Docker engine: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error(transparent)]
    Target(#[from] TargetError),
}

/// The cluster's containers, as the host's engine sees them.
#[derive(Debug, Clone)]
pub struct Parts {
    docker: Docker,
    cluster: String,
}

impl Parts {
    pub fn new(docker: Docker, cluster: &str) -> Self {
        Self { docker, cluster: cluster.to_owned() }
    }

    /// Every part's container, running or not.
    pub async fn list(&self) -> Result<Vec<Container>, PartsError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_PROJECT}={}", self.cluster), LABEL_COMPONENT.to_owned()],
        )]);
        let found = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        let mut out: Vec<Container> = found
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let component = labels.get(LABEL_COMPONENT).filter(|v| label(v))?.clone();
                let instance = labels
                    .get(LABEL_INSTANCE)
                    .filter(|v| label(v))
                    .cloned()
                    .unwrap_or_else(|| component.clone());
                Some(Container {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_owned(),
                    node: labels.get(LABEL_NODE).filter(|v| label(v)).cloned(),
                    component,
                    instance,
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                    status: c.status.unwrap_or_default(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.node, &a.component, &a.instance).cmp(&(&b.node, &b.component, &b.instance)));
        Ok(out)
    }

    /// Starts a target's containers, nodes first. Parts of a node that was down are restarted
    /// too: they still hold the network namespace of the node's previous run.
    pub async fn start(&self, target: &Target, report: impl Fn(&str)) -> Result<(), PartsError> {
        let all = self.list().await?;
        let chosen = target.select(&all)?;
        let restarted_nodes: Vec<&str> =
            chosen.iter().filter(|c| c.is_node() && !c.running()).map(|c| c.instance.as_str()).collect();
        for c in &chosen {
            let stale = c.node.as_deref().is_some_and(|n| restarted_nodes.contains(&n)) && !c.is_node();
            if c.running() && stale {
                self.docker
                    .stop_container(&c.id, Some(StopContainerOptions { t: Some(10), ..Default::default() }))
                    .await?;
            } else if c.running() {
                report(&format!("{} is already running", c.part()));
                continue;
            }
            self.docker.start_container(&c.id, None::<StartContainerOptions>).await?;
            report(&format!("{} started", c.part()));
        }
        Ok(())
    }

    /// Stops a target's containers, what runs on a node before the node itself.
    pub async fn stop(&self, target: &Target, report: impl Fn(&str)) -> Result<(), PartsError> {
        let all = self.list().await?;
        let chosen = target.select(&all)?;
        for c in chosen.iter().rev() {
            if !c.running() && c.state != "restarting" {
                report(&format!("{} is already stopped", c.part()));
                continue;
            }
            let grace = if c.is_node() { 20 } else { 10 };
            self.docker
                .stop_container(&c.id, Some(StopContainerOptions { t: Some(grace), ..Default::default() }))
                .await?;
            report(&format!("{} stopped", c.part()));
        }
        Ok(())
    }

    /// Runs a command (an argument vector, no shell) in a part's container: its exit code (`None`
    /// when the engine does not say) and what it wrote on standard output.
    pub async fn exec(&self, c: &Container, argv: &[&str]) -> Result<(Option<i64>, String), PartsError> {
        let exec = self
            .docker
            .create_exec(
                &c.id,
                CreateExecOptions {
                    cmd: Some(argv.iter().map(|a| (*a).to_owned()).collect()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(false),
                    ..Default::default()
                },
            )
            .await?;
        let mut out = String::new();
        if let StartExecResults::Attached { mut output, .. } = self.docker.start_exec(&exec.id, None).await? {
            while let Some(chunk) = output.next().await {
                out.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
            }
        }
        Ok((self.docker.inspect_exec(&exec.id).await?.exit_code, out))
    }

    /// Prints a target's container logs, each line tagged with its part; follows them when asked.
    pub async fn logs(
        &self,
        target: &Target,
        tail: Option<u32>,
        follow: bool,
        mut line: impl FnMut(&str, &str),
    ) -> Result<(), PartsError> {
        let all = self.list().await?;
        let chosen = target.select(&all)?;
        let streams = chosen.iter().map(|c| {
            let part = c.part();
            let options = LogsOptions {
                follow,
                stdout: true,
                stderr: true,
                tail: tail.map_or_else(|| "all".to_owned(), |n| n.to_string()),
                ..Default::default()
            };
            self.docker.logs(&c.id, Some(options)).map(move |chunk| (part.clone(), chunk))
        });
        let mut merged = futures::stream::select_all(streams.map(Box::pin));
        while let Some((part, chunk)) = merged.next().await {
            let chunk = chunk?;
            let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
            for l in text.lines() {
                line(&part, l);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(component: &str, instance: &str, node: Option<&str>, state: &str) -> Container {
        Container {
            id: format!("{component}-{instance}"),
            name: format!("deis_{component}_{instance}"),
            component: component.into(),
            instance: instance.into(),
            node: node.map(Into::into),
            state: state.into(),
            status: String::new(),
        }
    }

    fn cluster() -> Vec<Container> {
        vec![
            c("router", "node1", Some("node1"), "running"),
            c("node", "node1", Some("node1"), "running"),
            c("router", "node2", Some("node2"), "running"),
            c("controller", "node2", Some("node2"), "running"),
            c("node", "node2", Some("node2"), "exited"),
            c("lb", "lb", None, "running"),
        ]
    }

    fn names(chosen: &[&Container]) -> Vec<String> {
        chosen.iter().map(|c| c.part()).collect()
    }

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("platform").unwrap(), Target::Platform);
        assert_eq!(Target::parse("node2").unwrap(), Target::Name("node2".into()));
        assert_eq!(
            Target::parse("router@node2").unwrap(),
            Target::Part { component: "router".into(), instance: "node2".into() }
        );
        for bad in ["", "Router", "a@", "@b", "a@b@c", "x/y", "a b"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_node_is_the_whole_host_and_comes_first() {
        let all = cluster();
        let chosen = Target::parse("node2").unwrap().select(&all).unwrap();
        assert_eq!(names(&chosen), ["node2", "controller@node2", "router@node2"]);
    }

    #[test]
    fn a_component_is_every_instance_and_a_part_is_one() {
        let all = cluster();
        assert_eq!(
            names(&Target::parse("router").unwrap().select(&all).unwrap()),
            ["router@node1", "router@node2"]
        );
        assert_eq!(names(&Target::parse("router@node1").unwrap().select(&all).unwrap()), ["router@node1"]);
        let platform = Target::Platform.select(&all).unwrap();
        assert!(platform[0].is_node() && platform[1].is_node(), "nodes start first: {:?}", names(&platform));
    }

    #[test]
    fn unknown_parts_name_the_known_ones() {
        let all = cluster();
        let err = Target::parse("builder").unwrap().select(&all).unwrap_err().to_string();
        assert!(
            err.contains("builder") && err.contains("controller@node2") && err.contains("node1"),
            "{err}"
        );
    }
}
