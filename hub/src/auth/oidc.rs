//! Bearer JWT access tokens, validated locally against the trusted issuers.
//!
//! Keys: each issuer's discovery document and JWKS are fetched with
//! `openidconnect` over [`Fetcher`] (reqwest 0.13, redirects off, bounded
//! bodies, optional private CA and bearer token for Kubernetes API servers).
//! openidconnect's provider metadata requires `authorization_endpoint`, which
//! Kubernetes and other workload issuers omit (openidconnect-rs #201): when
//! its parse fails the same document is read for `issuer` and `jwks_uri` only,
//! with the same issuer check, and the keys still come from openidconnect's
//! JWKS fetch. Keys are cached; an unknown `kid`, a signature that fails with
//! a known one, or keys older than an hour trigger a refetch, at most once per
//! `jwks_refresh_min_secs` per issuer. A failed refetch keeps the old keys.
//!
//! A token is checked in this order, and the first failure answers 401:
//! shape (three parts: JWE is refused), header (`alg` `none` and HMAC refused
//! outright, `crit`/`enc`/`zip` refused), `iss` names a configured issuer,
//! `alg` is one that issuer allows, the token type (below), the signature with
//! the issuer's key for `kid` (a key whose `use` is not `sig`, whose `alg`
//! differs, or whose family does not fit `alg` never verifies), then `iss`,
//! `aud` (required), `exp` (required) and `nbf` with the issuer's leeway, and
//! finally a non-empty subject claim.
//!
//! Token type (telling access tokens from ID tokens, per issuer):
//! - `at+jwt` (default, RFC 9068 §4): the header's `typ` must be `at+jwt` or
//!   `application/at+jwt`; ID tokens never are.
//! - `jwt`: `typ` may be absent, `JWT` or `at+jwt`.
//! - `kubernetes`: as `jwt`, and the `kubernetes.io` claim with a namespace is
//!   required; the groups `system:serviceaccounts` and
//!   `system:serviceaccounts:NS` are added, as the API server does.
//!
//! Whatever the type, a token carrying an ID token's claims (`nonce`,
//! `at_hash`, `c_hash`, `s_hash`, or Keycloak's `"typ": "ID"`) is refused.

use std::collections::HashSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use openidconnect::core::{CoreJsonWebKeySet, CoreProviderMetadata};
use openidconnect::{AsyncHttpClient, DiscoveryError, HttpRequest, HttpResponse, IssuerUrl, JsonWebKeySetUrl};
use parking_lot::Mutex;
use serde_json::Value;

use super::config::{IssuerConfig, TokenType};
use super::policy::Identity;

/// Longest token accepted, in bytes.
const TOKEN_MAX: usize = 16 << 10;
/// Largest discovery document or JWKS read.
const DOCUMENT_MAX: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys older than this are refetched on the next token (rate limit applies).
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// At most this many groups are taken from a token.
const GROUPS_MAX: usize = 1000;

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// The token is bad: 401, the client should get a new one.
    Invalid(String),
    /// The issuer's keys could not be had: 503.
    Unavailable(String),
}

fn invalid(s: impl Into<String>) -> TokenError {
    TokenError::Invalid(s.into())
}

/// Why an issuer could not be set up at start (its HTTP client).
#[derive(Debug, thiserror::Error)]
#[error("issuer {issuer}: {source}")]
pub struct IssuerSetupError {
    issuer: String,
    #[source]
    source: ClientError,
}

/// Why the HTTP client for an issuer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read ca_file {}: {source}", path.display())]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ca_file {}: {source}", path.display())]
    ParseCa {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("ca_file {} holds no certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("cannot build an HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// Why an issuer's keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeysError {
    #[error("{step}: {}", explain_discovery(source))]
    Discovery {
        /// `discovery` or `fetching the JWKS`.
        step: &'static str,
        #[source]
        source: DiscoveryError<FetchError>,
    },
    #[error("bad issuer URL: {0}")]
    IssuerUrl(#[source] url::ParseError),
    #[error("cannot build the discovery request: {0}")]
    Request(#[source] openidconnect::http::Error),
    #[error("discovery: {0}")]
    Fetch(#[source] FetchError),
    #[error("discovery: HTTP {status} at {url}")]
    Status { status: openidconnect::http::StatusCode, url: String },
    #[error("discovery document at {url}: {source}")]
    Document {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("discovery document names issuer {found:?}, expected {expected:?}")]
    IssuerMismatch { found: String, expected: String },
    #[error("bad jwks_uri: {0}")]
    JwksUri(#[source] url::ParseError),
    #[error("jwks_uri {0} is not https")]
    JwksNotHttps(url::Url),
}

/// Every trusted issuer.
pub(crate) struct Oidc {
    issuers: Vec<Issuer>,
}

impl Oidc {
    pub fn new(configs: Vec<IssuerConfig>) -> Result<Oidc, IssuerSetupError> {
        let issuers = configs.into_iter().map(Issuer::new).collect::<Result<Vec<_>, _>>()?;
        Ok(Oidc { issuers })
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    pub fn describe(&self) -> Vec<String> {
        self.issuers
            .iter()
            .map(|i| {
                format!(
                    "{} (audience {}, token type {}, {})",
                    i.cfg.issuer,
                    i.cfg.audience,
                    i.cfg.token_type.as_str(),
                    i.cfg.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(",")
                )
            })
            .collect()
    }

    /// Fetches every issuer's keys once, in parallel; failures are logged and
    /// retried when a token from that issuer arrives.
    pub async fn prefetch(&self) {
        let all = self.issuers.iter().map(|i| async move {
            match i.refresh(true).await {
                Ok(_) => tracing::info!(issuer = %i.cfg.issuer, keys = i.key_count(), "issuer keys fetched"),
                Err(e) => tracing::warn!(issuer = %i.cfg.issuer, "issuer keys not fetched yet: {}", describe(&e)),
            }
        });
        futures::future::join_all(all).await;
    }

    /// The configuration and HTTP client of a trusted issuer (the web page's sign-in).
    pub(crate) fn issuer(&self, iss: &str) -> Option<(&IssuerConfig, &Fetcher)> {
        self.issuers.iter().find(|i| i.cfg.issuer == iss).map(|i| (&i.cfg, &i.fetcher))
    }

    pub async fn validate(&self, token: &str) -> Result<Identity, TokenError> {
        if token.len() > TOKEN_MAX {
            return Err(invalid(format!("token longer than {TOKEN_MAX} bytes")));
        }
        let (header, claims) = peek(token)?;
        let alg = check_header(&header)?;
        let iss = claims.get("iss").and_then(Value::as_str).ok_or_else(|| invalid("token has no issuer (iss)"))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.cfg.issuer == iss)
            .ok_or_else(|| invalid(format!("issuer {} is not trusted", truncate(iss))))?;
        issuer.validate(token, alg, &header, &claims).await
    }
}

pub(crate) fn describe(e: &TokenError) -> &str {
    match e {
        TokenError::Invalid(s) | TokenError::Unavailable(s) => s,
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= 100 {
        return s.to_string();
    }
    let mut end = 100;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The header and claims, decoded but not verified.
fn peek(token: &str) -> Result<(Value, Value), TokenError> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() == 5 {
        return Err(invalid("encrypted tokens (JWE) are not supported"));
    }
    if parts.len() != 3 {
        return Err(invalid("not a JWT: expected three dot-separated parts"));
    }
    let json = |p: &str, what: &str| {
        let bytes = URL_SAFE_NO_PAD.decode(p).map_err(|_| invalid(format!("the {what} is not base64url")))?;
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|_| invalid(format!("the {what} is not a JSON object")))?;
        if v.is_object() { Ok(v) } else { Err(invalid(format!("the {what} is not a JSON object"))) }
    };
    Ok((json(parts[0], "header")?, json(parts[1], "payload")?))
}

/// The header's algorithm, refusing unsigned and HMAC tokens before anything
/// else looks at them.
fn check_header(header: &Value) -> Result<Algorithm, TokenError> {
    let alg = header.get("alg").and_then(Value::as_str).ok_or_else(|| invalid("token header has no alg"))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(invalid("unsigned tokens (alg none) are refused"));
    }
    if alg.to_ascii_uppercase().starts_with("HS") {
        return Err(invalid(format!("HMAC-signed tokens ({alg}) are refused")));
    }
    for field in ["crit", "enc", "zip"] {
        if header.get(field).is_some() {
            return Err(invalid(format!("token header field {field:?} is not supported")));
        }
    }
    super::config::algorithm(alg).map_err(|_| invalid(format!("unsupported algorithm {}", truncate(alg))))
}

/// Claims that only ID tokens carry.
const ID_TOKEN_CLAIMS: [&str; 4] = ["nonce", "at_hash", "c_hash", "s_hash"];

fn check_token_type(kind: TokenType, header: &Value, claims: &Value) -> Result<(), TokenError> {
    let typ = header.get("typ").map(|t| t.as_str().unwrap_or("?").to_ascii_lowercase());
    let at_jwt = matches!(typ.as_deref(), Some("at+jwt" | "application/at+jwt"));
    match kind {
        TokenType::AtJwt if !at_jwt => {
            return Err(invalid(format!(
                "not an access token: the header's typ is {}, not at+jwt (an ID token cannot be used here)",
                typ.as_deref().map_or_else(|| "absent".to_string(), truncate)
            )));
        }
        TokenType::Jwt | TokenType::Kubernetes
            if !(at_jwt || matches!(typ.as_deref(), None | Some("jwt" | "application/jwt"))) =>
        {
            return Err(invalid(format!("unexpected token type {}", typ.as_deref().map_or("", |t| t))));
        }
        _ => {}
    }
    if let Some(c) = ID_TOKEN_CLAIMS.iter().find(|c| claims.get(**c).is_some()) {
        return Err(invalid(format!("this is an ID token (it has {c}), not an access token")));
    }
    if claims.get("typ").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("id")) {
        return Err(invalid("this is an ID token (typ ID), not an access token"));
    }
    if kind == TokenType::Kubernetes && kubernetes_namespace(claims).is_none() {
        return Err(invalid("not a Kubernetes service-account token: no kubernetes.io namespace claim"));
    }
    Ok(())
}

fn kubernetes_namespace(claims: &Value) -> Option<&str> {
    claims.get("kubernetes.io")?.get("namespace")?.as_str().filter(|s| !s.is_empty())
}

/// A claim by exact name first (names may contain dots, as URLs do), then as
/// a dotted path into nested objects (`realm_access.roles`).
fn claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut v = claims;
    for part in name.split('.') {
        v = v.get(part)?;
    }
    Some(v)
}

pub(crate) fn identity(cfg: &IssuerConfig, claims: &Value) -> Result<Identity, TokenError> {
    let subject = claim(claims, &cfg.subject_claim)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(format!("token has no {} claim", cfg.subject_claim)))?;
    let mut groups: Vec<String> = match cfg.groups_claim.as_deref().and_then(|g| claim(claims, g)) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).take(GROUPS_MAX).map(str::to_string).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    if cfg.token_type == TokenType::Kubernetes
        && let Some(ns) = kubernetes_namespace(claims)
    {
        groups.push("system:serviceaccounts".to_string());
        groups.push(format!("system:serviceaccounts:{ns}"));
    }
    Ok(Identity { subject: subject.to_string(), issuer: cfg.issuer.clone(), groups })
}

/// One verification key from a JWKS.
struct VerifyKey {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: DecodingKey,
    /// The JWK as served, to tell whether a refetch changed anything.
    raw: String,
}

impl VerifyKey {
    fn fits(&self, alg: Algorithm) -> bool {
        self.alg.is_none_or(|a| a == alg) && self.key.family() == alg.family() && alg.family() != AlgorithmFamily::Hmac
    }
}

/// Converts openidconnect's keys into jsonwebtoken's, skipping encryption
/// keys, symmetric keys and keys neither crate understands.
fn convert(set: &CoreJsonWebKeySet) -> Vec<VerifyKey> {
    let mut out = Vec::new();
    for k in set.keys() {
        let Ok(v) = serde_json::to_value(k) else { continue };
        if v.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig") {
            continue;
        }
        if v.get("kty").and_then(Value::as_str) == Some("oct") {
            continue;
        }
        let alg = match v.get("alg").and_then(Value::as_str) {
            None => None,
            Some(a) => match super::config::algorithm(a) {
                Ok(a) => Some(a),
                Err(_) => continue,
            },
        };
        let Ok(jwk) = serde_json::from_value::<Jwk>(v.clone()) else { continue };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
        if key.family() == AlgorithmFamily::Hmac {
            continue;
        }
        let kid = v.get("kid").and_then(Value::as_str).map(str::to_string);
        out.push(VerifyKey { kid, alg, key, raw: v.to_string() });
    }
    out
}

#[derive(Default)]
struct KeyState {
    jwks_uri: Option<JsonWebKeySetUrl>,
    keys: Arc<Vec<VerifyKey>>,
    /// Bumped by every fetch that changed the keys.
    generation: u64,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
    /// Shared: every token waiting on a failed first fetch reports it.
    last_error: Option<Arc<KeysError>>,
}

struct Issuer {
    cfg: IssuerConfig,
    fetcher: Fetcher,
    state: Mutex<KeyState>,
    refreshing: tokio::sync::Mutex<()>,
}

impl Issuer {
    fn new(cfg: IssuerConfig) -> Result<Issuer, IssuerSetupError> {
        let fetcher = Fetcher::new(cfg.ca_file.clone(), cfg.discovery_token_file.clone())
            .map_err(|source| IssuerSetupError { issuer: cfg.issuer.clone(), source })?;
        Ok(Issuer { cfg, fetcher, state: Mutex::new(KeyState::default()), refreshing: tokio::sync::Mutex::new(()) })
    }

    fn key_count(&self) -> usize {
        self.state.lock().keys.len()
    }

    async fn validate(
        &self,
        token: &str,
        alg: Algorithm,
        header: &Value,
        claims: &Value,
    ) -> Result<Identity, TokenError> {
        if !self.cfg.algorithms.contains(&alg) {
            return Err(invalid(format!("algorithm {alg:?} is not accepted for issuer {}", self.cfg.issuer)));
        }
        check_token_type(self.cfg.token_type, header, claims)?;
        let kid = header.get("kid").and_then(Value::as_str);
        let stale = self.state.lock().fetched_at.is_some_and(|t| t.elapsed() > KEYS_MAX_AGE);
        if stale {
            let _ = self.refresh(false).await;
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.cfg.issuer]);
        validation.set_audience(&[&self.cfg.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.cfg.leeway_secs;
        let mut refreshed = false;
        loop {
            let keys = self.state.lock().keys.clone();
            let candidates: Vec<&VerifyKey> =
                keys.iter().filter(|k| k.fits(alg) && (kid.is_none() || k.kid.as_deref() == kid)).collect();
            if candidates.is_empty() {
                if !refreshed && self.refresh(false).await? {
                    refreshed = true;
                    continue;
                }
                return Err(invalid(match kid {
                    Some(k) => format!("signed with an unknown key (kid {})", truncate(k)),
                    None => "signed with no kid and no key of the issuer fits".to_string(),
                }));
            }
            let mut last = None;
            for k in candidates {
                match jsonwebtoken::decode::<Value>(token, &k.key, &validation) {
                    Ok(data) => return identity(&self.cfg, &data.claims),
                    Err(e) => last = Some(e),
                }
            }
            let Some(e) = last else { return Err(invalid("token did not verify")) };
            // The issuer may have replaced a key under the same kid.
            if matches!(e.kind(), ErrorKind::InvalidSignature) && !refreshed && self.refresh(false).await? {
                refreshed = true;
                continue;
            }
            return Err(self.explain(e));
        }
    }

    fn explain(&self, e: jsonwebtoken::errors::Error) -> TokenError {
        invalid(match e.kind() {
            ErrorKind::InvalidSignature => "signature does not verify".to_string(),
            ErrorKind::ExpiredSignature => "token has expired".to_string(),
            ErrorKind::ImmatureSignature => "token is not valid yet (nbf)".to_string(),
            ErrorKind::InvalidAudience => format!("token is not for this hub (audience is not {})", self.cfg.audience),
            ErrorKind::InvalidIssuer => "issuer mismatch".to_string(),
            ErrorKind::MissingRequiredClaim(c) => format!("token has no {c} claim"),
            ErrorKind::InvalidClaimFormat(c) => format!("malformed {c} claim"),
            ErrorKind::InvalidAlgorithm => "algorithm does not fit the key".to_string(),
            other => format!("invalid token: {other:?}"),
        })
    }

    /// Refetches keys unless done less than `jwks_refresh_min` ago (`force`
    /// ignores that, for the first fetch). `Ok(true)`: keys changed (now or by
    /// a concurrent refresh while waiting). An error only when no keys were
    /// ever fetched.
    async fn refresh(&self, force: bool) -> Result<bool, TokenError> {
        let seen = self.state.lock().generation;
        let _one_at_a_time = self.refreshing.lock().await;
        {
            let st = self.state.lock();
            if st.generation != seen {
                return Ok(true);
            }
            let due = force || st.attempted_at.is_none_or(|t| t.elapsed() >= self.cfg.jwks_refresh_min);
            if !due {
                return match (&st.last_error, st.fetched_at) {
                    (Some(e), None) => Err(unavailable(&self.cfg.issuer, e)),
                    _ => Ok(false),
                };
            }
        }
        self.state.lock().attempted_at = Some(Instant::now());
        let jwks_uri = self.state.lock().jwks_uri.clone();
        let fetched = match jwks_uri {
            Some(uri) => match self.fetch_keys(&uri).await {
                Ok(keys) => Ok((uri, keys)),
                // The document may have moved the keys: look again.
                Err(_) => self.discover().await,
            },
            None => self.discover().await,
        };
        let mut st = self.state.lock();
        match fetched {
            Ok((uri, keys)) => {
                let keys = convert(&keys);
                let old: HashSet<&str> = st.keys.iter().map(|k| k.raw.as_str()).collect();
                let changed = keys.len() != old.len() || keys.iter().any(|k| !old.contains(k.raw.as_str()));
                if keys.is_empty() {
                    tracing::warn!(issuer = %self.cfg.issuer, "the issuer's JWKS holds no usable signing key");
                }
                if changed {
                    if st.fetched_at.is_some() {
                        tracing::info!(issuer = %self.cfg.issuer, keys = keys.len(), "issuer keys changed");
                    }
                    st.generation += 1;
                }
                st.keys = Arc::new(keys);
                st.jwks_uri = Some(uri);
                st.fetched_at = Some(Instant::now());
                st.last_error = None;
                Ok(changed)
            }
            Err(e) => {
                tracing::warn!(issuer = %self.cfg.issuer, error = %e, "fetching the issuer's keys failed");
                let e = Arc::new(e);
                st.last_error = Some(e.clone());
                if st.fetched_at.is_none() { Err(unavailable(&self.cfg.issuer, &e)) } else { Ok(false) }
            }
        }
    }

    async fn fetch_keys(&self, uri: &JsonWebKeySetUrl) -> Result<CoreJsonWebKeySet, KeysError> {
        CoreJsonWebKeySet::fetch_async(uri, &self.fetcher)
            .await
            .map_err(|source| KeysError::Discovery { step: "fetching the JWKS", source })
    }

    /// The discovery document, then the keys it points to.
    async fn discover(&self) -> Result<(JsonWebKeySetUrl, CoreJsonWebKeySet), KeysError> {
        let issuer_url = IssuerUrl::new(self.cfg.issuer.clone()).map_err(KeysError::IssuerUrl)?;
        match CoreProviderMetadata::discover_async(issuer_url, &self.fetcher).await {
            Ok(meta) => {
                let uri = meta.jwks_uri().clone();
                check_jwks_uri(&uri)?;
                Ok((uri, meta.jwks().clone()))
            }
            Err(DiscoveryError::Parse(_)) => {
                // Not a full OpenID provider document (Kubernetes has no
                // authorization_endpoint): read only what keys need.
                let uri = self.minimal_discovery().await?;
                check_jwks_uri(&uri)?;
                let keys = self.fetch_keys(&uri).await?;
                Ok((uri, keys))
            }
            Err(source) => Err(KeysError::Discovery { step: "discovery", source }),
        }
    }

    async fn minimal_discovery(&self) -> Result<JsonWebKeySetUrl, KeysError> {
        #[derive(serde::Deserialize)]
        struct Minimal {
            issuer: String,
            jwks_uri: String,
        }
        let base = self.cfg.issuer.trim_end_matches('/');
        let url = format!("{base}/.well-known/openid-configuration");
        let req = openidconnect::http::Request::builder()
            .uri(&url)
            .header(openidconnect::http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(KeysError::Request)?;
        let resp = self.fetcher.fetch(req).await.map_err(KeysError::Fetch)?;
        if !resp.status().is_success() {
            return Err(KeysError::Status { status: resp.status(), url });
        }
        let doc: Minimal = match serde_json::from_slice(resp.body()) {
            Ok(d) => d,
            Err(source) => return Err(KeysError::Document { url, source }),
        };
        if doc.issuer != self.cfg.issuer {
            return Err(KeysError::IssuerMismatch { found: doc.issuer, expected: self.cfg.issuer.clone() });
        }
        JsonWebKeySetUrl::new(doc.jwks_uri).map_err(KeysError::JwksUri)
    }
}

fn unavailable(issuer: &str, e: &KeysError) -> TokenError {
    TokenError::Unavailable(format!("the keys of issuer {issuer} are unavailable: {e}"))
}

/// Keys fetched over plain HTTP could be replaced on the way: only loopback.
fn check_jwks_uri(uri: &JsonWebKeySetUrl) -> Result<(), KeysError> {
    let u = uri.url();
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(KeysError::JwksNotHttps(u.clone())),
    }
}

/// openidconnect's own messages hide the cause ("Request failed"): say it.
fn explain_discovery(e: &DiscoveryError<FetchError>) -> String {
    match e {
        DiscoveryError::Request(inner) => inner.to_string(),
        DiscoveryError::Response(status, _, msg) => format!("{msg} (HTTP {status})"),
        DiscoveryError::Parse(p) => format!("unreadable answer at {}: {}", p.path(), p.inner()),
        other => other.to_string(),
    }
}

/// The HTTP client openidconnect fetches through: reqwest 0.13, no
/// redirects, timeouts, bounded bodies; optionally only a private CA, and a
/// bearer token re-read from a file on every request (a Kubernetes API
/// server serves discovery to service accounts).
pub(crate) struct Fetcher {
    client: reqwest::Client,
    bearer_file: Option<PathBuf>,
}

/// Why one HTTP fetch for an issuer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("cannot read discovery_token_file {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    // reqwest's own message hides the cause (connection refused, TLS…).
    #[error("{url}: {}", aetherfs_util::one_line(source))]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: answer larger than {DOCUMENT_MAX} bytes")]
    TooLarge { url: String },
    #[error("{0}")]
    Response(#[source] openidconnect::http::Error),
}

impl Fetcher {
    fn new(ca_file: Option<PathBuf>, bearer_file: Option<PathBuf>) -> Result<Fetcher, ClientError> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .user_agent(concat!("aetherfs-hub/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &ca_file {
            let pem = std::fs::read(ca).map_err(|source| ClientError::ReadCa { path: ca.clone(), source })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|source| ClientError::ParseCa { path: ca.clone(), source })?;
            if certs.is_empty() {
                return Err(ClientError::NoCertificate(ca.clone()));
            }
            b = b.tls_certs_only(certs);
        }
        let client = b.build().map_err(ClientError::Build)?;
        Ok(Fetcher { client, bearer_file })
    }

    async fn fetch(&self, req: HttpRequest) -> Result<HttpResponse, FetchError> {
        let (parts, body) = req.into_parts();
        let url = parts.uri.to_string();
        let mut rb = self.client.request(parts.method, &url).headers(parts.headers).body(body);
        if let Some(f) = &self.bearer_file {
            let token = tokio::fs::read_to_string(f)
                .await
                .map_err(|source| FetchError::TokenFile { path: f.clone(), source })?;
            rb = rb.bearer_auth(token.trim());
        }
        let mut resp = match rb.send().await {
            Ok(r) => r,
            Err(source) => return Err(FetchError::Http { url, source }),
        };
        let mut out = openidconnect::http::Response::builder().status(resp.status());
        for (k, v) in resp.headers() {
            out = out.header(k, v);
        }
        let mut body = Vec::new();
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(source) => return Err(FetchError::Http { url, source }),
            };
            if body.len() + chunk.len() > DOCUMENT_MAX {
                return Err(FetchError::TooLarge { url });
            }
            body.extend_from_slice(&chunk);
        }
        out.body(body).map_err(FetchError::Response)
    }
}

// A named type rather than a closure: openidconnect's blanket impl for
// closures yields futures whose Send-ness the compiler cannot prove.
impl<'c> AsyncHttpClient<'c> for Fetcher {
    type Error = FetchError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, FetchError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.fetch(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enc(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn header_checks() {
        for (h, needle) in [
            (json!({"alg": "none"}), "alg none"),
            (json!({"alg": "NONE"}), "alg none"),
            (json!({"alg": "HS256"}), "HMAC"),
            (json!({"alg": "hs512"}), "HMAC"),
            (json!({"typ": "JWT"}), "no alg"),
            (json!({"alg": "RS256", "crit": ["exp"]}), "crit"),
            (json!({"alg": "XYZ"}), "unsupported"),
        ] {
            let e = check_header(&h).expect_err(&h.to_string());
            assert!(describe(&e).contains(needle), "{h}: {e:?}");
        }
        assert_eq!(check_header(&json!({"alg": "RS256"})), Ok(Algorithm::RS256));
    }

    #[test]
    fn shapes() {
        let h = enc(&json!({"alg": "RS256"}));
        let c = enc(&json!({"iss": "x"}));
        assert!(peek(&format!("{h}.{c}.sig")).is_ok());
        for bad in
            ["", "a.b", "a.b.c.d", &format!("{h}.{c}"), &format!("{h}.!!.s"), &format!("{h}.{}.s", enc(&json!(1)))]
        {
            assert!(peek(bad).is_err(), "{bad}");
        }
        assert!(describe(&peek("a.b.c.d.e").expect_err("jwe")).contains("JWE"));
    }

    #[test]
    fn token_types() {
        use TokenType::*;
        let at = json!({"typ": "at+jwt"});
        let app_at = json!({"typ": "application/AT+JWT"});
        let jwt = json!({"typ": "JWT"});
        let none = json!({});
        let plain = json!({"sub": "a"});
        let k8s = json!({"sub": "system:serviceaccount:ns:sa", "kubernetes.io": {"namespace": "ns"}});
        assert!(check_token_type(AtJwt, &at, &plain).is_ok());
        assert!(check_token_type(AtJwt, &app_at, &plain).is_ok());
        assert!(check_token_type(AtJwt, &jwt, &plain).is_err());
        assert!(check_token_type(AtJwt, &none, &plain).is_err());
        assert!(check_token_type(Jwt, &jwt, &plain).is_ok());
        assert!(check_token_type(Jwt, &none, &plain).is_ok());
        assert!(check_token_type(Jwt, &json!({"typ": "logout+jwt"}), &plain).is_err());
        assert!(check_token_type(Kubernetes, &none, &k8s).is_ok());
        assert!(check_token_type(Kubernetes, &none, &plain).is_err());
        for id_claims in [json!({"nonce": "n"}), json!({"at_hash": "h"}), json!({"c_hash": "h"}), json!({"typ": "ID"})]
        {
            for kind in [AtJwt, Jwt, Kubernetes] {
                let e = check_token_type(kind, &at, &id_claims).expect_err("ID token");
                assert!(describe(&e).contains("ID token"), "{e:?}");
            }
        }
    }

    /// Only signature keys of asymmetric types are kept, with their kid and alg.
    #[test]
    fn keys_from_a_jwks() {
        let b = |n: usize| URL_SAFE_NO_PAD.encode(vec![7u8; n]);
        let jwks = json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "use": "sig", "alg": "RS256", "n": b(256), "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": b(32), "y": b(32)},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b(32)},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": b(256), "e": "AQAB"},
            {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": b(256), "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": b(32)},
        ]});
        let set: CoreJsonWebKeySet = serde_json::from_value(jwks).expect("jwks");
        let keys = convert(&set);
        let kids: Vec<&str> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, vec!["rsa", "ec", "ed"]);
        assert!(keys[0].fits(Algorithm::RS256) && !keys[0].fits(Algorithm::PS256) && !keys[0].fits(Algorithm::ES256));
        assert!(keys[1].fits(Algorithm::ES256) && !keys[1].fits(Algorithm::RS256));
        assert!(keys[2].fits(Algorithm::EdDSA));
        assert!(keys.iter().all(|k| !k.fits(Algorithm::HS256)));
    }

    #[test]
    fn identities() {
        let cfg = |groups: Option<&str>, kind| IssuerConfig {
            issuer: "https://i".into(),
            audience: "a".into(),
            algorithms: vec![Algorithm::RS256],
            token_type: kind,
            subject_claim: "sub".into(),
            groups_claim: groups.map(str::to_string),
            leeway_secs: 0,
            jwks_refresh_min: Duration::from_secs(1),
            ca_file: None,
            discovery_token_file: None,
        };
        let c = json!({"sub": "u", "groups": ["a", 1, "b"], "realm_access": {"roles": ["r"]}, "https://x/g": "one"});
        let id = identity(&cfg(Some("groups"), TokenType::AtJwt), &c).expect("id");
        assert_eq!((id.subject.as_str(), id.groups), ("u", vec!["a".to_string(), "b".to_string()]));
        assert_eq!(identity(&cfg(Some("realm_access.roles"), TokenType::Jwt), &c).expect("id").groups, vec!["r"]);
        assert_eq!(identity(&cfg(Some("https://x/g"), TokenType::Jwt), &c).expect("id").groups, vec!["one"]);
        assert!(identity(&cfg(None, TokenType::Jwt), &c).expect("id").groups.is_empty());
        assert!(identity(&cfg(None, TokenType::Jwt), &json!({"sub": ""})).is_err());
        let k = json!({"sub": "system:serviceaccount:ns:sa", "kubernetes.io": {"namespace": "ns"}});
        let id = identity(&cfg(None, TokenType::Kubernetes), &k).expect("id");
        assert_eq!(id.groups, vec!["system:serviceaccounts", "system:serviceaccounts:ns"]);
    }
}
