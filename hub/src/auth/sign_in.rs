//! Signing in to the web page: OIDC authorization code with PKCE against
//! the configured issuer (`[web]` in the auth configuration), and the
//! basic-auth users' password form. Both end in an [`Identity`] that goes
//! through the same policy as a bearer token's or a basic-auth header's.
//!
//! The OIDC half: discovery and ID-token verification are `openidconnect`'s
//! (signature with the issuer's keys, `iss`, `aud` = the client id, `exp`,
//! and the `nonce` this sign-in made). The identity is then taken from the
//! token response's access token when the hub accepts it as a bearer token
//! (so the subject and groups are exactly what the CLI would get), else from
//! the verified ID token's claims with the issuer's `subject_claim` and
//! `groups_claim`. The state, nonce and PKCE verifier travel in a signed,
//! short-lived cookie (web/session.rs), so no server state is kept.

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};

use super::config::WebOidc;
use super::policy::{BASIC_ISSUER, Identity};
use super::{Auth, Caller, oidc};
use aetherfs_access::BasicError;

/// Why a sign-in failed; the message is shown to the person signing in.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignInError {
    #[error("this hub has no OIDC sign-in configured")]
    NotConfigured,
    #[error("the identity provider cannot be reached: {0}")]
    Provider(String),
    #[error("the sign-in was not accepted: {0}")]
    Refused(String),
    #[error("wrong user name or password")]
    WrongPassword,
    #[error("too many failed sign-ins; retry in {0} s")]
    Throttled(u64),
}

/// What the callback needs to finish a sign-in it started.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Pending {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

impl Auth {
    /// `[web]`'s OIDC settings, when people sign in with OIDC.
    pub(crate) fn web_oidc(&self) -> Option<&WebOidc> {
        self.enforced.as_ref()?.web.oidc.as_ref()
    }

    /// Whether basic-auth users can sign in with a password.
    pub(crate) fn has_passwords(&self) -> bool {
        self.enforced.as_ref().is_some_and(|e| e.basic.is_some())
    }

    /// `[web]` as configured (defaults without a configuration).
    pub(crate) fn web_config(&self) -> super::config::WebConfig {
        self.enforced.as_ref().map(|e| e.web.clone()).unwrap_or_default()
    }

    /// The [`Caller`] the policy judges for `identity`; `None` when the hub
    /// has no access control (everything is allowed).
    pub(crate) fn caller(&self, identity: Option<Identity>) -> Option<Caller> {
        self.enforced.as_ref().map(|e| Caller { identity, enforced: e.clone() })
    }

    /// Checks a basic-auth user's password (with the failed-sign-in limits).
    pub(crate) async fn sign_in_password(
        &self,
        user: &str,
        password: &str,
        addr: Option<std::net::IpAddr>,
    ) -> Result<Identity, SignInError> {
        let Some(basic) = self.enforced.as_ref().and_then(|e| e.basic.as_ref()) else {
            return Err(SignInError::WrongPassword);
        };
        let header = aetherfs_access::basic_authorization(user, password);
        let encoded = header.strip_prefix("Basic ").unwrap_or_default();
        match basic.check(encoded, addr).await {
            Ok(u) => Ok(Identity { subject: u.name, issuer: BASIC_ISSUER.to_string(), groups: u.groups }),
            Err(BasicError::Throttled(wait)) => Err(SignInError::Throttled(wait.as_secs().max(1))),
            Err(BasicError::Malformed | BasicError::Wrong) => Err(SignInError::WrongPassword),
        }
    }

    async fn web_client(&self, redirect: &str) -> Result<(CoreClientReady, &oidc::Fetcher), SignInError> {
        let e = self.enforced.as_ref().ok_or(SignInError::NotConfigured)?;
        let w = e.web.oidc.as_ref().ok_or(SignInError::NotConfigured)?;
        let (_, fetcher) = e.oidc.issuer(&w.issuer).ok_or(SignInError::NotConfigured)?;
        let issuer = IssuerUrl::new(w.issuer.clone()).map_err(|e| SignInError::Provider(e.to_string()))?;
        let meta = CoreProviderMetadata::discover_async(issuer, fetcher)
            .await
            .map_err(|e| SignInError::Provider(aetherfs_util::one_line(&e)))?;
        let redirect = RedirectUrl::new(redirect.to_string()).map_err(|e| SignInError::Provider(e.to_string()))?;
        let client = CoreClient::from_provider_metadata(meta, ClientId::new(w.client_id.clone()), None)
            .set_redirect_uri(redirect);
        Ok((client, fetcher))
    }

    /// Starts an OIDC sign-in: where to send the browser, and what to keep.
    pub(crate) async fn sign_in_start(&self, redirect: &str) -> Result<(String, Pending), SignInError> {
        let (client, _) = self.web_client(redirect).await?;
        let scopes = self.web_oidc().map(|w| w.scopes.clone()).unwrap_or_default();
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .set_pkce_challenge(challenge);
        for s in scopes {
            req = req.add_scope(Scope::new(s));
        }
        let (url, state, nonce) = req.url();
        let pending =
            Pending { state: state.secret().clone(), nonce: nonce.secret().clone(), verifier: verifier.into_secret() };
        Ok((url.to_string(), pending))
    }

    /// Finishes an OIDC sign-in at the callback.
    pub(crate) async fn sign_in_finish(
        &self,
        redirect: &str,
        pending: Pending,
        code: &str,
    ) -> Result<Identity, SignInError> {
        fn refused(e: &(dyn std::error::Error + 'static)) -> SignInError {
            SignInError::Refused(aetherfs_util::one_line(e))
        }
        let (client, fetcher) = self.web_client(redirect).await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| refused(&e))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(fetcher)
            .await
            .map_err(|e| refused(&e))?;
        let id_token = token.id_token().ok_or_else(|| SignInError::Refused("no ID token in the answer".into()))?;
        id_token.claims(&client.id_token_verifier(), &Nonce::new(pending.nonce)).map_err(|e| refused(&e))?;
        let e = self.enforced.as_ref().ok_or(SignInError::NotConfigured)?;
        let w = e.web.oidc.as_ref().ok_or(SignInError::NotConfigured)?;
        // The access token, when the hub takes it as a bearer token: the
        // same subject and groups as the CLI's sign-in.
        if let Ok(id) = e.oidc.validate(token.access_token().secret()).await
            && id.issuer == w.issuer
        {
            return Ok(id);
        }
        let (cfg, _) = e.oidc.issuer(&w.issuer).ok_or(SignInError::NotConfigured)?;
        let claims =
            payload(&id_token.to_string()).ok_or_else(|| SignInError::Refused("unreadable ID token".into()))?;
        oidc::identity(cfg, &claims).map_err(|e| SignInError::Refused(oidc::describe(&e).to_string()))
    }
}

type CoreClientReady = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// The claims of a JWT whose signature was already verified.
fn payload(jwt: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let part = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}
