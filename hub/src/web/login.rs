//! Signing in and out: the sign-in page (an OIDC button and/or the
//! basic-auth users' password form), the OIDC redirect and callback, and
//! signing out. The checks themselves are auth/sign_in.rs's.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::html::{Html, esc, page};
use super::pages::{Fail, PageResult, finish, form_fields};
use super::session::{self, SIGN_IN_COOKIE, SIGN_IN_SECS, Viewer, now};
use crate::Hub;
use crate::auth::{Pending, SignInError};

/// The pending OIDC sign-in, as its cookie holds it.
#[derive(Serialize, Deserialize)]
struct PendingCookie {
    pending: Pending,
    exp: u64,
}

fn see_other(to: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `GET /web/login`.
pub(crate) async fn form(State(hub): State<Hub>, req: Request) -> Response {
    let viewer = Viewer::of(&hub, req.headers());
    login_page(&hub, &viewer, StatusCode::OK, None)
}

fn login_page(hub: &Hub, viewer: &Viewer, status: StatusCode, error: Option<&str>) -> Response {
    let auth = &hub.inner.opts.auth;
    let mut h = Html::new();
    if let Some(e) = error {
        h.raw("<p class=\"error\" role=\"alert\">").text(e).raw("</p>");
    }
    if let Some(w) = auth.web_oidc() {
        let host = url::Url::parse(&w.issuer).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
        h.fmt(format_args!(
            "<p><a class=\"button\" href=\"/web/login/oidc\">Sign in with your identity provider ({})</a></p>",
            esc(&host)
        ));
    }
    if auth.has_passwords() {
        h.fmt(format_args!(
            "<form class=\"login\" method=\"post\" action=\"/web/login\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <p><label for=\"user\">User name</label><br><input id=\"user\" name=\"user\" autocomplete=\"username\" required></p>\
             <p><label for=\"password\">Password</label><br><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></p>\
             <p><button type=\"submit\">Sign in</button></p></form>",
            esc(&viewer.csrf())
        ));
    }
    if auth.web_oidc().is_none() && !auth.has_passwords() {
        h.raw("<p>This hub offers no sign-in: what it shows, it shows to everyone.</p>");
    }
    page(viewer, status, "Sign in", &[], &h.into_string())
}

/// `POST /web/login`: a basic-auth user's name and password.
pub(crate) async fn password(State(hub): State<Hub>, req: Request) -> Response {
    let viewer = Viewer::of(&hub, req.headers()).for_post();
    let addr = req.extensions().get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let fields = match form_fields(&hub, &viewer, req).await {
        Ok(f) => f,
        Err(e) => return finish(&viewer, Err(e)),
    };
    let (user, password) = (fields.get("user"), fields.get("password"));
    let (Some(user), Some(password)) = (user, password) else {
        return login_page(&hub, &viewer, StatusCode::BAD_REQUEST, Some("Give a user name and a password."));
    };
    match hub.inner.opts.auth.sign_in_password(user, password, addr).await {
        Ok(id) => {
            let mut res = see_other("/");
            Viewer::signed_in(&hub, id).set_cookie(&mut res);
            res
        }
        Err(e @ SignInError::Throttled(_)) => {
            login_page(&hub, &viewer, StatusCode::TOO_MANY_REQUESTS, Some(&e.to_string()))
        }
        Err(e) => login_page(&hub, &viewer, StatusCode::UNAUTHORIZED, Some(&e.to_string())),
    }
}

/// Where the identity provider sends the browser back.
fn redirect_uri(hub: &Hub, req: &Parts) -> Option<String> {
    if let Some(base) = hub.inner.opts.auth.web_oidc().and_then(|w| w.redirect_base.as_ref()) {
        return Some(format!("{}/web/callback", base.as_str().trim_end_matches('/')));
    }
    let host = session::host(req)?;
    // Only a plain host[:port]: never let a header put a path or user info in the URI.
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)) {
        return None;
    }
    let scheme = if hub.inner.web.secure { "https" } else { "http" };
    Some(format!("{scheme}://{host}/web/callback"))
}

fn sign_in_failed(e: &SignInError) -> Fail {
    let status = match e {
        SignInError::NotConfigured => StatusCode::NOT_FOUND,
        SignInError::Provider(_) => StatusCode::SERVICE_UNAVAILABLE,
        SignInError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
        SignInError::Refused(_) | SignInError::WrongPassword => StatusCode::UNAUTHORIZED,
    };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(error = %e, "web sign-in: the identity provider failed");
    }
    Fail(status, e.to_string())
}

/// `GET /web/login/oidc`: off to the identity provider.
pub(crate) async fn oidc_start(State(hub): State<Hub>, req: Request) -> Response {
    let viewer = Viewer::of(&hub, req.headers());
    let (parts, _) = req.into_parts();
    let r = start(&hub, &parts).await;
    finish(&viewer, r)
}

async fn start(hub: &Hub, req: &Parts) -> PageResult {
    if hub.inner.opts.auth.web_oidc().is_none() {
        return Err(sign_in_failed(&SignInError::NotConfigured));
    }
    let redirect =
        redirect_uri(hub, req).ok_or_else(|| Fail(StatusCode::BAD_REQUEST, "no usable Host header".into()))?;
    let (url, pending) = hub.inner.opts.auth.sign_in_start(&redirect).await.map_err(|e| sign_in_failed(&e))?;
    let sealed = hub
        .inner
        .web
        .keys
        .seal(SIGN_IN_COOKIE.as_bytes(), &PendingCookie { pending, exp: now() + SIGN_IN_SECS })
        .ok_or_else(|| Fail(StatusCode::BAD_REQUEST, "the sign-in does not fit in a cookie".into()))?;
    let mut res = see_other(&url);
    session::set_cookie(&mut res, hub.inner.web.secure, SIGN_IN_COOKIE, &sealed, "/web", SIGN_IN_SECS);
    Ok(res)
}

/// `GET /web/callback?code=&state=`: back from the identity provider.
pub(crate) async fn callback(State(hub): State<Hub>, req: Request) -> Response {
    let viewer = Viewer::of(&hub, req.headers());
    let (parts, _) = req.into_parts();
    let r = finish_sign_in(&hub, &parts).await;
    let mut res = finish(&viewer, r);
    // The pending sign-in is used up, whatever happened.
    session::set_cookie(&mut res, hub.inner.web.secure, SIGN_IN_COOKIE, "", "/web", 0);
    res
}

async fn finish_sign_in(hub: &Hub, req: &Parts) -> PageResult {
    let qs = super::query(&req.uri).map_err(|m| Fail(StatusCode::BAD_REQUEST, m))?;
    if let Some(e) = qs.get("error") {
        let desc = qs.get("error_description").map(String::as_str).unwrap_or_default();
        return Err(Fail(StatusCode::UNAUTHORIZED, format!("The identity provider said {e}: {desc}")));
    }
    let (Some(code), Some(state)) = (qs.get("code"), qs.get("state")) else {
        return Err(Fail(StatusCode::BAD_REQUEST, "The callback needs code= and state=.".into()));
    };
    let pending = session::cookie(&req.headers, SIGN_IN_COOKIE)
        .and_then(|v| hub.inner.web.keys.open::<PendingCookie>(SIGN_IN_COOKIE.as_bytes(), v))
        .filter(|p| p.exp > now())
        .ok_or_else(|| {
            Fail(
                StatusCode::BAD_REQUEST,
                "No sign-in is under way in this browser (or it took too long): start again.".into(),
            )
        })?;
    if &pending.pending.state != state {
        return Err(Fail(StatusCode::BAD_REQUEST, "The sign-in's state does not match: start again.".into()));
    }
    let redirect =
        redirect_uri(hub, req).ok_or_else(|| Fail(StatusCode::BAD_REQUEST, "no usable Host header".into()))?;
    let id =
        hub.inner.opts.auth.sign_in_finish(&redirect, pending.pending, code).await.map_err(|e| sign_in_failed(&e))?;
    tracing::info!(subject = %id.subject, issuer = %id.issuer, "web sign-in");
    let mut res = see_other("/");
    Viewer::signed_in(hub, id).set_cookie(&mut res);
    Ok(res)
}

/// `POST /web/logout`.
pub(crate) async fn logout(State(hub): State<Hub>, req: Request) -> Response {
    let viewer = Viewer::of(&hub, req.headers()).for_post();
    if let Err(e) = form_fields(&hub, &viewer, req).await {
        return finish(&viewer, Err(e));
    }
    let mut res = see_other("/");
    Viewer::signed_out(&hub).set_cookie(&mut res);
    res
}
