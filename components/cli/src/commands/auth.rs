//! Accounts and sessions: register, login, logout, whoami, passwd, auth:cancel, auth:regenerate.

use anyhow::{Context as _, Result, bail};
use controller_api::{
    CancelRequest, Client, LoginRequest, PasswdRequest, RegenerateTokenRequest, RegisterRequest,
};
use serde_json::json;

use super::confirm;
use crate::cli::{CancelArgs, LoginArgs, PasswdArgs, RegenerateArgs, RegisterArgs};
use crate::context::{Ctx, ask, ask_password};
use crate::settings::{self, Settings};

/// Normalizes a controller URL as typed: `deis.example.com` means `http://deis.example.com`
/// (Deis v1 accepted both), and no trailing slash is kept.
pub fn normalize_controller(raw: &str) -> Result<String> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") { raw.to_owned() } else { format!("http://{raw}") };
    let url = url::Url::parse(&with_scheme).with_context(|| format!("invalid controller URL '{raw}'"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("invalid controller URL '{raw}': use http:// or https://");
    }
    if url.host_str().is_none_or(str::is_empty) {
        bail!("invalid controller URL '{raw}': it has no host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("invalid controller URL '{raw}': remove the ?query or #fragment");
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Asks for a new password twice, so a typo does not lock the user out.
fn ask_new_password(question: &str) -> Result<String> {
    let password = ask_password(question)?;
    if ask_password("confirm password: ")? != password {
        bail!("the passwords did not match");
    }
    Ok(password)
}

pub async fn register(ctx: &Ctx, args: RegisterArgs) -> Result<()> {
    let controller = normalize_controller(&args.login.controller)?;
    let username = ctx.value_or_ask(args.login.username, "username", || ask("username: "))?;
    let password = ctx.value_or_ask(args.login.password, "password", || ask_new_password("password: "))?;
    let email = ctx.value_or_ask(args.email, "email", || ask("email: "))?;
    let client = Client::new(&controller, None);
    let request = RegisterRequest {
        username,
        password: password.clone(),
        email,
        first_name: String::new(),
        last_name: String::new(),
        admin_code: args.admin_code,
    };
    let user = client.register(&request).await?;
    let role = if user.is_superuser { " as an administrator" } else { "" };
    ctx.note(&format!("Registered {}{role}", user.username))?;
    // Deis v1 logs the new user in straight away.
    log_in(ctx, &client, &controller, &user.username, password).await?;
    ctx.json_only(&user)
}

pub async fn login(ctx: &Ctx, args: LoginArgs) -> Result<()> {
    let controller = normalize_controller(&args.controller)?;
    let username = ctx.value_or_ask(args.username, "username", || ask("username: "))?;
    let password = ctx.value_or_ask(args.password, "password", || ask_password("password: "))?;
    log_in(ctx, &Client::new(&controller, None), &controller, &username, password).await?;
    ctx.json_only(&json!({"controller": controller, "username": username}))
}

/// Logs in and saves the session to the profile's settings file.
async fn log_in(
    ctx: &Ctx,
    client: &Client,
    controller: &str,
    username: &str,
    password: String,
) -> Result<()> {
    let token = client.login(&LoginRequest { username: username.to_owned(), password }).await?.token;
    let settings = Settings { controller: controller.to_owned(), username: username.to_owned(), token };
    settings::save(&ctx.settings_path()?, &settings)?;
    ctx.note(&format!("Logged in as {username}"))
}

pub fn logout(ctx: &Ctx) -> Result<()> {
    // There is no server-side session to end: forgetting the token is logging out.
    settings::remove(&ctx.settings_path()?)?;
    ctx.note("Logged out")
}

pub async fn whoami(ctx: &Ctx) -> Result<()> {
    let session = ctx.session()?;
    let user = session.client.whoami().await?;
    ctx.show(&user, |user| format!("You are {} at {}\n", user.username, session.settings.controller))
}

pub async fn passwd(ctx: &Ctx, args: PasswdArgs) -> Result<()> {
    let session = ctx.session()?;
    // An administrator changing someone else's password does not know it, so it is optional then.
    let password = match args.username {
        Some(_) => args.password,
        None => Some(ctx.value_or_ask(args.password, "password", || ask_password("current password: "))?),
    };
    let new_password =
        ctx.value_or_ask(args.new_password, "new-password", || ask_new_password("new password: "))?;
    session.client.passwd(&PasswdRequest { password, new_password, username: args.username }).await?;
    ctx.note("Password change succeeded.")
}

pub async fn cancel(ctx: &Ctx, args: CancelArgs) -> Result<()> {
    let session = ctx.session()?;
    let target = args.username.clone().unwrap_or_else(|| session.settings.username.clone());
    confirm(ctx, "delete the user", &target, args.confirm.as_deref())?;
    session.client.cancel(&CancelRequest { username: args.username }).await?;
    if target == session.settings.username {
        // The token died with the account.
        settings::remove(&ctx.settings_path()?)?;
    }
    ctx.note(&format!("Account {target} cancelled"))
}

pub async fn regenerate(ctx: &Ctx, args: RegenerateArgs) -> Result<()> {
    let session = ctx.session()?;
    let own = args.username.is_none() && !args.all;
    let response = session
        .client
        .regenerate_token(&RegenerateTokenRequest { username: args.username, all: args.all })
        .await?;
    if own {
        // The old token no longer works: keep the session alive with the new one.
        let settings = Settings { token: response.token.clone(), ..session.settings };
        settings::save(&ctx.settings_path()?, &settings)?;
    }
    ctx.note(if args.all { "All tokens regenerated: log in again" } else { "Token regenerated" })?;
    ctx.json_only(&response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_urls() {
        for (typed, normalized) in [
            ("deis.example.com", "http://deis.example.com"),
            ("http://deis.example.com/", "http://deis.example.com"),
            ("https://127.0.0.1:8000", "https://127.0.0.1:8000"),
            (" http://h/prefix/ ", "http://h/prefix"),
        ] {
            assert_eq!(normalize_controller(typed).unwrap(), normalized, "{typed}");
        }
        for bad in ["", "ftp://h", "http://", "http://h?x=1", "http://exa mple.com"] {
            assert!(normalize_controller(bad).is_err(), "{bad}");
        }
    }
}
