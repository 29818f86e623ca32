//! Parsing and local validation of command arguments (`KEY=value`, `web=3`, `512M`, `v3`, …).
//!
//! Everything a user types is checked here before any request is made, so a typo gets a precise
//! message instead of a round trip, and nothing malformed ends up in a URL path.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};

/// Checks a config key: `[A-Za-z_][A-Za-z0-9_]*`, what a POSIX shell accepts as a variable name,
/// so every key can become an environment variable of the app's processes.
pub fn validate_key(key: &str) -> Result<()> {
    let mut chars = key.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!(
            "invalid config key '{key}': keys must start with a letter or '_' and contain only \
             letters, digits and '_'"
        );
    }
    Ok(())
}

/// Parses `KEY=value` (the value may itself contain `=` and may be empty).
pub fn parse_key_value(arg: &str) -> Result<(String, String)> {
    let Some((key, value)) = arg.split_once('=') else {
        bail!("'{arg}' is not KEY=value");
    };
    validate_key(key)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Checks a process type (`web`, `worker`, …) by the platform's own rule
/// ([`bus_schema::ProcessType`]): a DNS label, so it can name containers.
pub fn validate_process_type(kind: &str) -> Result<()> {
    bus_schema::ProcessType::parse(kind)?;
    Ok(())
}

/// Checks an app name by the platform's own rule ([`bus_schema::AppName`]): a DNS label
/// (`[a-z][a-z0-9-]*`, at most 63 characters, not reserved), so that `<app>.<domain>` is a host
/// name. Checking locally also keeps names like `../x` out of URL paths.
pub fn validate_app(app: &str) -> Result<()> {
    bus_schema::AppName::parse(app)?;
    Ok(())
}

/// Checks a value that the API client puts into a URL path (a domain, a cert name, a key id, a
/// username): it must be one path segment, so it cannot address another endpoint.
pub fn validate_segment(what: &str, value: &str) -> Result<()> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '/' | '\\' | '?' | '#' | '%');
    if value.is_empty() || value == "." || value == ".." || value.chars().any(bad) {
        bail!("invalid {what} '{value}'");
    }
    Ok(())
}

/// Parses one argument of `deis scale`: `web=3`.
pub fn parse_scale(arg: &str) -> Result<(String, u32)> {
    let Some((kind, count)) = arg.split_once('=') else {
        bail!("'{arg}' is not <type>=<count>, e.g. web=3");
    };
    validate_process_type(kind)?;
    let parsed = count.parse::<u32>().ok().filter(|_| count.chars().all(|c| c.is_ascii_digit()));
    let Some(parsed) = parsed else {
        bail!("invalid count '{count}' for {kind}: use a whole number, 0 or more");
    };
    Ok((kind.to_owned(), parsed))
}

/// Parses every argument of `deis scale`, refusing a type given twice (which would be ambiguous).
pub fn parse_formation(args: &[String]) -> Result<BTreeMap<String, u32>> {
    let mut formation = BTreeMap::new();
    for arg in args {
        let (kind, count) = parse_scale(arg)?;
        if formation.insert(kind.clone(), count).is_some() {
            bail!("process type '{kind}' is given twice");
        }
    }
    Ok(formation)
}

/// Parses a memory limit: a positive number and a unit (`B`, `K`, `M`, `G`, or `KB`, `MB`, `GB`),
/// in either case. Returns it in upper case (`256m` → `256M`), the form the controller stores.
/// A unit is required: a bare `512` would mean 512 bytes, never what anyone wants.
pub fn parse_memory(value: &str) -> Result<String> {
    let digits = value.chars().take_while(char::is_ascii_digit).count();
    let (number, unit) = value.split_at(digits);
    let unit = unit.to_ascii_uppercase();
    let unit_ok = matches!(unit.as_str(), "B" | "K" | "M" | "G" | "KB" | "MB" | "GB");
    let positive = number.parse::<u64>().is_ok_and(|n| n > 0);
    if !unit_ok || !positive {
        bail!("invalid memory limit '{value}': use a positive number and a unit, e.g. 512M or 1G");
    }
    Ok(format!("{number}{unit}"))
}

/// Parses CPU shares: a positive whole number (1024 is one CPU's share).
pub fn parse_cpu(value: &str) -> Result<u32> {
    match value.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("invalid CPU shares '{value}': use a positive whole number (1024 is one CPU)"),
    }
}

/// Parses `type=limit` for `limits:set`, validating the limit with `parse_limit`.
pub fn parse_limit<T>(arg: &str, parse_limit: impl Fn(&str) -> Result<T>) -> Result<(String, T)> {
    let Some((kind, limit)) = arg.split_once('=') else {
        bail!("'{arg}' is not <type>=<limit>, e.g. web=512M");
    };
    validate_process_type(kind)?;
    Ok((kind.to_owned(), parse_limit(limit)?))
}

/// Parses a release version: `v3`, `V3` or `3`. Versions start at 1.
pub fn parse_version(arg: &str) -> Result<u32> {
    let digits = arg.strip_prefix(['v', 'V']).unwrap_or(arg);
    match digits.parse::<u32>() {
        Ok(n) if n > 0 && digits.chars().all(|c| c.is_ascii_digit()) => Ok(n),
        _ => bail!("invalid release version '{arg}': use v3 or 3"),
    }
}

/// Parses a tag for `tags:set`: `key=value`, where the key is a node label name.
pub fn parse_tag(arg: &str) -> Result<(String, String)> {
    let Some((key, value)) = arg.split_once('=') else {
        bail!("'{arg}' is not key=value, e.g. environ=prod");
    };
    validate_tag_key(key)?;
    if value.is_empty() {
        bail!("tag '{key}' has an empty value: use `deis tags:unset {key}` to remove it");
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Checks a tag key: letters, digits, `_`, `-` and `.`, like node label names.
pub fn validate_tag_key(key: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if key.is_empty() || !key.chars().all(ok) {
        bail!("invalid tag key '{key}': use letters, digits, '_', '-' and '.'");
    }
    Ok(())
}

/// Parses `--procfile` text, Procfile style: one `type: command` a line (blank lines and `#`
/// comments skipped).
pub fn parse_procfile(text: &str) -> Result<BTreeMap<String, String>> {
    let mut procfile = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (kind, command) =
            line.split_once(':').with_context(|| format!("procfile line '{line}' is not 'type: command'"))?;
        let (kind, command) = (kind.trim(), command.trim());
        validate_process_type(kind)?;
        if command.is_empty() {
            bail!("procfile entry '{kind}' has no command");
        }
        if procfile.insert(kind.to_owned(), command.to_owned()).is_some() {
            bail!("process type '{kind}' is given twice in the procfile");
        }
    }
    Ok(procfile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys() {
        for ok in ["FOO", "_x", "a1_B2", "DATABASE_URL"] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1ABC", "FOO-BAR", "FOO BAR", "é", "A.B", "="] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_value_keeps_equals_in_value() {
        assert_eq!(
            parse_key_value("URL=postgres://u:p@h/db?a=b").unwrap(),
            ("URL".into(), "postgres://u:p@h/db?a=b".into())
        );
        assert_eq!(parse_key_value("EMPTY=").unwrap(), ("EMPTY".into(), String::new()));
        assert_eq!(parse_key_value("X==").unwrap(), ("X".into(), "=".into()));
        assert!(parse_key_value("NOEQUALS").is_err());
        assert!(parse_key_value("=value").is_err());
        assert!(parse_key_value("BAD-KEY=1").is_err());
        let err = parse_key_value("9X=1").unwrap_err().to_string();
        assert!(err.contains("invalid config key '9X'"), "{err}");
    }

    #[test]
    fn scale_arguments() {
        assert_eq!(parse_scale("web=3").unwrap(), ("web".into(), 3));
        assert_eq!(parse_scale("worker=0").unwrap(), ("worker".into(), 0));
        for bad in [
            "web",
            "web=",
            "web=-1",
            "web=x",
            "=3",
            "Web=1",
            "web=1.5",
            "web=+1",
            "we b=1",
            "web=99999999999",
        ] {
            assert!(parse_scale(bad).is_err(), "{bad}");
        }
        let f = parse_formation(&["web=3".into(), "worker=1".into()]).unwrap();
        assert_eq!(f, BTreeMap::from([("web".into(), 3), ("worker".into(), 1)]));
        assert!(parse_formation(&["web=3".into(), "web=1".into()]).is_err());
    }

    #[test]
    fn memory_limits() {
        assert_eq!(parse_memory("512M").unwrap(), "512M");
        assert_eq!(parse_memory("1G").unwrap(), "1G");
        assert_eq!(parse_memory("256m").unwrap(), "256M");
        assert_eq!(parse_memory("64mb").unwrap(), "64MB");
        for bad in ["abc", "-1M", "0M", "512", "M", "", "1.5G", "12T", "1 G", "1GG"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_and_limit_pairs() {
        assert_eq!(parse_cpu("512").unwrap(), 512);
        assert!(parse_cpu("0").is_err());
        assert!(parse_cpu("-5").is_err());
        assert_eq!(parse_limit("web=512M", parse_memory).unwrap(), ("web".into(), "512M".into()));
        assert_eq!(parse_limit("web=512", parse_cpu).unwrap(), ("web".into(), 512));
        assert!(parse_limit("web", parse_memory).is_err());
        assert!(parse_limit("web=abc", parse_memory).is_err());
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("v3").unwrap(), 3);
        assert_eq!(parse_version("V12").unwrap(), 12);
        assert_eq!(parse_version("3").unwrap(), 3);
        for bad in ["", "v", "v0", "0", "-1", "v-1", "abc", "vv3", "+3", "v+3", "3.0"] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn app_names_and_segments() {
        assert!(validate_app("my-app2").is_ok());
        for bad in ["", "My", "1app", "app-", "../x", "a/b", "deis", &"a".repeat(64)] {
            assert!(validate_app(bad).is_err(), "{bad}");
        }
        assert!(validate_segment("domain", "www.example.com").is_ok());
        assert!(validate_segment("key id", "alice@laptop").is_ok());
        for bad in ["", ".", "..", "a/b", "a?b", "a b", "a%2f"] {
            assert!(validate_segment("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags() {
        assert_eq!(parse_tag("environ=prod").unwrap(), ("environ".into(), "prod".into()));
        assert!(parse_tag("environ").is_err());
        assert!(parse_tag("environ=").is_err());
        assert!(parse_tag("=prod").is_err());
        assert!(parse_tag("a b=c").is_err());
    }

    #[test]
    fn procfiles() {
        let p =
            parse_procfile("web: gunicorn app:app --bind 0.0.0.0:$PORT\n\n# c\nworker: python w.py").unwrap();
        assert_eq!(p["web"], "gunicorn app:app --bind 0.0.0.0:$PORT");
        assert_eq!(p["worker"], "python w.py");
        assert!(parse_procfile("web").is_err());
        assert!(parse_procfile("web:").is_err());
        assert!(parse_procfile("Web: x").is_err());
        assert!(parse_procfile("web: a\nweb: b").is_err());
    }
}
