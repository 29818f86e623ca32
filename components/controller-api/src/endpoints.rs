//! Every endpoint of the API, declared once: its method and path. The controller routes requests
//! by this table, [`crate::Client`] builds its URLs from it, and the controller's tests hold its
//! OpenAPI document to it, so the three cannot drift apart.

use std::fmt;

/// The HTTP methods the API uses (a type of its own: the controller's and the client's HTTP
/// stacks have different `Method` types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    Post,
    Delete,
}

impl Verb {
    pub const fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Delete => "DELETE",
        }
    }

    /// The verb of a request's method; `None` for one the API never answers.
    pub fn parse(method: &str) -> Option<Self> {
        match method {
            "GET" => Some(Verb::Get),
            "POST" => Some(Verb::Post),
            "DELETE" => Some(Verb::Delete),
            _ => None,
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! endpoints {
    ($( $(#[$doc:meta])* $name:ident = $verb:ident $path:literal; )*) => {
        /// One endpoint of the API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Endpoint {
            $( $(#[$doc])* $name, )*
        }

        impl Endpoint {
            /// Every endpoint, in the order requests are matched.
            pub const ALL: &'static [Endpoint] = &[$(Endpoint::$name),*];

            pub const fn verb(self) -> Verb {
                match self {
                    $(Endpoint::$name => Verb::$verb,)*
                }
            }

            /// The path, with `{name}` where a segment is a parameter (as OpenAPI writes it).
            pub const fn template(self) -> &'static str {
                match self {
                    $(Endpoint::$name => $path,)*
                }
            }
        }
    };
}

endpoints! {
    /// Deis v1 clients probe `GET /v1/` and expect 401.
    ApiRoot = Get "/v1/";
    OpenApi = Get "/v1/openapi.json";
    Register = Post "/v1/auth/register/";
    Login = Post "/v1/auth/login/";
    Whoami = Get "/v1/auth/whoami/";
    Passwd = Post "/v1/auth/passwd/";
    Cancel = Post "/v1/auth/cancel/";
    /// What the Deis v1 client sends for `auth:cancel`.
    CancelV1 = Delete "/v1/auth/cancel/";
    RegenerateToken = Post "/v1/auth/tokens/";
    /// Issue (or replace) your credentials for reading logs from NATS.
    LogCredentials = Post "/v1/auth/log-credentials/";
    LogCredentialsRevoke = Delete "/v1/auth/log-credentials/";
    Users = Get "/v1/users/";
    Apps = Get "/v1/apps/";
    AppCreate = Post "/v1/apps/";
    App = Get "/v1/apps/{app}/";
    AppDestroy = Delete "/v1/apps/{app}/";
    AppTransfer = Post "/v1/apps/{app}/";
    Config = Get "/v1/apps/{app}/config/";
    ConfigUpdate = Post "/v1/apps/{app}/config/";
    Scale = Post "/v1/apps/{app}/scale/";
    Containers = Get "/v1/apps/{app}/containers/";
    Restart = Post "/v1/apps/{app}/containers/restart/";
    /// Deis v1's `ps:restart <type>`.
    RestartType = Post "/v1/apps/{app}/containers/{type}/restart/";
    /// Deis v1's `ps:restart <type>.<num>`.
    RestartOne = Post "/v1/apps/{app}/containers/{type}/{num}/restart/";
    Run = Post "/v1/apps/{app}/run/";
    Deploy = Get "/v1/apps/{app}/deploy/";
    Builds = Get "/v1/apps/{app}/builds/";
    BuildCreate = Post "/v1/apps/{app}/builds/";
    Releases = Get "/v1/apps/{app}/releases/";
    Rollback = Post "/v1/apps/{app}/releases/rollback/";
    Release = Get "/v1/apps/{app}/releases/{version}/";
    Domains = Get "/v1/apps/{app}/domains/";
    DomainAdd = Post "/v1/apps/{app}/domains/";
    DomainRemove = Delete "/v1/apps/{app}/domains/{domain}";
    Logs = Get "/v1/apps/{app}/logs/";
    Drains = Get "/v1/apps/{app}/drains/";
    DrainAdd = Post "/v1/apps/{app}/drains/";
    DrainRemove = Delete "/v1/apps/{app}/drains/{id}";
    Perms = Get "/v1/apps/{app}/perms/";
    PermCreate = Post "/v1/apps/{app}/perms/";
    PermDelete = Delete "/v1/apps/{app}/perms/{username}";
    Admins = Get "/v1/admin/perms/";
    AdminCreate = Post "/v1/admin/perms/";
    AdminDelete = Delete "/v1/admin/perms/{username}";
    Certs = Get "/v1/certs/";
    CertAdd = Post "/v1/certs/";
    Cert = Get "/v1/certs/{name}";
    CertRemove = Delete "/v1/certs/{name}";
    CertAttach = Post "/v1/certs/{name}/domain/";
    CertDetach = Delete "/v1/certs/{name}/domain/{domain}";
    Keys = Get "/v1/keys/";
    KeyAdd = Post "/v1/keys/";
    KeyRemove = Delete "/v1/keys/{id}";
    HookKeyOwner = Get "/v1/hooks/key/{fingerprint}";
    HookPush = Post "/v1/hooks/push/";
    HookBuildStatus = Get "/v1/hooks/apps/{app}/builds/{build}/";
}

/// Why a request matched no endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// No endpoint has this path.
    NotFound,
    /// Some endpoint has this path, none with this method.
    MethodNotAllowed,
}

impl Endpoint {
    /// The path with its parameters filled in order, each percent-encoded so it stays one
    /// segment (SSH fingerprints are base64, whose `/` and `+` would split or change the path).
    pub fn path(self, params: &[&str]) -> String {
        let mut out = String::with_capacity(self.template().len() + 16);
        let mut params = params.iter();
        for segment in segments(self.template()) {
            out.push('/');
            if is_param(segment) {
                encode_segment_into(params.next().copied().unwrap_or_default(), &mut out);
            } else {
                out.push_str(segment);
            }
        }
        if self.template().ends_with('/') {
            out.push('/');
        }
        out
    }

    /// The endpoint a request is for, and its path parameters as sent (still percent-encoded).
    /// One trailing `/` is optional, as it always was; an empty parameter matches nothing.
    pub fn recognise<'p>(method: &str, path: &'p str) -> Result<(Endpoint, Vec<&'p str>), Unmatched> {
        let verb = Verb::parse(method);
        let mut path_known = false;
        for &endpoint in Endpoint::ALL {
            let Some(params) = endpoint.match_path(path) else { continue };
            if Some(endpoint.verb()) == verb {
                return Ok((endpoint, params));
            }
            path_known = true;
        }
        Err(if path_known { Unmatched::MethodNotAllowed } else { Unmatched::NotFound })
    }

    fn match_path(self, path: &str) -> Option<Vec<&str>> {
        let path = path.strip_prefix('/')?;
        let path = path.strip_suffix('/').unwrap_or(path);
        let mut wanted = segments(self.template());
        let mut given = path.split('/');
        let mut params = Vec::new();
        loop {
            match (wanted.next(), given.next()) {
                (None, None) => return Some(params),
                (Some(w), Some(g)) if is_param(w) && !g.is_empty() => params.push(g),
                (Some(w), Some(g)) if w == g => {}
                _ => return None,
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb(), self.template())
    }
}

/// A template's segments between its leading and trailing `/`.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    path.split('/')
}

fn is_param(segment: &str) -> bool {
    segment.len() > 2 && segment.starts_with('{') && segment.ends_with('}')
}

/// Everything but RFC 3986's unreserved characters is encoded in a parameter.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn encode_segment_into(s: &str, out: &mut String) {
    out.extend(percent_encoding::utf8_percent_encode(s, SEGMENT));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_filled_and_encoded() {
        assert_eq!(Endpoint::Apps.path(&[]), "/v1/apps/");
        assert_eq!(Endpoint::Config.path(&["web-shop"]), "/v1/apps/web-shop/config/");
        assert_eq!(Endpoint::DomainRemove.path(&["a", "x.example.com"]), "/v1/apps/a/domains/x.example.com");
        assert_eq!(Endpoint::HookKeyOwner.path(&["SHA256:ab/c+d"]), "/v1/hooks/key/SHA256%3Aab%2Fc%2Bd");
        assert_eq!(Endpoint::ApiRoot.path(&[]), "/v1/");
    }

    #[test]
    fn requests_find_their_endpoint() {
        let ok = |m, p| Endpoint::recognise(m, p).map(|(e, params)| (e, params.join(",")));
        assert_eq!(ok("GET", "/v1/apps/"), Ok((Endpoint::Apps, String::new())));
        assert_eq!(ok("GET", "/v1/apps"), Ok((Endpoint::Apps, String::new())), "the slash is optional");
        assert_eq!(ok("POST", "/v1/apps/a/releases/rollback/"), Ok((Endpoint::Rollback, "a".into())));
        assert_eq!(ok("GET", "/v1/apps/a/releases/v3"), Ok((Endpoint::Release, "a,v3".into())));
        assert_eq!(
            ok("POST", "/v1/apps/a/containers/web/2/restart"),
            Ok((Endpoint::RestartOne, "a,web,2".into()))
        );
        assert_eq!(ok("DELETE", "/v1/auth/cancel"), Ok((Endpoint::CancelV1, String::new())));
        assert_eq!(ok("PUT", "/v1/apps/a/"), Err(Unmatched::MethodNotAllowed));
        assert_eq!(ok("GET", "/v1/apps/a/config/x"), Err(Unmatched::NotFound));
        assert_eq!(ok("GET", "/v1/apps//config/"), Err(Unmatched::NotFound), "no empty parameter");
        assert_eq!(ok("GET", "/v1/apps/a//"), Err(Unmatched::NotFound));
        assert_eq!(ok("GET", "/healthz"), Err(Unmatched::NotFound));
    }

    #[test]
    fn every_endpoint_recognises_its_own_path() {
        for &e in Endpoint::ALL {
            let params: Vec<String> = segments(e.template())
                .filter(|s| is_param(s))
                .map(|s| format!("p-{}", &s[1..s.len() - 1]))
                .collect();
            let refs: Vec<&str> = params.iter().map(String::as_str).collect();
            let path = e.path(&refs);
            let (found, got) = Endpoint::recognise(e.verb().as_str(), &path).unwrap();
            assert_eq!((found, got), (e, refs), "{e}");
        }
    }
}
