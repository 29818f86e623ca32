//! Custom domains (domains:*) and the SSL certificates that serve them (certs:*).

use std::path::Path;

use anyhow::{Context as _, Result};
use controller_api::{Cert, CertCreateRequest};

use crate::context::Ctx;
use crate::parse::validate_segment;
use crate::table::{columns, header};

pub async fn list(ctx: &Ctx) -> Result<()> {
    let (session, app) = ctx.app_session()?;
    let domains = session.client.domains(&app).await?;
    ctx.show(&domains, |domains| {
        let mut out = header(&format!("{app} Domains"));
        for domain in domains {
            out.push_str(&domain.domain);
            out.push('\n');
        }
        out
    })
}

pub async fn add(ctx: &Ctx, domain: &str) -> Result<()> {
    validate_segment("domain", domain)?;
    let (session, app) = ctx.app_session()?;
    let added = session.client.domain_add(&app, domain).await?;
    ctx.note(&format!("Adding {domain} to {app}... done"))?;
    ctx.json_only(&added)
}

pub async fn remove(ctx: &Ctx, domain: &str) -> Result<()> {
    validate_segment("domain", domain)?;
    let (session, app) = ctx.app_session()?;
    session.client.domain_remove(&app, domain).await?;
    ctx.note(&format!("Removing {domain} from {app}... done"))
}

pub async fn certs_list(ctx: &Ctx) -> Result<()> {
    let certs = ctx.session()?.client.certs().await?;
    ctx.show(&certs, |certs| render_certs(certs))
}

fn render_certs(certs: &[Cert]) -> String {
    if certs.is_empty() {
        return "No certs\n".to_owned();
    }
    let mut rows = vec![
        ["Name", "Common Name", "SubjectAltName", "Expires", "Fingerprint", "Domains"].map(str::to_owned),
    ];
    for cert in certs {
        rows.push([
            cert.name.clone(),
            cert.common_name.clone(),
            cert.san.join(","),
            cert.expires.clone(),
            short_fingerprint(&cert.fingerprint),
            cert.domains.join(","),
        ]);
    }
    columns(&rows)
}

/// The start of a fingerprint, enough to tell certificates apart in a table (the whole one is
/// in `--json`).
fn short_fingerprint(fingerprint: &str) -> String {
    const SHOWN: usize = 14;
    if fingerprint.chars().count() <= SHOWN {
        return fingerprint.to_owned();
    }
    let start: String = fingerprint.chars().take(SHOWN).collect();
    format!("{start}[...]")
}

pub async fn certs_add(ctx: &Ctx, cert: &Path, key: &Path, name: Option<String>) -> Result<()> {
    if let Some(name) = &name {
        validate_segment("certificate name", name)?;
    }
    let read = |path: &Path| {
        std::fs::read_to_string(ctx.env.cwd.join(path))
            .with_context(|| format!("could not read {}", path.display()))
    };
    let request = CertCreateRequest { name, certificate: read(cert)?, key: read(key)?, common_name: None };
    let added = ctx.session()?.client.cert_add(&request).await?;
    ctx.note(&format!("Adding SSL endpoint... done, {} ({})", added.name, added.common_name))?;
    ctx.json_only(&added)
}

pub async fn certs_remove(ctx: &Ctx, name: &str) -> Result<()> {
    validate_segment("certificate name", name)?;
    ctx.session()?.client.cert_remove(name).await?;
    ctx.note(&format!("Removing {name}... done"))
}

pub async fn certs_attach(ctx: &Ctx, name: &str, domain: &str) -> Result<()> {
    validate_segment("certificate name", name)?;
    validate_segment("domain", domain)?;
    let cert = ctx.session()?.client.cert_attach(name, domain).await?;
    ctx.note(&format!("Attaching certificate {name} to domain {domain}... done"))?;
    ctx.json_only(&cert)
}

pub async fn certs_detach(ctx: &Ctx, name: &str, domain: &str) -> Result<()> {
    validate_segment("certificate name", name)?;
    validate_segment("domain", domain)?;
    ctx.session()?.client.cert_detach(name, domain).await?;
    ctx.note(&format!("Detaching certificate {name} from domain {domain}... done"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_table() {
        assert_eq!(render_certs(&[]), "No certs\n");
        let cert = Cert {
            name: "www-foo-com".into(),
            owner: "alice".into(),
            common_name: "www.foo.com".into(),
            san: vec!["foo.com".into(), "www.foo.com".into()],
            starts: String::new(),
            expires: "2027-01-01T00:00:00Z".into(),
            issuer: String::new(),
            fingerprint: "AB:CD:EF:01:23:45:67:89".into(),
            domains: vec!["www.foo.com".into()],
            created: String::new(),
            updated: String::new(),
        };
        let text = render_certs(&[cert]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("Name         Common Name  SubjectAltName"), "{text}");
        assert!(
            lines[1].contains("foo.com,www.foo.com  2027-01-01T00:00:00Z  AB:CD:EF:01:23[...]  www.foo.com"),
            "{text}"
        );
    }
}
