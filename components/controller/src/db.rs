//! The Postgres pool and the schema migrations, applied at start inside one transaction.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// Migrations in order. A migration is never edited once released; a change is a new one.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (2, "drains", include_str!("../migrations/0002_drains.sql")),
    (4, "outbox_set_aside", include_str!("../migrations/0004_outbox_set_aside.sql")),
    (5, "log_credentials", include_str!("../migrations/0005_log_credentials.sql")),
    (6, "login_lockouts", include_str!("../migrations/0006_login_lockouts.sql")),
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("bad database URL: {0}")]
    Url(String),
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(String),
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

pub fn pool(url: &str, size: usize) -> Result<Pool, DbError> {
    let mut pg: tokio_postgres::Config =
        url.parse().map_err(|e: tokio_postgres::Error| DbError::Url(e.to_string()))?;
    // A database member whose host dies takes its connections with it silently (no reset): without
    // these a query on such a connection waits for the kernel's retransmissions, about 15
    // minutes. The URL may set them otherwise.
    if pg.get_tcp_user_timeout().is_none() {
        pg.tcp_user_timeout(std::time::Duration::from_secs(5));
    }
    if pg.get_keepalives_idle() == std::time::Duration::from_secs(2 * 60 * 60) {
        pg.keepalives_idle(std::time::Duration::from_secs(5));
        pg.keepalives_interval(std::time::Duration::from_secs(2));
        pg.keepalives_retries(2);
    }
    let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager).max_size(size.max(2)).build().map_err(|e| DbError::Pool(e.to_string()))
}

/// Applies every migration not yet applied. An advisory lock makes concurrent starts of several
/// controllers safe: one migrates, the others wait and then find nothing to do.
pub async fn migrate(pool: &Pool) -> Result<(), DbError> {
    let mut client = pool.get().await.map_err(|e| DbError::Pool(e.to_string()))?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(7415001)", &[]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    for (version, name, sql) in MIGRATIONS {
        let done =
            tx.query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[version]).await?.is_some();
        if done {
            continue;
        }
        tracing::info!(version, name, "applying migration");
        tx.batch_execute(sql).await.map_err(|source| DbError::Migration {
            version: *version,
            name,
            source,
        })?;
        tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name]).await?;
    }
    tx.commit().await?;
    Ok(())
}
