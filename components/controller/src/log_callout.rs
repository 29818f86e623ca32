//! Answers the NATS servers' auth callout for log consumers' own credentials (`deis
//! logs:credentials`): a user the servers do not know is checked against the credentials issued
//! here, and let in with a grant to subscribe to the drain subjects of the apps it may read now.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::config::LogCredentials;
use crate::ctx::Ctx;
use crate::model::log_credentials;

/// The issuer key of the config, if one is set; a seed that does not parse is said once and
/// nothing is served (every log consumer is then refused by the servers, never let in).
pub fn issuer(config: &LogCredentials) -> Option<nkeys::KeyPair> {
    let seed = config.issuer_seed.as_deref().map(str::trim).filter(|s| !s.is_empty())?;
    match nkeys::KeyPair::from_seed(seed) {
        Ok(pair) if pair.key_pair_type() == nkeys::KeyPairType::Account => Some(pair),
        Ok(_) => {
            tracing::error!(
                "log_credentials.issuer_seed is not an account key (deisctl nkey makes one); no log consumer is let in"
            );
            None
        }
        Err(error) => {
            tracing::error!(%error, "log_credentials.issuer_seed does not parse; no log consumer is let in");
            None
        }
    }
}

/// Serves the callout on the controller's own connection until shutdown. Several controllers
/// share the requests (one queue group); the client re-subscribes by itself after a reconnect.
pub async fn serve(
    ctx: Arc<Ctx>,
    client: async_nats::Client,
    issuer: nkeys::KeyPair,
    shutdown: service_kit::Shutdown,
) {
    let config = bus_auth::CalloutConfig {
        issuer,
        account: ctx.config.log_credentials.account.clone(),
        ttl: Duration::from_secs(ctx.config.log_credentials.grant_secs.max(1)),
    };
    let authorize = |credentials: bus_auth::Credentials| {
        let ctx = ctx.clone();
        let span =
            tracing::info_span!("log_callout", user = %credentials.user, client = %credentials.client_host);
        async move {
            match log_credentials::authorize(&ctx.pool, &ctx.ns, &credentials.user, &credentials.password)
                .await
            {
                Ok(Some(subjects)) => Ok(Some(bus_auth::Grant { subscribe_allow: subjects })),
                Ok(None) => {
                    tracing::info!("log credentials refused");
                    Ok(None)
                }
                Err(error) => Err(error.to_string()),
            }
        }
        .instrument(span)
    };
    if let Err(error) = bus_auth::serve(client, config, authorize, shutdown.token().clone()).await {
        tracing::error!(%error, "the log consumers' auth callout could not start");
    }
}
