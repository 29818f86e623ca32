//! A small in-memory controller for the CLI's end-to-end tests: the `/v1/` routes the tests
//! use, with the real API types, real status codes and `{"detail": …}` errors, on loopback.
//!
//! It is deliberately simple (one lock, no persistence); the real controller's behaviour is
//! tested in its own crate. What matters here is that the `deis` binary sends the right
//! requests and shows the answers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use controller_api::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use warp::Filter as _;
use warp::http::{Method, StatusCode};

const TIME: &str = "2026-11-27T10:00:00Z";

#[derive(Default)]
struct State {
    passwords: BTreeMap<String, String>,
    users: BTreeMap<String, User>,
    /// token → username
    tokens: BTreeMap<String, String>,
    apps: BTreeMap<String, App>,
    configs: BTreeMap<String, Config>,
    releases: BTreeMap<String, Vec<Release>>,
    domains: BTreeMap<String, Vec<Domain>>,
    keys: Vec<Key>,
}

type Reply = (StatusCode, Value);

fn error(status: StatusCode, detail: &str) -> Reply {
    (status, json!({ "detail": detail }))
}

fn ok<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    (status, serde_json::to_value(value).unwrap())
}

fn page<T: Serialize>(items: &[T]) -> Reply {
    ok(StatusCode::OK, &json!({"count": items.len(), "next": null, "previous": null, "results": items}))
}

fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Reply> {
    serde_json::from_slice(bytes).map_err(|e| error(StatusCode::BAD_REQUEST, &format!("bad body: {e}")))
}

/// Starts the controller on a loopback port, in a thread of its own; returns its URL.
pub fn start() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(State::default()));
    let routes = warp::method()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::bytes())
        .map(move |method: Method, path: warp::path::FullPath, auth: Option<String>, bytes: bytes::Bytes| {
            let mut state = state.lock().unwrap();
            let (status, value) = handle(&mut state, &method, path.as_str(), auth.as_deref(), &bytes)
                .unwrap_or_else(|reply| reply);
            let reply: Box<dyn warp::Reply> = if value.is_null() {
                Box::new(status)
            } else {
                Box::new(warp::reply::with_status(warp::reply::json(&value), status))
            };
            reply
        });
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            warp::serve(routes).incoming(listener).run().await;
        });
    });
    url
}

fn new_release(state: &mut State, app: &str, owner: &str, summary: String) -> Release {
    let releases = state.releases.entry(app.to_owned()).or_default();
    let release = Release {
        uuid: uuid::Uuid::new_v4(),
        owner: owner.to_owned(),
        app: app.to_owned(),
        version: releases.len() as u32 + 1,
        build: None,
        image: String::new(),
        config: state.configs.get(app).map(|c| c.uuid).unwrap_or_default(),
        summary,
        created: TIME.to_owned(),
        updated: TIME.to_owned(),
    };
    releases.push(release.clone());
    release
}

/// Applies `null`-unsets and sets of a config update map.
fn apply<V: Clone>(target: &mut BTreeMap<String, V>, change: &BTreeMap<String, Option<V>>) {
    for (key, value) in change {
        match value {
            Some(value) => target.insert(key.clone(), value.clone()),
            None => target.remove(key),
        };
    }
}

fn handle(
    state: &mut State,
    method: &Method,
    path: &str,
    auth: Option<&str>,
    bytes: &[u8],
) -> Result<Reply, Reply> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Unauthenticated routes first.
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["v1", "auth", "register"]) => {
            let req: RegisterRequest = body(bytes)?;
            if state.users.contains_key(&req.username) {
                return Err(error(StatusCode::CONFLICT, &format!("user {} already exists", req.username)));
            }
            let user = User {
                username: req.username.clone(),
                email: req.email,
                first_name: req.first_name,
                last_name: req.last_name,
                is_superuser: state.users.is_empty(),
                date_joined: TIME.to_owned(),
            };
            state.passwords.insert(req.username.clone(), req.password);
            state.users.insert(req.username, user.clone());
            return Ok(ok(StatusCode::CREATED, &user));
        }
        ("POST", ["v1", "auth", "login"]) => {
            let req: LoginRequest = body(bytes)?;
            if state.passwords.get(&req.username) != Some(&req.password) {
                return Err(error(StatusCode::UNAUTHORIZED, "bad credentials"));
            }
            let token = format!("token-{}", uuid::Uuid::new_v4().simple());
            state.tokens.insert(token.clone(), req.username);
            return Ok(ok(StatusCode::OK, &TokenResponse { token }));
        }
        _ => {}
    }

    let user =
        auth.and_then(|a| a.strip_prefix("token ")).and_then(|t| state.tokens.get(t)).cloned().ok_or_else(
            || error(StatusCode::UNAUTHORIZED, "authentication credentials were not provided or are invalid"),
        )?;
    let not_found = |app: &str| error(StatusCode::NOT_FOUND, &format!("app {app} not found"));

    Ok(match (method.as_str(), segments.as_slice()) {
        ("GET", ["v1", "auth", "whoami"]) => ok(StatusCode::OK, &state.users[&user]),
        ("GET", ["v1", "apps"]) => page(&state.apps.values().cloned().collect::<Vec<_>>()),
        ("POST", ["v1", "apps"]) => {
            let req: AppCreateRequest = body(bytes)?;
            let id = req.id.unwrap_or_else(|| "generated-app".to_owned());
            if state.apps.contains_key(&id) {
                return Err(error(StatusCode::CONFLICT, &format!("app {id} already exists")));
            }
            let app = App {
                uuid: uuid::Uuid::new_v4(),
                id: id.clone(),
                owner: user.clone(),
                url: format!("{id}.example.com"),
                structure: BTreeMap::new(),
                created: TIME.to_owned(),
                updated: TIME.to_owned(),
            };
            let config = Config {
                uuid: uuid::Uuid::new_v4(),
                owner: user.clone(),
                app: id.clone(),
                values: BTreeMap::new(),
                memory: BTreeMap::new(),
                cpu: BTreeMap::new(),
                tags: BTreeMap::new(),
                created: TIME.to_owned(),
                updated: TIME.to_owned(),
            };
            state.apps.insert(id.clone(), app.clone());
            state.configs.insert(id.clone(), config);
            new_release(state, &id, &user, format!("{user} created initial release"));
            ok(StatusCode::CREATED, &app)
        }
        (_, ["v1", "apps", app, rest @ ..]) => {
            let app = (*app).to_owned();
            if !state.apps.contains_key(&app) {
                return Err(not_found(&app));
            }
            match (method.as_str(), rest) {
                ("GET", []) => ok(StatusCode::OK, &state.apps[&app]),
                ("DELETE", []) => {
                    state.apps.remove(&app);
                    (StatusCode::NO_CONTENT, Value::Null)
                }
                ("GET", ["config"]) => ok(StatusCode::OK, &state.configs[&app]),
                ("POST", ["config"]) => {
                    let change: ConfigUpdate = body(bytes)?;
                    let config = state.configs.get_mut(&app).unwrap();
                    apply(&mut config.values, &change.values);
                    apply(&mut config.memory, &change.memory);
                    apply(&mut config.cpu, &change.cpu);
                    apply(&mut config.tags, &change.tags);
                    config.uuid = uuid::Uuid::new_v4();
                    let config = config.clone();
                    let keys: Vec<&String> = change.values.keys().collect();
                    new_release(state, &app, &user, format!("{user} changed {keys:?}"));
                    ok(StatusCode::CREATED, &config)
                }
                ("GET", ["releases"]) => page(&state.releases[&app]),
                ("GET", ["releases", version]) => {
                    let found = state.releases[&app].iter().find(|r| format!("v{}", r.version) == *version);
                    let missing = || error(StatusCode::NOT_FOUND, &format!("release {version} not found"));
                    ok(StatusCode::OK, found.ok_or_else(missing)?)
                }
                ("POST", ["releases", "rollback"]) => {
                    let req: RollbackRequest = body(bytes)?;
                    let current = state.releases[&app].len() as u32;
                    let target = req.version.unwrap_or(current.saturating_sub(1));
                    if target == 0 || target >= current {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            &format!("cannot roll back to v{target}"),
                        ));
                    }
                    let release = new_release(state, &app, &user, format!("{user} rolled back to v{target}"));
                    ok(StatusCode::CREATED, &release)
                }
                ("POST", ["scale"]) => {
                    let formation: ScaleRequest = body(bytes)?;
                    let entry = state.apps.get_mut(&app).unwrap();
                    entry.structure.extend(formation);
                    ok(StatusCode::OK, &entry.clone())
                }
                ("GET", ["domains"]) => page(state.domains.get(&app).map(Vec::as_slice).unwrap_or_default()),
                ("POST", ["domains"]) => {
                    let req: DomainCreateRequest = body(bytes)?;
                    let domain = Domain {
                        owner: user.clone(),
                        app: app.clone(),
                        domain: req.domain,
                        created: TIME.to_owned(),
                        updated: TIME.to_owned(),
                    };
                    state.domains.entry(app).or_default().push(domain.clone());
                    ok(StatusCode::CREATED, &domain)
                }
                _ => return Err(error(StatusCode::NOT_FOUND, &format!("no route {method} {path}"))),
            }
        }
        ("GET", ["v1", "keys"]) => page(&state.keys),
        ("POST", ["v1", "keys"]) => {
            let req: KeyCreateRequest = body(bytes)?;
            let key = Key {
                id: req.id,
                owner: user,
                public: req.public,
                fingerprint: "SHA256:fake".to_owned(),
                created: TIME.to_owned(),
                updated: TIME.to_owned(),
            };
            state.keys.push(key.clone());
            ok(StatusCode::CREATED, &key)
        }
        _ => return Err(error(StatusCode::NOT_FOUND, &format!("no route {method} {path}"))),
    })
}
