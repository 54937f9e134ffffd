//! WebDAV credentials checked by the hub: a client's own `Authorization`
//! (an OIDC bearer token or basic credentials of the hub's users file) is
//! shown to the hub in a request for the served dataset's tags, and the
//! client is served only if the hub lets those credentials read it. The
//! hub's issuers, users and access rules therefore decide, exactly as if
//! the client asked the hub itself.
//!
//! A yes is remembered for [`ADMITTED_FOR`] under a keyed hash of the
//! header (never the header itself), so a WebDAV client's many requests
//! cost the hub one check a minute. Failures are throttled per client
//! address and user before the hub is asked, and at most
//! [`CONCURRENT_CHECKS`] checks run at once.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aetherfs_access::{Admitted, FailureLimits, Gate, Refused, Throttle};
use aetherfs_format::Name;
use aetherfs_hub_client::auth::Credentials;
use aetherfs_hub_client::{ClientError, HubClient};
use axum::http::HeaderValue;
use futures::future::BoxFuture;

/// How long the hub's yes is trusted without asking again.
pub const ADMITTED_FOR: Duration = Duration::from_secs(60);
const CONCURRENT_CHECKS: usize = 8;
const REMEMBERED: u64 = 10_000;

pub struct HubGate {
    client: HubClient,
    dataset: Name,
    key: [u8; 32],
    admitted: moka::sync::Cache<[u8; 32], String>,
    throttle: Throttle,
    checks: tokio::sync::Semaphore,
}

impl HubGate {
    pub fn new(client: HubClient, dataset: Name) -> Self {
        Self {
            client,
            dataset,
            key: rand::random(),
            admitted: moka::sync::Cache::builder().max_capacity(REMEMBERED).time_to_live(ADMITTED_FOR).build(),
            throttle: Throttle::new(FailureLimits::default()),
            checks: tokio::sync::Semaphore::new(CONCURRENT_CHECKS),
        }
    }
}

impl HubGate {
    /// Whether the hub lets anyone read the dataset without credentials:
    /// then this gate protects nothing the hub does not already give away.
    pub async fn hub_reads_anonymously(&self) -> bool {
        self.client.clone().with_credentials(Arc::new(Anonymous)).list_tags(&self.dataset).await.is_ok()
    }
}

/// No `Authorization` header at all (not the agent's own credentials).
struct Anonymous;

impl Credentials for Anonymous {
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, ClientError>> {
        Box::pin(async { Ok(None) })
    }

    fn describe(&self) -> String {
        "no credentials".into()
    }
}

/// The client's header, passed through to the hub as it came.
struct Presented(HeaderValue);

impl Credentials for Presented {
    fn authorization(&self) -> BoxFuture<'_, Result<Option<HeaderValue>, ClientError>> {
        Box::pin(async { Ok(Some(self.0.clone())) })
    }

    fn describe(&self) -> String {
        "a WebDAV client's credentials".into()
    }
}

/// Who the header claims to be, for the throttle and logs: the basic user
/// name, or "bearer".
fn claimed(value: &HeaderValue) -> String {
    use base64::Engine as _;
    let Ok(v) = value.to_str() else { return "?".into() };
    match aetherfs_access::split_authorization(v) {
        (s, rest) if s.eq_ignore_ascii_case("basic") => base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| t.split_once(':').map(|(u, _)| u.to_string()))
            .unwrap_or_else(|| "?".into()),
        _ => "bearer".into(),
    }
}

impl Gate for HubGate {
    fn admit<'a>(
        &'a self,
        authorization: Option<&'a HeaderValue>,
        peer: Option<IpAddr>,
    ) -> BoxFuture<'a, Result<Admitted, Refused>> {
        Box::pin(async move {
            let Some(value) = authorization else {
                return Err(Refused::Unauthorized("credentials are required".into()));
            };
            let fingerprint = *blake3::keyed_hash(&self.key, value.as_bytes()).as_bytes();
            if let Some(who) = self.admitted.get(&fingerprint) {
                return Ok(Admitted { who });
            }
            let who = claimed(value);
            self.throttle.check(&who, peer, Instant::now()).map_err(Refused::Throttled)?;
            let _permit = self.checks.acquire().await.map_err(|_| Refused::Unavailable("shutting down".into()))?;
            let client = self.client.clone().with_credentials(Arc::new(Presented(value.clone())));
            match client.list_tags(&self.dataset).await {
                Ok(_) => {
                    self.throttle.succeeded(&who, peer, Instant::now());
                    self.admitted.insert(fingerprint, who.clone());
                    Ok(Admitted { who })
                }
                Err(ClientError::Api { status: 401, message, .. }) => {
                    self.throttle.failed(&who, peer, Instant::now());
                    Err(Refused::Unauthorized(format!("the hub refused these credentials: {message}")))
                }
                // 404: the hub does not tell a caller who may not read it that the dataset exists.
                Err(ClientError::Api { status: 403 | 404, .. }) => {
                    Err(Refused::Forbidden(format!("these credentials may not read {}", self.dataset)))
                }
                Err(ClientError::Api { status: 429, .. }) => Err(Refused::Throttled(Duration::from_secs(10))),
                Err(e) => Err(Refused::Unavailable(aetherfs_util::one_line(&e))),
            }
        })
    }

    fn challenges(&self) -> Vec<HeaderValue> {
        vec![
            HeaderValue::from_static("Basic realm=\"aetherfs-webdav\", charset=\"UTF-8\""),
            HeaderValue::from_static("Bearer realm=\"aetherfs-webdav\""),
        ]
    }
}
