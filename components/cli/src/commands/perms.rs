//! Who may do what: app collaborators and platform administrators (perms:*), and users:list.

use anyhow::Result;

use crate::context::Ctx;
use crate::parse::validate_segment;
use crate::table::header;

fn names(title: &str, names: &[String]) -> String {
    let mut out = header(title);
    for name in names {
        out.push_str(name);
        out.push('\n');
    }
    out
}

pub async fn list(ctx: &Ctx, admin: bool) -> Result<()> {
    let session = ctx.session()?;
    if admin {
        let admins = session.client.admins().await?;
        let usernames: Vec<String> = admins.iter().map(|a| a.username.clone()).collect();
        return ctx.show(&admins, |_| names("Administrators", &usernames));
    }
    let app = ctx.app()?;
    let perms = session.client.perms(&app).await?;
    ctx.show(&perms, |perms| names(&format!("{app}'s Users"), &perms.users))
}

pub async fn create(ctx: &Ctx, username: &str, admin: bool) -> Result<()> {
    validate_segment("username", username)?;
    let session = ctx.session()?;
    if admin {
        session.client.admin_create(username).await?;
        return ctx.note(&format!("Adding {username} to system administrators... done"));
    }
    let app = ctx.app()?;
    session.client.perm_create(&app, username).await?;
    ctx.note(&format!("Adding {username} to {app} collaborators... done"))
}

pub async fn delete(ctx: &Ctx, username: &str, admin: bool) -> Result<()> {
    validate_segment("username", username)?;
    let session = ctx.session()?;
    if admin {
        session.client.admin_delete(username).await?;
        return ctx.note(&format!("Removing {username} from system administrators... done"));
    }
    let app = ctx.app()?;
    session.client.perm_delete(&app, username).await?;
    ctx.note(&format!("Removing {username} from {app} collaborators... done"))
}

pub async fn users(ctx: &Ctx) -> Result<()> {
    let users = ctx.session()?.client.users().await?;
    let usernames: Vec<String> = users.iter().map(|u| u.username.clone()).collect();
    ctx.show(&users, |_| names("Users", &usernames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_names_under_a_header() {
        assert_eq!(names("foo's Users", &["bob".into(), "carol".into()]), "=== foo's Users\nbob\ncarol\n");
    }
}
