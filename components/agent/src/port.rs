//! Which port an app listens on inside its container (`$PORT`), as Deis v1 chose it: `PORT` in
//! the app's config, else the port its image exposes, else the agent's default (`app_port`).
//! The choice is written on the container as a label, so whoever reads the container later (an
//! inventory, a health check, an agent restarted long after) uses the same port.

use std::collections::{BTreeMap, HashMap};

/// The label holding the port an app container listens on, as a decimal number. Containers
/// created before it existed have none: they listen on the agent's default port. Local to the
/// agent: nothing else reads a container's inside port (routers reach the published host port).
pub const LABEL: &str = "deis.port";

/// The app's config variable that names the port.
pub const ENV: &str = "PORT";

/// Where a container's port came from, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `PORT` in the app's config.
    Config,
    /// The image's exposed TCP port.
    Image,
    /// Neither: the agent's `app_port`.
    Default,
}

/// The port a new container listens on. `env` is the app's config as the start command carries
/// it; `exposed` the image's `Config.ExposedPorts` keys (`"8000/tcp"`, `"53/udp"`). A `PORT`
/// that is no port number at all is ignored (with a warning) as if it were absent.
pub fn choose(env: &BTreeMap<String, String>, exposed: &[String], default: u16) -> (u16, Source) {
    if let Some(value) = env.get(ENV) {
        match parse(value) {
            Some(port) => return (port, Source::Config),
            None => tracing::warn!(
                value = %value.escape_debug(),
                "the app's PORT is not a port number (1 to 65535); ignored"
            ),
        }
    }
    match first_exposed_tcp(exposed) {
        Some(port) => (port, Source::Image),
        None => (default, Source::Default),
    }
}

/// The image's "first" exposed TCP port. Docker keeps exposed ports in a map (a JSON object,
/// and a hash map in bollard), so the order of `EXPOSE` lines is lost: the lowest TCP port is
/// taken, the same port whatever order the engine lists them in. UDP and SCTP ports are not for
/// HTTP and are skipped; a key without a protocol is TCP, as in Docker.
pub fn first_exposed_tcp(exposed: &[String]) -> Option<u16> {
    exposed
        .iter()
        .filter_map(|key| {
            let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
            proto.eq_ignore_ascii_case("tcp").then(|| parse(port)).flatten()
        })
        .min()
}

/// The port a container was created with, from its labels; `default` for one without the label
/// (made by an older agent) or with a label that is no port (labels are input like any other).
pub fn of_labels(labels: Option<&HashMap<String, String>>, default: u16) -> u16 {
    labels.and_then(|l| l.get(LABEL)).and_then(|v| parse(v)).unwrap_or(default)
}

/// A TCP port number, 1 to 65535 (surrounding blanks allowed).
fn parse(value: &str) -> Option<u16> {
    value.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(port: Option<&str>) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]);
        if let Some(port) = port {
            env.insert(ENV.to_owned(), port.to_owned());
        }
        env
    }

    fn ports(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    #[test]
    fn the_apps_port_overrides_the_image() {
        assert_eq!(choose(&env(Some("9000")), &ports(&["8000/tcp"]), 5000), (9000, Source::Config));
        assert_eq!(choose(&env(Some(" 9000 ")), &[], 5000), (9000, Source::Config));
        assert_eq!(choose(&env(Some("65535")), &[], 5000), (65535, Source::Config));
        assert_eq!(choose(&env(Some("1")), &[], 5000), (1, Source::Config));
    }

    #[test]
    fn an_invalid_port_in_the_config_is_ignored() {
        for bad in ["", "abc", "0", "-1", "65536", "99999999999", "80.5", "8000/tcp", "0x50"] {
            assert_eq!(
                choose(&env(Some(bad)), &ports(&["8000/tcp"]), 5000),
                (8000, Source::Image),
                "{bad:?}"
            );
            assert_eq!(choose(&env(Some(bad)), &[], 5000), (5000, Source::Default), "{bad:?}");
        }
    }

    #[test]
    fn the_lowest_exposed_tcp_port_is_the_images() {
        assert_eq!(choose(&env(None), &ports(&["8000/tcp"]), 5000), (8000, Source::Image));
        // Whatever order the engine's map gives.
        for order in [["9000/tcp", "8080/tcp", "3000/tcp"], ["3000/tcp", "9000/tcp", "8080/tcp"]] {
            assert_eq!(first_exposed_tcp(&ports(&order)), Some(3000));
        }
        assert_eq!(first_exposed_tcp(&ports(&["8000"])), Some(8000), "no protocol is TCP");
        assert_eq!(first_exposed_tcp(&ports(&["8000/TCP"])), Some(8000));
    }

    #[test]
    fn udp_and_sctp_and_malformed_ports_are_skipped() {
        assert_eq!(first_exposed_tcp(&ports(&["53/udp", "8080/tcp", "80/sctp"])), Some(8080));
        assert_eq!(first_exposed_tcp(&ports(&["53/udp", "9/sctp"])), None);
        assert_eq!(
            first_exposed_tcp(&ports(&["x/tcp", "0/tcp", "70000/tcp", "", "/tcp", "7000/tcp"])),
            Some(7000)
        );
        assert_eq!(choose(&env(None), &ports(&["53/udp"]), 5000), (5000, Source::Default));
    }

    #[test]
    fn nothing_exposed_takes_the_default() {
        assert_eq!(choose(&env(None), &[], 5000), (5000, Source::Default));
        assert_eq!(choose(&BTreeMap::new(), &[], 4321), (4321, Source::Default));
    }

    #[test]
    fn the_label_gives_the_containers_port_and_old_containers_the_default() {
        let labelled = HashMap::from([(LABEL.to_owned(), "8000".to_owned())]);
        assert_eq!(of_labels(Some(&labelled), 5000), 8000);
        assert_eq!(of_labels(Some(&HashMap::new()), 5000), 5000, "an older agent's container");
        assert_eq!(of_labels(None, 5000), 5000);
        for bad in ["", "0", "x", "65536"] {
            let garbage = HashMap::from([(LABEL.to_owned(), bad.to_owned())]);
            assert_eq!(of_labels(Some(&garbage), 5000), 5000, "{bad:?}");
        }
    }
}
