//! A real controller for tests (feature `testing`): a fresh database on the test Postgres, its
//! own NATS namespace, bound to a free port on loopback. Used by this crate's tests and by the
//! tests of crates that talk to the controller (the CLI, the builder).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::time::Duration;

use crate::{ControllerConfig, RegistrationMode};
use bus_schema::{Bus, Component, Namespace, Sender};
use controller_api::{Client, LoginRequest, RegisterRequest};
use service_kit::testing::TestServices;
use service_kit::{NatsConfig, Shutdown};
use tokio_postgres::NoTls;

/// The admin code of every test controller: a registration with it makes the first
/// administrator ([`TestController::admin`]).
pub const TEST_ADMIN_CODE: &str = "test-admin-code";

#[derive(Debug)]
pub struct TestController {
    pub url: String,
    pub config: ControllerConfig,
    pub ns: Namespace,
    pub database: String,
    shutdown: Shutdown,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database(prefix: &str) -> (String, String) {
    let services = TestServices::get();
    let (admin, conn) = tokio_postgres::connect(&services.postgres_url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let url = services.postgres_url.rsplit_once('/').map(|(base, _)| format!("{base}/{name}")).unwrap();
    (url, name)
}

impl TestController {
    /// A config for a test controller against the test services.
    pub async fn config(test: &str) -> (ControllerConfig, Namespace, String) {
        let services = TestServices::get();
        let (database_url, database) = fresh_database("ctl").await;
        let ns = Namespace::unique_for_test(test);
        let config = ControllerConfig {
            database_url,
            database_pool_size: 8,
            registry: services.registry.clone(),
            registration_mode: RegistrationMode::Open,
            register_in_etcd: false,
            admin_code: Some(TEST_ADMIN_CODE.to_owned()),
            nats: NatsConfig {
                url: services.nats_url.clone(),
                namespace: ns.root().to_owned(),
                stream_max_mb: Some(8),
                ..Default::default()
            },
            ..Default::default()
        };
        (config, ns, database)
    }

    pub async fn start(test: &str) -> Self {
        let (config, ns, database) = Self::config(test).await;
        Self::start_with(config, ns, database).await
    }

    pub async fn start_with(config: ControllerConfig, ns: Namespace, database: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = Shutdown::new();
        let cfg = config.clone();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            crate::run(cfg, listener, stop).await.unwrap();
        });
        // Ready when /healthz answers (migrations done).
        let http = reqwest::Client::new();
        service_kit::testing::eventually("the controller answers", Duration::from_secs(30), || {
            let http = http.clone();
            let url = url.clone();
            async move { http.get(format!("{url}/healthz")).send().await.ok().map(|_| ()) }
        })
        .await;
        Self { url, config, ns, database, shutdown, task: Some(task) }
    }

    /// Stops the controller (as a crash would: nothing runs after the listener closes).
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    pub fn anonymous(&self) -> Client {
        Client::new(&self.url, None)
    }

    /// Registers a user (no administrator) and returns a logged-in client.
    pub async fn user(&self, name: &str) -> Client {
        self.register(name, None).await
    }

    /// Registers the first administrator with the admin code and returns a logged-in client.
    pub async fn admin(&self, name: &str) -> Client {
        self.register(name, Some(TEST_ADMIN_CODE)).await
    }

    async fn register(&self, name: &str, admin_code: Option<&str>) -> Client {
        let anon = self.anonymous();
        anon.register(&RegisterRequest {
            username: name.into(),
            password: format!("{name}-pass"),
            email: format!("{name}@example.com"),
            first_name: String::new(),
            last_name: String::new(),
            admin_code: admin_code.map(str::to_owned),
        })
        .await
        .unwrap();
        let token = anon
            .login(&LoginRequest { username: name.into(), password: format!("{name}-pass") })
            .await
            .unwrap()
            .token;
        Client::new(&self.url, Some(token))
    }

    /// A bus client in this controller's namespace.
    pub async fn bus(&self) -> Bus {
        service_kit::nats::connect_bus(
            &self.config.nats,
            Sender { component: Component::Test, instance: "test".into() },
            &Shutdown::new(),
        )
        .await
        .unwrap()
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.config.database_url, NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestController {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}
