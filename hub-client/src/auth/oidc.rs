//! OpenID Connect through `openidconnect`: discovery, the device-code flow
//! behind `aetherfs login`, refresh, the client-credentials grant, and
//! revocation at logout.
//!
//! `openidconnect`'s own HTTP clients are reqwest 0.12; its default features
//! are off and [`Http`] adapts the workspace's reqwest 0.13 instead, with
//! redirects disabled (a token endpoint that redirects must not get to send
//! credentials elsewhere) and the same CA handling as the hub connection
//! (the platform's roots plus a CA file, when one is given).
//!
//! Access tokens are opaque here: the hub validates them. The ID token of a
//! login is verified against the provider's keys only to name the signed-in
//! subject; a login whose ID token does not verify still works, with a warning.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod, CoreDeviceAuthorizationResponse,
    CoreErrorResponseType, CoreGrantType, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType, CoreRevocableToken, CoreSubjectIdentifierType,
    CoreTokenResponse,
};
use openidconnect::{
    AdditionalProviderMetadata, AsyncHttpClient, AuthType, ClientId, ClientSecret, DeviceAuthorizationUrl,
    DeviceCodeErrorResponseType, EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, IssuerUrl,
    Nonce, OAuth2TokenResponse, ProviderMetadata, RefreshToken, RequestTokenError, RevocationUrl, Scope, TokenResponse,
};
use parking_lot::Mutex;
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};

use super::{Credentials, LoginEntry, bearer, now_unix, renew_at};
use crate::error::ClientError;
use crate::tls::{self, Trust};

/// Which provider and client to use, and what to ask for.
#[derive(Clone, Debug, Default)]
pub struct OidcSettings {
    /// The issuer URL; discovery is at `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// Only for confidential clients (the client-credentials grant).
    pub client_secret: Option<String>,
    /// The hub's resource indicator (RFC 8707 `resource`), when the provider
    /// needs one to issue tokens for the hub.
    pub audience: Option<String>,
    pub scopes: Vec<String>,
    /// A PEM file of CAs trusted for the provider, besides the platform's roots.
    pub ca_file: Option<PathBuf>,
}

/// What the user must do to complete a device-code login.
#[derive(Clone, Debug)]
pub struct DevicePrompt {
    pub verification_uri: String,
    /// The URI with the code filled in, when the provider gives one.
    pub verification_uri_complete: Option<String>,
    pub user_code: String,
    /// How long the code stays valid.
    pub expires_in: Duration,
}

/// Provider metadata beyond the core fields: the device and revocation endpoints.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct ExtraMetadata {
    #[serde(default)]
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
    #[serde(default)]
    revocation_endpoint: Option<RevocationUrl>,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// Largest response accepted from the provider.
const RESPONSE_MAX: usize = 1 << 20;

/// The HTTP adapter `openidconnect` calls: reqwest 0.13, no redirects.
struct Http {
    client: reqwest::Client,
    trust: Trust,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HttpError(String);

impl Http {
    fn new(ca_file: Option<&PathBuf>) -> Result<Self, ClientError> {
        let trust = ca_file.map(|p| Trust::Also(p.clone())).unwrap_or_default();
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aetherfs/", env!("CARGO_PKG_VERSION")));
        let client = trust
            .apply(builder)?
            .build()
            .map_err(|e| ClientError::Auth(format!("cannot set up the OIDC HTTP client: {e}")))?;
        Ok(Self { client, trust })
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let url = parts.uri.to_string();
        let resp = self
            .client
            .request(parts.method, &url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| self.error(&url, &e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if resp.content_length().is_some_and(|l| l > RESPONSE_MAX as u64) {
            return Err(HttpError(format!("{url}: response larger than {RESPONSE_MAX} bytes")));
        }
        let mut body = Vec::new();
        let mut resp = resp;
        while let Some(part) = resp.chunk().await.map_err(|e| self.error(&url, &e))? {
            if body.len() + part.len() > RESPONSE_MAX {
                return Err(HttpError(format!("{url}: response larger than {RESPONSE_MAX} bytes")));
            }
            body.extend_from_slice(&part);
        }
        let mut out = openidconnect::http::Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }

    fn error(&self, url: &str, e: &reqwest::Error) -> HttpError {
        if let Some(line) = tls::explain(e, "the identity provider", &self.trust) {
            return HttpError(line);
        }
        if e.is_connect() {
            return HttpError(format!("cannot reach the identity provider at {url}: {}", innermost(e)));
        }
        if e.is_timeout() {
            return HttpError(format!("the identity provider at {url} did not answer in time"));
        }
        HttpError(format!("{url}: {}", aetherfs_util::one_line(e)))
    }
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// The root cause alone ("Connection refused (os error 111)").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A token-endpoint failure in one line, without the library's framing.
fn token_error<T: openidconnect::ErrorResponse + 'static>(e: &RequestTokenError<HttpError, T>) -> String {
    match e {
        RequestTokenError::ServerResponse(r) => format!("was refused: {r}"),
        RequestTokenError::Request(h) => format!("failed: {h}"),
        RequestTokenError::Parse(p, _) => format!("failed: unreadable answer: {p}"),
        RequestTokenError::Other(o) => format!("failed: {o}"),
    }
}

/// Tokens from one token-endpoint answer.
pub(crate) struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<Duration>,
}

/// Why a refresh failed: the grant is gone, or the provider could not be asked.
pub(crate) enum RefreshError {
    Refused(String),
    Failed(String),
}

/// One provider and client: discovery is done once, on first use.
pub(crate) struct Oidc {
    settings: OidcSettings,
    http: Http,
    metadata: tokio::sync::OnceCell<Arc<Metadata>>,
}

impl Oidc {
    pub(crate) fn new(settings: OidcSettings) -> Result<Self, ClientError> {
        if settings.issuer.is_empty() || settings.client_id.is_empty() {
            return Err(ClientError::Auth("OIDC needs an issuer URL and a client id".into()));
        }
        let http = Http::new(settings.ca_file.as_ref())?;
        Ok(Self { settings, http, metadata: tokio::sync::OnceCell::new() })
    }

    pub(crate) fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    async fn metadata(&self) -> Result<Arc<Metadata>, ClientError> {
        let m = self
            .metadata
            .get_or_try_init(|| async {
                let issuer = IssuerUrl::new(self.settings.issuer.clone())
                    .map_err(|e| ClientError::Auth(format!("bad OIDC issuer URL {:?}: {e}", self.settings.issuer)))?;
                Metadata::discover_async(issuer, &self.http).await.map(Arc::new).map_err(|e| {
                    let why = match &e {
                        openidconnect::DiscoveryError::Request(h) => h.to_string(),
                        other => aetherfs_util::one_line(other),
                    };
                    ClientError::Auth(format!("OIDC discovery at {} failed: {why}", self.settings.issuer))
                })
            })
            .await?;
        Ok(m.clone())
    }

    fn client(&self, metadata: &Metadata) -> Client {
        let secret = self.settings.client_secret.clone().map(ClientSecret::new);
        // Public clients name themselves in the body; confidential ones use
        // HTTP Basic unless the provider only takes client_secret_post.
        let auth = match &secret {
            None => AuthType::RequestBody,
            Some(_) => {
                let methods = metadata.token_endpoint_auth_methods_supported();
                let post_only = methods.is_some_and(|m| {
                    m.contains(&CoreClientAuthMethod::ClientSecretPost)
                        && !m.contains(&CoreClientAuthMethod::ClientSecretBasic)
                });
                if post_only { AuthType::RequestBody } else { AuthType::BasicAuth }
            }
        };
        CoreClient::from_provider_metadata(metadata.clone(), ClientId::new(self.settings.client_id.clone()), secret)
            .set_auth_type(auth)
    }

    fn failed(&self, what: &str, e: &(dyn std::error::Error + 'static)) -> ClientError {
        ClientError::Auth(format!("{what} at {} failed: {}", self.settings.issuer, aetherfs_util::one_line(e)))
    }

    fn token_failed<T: openidconnect::ErrorResponse + 'static>(
        &self,
        what: &str,
        e: &RequestTokenError<HttpError, T>,
    ) -> ClientError {
        ClientError::Auth(format!("{what} at {} {}", self.settings.issuer, token_error(e)))
    }

    /// The client-credentials grant.
    pub(crate) async fn client_credentials(&self) -> Result<Tokens, ClientError> {
        let metadata = self.metadata().await?;
        let client = self.client(&metadata);
        let mut req = client
            .exchange_client_credentials()
            .map_err(|e| self.failed("the client-credentials grant", &e))?
            .add_scopes(self.settings.scopes.iter().cloned().map(Scope::new));
        if let Some(a) = &self.settings.audience {
            req = req.add_extra_param("resource", a.clone());
        }
        let resp =
            req.request_async(&self.http).await.map_err(|e| self.token_failed("the client-credentials grant", &e))?;
        Ok(Tokens {
            access_token: resp.access_token().secret().clone(),
            refresh_token: None,
            expires_in: resp.expires_in(),
        })
    }

    /// Exchanges a refresh token. The provider may rotate it: the new one is
    /// in the answer and the old one must never be used again.
    pub(crate) async fn refresh(&self, refresh_token: &str) -> Result<Tokens, RefreshError> {
        let metadata = self.metadata().await.map_err(|e| RefreshError::Failed(e.to_string()))?;
        let client = self.client(&metadata);
        let rt = RefreshToken::new(refresh_token.to_string());
        let mut req = client
            .exchange_refresh_token(&rt)
            .map_err(|e| RefreshError::Failed(self.failed("refreshing the login", &e).to_string()))?;
        if let Some(a) = &self.settings.audience {
            req = req.add_extra_param("resource", a.clone());
        }
        match req.request_async(&self.http).await {
            Ok(resp) => Ok(Tokens {
                access_token: resp.access_token().secret().clone(),
                refresh_token: resp.refresh_token().map(|t| t.secret().clone()),
                expires_in: resp.expires_in(),
            }),
            Err(RequestTokenError::ServerResponse(r))
                if matches!(r.error(), CoreErrorResponseType::InvalidGrant | CoreErrorResponseType::InvalidClient) =>
            {
                Err(RefreshError::Refused(r.to_string()))
            }
            Err(e) => Err(RefreshError::Failed(self.token_failed("refreshing the login", &e).to_string())),
        }
    }

    /// Revokes a token at the provider's revocation endpoint, when it has one.
    pub(crate) async fn revoke(&self, token: CoreRevocableToken) -> Result<bool, ClientError> {
        let metadata = self.metadata().await?;
        let Some(url) = metadata.additional_metadata().revocation_endpoint.clone() else {
            return Ok(false);
        };
        if url.url().scheme() != "https" {
            // oauth2 sends revocations over https only.
            tracing::debug!(%url, "not revoking at a plain-http endpoint");
            return Ok(false);
        }
        let client = self.client(&metadata).set_revocation_url(url);
        client
            .revoke_token(token)
            .map_err(|e| self.failed("revocation", &e))?
            .request_async(&self.http)
            .await
            .map_err(|e| self.token_failed("revocation", &e))?;
        Ok(true)
    }
}

/// Runs the device-code flow: asks the provider for a code, hands the user's
/// part to `prompt`, polls until the user approves (every `poll_interval`
/// when given, else as the provider says, 5 s by default; a `slow_down`
/// answer adds 5 s either way), and returns the login to store.
pub async fn device_login(
    settings: &OidcSettings,
    poll_interval: Option<Duration>,
    prompt: impl FnOnce(&DevicePrompt),
) -> Result<LoginEntry, ClientError> {
    let oidc = Oidc::new(settings.clone())?;
    let metadata = oidc.metadata().await?;
    let Some(device_url) = metadata.additional_metadata().device_authorization_endpoint.clone() else {
        return Err(ClientError::Auth(format!(
            "the identity provider {} offers no device authorization endpoint (RFC 8628)",
            settings.issuer
        )));
    };
    let client = oidc.client(&metadata).set_device_authorization_url(device_url);
    // openidconnect asks for `openid` itself.
    let scopes = settings.scopes.iter().filter(|s| *s != "openid").cloned().map(Scope::new);
    let mut req = client.exchange_device_code().add_scopes(scopes);
    if let Some(a) = &settings.audience {
        req = req.add_extra_param("resource", a.clone());
    }
    let details: CoreDeviceAuthorizationResponse =
        req.request_async(&oidc.http).await.map_err(|e| oidc.token_failed("the device authorization request", &e))?;
    prompt(&DevicePrompt {
        verification_uri: details.verification_uri().to_string(),
        verification_uri_complete: details.verification_uri_complete().map(|u| u.secret().clone()),
        user_code: details.user_code().secret().clone(),
        expires_in: details.expires_in(),
    });

    let base = details.interval();
    let sleep = move |d: Duration| {
        // `d` is the provider's interval plus any slow_down increments.
        let wait = match poll_interval {
            Some(p) => p + d.saturating_sub(base),
            None => d,
        };
        tokio::time::sleep(wait)
    };
    let mut poll = client.exchange_device_access_token(&details).map_err(|e| oidc.failed("polling", &e))?;
    if let Some(a) = &settings.audience {
        poll = poll.add_extra_param("resource", a.clone());
    }
    let resp: CoreTokenResponse = match poll.request_async(&oidc.http, sleep, None).await {
        Ok(r) => r,
        Err(RequestTokenError::ServerResponse(r)) => {
            return Err(ClientError::Auth(match r.error() {
                DeviceCodeErrorResponseType::AccessDenied => "the sign-in was denied".to_string(),
                DeviceCodeErrorResponseType::ExpiredToken => {
                    "the code expired before the sign-in was completed".to_string()
                }
                _ => format!("the identity provider refused the login: {r}"),
            }));
        }
        Err(e) => return Err(oidc.token_failed("polling the token endpoint", &e)),
    };
    let obtained_at = now_unix();

    let subject = resp.id_token().and_then(|id| {
        let verifier = client.id_token_verifier();
        match id.claims(&verifier, |_: Option<&Nonce>| Ok(())) {
            Ok(claims) => Some(claims.subject().to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "the ID token did not verify; the login works but names no subject");
                None
            }
        }
    });
    // What was asked for, not what the access token carries: a later login
    // with the same scopes gets a refresh token again.
    let scopes = settings.scopes.clone();
    Ok(LoginEntry {
        issuer: settings.issuer.clone(),
        client_id: settings.client_id.clone(),
        audience: settings.audience.clone(),
        scopes,
        subject,
        access_token: resp.access_token().secret().clone(),
        refresh_token: resp.refresh_token().map(|t| t.secret().clone()),
        obtained_at,
        expires_at: resp.expires_in().map(|d| obtained_at + d.as_secs()),
    })
}

/// Revokes a stored login at its provider (the refresh token, which ends the
/// grant, else the access token). `Ok(false)`: the provider has no revocation endpoint.
pub async fn revoke_login(entry: &LoginEntry, ca_file: Option<PathBuf>) -> Result<bool, ClientError> {
    let oidc = Oidc::new(entry.settings(ca_file))?;
    let token = match &entry.refresh_token {
        Some(rt) => CoreRevocableToken::RefreshToken(RefreshToken::new(rt.clone())),
        None => CoreRevocableToken::AccessToken(openidconnect::AccessToken::new(entry.access_token.clone())),
    };
    oidc.revoke(token).await
}

/// The OAuth client-credentials grant, for CI and daemons: a token is
/// requested on first use and reused until shortly before it expires (or
/// until the hub refuses it).
pub struct ClientCredentials {
    oidc: Oidc,
    cached: Mutex<Option<Cached>>,
    fetching: tokio::sync::Mutex<()>,
}

struct Cached {
    header: HeaderValue,
    renew_at: Option<u64>,
}

impl Cached {
    fn fresh(&self) -> bool {
        self.renew_at.is_none_or(|t| now_unix() < t)
    }
}

impl ClientCredentials {
    pub fn new(settings: OidcSettings) -> Result<Self, ClientError> {
        if settings.client_secret.as_deref().is_none_or(str::is_empty) {
            return Err(ClientError::Auth("client credentials need a client secret".into()));
        }
        Ok(Self { oidc: Oidc::new(settings)?, cached: Mutex::new(None), fetching: tokio::sync::Mutex::new(()) })
    }

    fn cached(&self) -> Option<HeaderValue> {
        let c = self.cached.lock();
        c.as_ref().filter(|c| c.fresh()).map(|c| c.header.clone())
    }

    async fn get(&self) -> Result<HeaderValue, ClientError> {
        if let Some(h) = self.cached() {
            return Ok(h);
        }
        let _one_at_a_time = self.fetching.lock().await;
        if let Some(h) = self.cached() {
            return Ok(h);
        }
        let obtained = now_unix();
        let tokens = self.oidc.client_credentials().await?;
        let header = bearer(&tokens.access_token)?;
        let renew = tokens.expires_in.map(|d| renew_at(obtained, obtained + d.as_secs()));
        tracing::debug!(client = %self.oidc.settings().client_id, expires_in = ?tokens.expires_in, "obtained a client-credentials token");
        *self.cached.lock() = Some(Cached { header: header.clone(), renew_at: renew });
        Ok(header)
    }
}

impl Credentials for ClientCredentials {
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, ClientError>> {
        Box::pin(async { self.get().await.map(Some) })
    }

    fn invalidate(&self, rejected: &HeaderValue) {
        let mut c = self.cached.lock();
        if c.as_ref().is_some_and(|c| c.header == rejected) {
            *c = None;
        }
    }

    fn describe(&self) -> String {
        let s = self.oidc.settings();
        format!("client credentials of {} at {}", s.client_id, s.issuer)
    }
}
