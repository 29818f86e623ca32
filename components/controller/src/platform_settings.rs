//! The platform settings the controller follows (`<prefix>/settings/<name>` in etcd, written by
//! `deisctl config platform set`), so it decides with the same values the routers use: the
//! platform domain (which names belong to apps) and who may register. While etcd holds no value
//! (or the controller runs without etcd), the controller's own config is the fallback.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use bus_schema::discovery::Keys;
use service_kit::{EtcdConfig, Shutdown};
use tokio::sync::Notify;

use crate::config::{ControllerConfig, RegistrationMode};

/// The settings as last read from etcd, over the config's fallbacks.
#[derive(Debug)]
pub struct PlatformSettings {
    fallback_domain: String,
    fallback_registration: RegistrationMode,
    /// Setting name → raw value, as in etcd.
    values: RwLock<BTreeMap<String, String>>,
}

impl PlatformSettings {
    pub fn new(config: &ControllerConfig) -> Self {
        Self {
            fallback_domain: normalise_domain(&config.platform_domain),
            fallback_registration: config.registration_mode,
            values: RwLock::new(BTreeMap::new()),
        }
    }

    fn value(&self, name: &str) -> Option<String> {
        // A poisoned lock only means a writer panicked mid-replace; the map is still whole.
        let values = self.values.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        values.get(name).cloned()
    }

    /// The platform domain now: apps answer at `<app>.<domain>`. etcd's value, as the routers
    /// read it, else the configured one.
    pub fn domain(&self) -> String {
        self.value("domain")
            .map(|d| normalise_domain(&d))
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| self.fallback_domain.clone())
    }

    /// Every domain whose names may be app names: the current one, and the configured one (which
    /// comes back the moment the etcd setting is removed).
    pub fn platform_domains(&self) -> Vec<String> {
        let mut all = vec![self.domain()];
        if !all.contains(&self.fallback_domain) {
            all.push(self.fallback_domain.clone());
        }
        all
    }

    /// Who may register: etcd's `registration` setting, else the configured mode. An
    /// unreadable value counts as the strictest mode rather than silently opening registration.
    pub fn registration_mode(&self) -> RegistrationMode {
        match self.value("registration") {
            None => self.fallback_registration,
            Some(v) => parse_registration(&v).unwrap_or_else(|| {
                tracing::warn!(value = %v, "unreadable registration setting; treating it as disabled");
                RegistrationMode::Disabled
            }),
        }
    }

    /// Replaces every setting with what etcd holds under `<prefix>/settings/`. Returns whether
    /// anything changed.
    pub fn install(&self, keys: &Keys, kvs: &BTreeMap<String, Vec<u8>>) -> bool {
        let next: BTreeMap<String, String> = kvs
            .iter()
            .filter_map(|(k, v)| {
                let name = keys.setting_of(k)?;
                Some((name.to_owned(), String::from_utf8_lossy(v).trim().to_owned()))
            })
            .collect();
        let mut values = self.values.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *values == next {
            return false;
        }
        tracing::info!(settings = ?next, "platform settings changed");
        *values = next;
        true
    }
}

fn normalise_domain(d: &str) -> String {
    d.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The values `deisctl config platform set registration=…` writes.
pub fn parse_registration(value: &str) -> Option<RegistrationMode> {
    match value.trim().to_ascii_lowercase().replace('-', "_").as_str() {
        "open" => Some(RegistrationMode::Open),
        "admin_only" => Some(RegistrationMode::AdminOnly),
        "disabled" => Some(RegistrationMode::Disabled),
        _ => None,
    }
}

/// Follows `<prefix>/settings/` until shutdown; while etcd is away the last values stay.
/// `changed` is woken after a change (the domains sync re-checks custom domains against a new
/// platform domain at once).
pub async fn follow(
    settings: Arc<PlatformSettings>,
    etcd: EtcdConfig,
    changed: Arc<Notify>,
    shutdown: Shutdown,
) {
    let keys = Keys::new(&etcd.prefix);
    let prefix = keys.settings();
    service_kit::etcd::follow_prefix(&etcd, &prefix, &shutdown, |kvs| {
        if settings.install(&keys, kvs) {
            changed.notify_one();
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PlatformSettings {
        PlatformSettings::new(&ControllerConfig {
            platform_domain: "Deis.Local.".into(),
            registration_mode: RegistrationMode::AdminOnly,
            ..Default::default()
        })
    }

    #[test]
    fn config_values_until_etcd_has_some() {
        let s = settings();
        assert_eq!(s.domain(), "deis.local");
        assert_eq!(s.registration_mode(), RegistrationMode::AdminOnly);
        let keys = Keys::new("/t");
        let kvs = BTreeMap::from([
            ("/t/settings/domain".to_owned(), b"new.example.com".to_vec()),
            ("/t/settings/registration".to_owned(), b"open".to_vec()),
        ]);
        s.install(&keys, &kvs);
        assert_eq!(s.domain(), "new.example.com");
        assert_eq!(s.platform_domains(), vec!["new.example.com".to_owned(), "deis.local".to_owned()]);
        assert_eq!(s.registration_mode(), RegistrationMode::Open);
        s.install(&keys, &BTreeMap::new());
        assert_eq!(s.domain(), "deis.local");
    }

    #[test]
    fn a_bad_registration_value_is_the_strictest() {
        let s = settings();
        let kvs = BTreeMap::from([("/t/settings/registration".to_owned(), b"sometimes".to_vec())]);
        s.install(&Keys::new("/t"), &kvs);
        assert_eq!(s.registration_mode(), RegistrationMode::Disabled);
    }
}
