//! Platform settings (`deisctl config platform set|get`): values under `<prefix>/settings/` that
//! the routers and the controllers follow. Only known names are accepted, and each value is checked here, so a typo
//! is refused instead of being written where nothing reads it.

use std::collections::BTreeMap;

use bus_schema::discovery::Keys;

/// The settings the platform reads, with what each means.
pub const KNOWN: [(&str, &str); 4] = [
    ("domain", "the platform domain: apps answer at <app>.<domain>, the API at deis.<domain>"),
    ("https_only", "true: plain HTTP requests to apps are redirected to HTTPS"),
    ("hsts_max_age", "seconds for the Strict-Transport-Security header on HTTPS answers (0: none)"),
    ("registration", "who may register users: open, admin_only or disabled (the controller reads it)"),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("'{0}' is not name=value")]
    NotAssignment(String),
    #[error("unknown setting '{0}'; the platform reads: {known}", known = known_names())]
    Unknown(String),
    #[error("{name}: {reason}")]
    Invalid { name: String, reason: String },
}

fn known_names() -> String {
    KNOWN.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

/// Parses `name=value` and returns the value in the form the routers read.
pub fn parse_assignment(text: &str) -> Result<(String, String), SettingError> {
    let (name, value) = text.split_once('=').ok_or_else(|| SettingError::NotAssignment(text.into()))?;
    let name = name.trim().to_ascii_lowercase();
    let value = normalise(&name, value.trim())?;
    Ok((name, value))
}

/// Checks a value for a known setting and returns its canonical form.
pub fn normalise(name: &str, value: &str) -> Result<String, SettingError> {
    let invalid = |reason: &str| SettingError::Invalid { name: name.to_owned(), reason: reason.to_owned() };
    match name {
        "domain" => {
            let domain = value.trim_end_matches('.').to_ascii_lowercase();
            let labels_ok = domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
            if domain.len() > 253 || !domain.contains('.') || !labels_ok {
                return Err(invalid("expected a DNS name with at least two labels, like deis.example.com"));
            }
            Ok(domain)
        }
        "https_only" => match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok("true".to_owned()),
            "false" | "0" | "no" | "off" => Ok("false".to_owned()),
            _ => Err(invalid("expected true or false")),
        },
        "hsts_max_age" => {
            value.parse::<u64>().map(|n| n.to_string()).map_err(|_| invalid("expected a number of seconds"))
        }
        "registration" => match value.to_ascii_lowercase().replace('-', "_").as_str() {
            v @ ("open" | "admin_only" | "disabled") => Ok(v.to_owned()),
            _ => Err(invalid("expected open, admin_only or disabled")),
        },
        other => Err(SettingError::Unknown(other.to_owned())),
    }
}

/// Writes settings (all of them, or none if one is refused).
pub async fn set(
    etcd: &mut etcd_client::Client,
    keys: &Keys,
    assignments: &[(String, String)],
) -> Result<(), etcd_client::Error> {
    let ops: Vec<etcd_client::TxnOp> = assignments
        .iter()
        .map(|(name, value)| etcd_client::TxnOp::put(keys.setting(name), value.as_bytes(), None))
        .collect();
    etcd.txn(etcd_client::Txn::new().and_then(ops)).await.map(drop)
}

/// Reads every setting that is set.
pub async fn get_all(
    etcd: &mut etcd_client::Client,
    keys: &Keys,
) -> Result<BTreeMap<String, String>, etcd_client::Error> {
    let found = etcd.get(keys.settings(), Some(etcd_client::GetOptions::new().with_prefix())).await?;
    Ok(found
        .kvs()
        .iter()
        .filter_map(|kv| {
            let name = keys.setting_of(kv.key_str().ok()?)?;
            Some((name.to_owned(), String::from_utf8_lossy(kv.value()).into_owned()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_settings_are_normalised() {
        assert_eq!(parse_assignment("domain=Example.COM.").unwrap(), ("domain".into(), "example.com".into()));
        assert_eq!(parse_assignment("HTTPS_ONLY=yes").unwrap(), ("https_only".into(), "true".into()));
        assert_eq!(parse_assignment("https_only=0").unwrap(), ("https_only".into(), "false".into()));
        assert_eq!(parse_assignment("hsts_max_age=31536000").unwrap().1, "31536000");
        assert_eq!(parse_assignment("registration=Admin-Only").unwrap().1, "admin_only");
        assert_eq!(parse_assignment("registration=disabled").unwrap().1, "disabled");
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        assert!(matches!(parse_assignment("domain"), Err(SettingError::NotAssignment(_))));
        let unknown = parse_assignment("domian=x.y").unwrap_err();
        assert!(unknown.to_string().contains("domain, https_only, hsts_max_age"), "{unknown}");
        for bad in ["domain=local", "domain=-a.b", "domain=a..b", "domain=a b.c", "domain=x_y.z"] {
            assert!(matches!(parse_assignment(bad), Err(SettingError::Invalid { .. })), "{bad}");
        }
        assert!(matches!(parse_assignment("https_only=maybe"), Err(SettingError::Invalid { .. })));
        assert!(matches!(parse_assignment("hsts_max_age=-1"), Err(SettingError::Invalid { .. })));
        assert!(matches!(parse_assignment("registration=first"), Err(SettingError::Invalid { .. })));
    }
}
