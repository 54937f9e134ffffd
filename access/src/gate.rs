//! The question every authenticated front end asks before serving a
//! request, and the axum middleware that asks it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;

use crate::{BasicError, TokenFile, UsersFile};

/// Who was let in, for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    pub who: String,
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No credentials, or credentials that do not check out (401).
    Unauthorized(String),
    /// Valid credentials without the right to this (403).
    Forbidden(String),
    /// Too many failures: retry after this long (429).
    Throttled(Duration),
    /// The authority that checks credentials cannot answer now (503).
    Unavailable(String),
}

/// Decides whether a request may be served, from its `Authorization` header
/// and the client's address.
pub trait Gate: Send + Sync {
    fn admit<'a>(
        &'a self,
        authorization: Option<&'a HeaderValue>,
        peer: Option<IpAddr>,
    ) -> BoxFuture<'a, Result<Admitted, Refused>>;

    /// The `WWW-Authenticate` challenges of a 401 (clients such as davfs2
    /// send credentials only after one).
    fn challenges(&self) -> Vec<HeaderValue>;
}

/// Splits an `Authorization` value into its scheme and credentials
/// (`"Bearer abc"` → `("Bearer", "abc")`; compare the scheme without case).
pub fn split_authorization(value: &str) -> (&str, &str) {
    let v = value.trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    (scheme, rest.trim())
}

/// The gate of local files: basic auth against a [`UsersFile`], bearer
/// tokens against a [`TokenFile`]; either or both.
pub struct LocalGate {
    pub users: Option<UsersFile>,
    pub token: Option<TokenFile>,
    /// The realm named in challenges.
    pub realm: &'static str,
}

impl Gate for LocalGate {
    fn admit<'a>(
        &'a self,
        authorization: Option<&'a HeaderValue>,
        peer: Option<IpAddr>,
    ) -> BoxFuture<'a, Result<Admitted, Refused>> {
        Box::pin(async move {
            let unauthorized = |why: &str| Err(Refused::Unauthorized(why.to_string()));
            let Some(value) = authorization else { return unauthorized("credentials are required") };
            let Ok(value) = value.to_str() else { return unauthorized("malformed authorization header") };
            let (scheme, rest) = split_authorization(value);
            if scheme.eq_ignore_ascii_case("basic") {
                let Some(users) = &self.users else { return unauthorized("basic auth is not accepted here") };
                return match users.check(rest, peer).await {
                    Ok(u) => Ok(Admitted { who: u.name }),
                    Err(BasicError::Malformed) => unauthorized("malformed basic credentials"),
                    Err(BasicError::Wrong) => unauthorized("wrong user name or password"),
                    Err(BasicError::Throttled(wait)) => Err(Refused::Throttled(wait)),
                };
            }
            if scheme.eq_ignore_ascii_case("bearer") {
                return match &self.token {
                    Some(t) if t.matches(rest) => Ok(Admitted { who: "bearer token".to_string() }),
                    Some(_) => unauthorized("wrong token"),
                    None => unauthorized("bearer tokens are not accepted here"),
                };
            }
            unauthorized("unsupported authorization scheme")
        })
    }

    fn challenges(&self) -> Vec<HeaderValue> {
        let mut out = Vec::new();
        if self.users.is_some()
            && let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{}\", charset=\"UTF-8\"", self.realm))
        {
            out.push(v);
        }
        if self.token.is_some()
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer realm=\"{}\"", self.realm))
        {
            out.push(v);
        }
        out
    }
}

/// Axum middleware: serves the request only if `gate` admits it; otherwise
/// answers 401 (with the gate's challenges), 403, 429 or 503 and a one-line
/// reason. Use with `axum::middleware::from_fn_with_state(gate, require)`.
pub async fn require(State(gate): State<Arc<dyn Gate>>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    match gate.admit(req.headers().get(header::AUTHORIZATION), peer).await {
        Ok(admitted) => {
            tracing::trace!(who = %admitted.who, "admitted");
            next.run(req).await
        }
        Err(refused) => refusal(gate.as_ref(), refused),
    }
}

fn refusal(gate: &dyn Gate, refused: Refused) -> Response {
    match refused {
        Refused::Unauthorized(why) => {
            let mut r = (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response();
            for c in gate.challenges() {
                r.headers_mut().append(header::WWW_AUTHENTICATE, c);
            }
            r
        }
        Refused::Forbidden(why) => (StatusCode::FORBIDDEN, format!("{why}\n")).into_response(),
        Refused::Throttled(wait) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.as_secs().max(1).to_string())],
            "too many failed sign-ins; retry later\n",
        )
            .into_response(),
        Refused::Unavailable(why) => {
            tracing::warn!(reason = %why, "cannot check credentials");
            (StatusCode::SERVICE_UNAVAILABLE, "credentials cannot be checked now; retry later\n").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::{FailureLimits, basic_authorization, hash_password, set_user};

    async fn call(app: &Router, auth: Option<&str>) -> (StatusCode, Vec<String>) {
        let mut req = Request::builder().uri("/x");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let r = app.clone().oneshot(req.body(Body::empty()).expect("request")).await.expect("infallible");
        let challenges = r
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .collect();
        (r.status(), challenges)
    }

    #[tokio::test]
    async fn local_gate_admits_users_and_the_token_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let users = dir.path().join("users");
        set_user(&users, "alice", &hash_password("pw").expect("hash"), &[]).expect("set");
        let token = dir.path().join("token");
        std::fs::write(&token, "tok\n").expect("write");
        let limits = FailureLimits { per_user: 3, per_address: 100, window: Duration::from_secs(60) };
        let gate: Arc<dyn Gate> = Arc::new(LocalGate {
            users: Some(UsersFile::load(&users, limits).expect("users")),
            token: Some(TokenFile::open(&token).expect("token")),
            realm: "test",
        });
        let app = Router::new()
            .route("/x", get(|| async { "in" }))
            .layer(axum::middleware::from_fn_with_state(gate, require));

        let (status, challenges) = call(&app, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(challenges.iter().any(|c| c.starts_with("Basic realm=\"test\"")), "{challenges:?}");
        assert!(challenges.iter().any(|c| c.starts_with("Bearer")), "{challenges:?}");
        assert_eq!(call(&app, Some(&basic_authorization("alice", "pw"))).await.0, StatusCode::OK);
        assert_eq!(call(&app, Some("Bearer tok")).await.0, StatusCode::OK);
        for bad in ["Bearer nope", "Basic !!!", "Digest x", "Bearer", ""] {
            assert_eq!(call(&app, Some(bad)).await.0, StatusCode::UNAUTHORIZED, "{bad}");
        }
        // Guessing is throttled before any hash: 429 even for the right password.
        for _ in 0..3 {
            assert_eq!(call(&app, Some(&basic_authorization("alice", "guess"))).await.0, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(call(&app, Some(&basic_authorization("alice", "pw"))).await.0, StatusCode::TOO_MANY_REQUESTS);
    }
}
