//! Every NATS subject the platform uses, built from validated names.
//!
//! Subjects live under a root token (`deis` in a cluster). Tests give each run its own root, so
//! many tests share one NATS server without seeing each other's messages or streams. A subject is
//! typed by the message it carries (`Subject<ReleaseCreated>`), so publishing the wrong message
//! on it does not compile.
//!
//! | subject                                   | message              | transport          |
//! |-------------------------------------------|----------------------|--------------------|
//! | `<root>.builds.requested.<app>`           | BuildRequested       | core               |
//! | `<root>.builds.log.<app>.<build>`         | BuildLogLine         | core               |
//! | `<root>.builds.completed.<app>`           | BuildCompleted       | JetStream (BUILDS) |
//! | `<root>.builds.failed.<app>`              | BuildFailed          | JetStream (BUILDS) |
//! | `<root>.releases.created.<app>`           | ReleaseCreated       | JetStream (DESIRED)|
//! | `<root>.formations.changed.<app>`         | FormationChanged     | JetStream (DESIRED)|
//! | `<root>.apps.destroyed.<app>`             | AppDestroyed         | JetStream (DESIRED)|
//! | `<root>.controller.desired-state`         | DesiredStateRequest ⇄ snapshot | core request |
//! | `<root>.controller.desired-state-page`    | DesiredStatePageRequest ⇄ page | core request |
//! | `<root>.scheduler.app-status`             | AppStatusRequest ⇄ AppStatus   | core request |
//! | `<root>.scheduler.restart`                | RestartRequest ⇄ RestartReply  | core request |
//! | `<root>.scheduler.run`                    | RunRequest ⇄ RunReply          | core request |
//! | `<root>.agent.<node>.run`                 | RunOneOff ⇄ StartContainerReply | core request |
//! | `<root>.runs.<run>.output`                | LogLine (one-off output)       | core         |
//! | `<root>.runs.<run>.exit`                  | RunExited                      | core         |
//! | `<root>.agent.<node>.start`               | StartContainer ⇄ reply | core request   |
//! | `<root>.agent.<node>.stop`                | StopContainer ⇄ reply  | core request   |
//! | `<root>.containers.<node>.<app>.<event>`  | ContainerEvent       | core               |
//! | `<root>.nodes.<node>.heartbeat`           | NodeHeartbeat        | core               |
//! | `<root>.nodes.<node>.inventory`           | NodeInventory        | core               |
//! | `<root>.logs.<app>`                       | LogLine              | core               |
//! | `<root>.events.<app>`                     | ControllerEvent      | core               |
//! | `<root>.drain.<app>`                      | DrainRecord (JSON)   | core, public       |

use std::fmt;
use std::marker::PhantomData;

use uuid::Uuid;

use crate::messages::{
    AppDestroyed, AppStatusRequest, BuildCompleted, BuildFailed, BuildLogLine, BuildRequested,
    ContainerEvent, ContainerEventKind, ControllerEvent, DesiredStatePageRequest, DesiredStateRequest,
    DrainRecord, FormationChanged, LogLine, LogQuery, NodeHeartbeat, NodeInventory, ReleaseCreated,
    RestartRequest, RunExited, RunOneOff, RunRequest, StartContainer, StopContainer,
};
use crate::names::{AppName, NameError, NodeId};

/// A concrete subject that carries messages of type `M`.
pub struct Subject<M> {
    name: String,
    _message: PhantomData<fn() -> M>,
}

/// A subscription filter (may hold `*` or `>`) for messages of type `M`.
pub struct Filter<M> {
    pattern: String,
    _message: PhantomData<fn() -> M>,
}

macro_rules! subject_like {
    ($ty:ident, $field:ident) => {
        impl<M> $ty<M> {
            fn new($field: String) -> Self {
                Self { $field, _message: PhantomData }
            }

            pub fn as_str(&self) -> &str {
                &self.$field
            }
        }

        impl<M> Clone for $ty<M> {
            fn clone(&self) -> Self {
                Self::new(self.$field.clone())
            }
        }

        impl<M> PartialEq for $ty<M> {
            fn eq(&self, other: &Self) -> bool {
                self.$field == other.$field
            }
        }

        impl<M> Eq for $ty<M> {}

        impl<M> fmt::Display for $ty<M> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.$field)
            }
        }

        impl<M> fmt::Debug for $ty<M> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.$field)
            }
        }
    };
}

subject_like!(Subject, name);
subject_like!(Filter, pattern);

/// Methods of [`Namespace`] for messages published per app on `<root>.<prefix>.<app>`: `one`
/// names the subject of one app, `all` the filter matching every app's. Most subjects are of
/// this form, so each is declared as one line of a table rather than as two near-identical methods.
macro_rules! per_app {
    ($($one:ident, $all:ident: $message:ty = $prefix:literal;)*) => {$(
        pub fn $one(&self, app: &AppName) -> Subject<$message> {
            self.s(format_args!(concat!($prefix, ".{}"), app))
        }
        pub fn $all(&self) -> Filter<$message> {
            self.f(concat!($prefix, ".*"))
        }
    )*};
}

impl<M> Subject<M> {
    /// The subject as async-nats wants it.
    pub fn to_nats(&self) -> async_nats::Subject {
        async_nats::Subject::from(self.name.as_str())
    }
}

impl<M> Filter<M> {
    /// Whether a concrete subject matches this filter (NATS wildcard rules).
    pub fn matches(&self, subject: &str) -> bool {
        let mut pattern = self.pattern.split('.');
        let mut tokens = subject.split('.');
        loop {
            match (pattern.next(), tokens.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(p), Some(t)) if p == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

/// The root of every subject, stream and consumer name of one platform (or one test run).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    root: String,
}

impl Default for Namespace {
    fn default() -> Self {
        Self { root: Self::DEFAULT_ROOT.to_owned() }
    }
}

impl Namespace {
    /// The root used by a real cluster.
    pub const DEFAULT_ROOT: &'static str = "deis";

    /// A namespace under `root`, which must be a DNS-label-like token (it becomes part of
    /// subject and stream names).
    pub fn new(root: &str) -> Result<Self, NameError> {
        // Same rules as node ids: one lowercase token.
        let id = NodeId::parse(root)?;
        Ok(Self { root: id.as_str().to_owned() })
    }

    /// A fresh namespace for one test, so tests can share a server.
    pub fn unique_for_test(prefix: &str) -> Self {
        let short = Uuid::new_v4().simple().to_string();
        let clean: String =
            prefix.chars().filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit()).take(20).collect();
        Self { root: format!("t{clean}{}", &short[..10]) }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    fn s<M>(&self, rest: std::fmt::Arguments<'_>) -> Subject<M> {
        Subject::new(format!("{}.{}", self.root, rest))
    }

    fn f<M>(&self, rest: &str) -> Filter<M> {
        Filter::new(format!("{}.{}", self.root, rest))
    }

    // --- builds ---------------------------------------------------------------------------

    per_app! {
        build_requested, all_builds_requested: BuildRequested = "builds.requested";
        build_completed, all_builds_completed: BuildCompleted = "builds.completed";
        build_failed, all_builds_failed: BuildFailed = "builds.failed";
    }
    pub fn build_log(&self, app: &AppName, build_id: Uuid) -> Subject<BuildLogLine> {
        self.s(format_args!("builds.log.{app}.{}", build_id.simple()))
    }
    pub fn build_logs_of_app(&self, app: &AppName) -> Filter<BuildLogLine> {
        Filter::new(format!("{}.builds.log.{app}.*", self.root))
    }

    // --- desired state --------------------------------------------------------------------

    per_app! {
        release_created, all_releases_created: ReleaseCreated = "releases.created";
        formation_changed, all_formations_changed: FormationChanged = "formations.changed";
        app_destroyed, all_apps_destroyed: AppDestroyed = "apps.destroyed";
    }

    /// Where the controller answers the scheduler's snapshot requests.
    pub fn desired_state(&self) -> Subject<DesiredStateRequest> {
        self.s(format_args!("controller.desired-state"))
    }

    /// Where the controller answers the scheduler's requests for one page of the desired state.
    pub fn desired_state_page(&self) -> Subject<DesiredStatePageRequest> {
        self.s(format_args!("controller.desired-state-page"))
    }

    /// Where the scheduler leader answers `deis ps`.
    pub fn app_status(&self) -> Subject<AppStatusRequest> {
        self.s(format_args!("scheduler.app-status"))
    }

    /// Where the scheduler leader takes restart requests.
    pub fn restart(&self) -> Subject<RestartRequest> {
        self.s(format_args!("scheduler.restart"))
    }

    /// Where the scheduler leader takes `deis run` requests.
    pub fn run(&self) -> Subject<RunRequest> {
        self.s(format_args!("scheduler.run"))
    }

    /// The output lines of one `deis run`.
    pub fn run_output(&self, run_id: Uuid) -> Subject<LogLine> {
        self.s(format_args!("runs.{}.output", run_id.simple()))
    }

    /// The end of one `deis run`.
    pub fn run_exited(&self, run_id: Uuid) -> Subject<RunExited> {
        self.s(format_args!("runs.{}.exit", run_id.simple()))
    }

    /// Where an agent takes one-off runs.
    pub fn agent_run(&self, node: &NodeId) -> Subject<RunOneOff> {
        self.s(format_args!("agent.{node}.run"))
    }

    // --- agents ---------------------------------------------------------------------------

    pub fn agent_start(&self, node: &NodeId) -> Subject<StartContainer> {
        self.s(format_args!("agent.{node}.start"))
    }
    pub fn agent_stop(&self, node: &NodeId) -> Subject<StopContainer> {
        self.s(format_args!("agent.{node}.stop"))
    }
    pub fn container_event(
        &self,
        node: &NodeId,
        app: &AppName,
        kind: ContainerEventKind,
    ) -> Subject<ContainerEvent> {
        self.s(format_args!("containers.{node}.{app}.{}", kind.as_str()))
    }
    pub fn all_container_events(&self) -> Filter<ContainerEvent> {
        self.f("containers.*.*.*")
    }
    pub fn node_heartbeat(&self, node: &NodeId) -> Subject<NodeHeartbeat> {
        self.s(format_args!("nodes.{node}.heartbeat"))
    }
    pub fn all_node_heartbeats(&self) -> Filter<NodeHeartbeat> {
        self.f("nodes.*.heartbeat")
    }
    pub fn node_inventory(&self, node: &NodeId) -> Subject<NodeInventory> {
        self.s(format_args!("nodes.{node}.inventory"))
    }
    pub fn all_node_inventories(&self) -> Filter<NodeInventory> {
        self.f("nodes.*.inventory")
    }

    // --- logs -----------------------------------------------------------------------------

    per_app! {
        log_lines, all_log_lines: LogLine = "logs";
        controller_events, all_controller_events: ControllerEvent = "events";
    }
    /// History queries to the loggers (a queue group: one logger answers).
    pub fn log_query(&self) -> Subject<LogQuery> {
        self.s(format_args!("logger.query"))
    }
    pub fn log_queries(&self) -> Filter<LogQuery> {
        self.f("logger.query")
    }
    /// The public drain stream of one app (JSON, see the crate README).
    pub fn drain(&self, app: &AppName) -> Subject<DrainRecord> {
        self.s(format_args!("drain.{app}"))
    }
    /// Every app's drain stream: what the read-only NATS user for log consumers may subscribe to.
    pub fn all_drains(&self) -> Filter<DrainRecord> {
        self.f("drain.>")
    }

    /// Turns a subject received from the bus back into its app, for filters with one app token
    /// in the last position (`logs.*`, `drain.*`, `releases.created.*` …).
    pub fn app_of(&self, subject: &str) -> Option<AppName> {
        let rest = subject.strip_prefix(&self.root)?.strip_prefix('.')?;
        let last = rest.rsplit('.').next()?;
        AppName::parse(last).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppName {
        AppName::parse("web-shop").unwrap()
    }

    #[test]
    fn subjects_sit_under_the_root() {
        let ns = Namespace::default();
        assert_eq!(ns.release_created(&app()).as_str(), "deis.releases.created.web-shop");
        assert_eq!(ns.drain(&app()).as_str(), "deis.drain.web-shop");
        let node = NodeId::parse("node1").unwrap();
        assert_eq!(
            ns.container_event(&node, &app(), ContainerEventKind::Healthy).as_str(),
            "deis.containers.node1.web-shop.healthy"
        );
    }

    #[test]
    fn filters_match_their_subjects_and_nothing_else() {
        let ns = Namespace::default();
        let other = Namespace::new("other").unwrap();
        assert!(ns.all_releases_created().matches(ns.release_created(&app()).as_str()));
        assert!(!ns.all_releases_created().matches(other.release_created(&app()).as_str()));
        assert!(!ns.all_releases_created().matches(ns.formation_changed(&app()).as_str()));
        let node = NodeId::parse("n1").unwrap();
        for kind in ContainerEventKind::ALL {
            assert!(ns.all_container_events().matches(ns.container_event(&node, &app(), kind).as_str()));
        }
        assert!(ns.all_drains().matches(ns.drain(&app()).as_str()));
        assert!(ns.build_logs_of_app(&app()).matches(ns.build_log(&app(), Uuid::nil()).as_str()));
    }

    #[test]
    fn app_of_recovers_the_app() {
        let ns = Namespace::default();
        assert_eq!(ns.app_of(ns.log_lines(&app()).as_str()), Some(app()));
        assert_eq!(ns.app_of("elsewhere.logs.web-shop"), None);
        assert_eq!(ns.app_of("deis.logs.Bad"), None);
    }

    #[test]
    fn test_namespaces_are_unique_and_valid() {
        let a = Namespace::unique_for_test("My Test!");
        let b = Namespace::unique_for_test("My Test!");
        assert_ne!(a, b);
        Namespace::new(a.root()).unwrap();
    }
}
