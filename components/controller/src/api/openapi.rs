//! The OpenAPI document of the whole API, generated from the handlers' annotations and the
//! request/response types, served at `/v1/openapi.json`.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder, content::ContentBuilder};
use utoipa::{Modify, OpenApi};

use crate::api;

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Deis controller API", version = "1", description = "The platform's API: apps, config, builds, releases, scale, logs and drains, domains, certs, keys, perms and users. Authenticate with `Authorization: token <key>` from `/v1/auth/login/`. `/v1/hooks/` serves only the builder, which authenticates with its own secret."),
    paths(
        api::auth::register, api::auth::login, api::auth::whoami, api::auth::passwd, api::auth::cancel,
        api::auth::regenerate, api::auth::log_credentials_issue, api::auth::log_credentials_revoke,
        api::auth::users,
        api::apps::list, api::apps::create, api::apps::info, api::apps::destroy, api::apps::transfer,
        api::config::get, api::config::update,
        api::builds::list, api::builds::create, api::builds::releases, api::builds::release, api::builds::rollback,
        api::builds::scale, api::processes::containers, api::processes::deploy, api::processes::restart, api::processes::run,
        api::domains::list, api::domains::add, api::domains::remove,
        api::logs::logs, api::logs::drains, api::logs::drain_add, api::logs::drain_remove,
        api::certs::list, api::certs::add, api::certs::info, api::certs::remove, api::certs::attach, api::certs::detach,
        api::keys::list, api::keys::add, api::keys::remove,
        api::perms::list, api::perms::create, api::perms::delete, api::perms::admins, api::perms::admin_create,
        api::perms::admin_delete,
        api::hooks::key_owner, api::hooks::push, api::hooks::build_status,
    ),
    components(schemas(controller_api::ErrorBody)),
    modifiers(&TokenAuth, &ErrorResponses),
    security(("token" = [])),
)]
pub struct ApiDoc;

struct TokenAuth;

impl Modify for TokenAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`token <key>`, the key from /v1/auth/login/",
            ))),
        );
        components.add_security_scheme(
            "builder",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                controller_api::BUILDER_AUTH_HEADER,
                "the builder's own secret (`builder_key` in the controller's config); only `/v1/hooks/` accepts it",
            ))),
        );
    }
}

/// Every operation may answer with these errors, all with an `ErrorBody`.
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let errors = [
            ("400", "Malformed request: bad JSON, an unknown field, a bad query"),
            ("401", "No valid token"),
            ("403", "Not allowed"),
            ("404", "No such resource"),
            ("405", "Method not allowed"),
            ("409", "Conflicts with what exists"),
            ("413", "Request body too large"),
            ("422", "Refused content: a bad name, key, certificate or value"),
            ("503", "A dependency (database, registry) is unavailable; retry"),
        ];
        for item in openapi.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post, &mut item.delete, &mut item.put, &mut item.patch]
                .into_iter()
                .flatten()
            {
                for (code, description) in errors {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// The document as JSON.
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use controller_api::Endpoint;

    /// The endpoints the document leaves out: Deis v1's probe and its other spellings of
    /// operations the document describes, and the document itself.
    const UNDOCUMENTED: &[Endpoint] = &[
        Endpoint::ApiRoot,
        Endpoint::OpenApi,
        Endpoint::CancelV1,
        Endpoint::RestartType,
        Endpoint::RestartOne,
    ];

    #[test]
    fn the_document_describes_exactly_the_endpoint_table() {
        let doc: serde_json::Value = serde_json::from_str(&super::document()).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in ["get", "post", "delete", "put", "patch"] {
                if item.get(method).is_some() {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let table: BTreeSet<(String, String)> = Endpoint::ALL
            .iter()
            .filter(|e| !UNDOCUMENTED.contains(e))
            .map(|e| (e.verb().as_str().to_owned(), e.template().to_owned()))
            .collect();
        assert_eq!(documented, table, "annotations and controller_api::Endpoint disagree");
    }
}
