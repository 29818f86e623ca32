//! Validated names that appear inside subjects and keys.
//!
//! A NATS subject token may not contain `.`, `*`, `>` or white space, and an etcd key segment
//! should not contain `/`. Names arrive from users, etcd and the bus, so every one is parsed once
//! into a type that guarantees it is a safe token; subjects are then built without further checks.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} '{name}' is longer than {max} characters")]
    TooLong { what: &'static str, name: String, max: usize },
    #[error(
        "{what} '{name}' may only contain lowercase letters, digits and '-', and must start with a letter and not end with '-'"
    )]
    BadCharacters { what: &'static str, name: String },
    #[error("{what} '{name}' is reserved by the platform")]
    Reserved { what: &'static str, name: String },
}

/// Names the platform keeps for itself: they are host names under the platform domain.
const RESERVED_APP_NAMES: &[&str] = &["deis", "controller", "builder", "registry", "router", "logger", "www"];

/// Checks a DNS label: what app names and node ids must be, so that `<app>.<domain>` is a valid
/// host name and the name is one subject token.
fn check_label(what: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > 63 {
        return Err(NameError::TooLong { what, name: name.to_owned(), max: 63 });
    }
    let bytes = name.as_bytes();
    let ok_chars = bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let starts_ok = bytes[0].is_ascii_lowercase();
    let ends_ok = bytes[bytes.len() - 1] != b'-';
    if !(ok_chars && starts_ok && ends_ok) {
        return Err(NameError::BadCharacters { what, name: name.to_owned() });
    }
    Ok(())
}

macro_rules! label_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $extra:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates a name received from anywhere outside this process.
            pub fn parse(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check_label($what, &name)?;
                let extra: fn(&str) -> Result<(), NameError> = $extra;
                extra(&name)?;
                Ok(Self(name))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        // Deserializing validates too: a bad name on the bus is refused at the edge, not later.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

label_type!(
    /// An application's name: a DNS label (`[a-z][a-z0-9-]*`, at most 63 characters), not reserved.
    AppName,
    "app name",
    |name| {
        if RESERVED_APP_NAMES.contains(&name) {
            Err(NameError::Reserved { what: "app name", name: name.to_owned() })
        } else {
            Ok(())
        }
    }
);

label_type!(
    /// A data-plane node's id: a DNS label, unique in the cluster.
    NodeId,
    "node id",
    |_| Ok(())
);

label_type!(
    /// A process type from a Procfile (`web`, `worker`, …): a DNS label, so it can name containers.
    ProcessType,
    "process type",
    |_| Ok(())
);

impl ProcessType {
    /// The process type that receives HTTP traffic.
    pub fn web() -> Self {
        Self("web".to_owned())
    }

    /// Whether this process type receives HTTP traffic and gets routes: `web`, and `cmd`, the
    /// type of a Dockerfile app without a Procfile (its image's CMD), as in Deis v1.
    pub fn is_web(&self) -> bool {
        self.0 == "web" || self.0 == "cmd"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "my-app", "app2", "x".repeat(63).as_str()] {
            AppName::parse(ok).unwrap();
        }
    }

    #[test]
    fn refuses_what_would_break_a_subject_or_host_name() {
        for bad in ["", "My-App", "a.b", "a*", "a>", "a b", "-a", "a-", "1app", "ä", "deis", &"x".repeat(64)]
        {
            assert!(AppName::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn node_ids_may_use_reserved_words() {
        NodeId::parse("router").unwrap();
    }

    #[test]
    fn errors_name_the_problem() {
        let err = AppName::parse("Bad.Name").unwrap_err().to_string();
        assert!(err.contains("Bad.Name") && err.contains("lowercase"), "{err}");
    }
}
