use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::names::{AppName, ProcessType};

/// A build has started (a `git push` arrived, or `deis builds:create` named an image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRequested {
    pub app: AppName,
    pub build_id: Uuid,
    /// The pushed commit, or empty for an image build.
    pub git_sha: String,
    /// The user who pushed.
    pub user: String,
}

message!(BuildRequested);

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line of a build's output, streamed while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildLogLine {
    pub app: AppName,
    pub build_id: Uuid,
    /// Position in the build's output, so a follower can order lines and spot gaps.
    pub seq: u64,
    pub stream: Stream,
    pub line: String,
}

message!(BuildLogLine);

/// How the app was built, which decides the default command of each process type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuildKind {
    /// Heroku buildpack API v2 on the stack image.
    Buildpack,
    /// The app's own Dockerfile.
    Dockerfile,
    /// An image that was already in the registry (`deis builds:create`).
    Image,
}

/// A build finished and its image is in the platform registry. The controller turns this into
/// a release; it is delivered at least once, so the controller keys on `build_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildCompleted {
    pub app: AppName,
    pub build_id: Uuid,
    pub git_sha: String,
    pub user: String,
    pub kind: BuildKind,
    /// `registry/app:git-<sha8>`, pullable by every node.
    pub image: String,
    /// Process types and their commands (the Procfile, or the buildpack's defaults).
    pub procfile: BTreeMap<ProcessType, String>,
}

message!(BuildCompleted);

/// A build failed; nothing is released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildFailed {
    pub app: AppName,
    pub build_id: Uuid,
    pub git_sha: String,
    pub user: String,
    /// What went wrong, in words a user can act on.
    pub reason: String,
}

message!(BuildFailed);
