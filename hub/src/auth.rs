//! Authentication and access control, enforced on every request.
//!
//! ```text
//!   request ──► need (method + path → what it requires; the router supplies the mapping)
//!                 │ Open (/healthz, /readyz, /openapi.json): passes, credentials unread
//!                 ▼
//!             authenticate (Authorization header)
//!                 │ none            → anonymous
//!                 │ Bearer JWT      → oidc.rs: local validation against the trusted issuers
//!                 │ Basic           → aetherfs-access: argon2id users file
//!                 │ invalid         → 401 unauthorized (+ WWW-Authenticate)
//!                 ▼
//!             authorize (policy.rs: rules per dataset pattern)
//!                 │ denied, anonymous     → 401 unauthorized
//!                 │ denied, authenticated → 403 forbidden
//!                 ▼
//!             handler (sees Principal for tag records' `by`, Caller to filter listings)
//! ```
//!
//! Without a configuration ([`Auth::open`], what `aetherfs hub` runs with no
//! `--auth-config`) every request passes and nothing is read from the
//! `Authorization` header: the hub behaves as it always did. With one, what
//! no rule grants is denied. docs/security.md is the user's guide.

mod config;
mod oidc;
pub(crate) mod policy;
mod sign_in;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use aetherfs_access::{UsersError, basic_authorization, hash_password, set_user};
pub use config::{AlgorithmError, ConfigError, IssuerError, RuleError};
pub use oidc::{ClientError, IssuerSetupError};
pub use policy::{GranteeError, Identity, PatternError, Permission};
pub(crate) use sign_in::{Pending, SignInError};

use aetherfs_access::BasicError;

use crate::error::AppError;
use crate::metrics::AuthLabels;
use crate::{Hub, Principal};
use config::{Config, MetricsAccess};
use oidc::{Oidc, TokenError};
use policy::Policy;

/// Why an auth configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid auth configuration: {}{source}", in_file(file.as_deref()))]
    Config {
        /// None for inline configurations ([`Auth::from_toml`]).
        file: Option<PathBuf>,
        #[source]
        source: config::ConfigError,
    },
    #[error("invalid auth configuration: {}{source}", in_file(file.as_deref()))]
    Issuer {
        file: Option<PathBuf>,
        #[source]
        source: oidc::IssuerSetupError,
    },
    #[error(transparent)]
    Access(#[from] aetherfs_access::AccessError),
    #[error("[web] session_key_file {}: {reason}", path.display())]
    SessionKey { path: PathBuf, reason: String },
}

/// Shortest session key accepted.
const SESSION_KEY_MIN: usize = 32;

fn read_session_key(path: &Path) -> Result<Vec<u8>, AuthError> {
    let bad = |reason: String| AuthError::SessionKey { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let key = bytes.trim_ascii().to_vec();
    if key.len() < SESSION_KEY_MIN {
        return Err(bad(format!("holds {} bytes; at least {SESSION_KEY_MIN} are needed", key.len())));
    }
    Ok(key)
}

fn in_file(file: Option<&Path>) -> String {
    file.map(|f| format!("{}: ", f.display())).unwrap_or_default()
}

/// What a request requires, from its method and path alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Liveness, readiness, the API description: no credentials are read.
    Open,
    /// `/metrics`: open unless the configuration says `metrics = "authenticated"`.
    Metrics,
    /// `GET /v1/datasets`: any caller who may read something; the handler
    /// filters the list with [`Caller`].
    Listing,
    /// A permission on one dataset (the raw name from the path).
    Dataset(String, Permission),
    /// Hub-wide operations (garbage collection): the permission on every
    /// dataset, granted by a rule for the pattern `**`.
    Everywhere(Permission),
    /// Paths that route nowhere: any authenticated caller (they get 404).
    Authenticated,
    /// The web page: it signs people in itself (session cookie), and each
    /// page asks the policy through [`Caller`] (so refusals are pages too).
    Web,
}

/// The hub's access control; cheap to clone. [`Default`] is [`Auth::open`].
#[derive(Clone, Default)]
pub struct Auth {
    enforced: Option<Arc<Enforced>>,
}

struct Enforced {
    source: String,
    metrics: MetricsAccess,
    oidc: Oidc,
    basic: Option<aetherfs_access::UsersFile>,
    policy: Policy,
    web: config::WebConfig,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.enforced {
            None => f.write_str("Auth(open)"),
            Some(e) => write!(f, "Auth({})", e.source),
        }
    }
}

impl Auth {
    /// No authentication and no access control: every request passes.
    pub fn open() -> Auth {
        Auth { enforced: None }
    }

    pub fn is_open(&self) -> bool {
        self.enforced.is_none()
    }

    /// Reads a configuration file (relative paths in it are relative to its
    /// directory), loads the users file and fetches the issuers' keys (an
    /// issuer that does not answer yet is retried when its tokens arrive).
    pub async fn load(path: &Path) -> Result<Auth, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::Io { path: path.to_path_buf(), source: e })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let auth = Self::build(&text, base, Some(path))?;
        auth.prefetch().await;
        Ok(auth)
    }

    /// A configuration from TOML text (tests); relative paths resolve
    /// against `base_dir`. Keys are fetched on first use.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Auth, AuthError> {
        Self::build(text, base_dir, None)
    }

    fn build(text: &str, base_dir: &Path, file: Option<&Path>) -> Result<Auth, AuthError> {
        let file = file.map(Path::to_path_buf);
        let mut cfg =
            Config::parse(text, base_dir).map_err(|source| AuthError::Config { file: file.clone(), source })?;
        if let Some(p) = &cfg.web.session_key_file {
            cfg.web.session_key = Some(read_session_key(p)?);
        }
        let basic =
            cfg.users_file.as_deref().map(|f| aetherfs_access::UsersFile::load(f, cfg.basic_limits)).transpose()?;
        let oidc = Oidc::new(cfg.issuers).map_err(|source| AuthError::Issuer { file: file.clone(), source })?;
        let source = file.map_or_else(|| "inline configuration".to_string(), |f| f.display().to_string());
        let enforced =
            Enforced { source, metrics: cfg.metrics, oidc, basic, policy: Policy::new(cfg.rules), web: cfg.web };
        Ok(Auth { enforced: Some(Arc::new(enforced)) })
    }

    /// Fetches every issuer's keys now rather than on the first token.
    pub async fn prefetch(&self) {
        if let Some(e) = &self.enforced {
            e.oidc.prefetch().await;
        }
    }

    /// One line per identity source and the rule count, for the startup log.
    pub fn describe(&self) -> Vec<String> {
        let Some(e) = &self.enforced else { return vec!["no authentication: every request is allowed".into()] };
        let mut out: Vec<String> = e.oidc.describe().into_iter().map(|i| format!("OIDC issuer {i}")).collect();
        if let Some(b) = &e.basic {
            out.push(format!("basic auth: {} user(s) from {}", b.user_count(), b.path().display()));
        }
        if e.oidc.is_empty() && e.basic.is_none() {
            out.push("no identity source: only what rules grant to anonymous is allowed".into());
        }
        out.push(format!(
            "{} access rule(s); what they do not grant is denied{}",
            e.policy.len(),
            if e.metrics == MetricsAccess::Authenticated { "; /metrics needs credentials" } else { "" }
        ));
        out
    }
}

/// Who is calling and what the configuration lets them do; inserted as a
/// request extension when access control is on.
#[derive(Clone)]
pub(crate) struct Caller {
    identity: Option<Identity>,
    enforced: Arc<Enforced>,
}

impl Caller {
    pub fn can(&self, need: Permission, name: &str) -> bool {
        self.enforced.policy.allows(self.identity.as_ref(), need, name)
    }

    /// Whether this caller may read some dataset (the listing's rule).
    pub fn reads_somewhere(&self) -> bool {
        self.identity.is_some() || self.enforced.policy.allows_somewhere(None, Permission::Read)
    }

    /// Who signed in, for tag records' `by`; `None`: anonymous.
    pub fn principal(&self) -> Option<Principal> {
        self.identity.as_ref().map(|id| Principal(id.subject.clone()))
    }
}

/// Why credentials were refused.
enum Refusal {
    /// 401: missing or invalid credentials.
    Unauthorized { presented: bool, reason: String },
    /// 503: an issuer's keys cannot be fetched.
    Unavailable(String),
    /// 429: too many failed sign-ins; retry after this long.
    Throttled(std::time::Duration),
}

/// Maps a request's method and raw path to what it requires.
pub(crate) type NeedFn = fn(&Method, &str) -> Need;

/// The middleware's state: the router hands over its route table's needs, so
/// this module does not depend on the routes it guards.
#[derive(Clone)]
pub(crate) struct Guard {
    pub hub: Hub,
    pub need: NeedFn,
}

/// The middleware: see the module documentation.
pub(crate) async fn enforce(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    let need = (guard.need)(req.method(), req.uri().path());
    let addr = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    match admit(&guard.hub, &need, req.headers(), addr, req.uri().path()).await {
        Err(e) => e.into_response(),
        Ok(None) => next.run(req).await,
        Ok(Some(caller)) => {
            if let Some(p) = caller.principal() {
                req.extensions_mut().insert(p);
            }
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
    }
}

/// Authenticates a request from its `authorization` header (and the peer's
/// address, for the failed sign-in limit) and checks that it may do what
/// `need` says: the one decision REST and gRPC both call. `Ok(None)`: no
/// access control applies (an open hub or an open route).
pub(crate) async fn admit(
    hub: &Hub,
    need: &Need,
    headers: &HeaderMap,
    addr: Option<std::net::IpAddr>,
    what: &str,
) -> Result<Option<Caller>, AppError> {
    let Some(e) = hub.inner.opts.auth.enforced.clone() else {
        return Ok(None);
    };
    if matches!(need, Need::Open | Need::Web) {
        return Ok(None);
    }
    let identity = match authenticate(&e, authorization(headers), addr).await {
        Ok(id) => id,
        Err(Refusal::Unauthorized { presented, reason }) => {
            count(hub, "invalid_credentials");
            tracing::info!(path = %what, %reason, "credentials refused");
            return Err(unauthorized(&e, presented, &reason));
        }
        Err(Refusal::Unavailable(reason)) => {
            count(hub, "keys_unavailable");
            return Err(AppError::new(StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable", reason));
        }
        Err(Refusal::Throttled(wait)) => {
            count(hub, "throttled");
            let secs = wait.as_secs().max(1);
            return Err(AppError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures",
                format!("too many failed sign-ins; retry in {secs} s"),
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from(secs)));
        }
    };
    if let Some(refused) = refusal(hub, &e, need, identity.as_ref()) {
        return Err(refused);
    }
    Ok(Some(Caller { identity, enforced: e }))
}

fn count(hub: &Hub, outcome: &'static str) {
    hub.inner.metrics.auth_failures.get_or_create(&AuthLabels { outcome: outcome.to_string() }).inc();
}

/// The Authorization header: `Ok(None)` when absent.
fn authorization(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let bad = |reason: &str| Refusal::Unauthorized { presented: true, reason: reason.to_string() };
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(bad("more than one Authorization header"));
    }
    let value = value.to_str().map_err(|_| bad("the Authorization header is not ASCII"))?;
    Ok(Some(value.to_string()))
}

/// The answer to send when `who` may not do what `need` says; `None` when allowed.
fn refusal(hub: &Hub, e: &Enforced, need: &Need, who: Option<&Identity>) -> Option<AppError> {
    let policy = &e.policy;
    let allowed = match need {
        Need::Open | Need::Web => true,
        Need::Metrics => e.metrics == MetricsAccess::Public || who.is_some(),
        Need::Listing => who.is_some() || policy.allows_somewhere(None, Permission::Read),
        Need::Dataset(name, p) => policy.allows(who, *p, name),
        Need::Everywhere(p) => policy.allows_everywhere(who, *p),
        Need::Authenticated => who.is_some(),
    };
    if allowed {
        return None;
    }
    let what = match need {
        Need::Dataset(name, p) => format!("{p} dataset {name}"),
        Need::Everywhere(p) => format!("{p} every dataset (a rule for \"**\")"),
        _ => "use this endpoint".to_string(),
    };
    Some(match who {
        None => {
            count(hub, "missing_credentials");
            unauthorized(e, false, &format!("credentials are required to {what}"))
        }
        Some(id) => {
            count(hub, "forbidden");
            tracing::info!(subject = %id.subject, issuer = %id.issuer, "denied: {what}");
            AppError::new(StatusCode::FORBIDDEN, "forbidden", format!("{} may not {what}", id.subject))
        }
    })
}

async fn authenticate(
    e: &Enforced,
    header: Result<Option<String>, Refusal>,
    addr: Option<std::net::IpAddr>,
) -> Result<Option<Identity>, Refusal> {
    let bad = |reason: &str| Refusal::Unauthorized { presented: true, reason: reason.to_string() };
    let Some(value) = header? else { return Ok(None) };
    let value = value.as_str();
    let (scheme, rest) = aetherfs_access::split_authorization(value);
    if scheme.eq_ignore_ascii_case("bearer") {
        if e.oidc.is_empty() {
            return Err(bad("this hub accepts no bearer tokens"));
        }
        return match e.oidc.validate(rest).await {
            Ok(id) => Ok(Some(id)),
            Err(TokenError::Invalid(reason)) => Err(Refusal::Unauthorized { presented: true, reason }),
            Err(TokenError::Unavailable(reason)) => Err(Refusal::Unavailable(reason)),
        };
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let Some(b) = &e.basic else { return Err(bad("this hub does not accept basic auth")) };
        return match b.check(rest, addr).await {
            Ok(u) => Ok(Some(Identity { subject: u.name, issuer: policy::BASIC_ISSUER.to_string(), groups: u.groups })),
            Err(BasicError::Malformed) => Err(bad("malformed basic credentials")),
            Err(BasicError::Wrong) => Err(bad("wrong user name or password")),
            Err(BasicError::Throttled(wait)) => Err(Refusal::Throttled(wait)),
        };
    }
    Err(bad("unsupported authorization scheme: use Bearer or Basic"))
}

/// 401 with the challenges this hub accepts (RFC 6750, RFC 7617).
fn unauthorized(e: &Enforced, presented: bool, reason: &str) -> AppError {
    let mut err = AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", reason.to_string());
    if !e.oidc.is_empty() || e.basic.is_none() {
        let mut challenge = "Bearer realm=\"aetherfs\"".to_string();
        if presented {
            // error_description allows no quote or backslash.
            let desc: String =
                reason.chars().filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\').collect();
            challenge.push_str(&format!(", error=\"invalid_token\", error_description=\"{desc}\""));
        }
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            err = err.with_header(header::WWW_AUTHENTICATE, v);
        }
    }
    if e.basic.is_some() {
        err = err.with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"aetherfs\", charset=\"UTF-8\""),
        );
    }
    err
}
