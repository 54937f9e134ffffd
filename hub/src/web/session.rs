//! Sessions: a stateless cookie, `base64url(JSON) "." base64url(HMAC-SHA256)`,
//! with an expiry inside the signed part. Anyone visiting gets an anonymous
//! session (its id keys the CSRF token of the sign-in form); signing in
//! replaces it with one naming the identity. The key comes from `[web]
//! session_key_file` or is random per start. Cookies are HttpOnly,
//! SameSite=Lax, and Secure when the hub serves HTTPS.
//!
//! CSRF: every form carries `HMAC(key, "csrf" ‖ session id)`; a POST is
//! accepted only with that token and an Origin (or, without one, a Referer)
//! naming this hub.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::Hub;
use crate::auth::{Caller, Identity, Permission};

pub(crate) const COOKIE: &str = "aetherfs_session";
/// The pending OIDC sign-in (state, nonce, PKCE verifier).
pub(crate) const SIGN_IN_COOKIE: &str = "aetherfs_sign_in";
/// How long a pending sign-in may take.
pub(crate) const SIGN_IN_SECS: u64 = 600;
/// Default session length.
pub(crate) const SESSION_SECS: u64 = 8 * 3600;
/// Longest cookie value accepted or written (browsers keep 4096 bytes).
const COOKIE_MAX: usize = 3800;
/// Groups a session keeps.
const GROUPS_MAX: usize = 64;

/// The signing key.
pub(crate) struct Keys {
    key: Vec<u8>,
}

impl Keys {
    pub fn new(key: Option<Vec<u8>>) -> Keys {
        let key = key.unwrap_or_else(|| {
            use rand::RngCore;
            let mut k = vec![0u8; 32];
            rand::rng().fill_bytes(&mut k);
            k
        });
        Keys { key }
    }

    fn mac(&self, purpose: &[u8], data: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        m.update(purpose);
        m.update(&[0]);
        m.update(data);
        m
    }

    /// `payload` signed for `purpose`.
    pub fn seal<T: Serialize>(&self, purpose: &[u8], payload: &T) -> Option<String> {
        let json = serde_json::to_vec(payload).ok()?;
        let tag = self.mac(purpose, &json).finalize().into_bytes();
        let v = format!("{}.{}", URL_SAFE_NO_PAD.encode(&json), URL_SAFE_NO_PAD.encode(tag));
        (v.len() <= COOKIE_MAX).then_some(v)
    }

    /// The payload of a value [`seal`](Self::seal) made, if its signature holds.
    pub fn open<T: for<'de> Deserialize<'de>>(&self, purpose: &[u8], value: &str) -> Option<T> {
        if value.len() > COOKIE_MAX {
            return None;
        }
        let (body, tag) = value.split_once('.')?;
        let json = URL_SAFE_NO_PAD.decode(body).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(purpose, &json).verify_slice(&tag).ok()?;
        serde_json::from_slice(&json).ok()
    }

    fn csrf(&self, sid: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(b"csrf", sid.as_bytes()).finalize().into_bytes())
    }

    fn csrf_ok(&self, sid: &str, presented: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(presented) else { return false };
        self.mac(b"csrf", sid.as_bytes()).verify_slice(&tag).is_ok()
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn random_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 18];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// What the session cookie holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Session {
    sid: String,
    /// Unix seconds.
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
}

impl Session {
    fn anonymous(secs: u64) -> Session {
        Session { sid: random_id(), exp: now() + secs, sub: None, iss: None, groups: Vec::new() }
    }

    fn identity(&self) -> Option<Identity> {
        Some(Identity { subject: self.sub.clone()?, issuer: self.iss.clone()?, groups: self.groups.clone() })
    }
}

/// Who looks at a page, and what the policy lets them do.
pub(crate) struct Viewer {
    hub: Hub,
    session: Session,
    /// `None` on a hub without access control: everything is allowed.
    caller: Option<Caller>,
    /// The session is new (no valid cookie came).
    fresh: bool,
    /// Set-Cookie on the answer.
    set: bool,
}

impl Viewer {
    /// The viewer of a request: its valid session, or a new anonymous one.
    pub fn of(hub: &Hub, headers: &HeaderMap) -> Viewer {
        let web = &hub.inner.web;
        let found = cookie(headers, COOKIE)
            .and_then(|v| web.keys.open::<Session>(COOKIE.as_bytes(), v))
            .filter(|s| s.exp > now());
        let fresh = found.is_none();
        let session = found.unwrap_or_else(|| Session::anonymous(web.session_secs));
        let caller = hub.inner.opts.auth.caller(session.identity());
        Viewer { hub: hub.clone(), session, caller, fresh, set: fresh }
    }

    /// A viewer who just signed in as `id` (a new session id: no fixation).
    pub fn signed_in(hub: &Hub, mut id: Identity) -> Viewer {
        id.groups.truncate(GROUPS_MAX);
        let session = Session {
            sid: random_id(),
            exp: now() + hub.inner.web.session_secs,
            sub: Some(id.subject.clone()),
            iss: Some(id.issuer.clone()),
            groups: id.groups.clone(),
        };
        let caller = hub.inner.opts.auth.caller(Some(id));
        Viewer { hub: hub.clone(), session, caller, fresh: true, set: true }
    }

    /// A new anonymous viewer (after signing out).
    pub fn signed_out(hub: &Hub) -> Viewer {
        let session = Session::anonymous(hub.inner.web.session_secs);
        let caller = hub.inner.opts.auth.caller(None);
        Viewer { hub: hub.clone(), session, caller, fresh: true, set: true }
    }

    /// For a POST: never answered with a new anonymous session, so a
    /// cross-site form (which carries no SameSite=Lax cookie) cannot replace
    /// the person's session with one.
    pub fn for_post(mut self) -> Self {
        self.set = false;
        self
    }

    /// The policy's view of the viewer; `None` on a hub without access control.
    pub fn caller(&self) -> Option<&Caller> {
        self.caller.as_ref()
    }

    pub fn can(&self, p: Permission, name: &str) -> bool {
        self.caller.as_ref().is_none_or(|c| c.can(p, name))
    }

    /// Whether the viewer may read anything at all (else: sign in).
    pub fn reads_somewhere(&self) -> bool {
        self.caller.as_ref().is_none_or(Caller::reads_somewhere)
    }

    pub fn is_anonymous(&self) -> bool {
        self.session.sub.is_none()
    }

    /// Who is signed in, for the header and tag records' `by`.
    pub fn who(&self) -> Option<&str> {
        self.session.sub.as_deref()
    }

    /// Whether the hub offers a way to sign in.
    pub fn can_sign_in(&self) -> bool {
        let auth = &self.hub.inner.opts.auth;
        auth.web_oidc().is_some() || auth.has_passwords()
    }

    pub fn csrf(&self) -> String {
        self.hub.inner.web.keys.csrf(&self.session.sid)
    }

    pub fn csrf_ok(&self, presented: &str) -> bool {
        !self.fresh && self.hub.inner.web.keys.csrf_ok(&self.session.sid, presented)
    }

    /// Adds the session cookie when it is new.
    pub fn set_cookie(&self, res: &mut Response) {
        if !self.set {
            return;
        }
        let web = &self.hub.inner.web;
        let Some(value) = web.keys.seal(COOKIE.as_bytes(), &self.session) else {
            tracing::warn!("a web session does not fit in a cookie");
            return;
        };
        let max_age = self.session.exp.saturating_sub(now());
        set_cookie(res, web.secure, COOKIE, &value, "/", max_age);
    }
}

/// Appends a Set-Cookie header.
pub(crate) fn set_cookie(res: &mut Response, secure: bool, name: &str, value: &str, path: &str, max_age: u64) {
    let secure = if secure { "; Secure" } else { "" };
    let c = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    if let Ok(v) = HeaderValue::from_str(&c) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// One cookie's value.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The host a request names: its URI authority (HTTP/2) or its Host header.
pub(crate) fn host(req: &Parts) -> Option<String> {
    if let Some(a) = req.uri.authority() {
        return Some(a.as_str().to_string());
    }
    req.headers.get(header::HOST).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Whether a POST comes from a page of this hub: its Origin (or Referer)
/// names the host the request was sent to, or the configured redirect base.
pub(crate) fn same_origin(hub: &Hub, req: &Parts) -> bool {
    let h = &req.headers;
    let source = match h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(o) => o,
        None => match h.get(header::REFERER).and_then(|v| v.to_str().ok()) {
            Some(r) => r,
            None => return false,
        },
    };
    let Ok(url) = url::Url::parse(source) else { return false };
    let Some(source_host) = url.host_str() else { return false };
    let authority = match url.port() {
        Some(p) => format!("{source_host}:{p}"),
        None => source_host.to_string(),
    };
    let ours = host(req).is_some_and(|h| h.eq_ignore_ascii_case(&authority));
    let base = hub
        .inner
        .opts
        .auth
        .web_oidc()
        .and_then(|w| w.redirect_base.as_ref())
        .is_some_and(|b| b.origin() == url.origin());
    ours || base
}
