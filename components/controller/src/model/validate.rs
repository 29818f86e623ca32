//! Checks of user input that are not just JSON shape: names, keys, domains, limits, SSH keys
//! and certificates. Each returns a message the user can act on.

use bus_schema::{AppName, ProcessType};
use sha2::{Digest, Sha256};

use crate::model::Error;

pub fn app_name(name: &str) -> Result<AppName, Error> {
    AppName::parse(name).map_err(|e| Error::Invalid(e.to_string()))
}

pub fn process_type(name: &str) -> Result<ProcessType, Error> {
    ProcessType::parse(name).map_err(|e| Error::Invalid(e.to_string()))
}

/// Usernames: 1–64 of letters, digits and `@.+-_` (Django's rule, which Deis v1 used).
pub fn username(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "@.+-_".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("username '{name}' must be 1 to 64 letters, digits or @.+-_ characters")))
    }
}

pub fn password(p: &str) -> Result<(), Error> {
    if p.is_empty() {
        return Err(Error::Invalid("password may not be empty".into()));
    }
    if p.len() > 1024 {
        return Err(Error::Invalid("password is longer than 1024 characters".into()));
    }
    Ok(())
}

/// Config keys become environment variable names: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn config_key(key: &str) -> Result<(), Error> {
    let mut chars = key.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && key.len() <= 256;
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("config key '{key}' must match [A-Za-z_][A-Za-z0-9_]*")))
    }
}

/// A config value: no NUL (it becomes an environment variable) and at most `max_bytes` long.
pub fn config_value(key: &str, value: &str, max_bytes: usize) -> Result<(), Error> {
    if value.contains('\0') {
        return Err(Error::Invalid(format!("the value of {key} contains a NUL byte")));
    }
    if value.len() > max_bytes {
        return Err(Error::Invalid(format!(
            "the value of {key} is {} bytes; the limit is {max_bytes} bytes per value",
            value.len()
        )));
    }
    Ok(())
}

/// Memory limits as Deis v1 wrote them: a whole number with a unit, `512M`, `1G`, `256m`, `1024K`.
/// Returns megabytes.
pub fn memory_limit(ptype: &str, value: &str) -> Result<u64, Error> {
    let bad = || {
        Error::Invalid(format!(
            "memory limit '{value}' for {ptype} must be a whole number with a unit: K, M or G (e.g. 512M)"
        ))
    };
    let value = value.trim();
    // Deis v1 clients also send "512MB", "1GB" and "536870912B".
    let upper = value.to_ascii_uppercase();
    let trimmed = match upper.strip_suffix('B') {
        Some(rest) if rest.ends_with(['K', 'M', 'G']) => rest,
        _ => upper.as_str(),
    };
    let (num, unit) = trimmed.split_at(trimmed.len().saturating_sub(1));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mb = match unit {
        "K" => n / 1024,
        "M" => n,
        "G" => n.checked_mul(1024).ok_or_else(bad)?,
        "B" => n / (1024 * 1024),
        _ => return Err(bad()),
    };
    if mb < 4 {
        return Err(Error::Invalid(format!("memory limit '{value}' for {ptype} is below the 4M minimum")));
    }
    Ok(mb)
}

pub fn cpu_shares(ptype: &str, shares: u32) -> Result<(), Error> {
    if (2..=262_144).contains(&shares) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("CPU shares for {ptype} must be between 2 and 262144, not {shares}")))
    }
}

/// Tag keys and values are node labels: short, no spaces.
pub fn tag(key: &str, value: &str) -> Result<(), Error> {
    let ok = |s: &str| {
        !s.is_empty() && s.len() <= 63 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if ok(key) && ok(value) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "tag {key}={value}: keys and values must be 1 to 63 letters, digits or -_. characters"
        )))
    }
}

/// A host name (RFC 1123), lowercase, with at least two labels; `*.` may lead (a wildcard).
/// Nothing under any of `platform_domains` (nor one of them itself) is a custom domain: those
/// names are the apps' own, and a custom domain there would take another app's traffic.
pub fn domain(domain: &str, platform_domains: &[String]) -> Result<String, Error> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| Error::Invalid(format!("'{domain}' is not a valid domain: {why}"));
    if d.is_empty() || d.len() > 253 {
        return Err(bad("it must be 1 to 253 characters"));
    }
    let body = d.strip_prefix("*.").unwrap_or(&d);
    let labels: Vec<&str> = body.split('.').collect();
    if labels.len() < 2 {
        return Err(bad("it needs at least two labels, like example.com"));
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(bad("labels are letters, digits and inner hyphens, at most 63 characters"));
        }
    }
    if labels.last().is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit())) {
        return Err(bad("an IP address is not a domain"));
    }
    if let Some(platform) = platform_domains.iter().find(|p| under_platform_domain(&d, p)) {
        return Err(Error::Invalid(format!(
            "'{domain}' is under the platform domain {platform}, whose names belong to apps already"
        )));
    }
    Ok(d)
}

/// Whether `domain` (a custom domain, maybe a `*.` wildcard) is the platform domain or a name
/// under it, so that it could shadow an app's name or the API's.
pub fn under_platform_domain(domain: &str, platform_domain: &str) -> bool {
    let platform = platform_domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let d = d.strip_prefix("*.").unwrap_or(&d);
    // A wildcard above the platform domain (`*.local` for `deis.local`) covers it too.
    let covers = domain.trim().starts_with("*.") && platform.ends_with(&format!(".{d}"));
    !platform.is_empty() && (d == platform || d.ends_with(&format!(".{platform}")) || covers)
}

/// An image reference, parsed as Docker reads it: `[host[:port]/]path[:tag][@digest]`. The
/// first path component is a host only when it has a `.` or a `:` or is `localhost`;
/// otherwise the whole reference is a repository path (in the platform registry, here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host (with its port), lowercase, if the reference names one.
    pub host: Option<String>,
    /// The repository path, like `myapp` or `library/myapp`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`.
    pub digest: Option<String>,
}

impl ImageRef {
    /// What to ask the registry for: the digest if there is one, else the tag (`latest` by
    /// default).
    pub fn reference(&self) -> String {
        self.digest.clone().or_else(|| self.tag.clone()).unwrap_or_else(|| "latest".to_owned())
    }
}

pub fn image_ref(image: &str) -> Result<ImageRef, Error> {
    let bad = |why: &str| Error::Invalid(format!("'{image}' is not a valid image reference: {why}"));
    if image.is_empty() || image.len() > 512 {
        return Err(bad("it must be 1 to 512 characters"));
    }
    if !image.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c)) {
        return Err(bad("only letters, digits and -_./:@ are allowed"));
    }
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => {
            let hex = digest.strip_prefix("sha256:").ok_or_else(|| bad("a digest is sha256:<64 hex>"))?;
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
                return Err(bad("a digest is sha256:<64 hex>"));
            }
            (rest, Some(digest.to_owned()))
        }
        None => (image, None),
    };
    let (host, path) = match rest.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first.to_ascii_lowercase()), path)
        }
        _ => (None, rest),
    };
    // A tag follows the last `:` of the path (the host's port is gone already).
    let (repository, tag) = match path.rsplit_once(':') {
        Some((repo, tag)) => (repo, Some(tag.to_owned())),
        None => (path, None),
    };
    if let Some(tag) = &tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(bad("a tag is up to 128 letters, digits and _.- (not leading . or -)"));
        }
    }
    // Repository path components: lowercase letters and digits, separated by `.`, `_`, `__` or
    // `-` runs, as the registry's grammar has it (no empty, leading or trailing separators).
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
            && !c.contains("..")
    };
    if repository.is_empty() || !repository.split('/').all(component_ok) {
        return Err(bad("a repository is lowercase letters and digits, parts separated by /"));
    }
    if tag.is_none() && digest.is_none() && image.ends_with(':') {
        return Err(bad("an empty tag"));
    }
    Ok(ImageRef { host, repository: repository.to_owned(), tag, digest })
}

/// A parsed SSH public key: its normalised text and `SHA256:` fingerprint.
pub fn ssh_public_key(text: &str) -> Result<(String, String), Error> {
    let key = ssh_key::PublicKey::from_openssh(text.trim()).map_err(|e| {
        Error::Invalid(format!("not an OpenSSH public key (like `ssh-ed25519 AAAA… you@host`): {e}"))
    })?;
    let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
    let normalised = key.to_openssh().map_err(|e| Error::Invalid(format!("unusable SSH key: {e}")))?;
    Ok((normalised, fingerprint))
}

/// What the controller keeps of a certificate after checking it.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub common_name: String,
    pub san: Vec<String>,
    pub starts: time::OffsetDateTime,
    pub expires: time::OffsetDateTime,
    pub issuer: String,
    pub fingerprint: String,
}

/// Checks a PEM certificate and its key: both parse, the key matches the certificate, and the
/// certificate has not expired.
pub fn certificate(cert_pem: &str, key_pem: &str) -> Result<CertInfo, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Invalid(format!("certificate is not valid PEM: {e}")))?;
    let leaf =
        certs.first().ok_or_else(|| Error::Invalid("no CERTIFICATE block in the certificate PEM".into()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| Error::Invalid(format!("certificate is not valid X.509: {e}")))?;

    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| Error::Invalid(format!("private key is not valid PEM (PKCS#8, PKCS#1 or SEC1): {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| Error::Invalid(format!("unsupported private key: {e}")))?;
    let public = signing
        .public_key()
        .ok_or_else(|| Error::Invalid("the private key's public half cannot be derived".into()))?;
    if public.as_ref() != parsed.public_key().raw {
        return Err(Error::Invalid("the private key does not match the certificate".into()));
    }

    let common_name = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut san = Vec::new();
    if let Ok(Some(ext)) = parsed.subject_alternative_name() {
        for name in &ext.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = name {
                san.push(d.to_ascii_lowercase());
            }
        }
    }
    if common_name.is_empty() && san.is_empty() {
        return Err(Error::Invalid("the certificate names no host (no common name and no DNS SAN)".into()));
    }
    let starts = parsed.validity().not_before.to_datetime();
    let expires = parsed.validity().not_after.to_datetime();
    if expires < time::OffsetDateTime::now_utc() {
        return Err(Error::Invalid(format!("the certificate expired on {expires}")));
    }
    let fingerprint =
        Sha256::digest(leaf.as_ref()).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
    Ok(CertInfo { common_name, san, starts, expires, issuer: parsed.issuer().to_string(), fingerprint })
}

/// Whether a certificate for `names` covers `domain` (exact, or one-label wildcard).
pub fn cert_covers(names: &[String], domain: &str) -> bool {
    names.iter().any(|n| {
        let n = n.to_ascii_lowercase();
        if n == domain {
            return true;
        }
        match (n.strip_prefix("*."), domain.split_once('.')) {
            (Some(suffix), Some((_, rest))) => suffix == rest,
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys() {
        for ok in ["FOO", "_X", "a1_b"] {
            config_key(ok).unwrap();
        }
        for bad in ["", "1A", "A-B", "A B", "Ä"] {
            assert!(config_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_limits() {
        assert_eq!(memory_limit("web", "512M").unwrap(), 512);
        assert_eq!(memory_limit("web", "1G").unwrap(), 1024);
        assert_eq!(memory_limit("web", "256m").unwrap(), 256);
        assert_eq!(memory_limit("web", "8192K").unwrap(), 8);
        // What Deis v1 clients send too.
        assert_eq!(memory_limit("web", "512MB").unwrap(), 512);
        assert_eq!(memory_limit("web", "1gb").unwrap(), 1024);
        assert_eq!(memory_limit("web", "536870912B").unwrap(), 512);
        for bad in ["", "M", "abc", "-1M", "1.5G", "512", "1T", "1M"] {
            assert!(memory_limit("web", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domains() {
        assert_eq!(domain("WWW.Example.com.", &["deis.local".to_owned()]).unwrap(), "www.example.com");
        assert_eq!(domain("*.example.com", &["deis.local".to_owned()]).unwrap(), "*.example.com");
        for bad in [
            "",
            "localhost",
            "exa mple.com",
            "-a.com",
            "a-.com",
            "a..com",
            "1.2.3.4",
            "app.deis.local",
            "deis.local",
            "*.deis.local",
            "*.local",
            "x.new.example.com",
            "new.example.com",
        ] {
            assert!(domain(bad, &["deis.local".to_owned(), "new.example.com".to_owned()]).is_err(), "{bad}");
        }
        assert!(domain("deis.local.example.com", &["deis.local".to_owned()]).is_ok());
    }

    #[test]
    fn image_references_are_parsed_as_docker_reads_them() {
        let r = |s: &str| image_ref(s).unwrap();
        assert_eq!(r("myapp:git-1234abcd").host, None);
        assert_eq!(r("myapp:git-1234abcd").repository, "myapp");
        assert_eq!(r("myapp:git-1234abcd").reference(), "git-1234abcd");
        assert_eq!(r("myapp").reference(), "latest");
        let full = r("registry:5000/other:v1");
        assert_eq!((full.host.as_deref(), full.repository.as_str()), (Some("registry:5000"), "other"));
        assert_eq!(r("127.0.0.1:5000/library/other").repository, "library/other");
        assert_eq!(r("localhost/other").host.as_deref(), Some("localhost"));
        // Without a `.` or `:` the first part is a path component, not a host.
        assert_eq!(r("registry/other:v1").host, None);
        assert_eq!(r("registry/other:v1").repository, "registry/other");
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = r(&format!("myapp:v1@{digest}"));
        assert_eq!((pinned.tag.as_deref(), pinned.reference()), (Some("v1"), digest.clone()));
        for bad in ["", "MyApp", "a//b", "/a", "a:", "a@sha256:xyz", "a:b:c", "-a", "a b", "a:-x"] {
            assert!(image_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ssh_keys() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop";
        let (_, fp) = ssh_public_key(key).unwrap();
        assert!(fp.starts_with("SHA256:"), "{fp}");
        assert!(ssh_public_key("ssh-ed25519 notbase64").is_err());
        assert!(ssh_public_key("").is_err());
    }

    #[test]
    fn wildcard_cover() {
        let names = vec!["*.example.com".to_owned(), "example.com".to_owned()];
        assert!(cert_covers(&names, "www.example.com"));
        assert!(cert_covers(&names, "example.com"));
        assert!(!cert_covers(&names, "a.b.example.com"));
        assert!(!cert_covers(&names, "example.org"));
    }
}
