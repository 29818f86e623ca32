//! `/v1/apps/{app}/containers/` and `/deploy/`: what runs, asked of the scheduler's leader over
//! the bus (the scheduler, not Postgres, knows actual state).

use std::sync::Arc;
use std::time::Duration;

use bus_schema::messages::{AppStatus, AppStatusRequest};
use bus_schema::{Bus, Request, Subject};
use controller_api::{Container, DeployStatus, Endpoint, RestartRequest};
use warp::Reply as _;
use warp::http::StatusCode;

use super::error::ApiError;
use super::{Answer, Body, Paging, json, parse_body};
use crate::ctx::{AuthUser, Ctx};
use crate::model::validate;

/// The bus, or why the request cannot be served yet.
pub(super) fn bus(ctx: &Ctx) -> Result<&Bus, ApiError> {
    ctx.bus
        .get()
        .ok_or_else(|| ApiError::Unavailable("the controller is not connected to the bus yet; retry".into()))
}

/// Asks the scheduler's leader and waits for its answer.
async fn ask_scheduler<R: Request>(
    bus: &Bus,
    subject: &Subject<R>,
    body: R,
    timeout: Duration,
) -> Result<R::Reply, ApiError> {
    let reply = bus
        .request(subject, &bus.envelope(body), timeout)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the scheduler did not answer: {e}")))?;
    Ok(reply.body)
}

pub(super) async fn ask(ctx: &Ctx, app: &str) -> Result<AppStatus, ApiError> {
    let bus = bus(ctx)?;
    let request = AppStatusRequest { app: validate::app_name(app)? };
    ask_scheduler(bus, &bus.namespace().app_status(), request, Duration::from_secs(3)).await
}

/// The app's containers and their state.
#[utoipa::path(get, path = "/v1/apps/{app}/containers/", tag = "apps", params(("app" = String, Path, description = "App name"), Paging),
    responses((status = 200, description = "Containers", body = controller_api::Page<Container>)))]
pub async fn containers(ctx: Arc<Ctx>, app: String, user: AuthUser, paging: Paging) -> Answer {
    ctx.check_app_access(&user, &app).await?;
    let status = ask(&ctx, &app).await?;
    let all: Vec<Container> = status.containers.into_iter().map(|c| container(&app, c)).collect();
    let count = i64::try_from(all.len()).unwrap_or(0);
    let page: Vec<Container> = all
        .into_iter()
        .skip(usize::try_from(paging.offset).unwrap_or(0))
        .take(usize::try_from(paging.limit).unwrap_or(100))
        .collect();
    Ok(json(StatusCode::OK, &paging.page(&Endpoint::Containers.path(&[&app]), count, page)))
}

/// How the newest release is rolling out (null before the first deploy).
#[utoipa::path(get, path = "/v1/apps/{app}/deploy/", tag = "apps", params(("app" = String, Path, description = "App name")),
    responses((status = 200, description = "The rollout", body = Option<DeployStatus>)))]
pub async fn deploy(ctx: Arc<Ctx>, app: String, user: AuthUser) -> Answer {
    ctx.check_app_access(&user, &app).await?;
    let status = ask(&ctx, &app).await?;
    let out = status.deploy.map(crate::model::deploy_status);
    Ok(json(StatusCode::OK, &out))
}

/// Restart containers one at a time, so the others keep serving (`deis ps:restart`): all of the
/// app's, or of a type, or one (`{"process_type": "web", "num": 2}`). Answers the containers
/// that will restart, as Deis v1 did.
#[utoipa::path(post, path = "/v1/apps/{app}/containers/restart/", tag = "apps", request_body = RestartRequest,
    params(("app" = String, Path, description = "App name")),
    responses((status = 200, description = "The containers that will restart, one at a time", body = Vec<Container>)))]
pub async fn restart(ctx: Arc<Ctx>, app: String, user: AuthUser, req: RestartRequest) -> Answer {
    restart_containers(ctx, app, user, req).await
}

/// Deis v1's paths for the same: `/containers/{type}/restart/` and
/// `/containers/{type}/{num}/restart/`.
pub async fn restart_at(
    ctx: Arc<Ctx>,
    app: String,
    process_type: String,
    num: Option<u32>,
    user: AuthUser,
) -> Answer {
    restart_containers(ctx, app, user, RestartRequest { process_type: Some(process_type), num }).await
}

async fn restart_containers(ctx: Arc<Ctx>, app: String, user: AuthUser, req: RestartRequest) -> Answer {
    let process_type = req.process_type.as_deref().map(validate::process_type).transpose()?;
    if req.num.is_some() && process_type.is_none() {
        return Err(ApiError::Invalid("a container number needs its type, like web.2".into()));
    }
    ctx.check_app_access(&user, &app).await?;
    let bus = bus(&ctx)?;
    let request =
        bus_schema::messages::RestartRequest { app: validate::app_name(&app)?, process_type, index: req.num };
    let reply = ask_scheduler(bus, &bus.namespace().restart(), request, Duration::from_secs(3)).await?;
    if reply.restarting == 0 {
        return Err(ApiError::NotFound(format!("{app} has no running container like that to restart")));
    }
    tracing::info!(%app, user = %user.username, restarting = reply.restarting, "restart requested");
    // The list Deis v1 answered: the containers the request names, as they are now (the
    // restarts then roll through them one at a time).
    let status = ask(&ctx, &app).await?;
    let release = status.containers.iter().map(|c| c.key.version).max();
    let containers: Vec<Container> = status
        .containers
        .into_iter()
        .filter(|c| Some(c.key.version) == release)
        .filter(|c| req.process_type.as_ref().is_none_or(|t| c.key.process_type.as_str() == t.as_str()))
        .filter(|c| req.num.is_none_or(|n| c.key.index == n))
        .map(|c| container(&app, c))
        .collect();
    Ok(json(StatusCode::OK, &containers))
}

/// A container of the scheduler's, as the API shows it.
fn container(app: &str, c: bus_schema::messages::ContainerView) -> Container {
    Container {
        app: app.to_owned(),
        release: format!("v{}", c.key.version),
        process_type: c.key.process_type.to_string(),
        num: c.key.index,
        state: c.state,
        node: c.node.to_string(),
        started: c.since.to_rfc3339(),
    }
}

/// Run a one-off command in a new container of the current release (`deis run`). Asked with
/// `Accept: application/x-ndjson` (this project's CLI) the answer streams as newline-delimited
/// JSON: each output line as it comes, then the exit status. Otherwise it comes whole once the
/// command ends, as Deis v1 answered and its clients parse: `[exit_code, "output"]`.
#[utoipa::path(post, path = "/v1/apps/{app}/run/", tag = "apps", request_body = controller_api::RunRequest,
    params(("app" = String, Path, description = "App name")),
    responses((status = 200, description = "Output lines, then the exit status", content_type = "application/x-ndjson", body = controller_api::RunEvent)))]
pub async fn run(ctx: Arc<Ctx>, app: String, user: AuthUser, accept: Option<String>, body: Body) -> Answer {
    use futures::StreamExt;
    let req: controller_api::RunRequest = parse_body(body?)?;
    let command = req.command.trim().to_owned();
    if command.is_empty() || command.len() > 4096 {
        return Err(ApiError::Invalid("the command must be 1 to 4096 characters".into()));
    }
    ctx.check_app_access(&user, &app).await?;
    let mut events = start_one_off(&ctx, &app, &user.username, command).await?;
    if !accept.is_some_and(|a| a.contains(NDJSON)) {
        let mut output = String::new();
        let mut exit_code = -1;
        while let Some(event) = events.next().await {
            match event {
                controller_api::RunEvent::Line { line, .. } => {
                    output.push_str(&line);
                    output.push('\n');
                }
                controller_api::RunEvent::Exit { exit_code: code } => exit_code = code.unwrap_or(-1),
            }
        }
        return Ok(json(StatusCode::OK, &(exit_code, output)));
    }
    let lines = events.map(|event| {
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::io::Error>(bytes::Bytes::from(line))
    });
    Ok(warp::reply::with_header(warp::reply::stream(lines), "content-type", NDJSON).into_response())
}

const NDJSON: &str = "application/x-ndjson";

/// Starts the one-off through the scheduler and follows its output: the events end with its
/// exit status (or when the bus goes).
async fn start_one_off(
    ctx: &Ctx,
    app: &str,
    username: &str,
    command: String,
) -> Result<futures::channel::mpsc::UnboundedReceiver<controller_api::RunEvent>, ApiError> {
    use futures::StreamExt;
    let bus = bus(ctx)?.clone();
    let ns = bus.namespace().clone();
    let run_id = uuid::Uuid::now_v7();
    // Listen before asking, so not a line is missed.
    let mut output = bus
        .subscribe_subject(&ns.run_output(run_id))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let mut exited = bus
        .subscribe_subject(&ns.run_exited(run_id))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let request = bus_schema::messages::RunRequest {
        app: validate::app_name(app)?,
        run_id,
        command: command.clone(),
        user: username.to_owned(),
    };
    // Long enough for the chosen node to pull the release's image.
    let reply = ask_scheduler(&bus, &ns.run(), request, Duration::from_secs(300)).await?;
    if let bus_schema::messages::RunReply::Failed { reason } = reply {
        return Err(ApiError::Invalid(format!("cannot run `{command}`: {reason}")));
    }
    tracing::info!(%app, user = %username, %run_id, "one-off started");
    let (tx, rx) = futures::channel::mpsc::unbounded::<controller_api::RunEvent>();
    tokio::spawn(async move {
        let line_of = |l: bus_schema::messages::LogLine| controller_api::RunEvent::Line {
            line: l.message,
            stream: l.stream.as_str().to_owned(),
        };
        loop {
            tokio::select! {
                Some(Ok(line)) = output.next() => if tx.unbounded_send(line_of(line.envelope.body)).is_err() { return },
                Some(Ok(exit)) = exited.next() => {
                    // Lines published just before the exit may still be in flight.
                    while let Ok(Some(Ok(line))) = tokio::time::timeout(Duration::from_millis(200), output.next()).await {
                        let _ = tx.unbounded_send(line_of(line.envelope.body));
                    }
                    let _ = tx.unbounded_send(controller_api::RunEvent::Exit { exit_code: exit.envelope.body.exit_code });
                    return;
                },
                else => return,
            }
        }
    });
    Ok(rx)
}
