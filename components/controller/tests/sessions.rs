//! Sessions against a real controller and Postgres: passwords changes and account removal end
//! tokens, tokens expire, failed logins are throttled per user and per address, unknown users
//! cost an argon2 verification like known ones, and only the operator's admin code makes the
//! first administrator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use controller::RegistrationMode;
use controller::testing::{TEST_ADMIN_CODE, TestController};
use controller_api::{CancelRequest, Client, LoginRequest, PasswdRequest, RegisterRequest};
use serde_json::json;

/// Logs `name` in once more (the password [`TestController::user`] gives) as another session.
async fn another_session(ctl: &TestController, name: &str) -> Client {
    let login = LoginRequest { username: name.into(), password: format!("{name}-pass") };
    Client::new(&ctl.url, Some(ctl.anonymous().login(&login).await.unwrap().token))
}

fn status<T: std::fmt::Debug>(result: Result<T, controller_api::ApiError>) -> Option<u16> {
    result.unwrap_err().status()
}

/// A login as a client at `address` (sent as the router sends it, in `X-Forwarded-For`).
async fn login_from(
    ctl: &TestController,
    address: &str,
    username: &str,
    password: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/auth/login/", ctl.url))
        .header("X-Forwarded-For", address)
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .unwrap()
}

/// Asserts a 429 with a `Retry-After` in whole seconds, and returns them.
async fn assert_throttled(resp: reqwest::Response) -> u64 {
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("try again"), "{body}");
    retry
}

fn registration(name: &str, admin_code: Option<&str>) -> RegisterRequest {
    RegisterRequest {
        username: name.into(),
        password: format!("{name}-pass"),
        email: String::new(),
        first_name: String::new(),
        last_name: String::new(),
        admin_code: admin_code.map(str::to_owned),
    }
}

#[tokio::test]
async fn a_password_change_ends_the_users_other_sessions() {
    let ctl = TestController::start("passwd-ends").await;
    let alice = ctl.admin("alice").await;
    let bob = ctl.user("bob").await;
    let bob_laptop = another_session(&ctl, "bob").await;

    // Bob changes his own password: the session asking stays, the others end.
    let change = PasswdRequest {
        password: Some("bob-pass".into()),
        new_password: "bob-new-pass".into(),
        username: None,
    };
    bob.passwd(&change).await.unwrap();
    assert_eq!(bob.whoami().await.unwrap().username, "bob");
    assert_eq!(status(bob_laptop.whoami().await), Some(401));

    // An admin resetting his password ends all of them.
    let laptop = Client::new(
        &ctl.url,
        Some(
            ctl.anonymous()
                .login(&LoginRequest { username: "bob".into(), password: "bob-new-pass".into() })
                .await
                .unwrap()
                .token,
        ),
    );
    let reset =
        PasswdRequest { password: None, new_password: "reset-by-admin".into(), username: Some("bob".into()) };
    alice.passwd(&reset).await.unwrap();
    assert_eq!(status(bob.whoami().await), Some(401));
    assert_eq!(status(laptop.whoami().await), Some(401));
    assert!(alice.whoami().await.unwrap().is_superuser, "the admin's own session stays");
    ctl.stop().await;
}

#[tokio::test]
async fn removing_an_account_ends_all_its_tokens() {
    let ctl = TestController::start("cancel-ends").await;
    let bob = ctl.user("bob").await;
    let laptop = another_session(&ctl, "bob").await;
    bob.cancel(&CancelRequest { username: None }).await.unwrap();
    assert_eq!(status(bob.whoami().await), Some(401));
    assert_eq!(status(laptop.whoami().await), Some(401));
    let left: i64 = ctl.db().await.query_one("SELECT count(*) FROM tokens", &[]).await.unwrap().get(0);
    assert_eq!(left, 0, "no token of a removed account is kept");
    ctl.stop().await;
}

#[tokio::test]
async fn tokens_expire_after_the_configured_time() {
    let (mut config, ns, database) = TestController::config("token-ttl").await;
    config.token_ttl_secs = 3600;
    let ctl = TestController::start_with(config, ns, database).await;
    let bob = ctl.user("bob").await;
    let db = ctl.db().await;
    // Younger than the TTL: still good.
    db.execute("UPDATE tokens SET created = now() - interval '50 minutes'", &[]).await.unwrap();
    assert_eq!(bob.whoami().await.unwrap().username, "bob");
    // Older: refused, saying what to do.
    db.execute("UPDATE tokens SET created = now() - interval '61 minutes'", &[]).await.unwrap();
    let err = bob.whoami().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(err.to_string().contains("expired") && err.to_string().contains("log in again"), "{err}");
    // Logging in again works, and clears the expired token away.
    let fresh = another_session(&ctl, "bob").await;
    assert_eq!(fresh.whoami().await.unwrap().username, "bob");
    let tokens: i64 = db.query_one("SELECT count(*) FROM tokens", &[]).await.unwrap().get(0);
    assert_eq!(tokens, 1);
    ctl.stop().await;
}

#[tokio::test]
async fn failed_logins_lock_the_user_out_even_for_the_right_password() {
    let (mut config, ns, database) = TestController::config("throttle-user").await;
    config.login_max_failures = 5;
    config.login_lockout_secs = 600;
    let ctl = TestController::start_with(config, ns, database).await;
    ctl.user("bob").await;
    ctl.user("carol").await;

    // A success resets the count: four failures, a success, four more are still only 401s.
    for (n, password) in ["x"; 4].iter().chain(&["bob-pass"]).chain(&["y"; 4]).enumerate() {
        let address = format!("192.0.2.{n}");
        let expected = if *password == "bob-pass" { 200 } else { 401 };
        assert_eq!(login_from(&ctl, &address, "bob", password).await.status(), expected, "attempt {n}");
    }
    // The fifth failure in a row locks bob out, from every address, right password or not.
    assert_eq!(login_from(&ctl, "192.0.2.100", "bob", "z").await.status(), 401);
    let retry = assert_throttled(login_from(&ctl, "192.0.2.101", "bob", "bob-pass").await).await;
    assert!(retry <= 600, "{retry}");
    // Other users are not affected, and an unknown name is throttled the same way as a real one.
    assert_eq!(login_from(&ctl, "192.0.2.102", "carol", "carol-pass").await.status(), 200);
    for n in 0..5 {
        assert_eq!(login_from(&ctl, &format!("192.0.2.{}", 110 + n), "nobody", "x").await.status(), 401);
    }
    assert_throttled(login_from(&ctl, "192.0.2.120", "nobody", "x").await).await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_sent_at_once_do_not_get_past_the_limit() {
    let (mut config, ns, database) = TestController::config("throttle-burst").await;
    config.login_max_failures = 5;
    config.login_lockout_secs = 600;
    let ctl = TestController::start_with(config, ns, database).await;
    ctl.user("bob").await;
    let guesses = (0..20).map(|n| {
        let (ctl, address) = (&ctl, format!("192.0.2.{n}"));
        async move { login_from(ctl, &address, "bob", &format!("guess{n}")).await.status().as_u16() }
    });
    let statuses = futures::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(checked <= 5, "{checked} of 20 guesses were checked: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    ctl.stop().await;
}

#[tokio::test]
async fn failed_logins_lock_the_client_address_out() {
    let (mut config, ns, database) = TestController::config("throttle-addr").await;
    config.login_max_failures_per_address = 6;
    config.login_lockout_secs = 600;
    let ctl = TestController::start_with(config, ns, database).await;
    ctl.user("bob").await;

    // Different names, one address (the last X-Forwarded-For entry: the one the router adds).
    for n in 0..6 {
        let forwarded = format!("10.9.9.{n}, 198.51.100.7");
        assert_eq!(login_from(&ctl, &forwarded, &format!("guess{n}"), "x").await.status(), 401);
    }
    assert_throttled(login_from(&ctl, "198.51.100.7", "bob", "bob-pass").await).await;
    // A client cannot get out of it by putting another address first.
    assert_throttled(login_from(&ctl, "203.0.113.1, 198.51.100.7", "bob", "bob-pass").await).await;
    // Bob from elsewhere is fine.
    assert_eq!(login_from(&ctl, "198.51.100.8", "bob", "bob-pass").await.status(), 200);
    ctl.stop().await;
}

#[tokio::test]
async fn an_unknown_user_costs_an_argon2_verification_like_a_known_one() {
    let ctl = TestController::start("unknown-user").await;
    ctl.user("bob").await;
    // The controller runs in this test's process, so its verification count is readable.
    let before = controller::model::auth::verifies();
    assert_eq!(login_from(&ctl, "192.0.2.1", "nobody", "x").await.status(), 401);
    let after_unknown = controller::model::auth::verifies();
    assert_eq!(after_unknown - before, 1, "the unknown user's password was checked against a hash");
    assert_eq!(login_from(&ctl, "192.0.2.1", "bob", "x").await.status(), 401);
    assert_eq!(controller::model::auth::verifies() - after_unknown, 1, "as the known user's was");
    ctl.stop().await;
}

#[tokio::test]
async fn only_the_admin_code_makes_the_first_admin() {
    let ctl = TestController::start("admin-code").await;
    let anon = ctl.anonymous();
    // Registering first no longer makes an admin.
    assert!(!anon.register(&registration("first", None)).await.unwrap().is_superuser);
    // A wrong code is refused.
    let err = anon.register(&registration("guesser", Some("not-the-code"))).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(err.to_string().contains("wrong admin code"), "{err}");
    // The right one makes an admin, once.
    assert!(anon.register(&registration("operator", Some(TEST_ADMIN_CODE))).await.unwrap().is_superuser);
    let err = anon.register(&registration("second", Some(TEST_ADMIN_CODE))).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(err.to_string().contains("has been used"), "{err}");
    // Deis v1 clients send no such field, and this project's client leaves it out when unset.
    let v1 = reqwest::Client::new()
        .post(format!("{}/v1/auth/register/", ctl.url))
        .json(&json!({"username": "v1user", "password": "v1-password", "email": "v1@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(v1.status(), 201);
    assert!(serde_json::to_value(registration("x", None)).unwrap().get("admin_code").is_none());
    ctl.stop().await;
}

#[tokio::test]
async fn with_registration_disabled_only_the_admin_code_registers() {
    let (mut config, ns, database) = TestController::config("admin-code-disabled").await;
    config.registration_mode = RegistrationMode::Disabled;
    let ctl = TestController::start_with(config, ns, database).await;
    let anon = ctl.anonymous();
    assert_eq!(status(anon.register(&registration("first", None)).await), Some(403));
    assert!(anon.register(&registration("operator", Some(TEST_ADMIN_CODE))).await.unwrap().is_superuser);
    assert_eq!(status(anon.register(&registration("later", None)).await), Some(403));
    ctl.stop().await;
}

#[tokio::test]
async fn without_an_admin_code_set_no_code_is_right() {
    let (mut config, ns, database) = TestController::config("admin-code-unset").await;
    config.admin_code = Some(String::new());
    let ctl = TestController::start_with(config, ns, database).await;
    let anon = ctl.anonymous();
    assert_eq!(status(anon.register(&registration("empty", Some(""))).await), Some(403));
    assert_eq!(status(anon.register(&registration("some", Some(TEST_ADMIN_CODE))).await), Some(403));
    assert!(!anon.register(&registration("plain", None)).await.unwrap().is_superuser);
    ctl.stop().await;
}

/// With a controller on every node, a guesser's requests reach different ones: the count and the
/// lockout are shared through the database, so the right password on another controller is
/// still refused, and a lockout begun on one holds on the other.
#[tokio::test]
async fn a_lockout_holds_on_every_controller_sharing_the_database() {
    let (mut config, ns, database) = TestController::config("throttle-shared").await;
    config.login_max_failures = 5;
    config.login_lockout_secs = 600;
    let first = TestController::start_with(config.clone(), ns.clone(), database.clone()).await;
    let second = TestController::start_with(config, ns, database).await;
    first.user("bob").await;
    // Failures spread over both: three on one, two on the other, each from its own address.
    for n in 0..5 {
        let ctl = if n % 2 == 0 { &first } else { &second };
        assert_eq!(
            login_from(ctl, &format!("192.0.2.{n}"), "bob", "wrong").await.status(),
            401,
            "attempt {n}"
        );
    }
    for ctl in [&first, &second] {
        let retry = assert_throttled(login_from(ctl, "192.0.2.50", "bob", "bob-pass").await).await;
        assert!(retry <= 600, "{retry}");
    }
    first.stop().await;
    second.stop().await;
}
