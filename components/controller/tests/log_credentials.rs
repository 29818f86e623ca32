//! Per-user log credentials against a real controller and Postgres: what `POST
//! /v1/auth/log-credentials/` issues, and what `model::log_credentials::authorize` (the NATS auth
//! callout's check) answers for them as apps are shared, transferred, and credentials re-issued,
//! revoked or ended by a password change, a token regeneration or the account's removal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use controller::model::log_credentials::authorize;
use controller::testing::TestController;
use controller_api::{CancelRequest, LogCredentials, PasswdRequest, RegenerateTokenRequest};
use deadpool_postgres::Pool;

/// A controller, and a pool on its database as the callout would hold.
async fn start(test: &str) -> (TestController, Pool) {
    let ctl = TestController::start(test).await;
    let pool = controller::db::pool(&ctl.config.database_url, 2).unwrap();
    (ctl, pool)
}

/// The drain subject of `app` in the controller's namespace.
fn drain(ctl: &TestController, app: &str) -> String {
    format!("{}.drain.{app}", ctl.ns.root())
}

/// What the callout answers for these credentials.
async fn check(ctl: &TestController, pool: &Pool, creds: &LogCredentials) -> Option<Vec<String>> {
    authorize(pool, &ctl.ns, &creds.username, &creds.password).await.unwrap()
}

#[tokio::test]
async fn credentials_grant_the_apps_the_user_may_read_now() {
    let (ctl, pool) = start("logcreds-grant").await;
    let admin = ctl.admin("root").await;
    let alice = ctl.user("alice").await;
    let bob = ctl.user("bob").await;
    alice.app_create(Some("alice-shop")).await.unwrap();
    bob.app_create(Some("bob-blog")).await.unwrap();
    bob.app_create(Some("bob-wiki")).await.unwrap();

    let creds = alice.log_credentials().await.unwrap();
    assert_eq!(creds.username, "logs-alice");
    assert_eq!(creds.password.len(), 64, "a fresh 32-byte token");
    assert_eq!(creds.subjects, vec![drain(&ctl, "alice-shop")]);
    assert_eq!(creds.expires_in, ctl.config.log_credentials.grant_secs);
    assert_eq!(creds.expires_in, 600, "the default");
    assert_eq!(check(&ctl, &pool, &creds).await, Some(vec![drain(&ctl, "alice-shop")]), "not bob's apps");

    // Only the password's hash is stored.
    let db = ctl.db().await;
    let rows = db.query("SELECT token_hash FROM log_credentials", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    let stored: Vec<u8> = rows[0].get("token_hash");
    assert_eq!(stored, controller::model::auth::token_hash(&creds.password));

    // A shared app is granted from the next check on, without issuing again; unsharing ends it.
    bob.perm_create("bob-blog", "alice").await.unwrap();
    let shared = vec![drain(&ctl, "alice-shop"), drain(&ctl, "bob-blog")];
    assert_eq!(check(&ctl, &pool, &creds).await, Some(shared));
    bob.perm_delete("bob-blog", "alice").await.unwrap();
    assert_eq!(check(&ctl, &pool, &creds).await, Some(vec![drain(&ctl, "alice-shop")]));
    // So does a transfer.
    alice.app_transfer("alice-shop", "bob").await.unwrap();
    assert_eq!(check(&ctl, &pool, &creds).await, Some(vec![]), "known, with nothing to read");

    // An administrator reads every app, those made later too.
    let root = admin.log_credentials().await.unwrap();
    let every = vec![format!("{}.drain.>", ctl.ns.root())];
    assert_eq!(root.subjects, every);
    assert_eq!(check(&ctl, &pool, &root).await, Some(every));
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_are_refused() {
    let (ctl, pool) = start("logcreds-refuse").await;
    let alice = ctl.user("alice").await;
    let bob = ctl.user("bob").await;
    alice.app_create(Some("shop")).await.unwrap();
    let creds = alice.log_credentials().await.unwrap();
    let bobs = bob.log_credentials().await.unwrap();
    let no = |user: &str, password: &str| {
        let (pool, ns) = (pool.clone(), ctl.ns.clone());
        let (user, password) = (user.to_owned(), password.to_owned());
        async move {
            let answer = authorize(&pool, &ns, &user, &password).await.unwrap();
            assert_eq!(answer, None, "{user} / {password}");
        }
    };
    let mut wrong = creds.password.clone();
    wrong.replace_range(63.., if wrong.ends_with('0') { "1" } else { "0" });
    no("logs-alice", &wrong).await;
    no("logs-alice", "").await;
    no("logs-alice", &creds.password[..63]).await;
    no("logs-alice", &bobs.password).await;
    no("logs-bob", &creds.password).await;
    // Unknown users, and names that are no log consumer's, with a real password.
    no("logs-carol", &creds.password).await;
    no("alice", &creds.password).await;
    no("logs-", &creds.password).await;
    no("drain", &creds.password).await;
    no("logs-alice ", &creds.password).await;
    // A user with an account but no credentials.
    ctl.user("dave").await;
    no("logs-dave", &creds.password).await;
    assert!(check(&ctl, &pool, &creds).await.is_some(), "the right password still works");

    // Without a token, nothing is issued or revoked.
    assert_eq!(ctl.anonymous().log_credentials().await.unwrap_err().status(), None, "not logged in");
    let http = reqwest::Client::new();
    let url = format!("{}/v1/auth/log-credentials/", ctl.url);
    assert_eq!(http.post(&url).send().await.unwrap().status(), 401);
    assert_eq!(http.delete(&url).send().await.unwrap().status(), 401);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 405);
}

#[tokio::test]
async fn reissue_and_revoke_end_the_old_password() {
    let (ctl, pool) = start("logcreds-revoke").await;
    let alice = ctl.user("alice").await;
    alice.app_create(Some("shop")).await.unwrap();
    let first = alice.log_credentials().await.unwrap();
    let second = alice.log_credentials().await.unwrap();
    assert_ne!(first.password, second.password);
    assert_eq!(second.username, first.username);
    assert_eq!(check(&ctl, &pool, &first).await, None, "replaced");
    assert_eq!(check(&ctl, &pool, &second).await, Some(vec![drain(&ctl, "shop")]));

    alice.log_credentials_revoke().await.unwrap();
    assert_eq!(check(&ctl, &pool, &second).await, None, "revoked");
    alice.log_credentials_revoke().await.unwrap();
    let rows = ctl.db().await.query("SELECT 1 FROM log_credentials", &[]).await.unwrap();
    assert!(rows.is_empty());
}

#[tokio::test]
async fn passwd_regenerate_and_cancel_end_log_credentials() {
    let (ctl, pool) = start("logcreds-sessions").await;
    let admin = ctl.admin("root").await;
    let alice = ctl.user("alice").await;
    let bob = ctl.user("bob").await;
    alice.app_create(Some("shop")).await.unwrap();

    // Her own password change.
    let creds = alice.log_credentials().await.unwrap();
    let change = PasswdRequest {
        password: Some("alice-pass".into()),
        new_password: "alice-new-pass".into(),
        username: None,
    };
    alice.passwd(&change).await.unwrap();
    assert_eq!(check(&ctl, &pool, &creds).await, None, "own passwd");
    // An administrator's reset.
    let creds = alice.log_credentials().await.unwrap();
    let reset =
        PasswdRequest { password: None, new_password: "x-pass".into(), username: Some("alice".into()) };
    admin.passwd(&reset).await.unwrap();
    assert_eq!(check(&ctl, &pool, &creds).await, None, "admin's passwd");

    // A token regeneration: the user's, then everyone's.
    let bobs = bob.log_credentials().await.unwrap();
    let bob = controller_api::Client::new(
        &ctl.url,
        Some(bob.regenerate_token(&RegenerateTokenRequest::default()).await.unwrap().token),
    );
    assert_eq!(check(&ctl, &pool, &bobs).await, None, "regenerate");
    let bobs = bob.log_credentials().await.unwrap();
    let roots = admin.log_credentials().await.unwrap();
    admin.regenerate_token(&RegenerateTokenRequest { username: None, all: true }).await.unwrap();
    assert_eq!(check(&ctl, &pool, &bobs).await, None, "regenerate --all");
    assert_eq!(check(&ctl, &pool, &roots).await, None, "regenerate --all");

    // The account's removal.
    let carol = ctl.user("carol").await;
    let carols = carol.log_credentials().await.unwrap();
    assert_eq!(check(&ctl, &pool, &carols).await, Some(vec![]));
    carol.cancel(&CancelRequest { username: None }).await.unwrap();
    assert_eq!(check(&ctl, &pool, &carols).await, None, "cancelled");
    // A new user of the same name does not inherit them.
    ctl.user("carol").await;
    assert_eq!(check(&ctl, &pool, &carols).await, None, "a new carol");
}
