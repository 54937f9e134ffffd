//! The auth configuration file (`aetherfs hub --auth-config FILE`), as written
//! and as validated. Every mistake is refused at start with the field it is in:
//! unknown keys, HMAC or `none` algorithms, plain-HTTP issuers off loopback,
//! rules naming unknown identity kinds, malformed dataset patterns.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::policy::{Grantee, GranteeError, Pattern, PatternError, Rule};
use aetherfs_access::FailureLimits;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// `public` (default): `/metrics` needs no credentials; `authenticated`:
    /// any authenticated caller.
    #[serde(default)]
    pub metrics: MetricsAccess,
    #[serde(default)]
    pub oidc: Vec<OidcFile>,
    pub basic: Option<BasicFile>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleFile>,
    /// The web page's sign-in (docs/hub.md, "The web page").
    pub web: Option<WebFile>,
}

/// `[web]`: how people sign in to the hub's web page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebFile {
    /// The public client (authorization code with PKCE) registered at the issuer.
    pub client_id: Option<String>,
    /// Which `[[oidc]]` issuer people sign in with; default: the only one.
    pub issuer: Option<String>,
    /// `https://hub.example` when the hub is reached through a proxy: the
    /// redirect URI is `{redirect_base}/web/callback`. Default: from the request.
    pub redirect_base: Option<String>,
    /// Extra scopes besides `openid`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A file holding the session cookies' signing key (at least 32 bytes);
    /// default: a random key per start (sessions end at a restart).
    pub session_key_file: Option<PathBuf>,
    /// How long a session lasts (default 8 hours, at most 7 days).
    pub session_secs: Option<u64>,
}

/// `[web]`, validated.
#[derive(Debug, Clone, Default)]
pub(crate) struct WebConfig {
    /// `Some` when people sign in with OIDC.
    pub oidc: Option<WebOidc>,
    pub session_key_file: Option<PathBuf>,
    /// The key read from `session_key_file` (when the configuration is loaded).
    pub session_key: Option<Vec<u8>>,
    pub session_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub(crate) struct WebOidc {
    pub client_id: String,
    pub issuer: String,
    pub redirect_base: Option<url::Url>,
    pub scopes: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MetricsAccess {
    #[default]
    Public,
    Authenticated,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OidcFile {
    pub issuer: String,
    pub audience: String,
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    #[serde(default)]
    pub token_type: TokenType,
    #[serde(default)]
    pub subject_claim: Option<String>,
    #[serde(default)]
    pub groups_claim: Option<String>,
    #[serde(default)]
    pub leeway_secs: Option<u64>,
    #[serde(default)]
    pub jwks_refresh_min_secs: Option<u64>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub discovery_token_file: Option<PathBuf>,
}

/// How an access token is told apart from an ID token; see docs/security.md.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum TokenType {
    /// RFC 9068: the header's `typ` is `at+jwt` or `application/at+jwt`.
    #[default]
    #[serde(rename = "at+jwt")]
    AtJwt,
    /// Access tokens typed `JWT` or untyped (Keycloak, Entra ID, Auth0…):
    /// refused when they carry an ID token's claims.
    #[serde(rename = "jwt")]
    Jwt,
    /// Kubernetes service-account tokens: the `kubernetes.io` claim is required.
    #[serde(rename = "kubernetes")]
    Kubernetes,
}

impl TokenType {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::AtJwt => "at+jwt",
            TokenType::Jwt => "jwt",
            TokenType::Kubernetes => "kubernetes",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BasicFile {
    pub users_file: PathBuf,
    /// Failed sign-ins per user name in a window before attempts get 429.
    pub max_failures_per_user: Option<u32>,
    /// Failed sign-ins per client address in a window before attempts get 429.
    pub max_failures_per_address: Option<u32>,
    pub failure_window_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleFile {
    pub datasets: OneOrMany,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub admin: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// One trusted issuer, validated.
#[derive(Debug, Clone)]
pub(crate) struct IssuerConfig {
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<Algorithm>,
    pub token_type: TokenType,
    pub subject_claim: String,
    pub groups_claim: Option<String>,
    pub leeway_secs: u64,
    pub jwks_refresh_min: Duration,
    pub ca_file: Option<PathBuf>,
    pub discovery_token_file: Option<PathBuf>,
}

/// The whole configuration, validated; relative paths resolved against the
/// configuration file's directory.
#[derive(Debug)]
pub(crate) struct Config {
    pub metrics: MetricsAccess,
    pub issuers: Vec<IssuerConfig>,
    pub users_file: Option<PathBuf>,
    pub basic_limits: FailureLimits,
    pub rules: Vec<Rule>,
    pub web: WebConfig,
}

pub(crate) const DEFAULT_LEEWAY_SECS: u64 = 30;
const MAX_LEEWAY_SECS: u64 = 300;
pub(crate) const DEFAULT_JWKS_REFRESH_MIN_SECS: u64 = 30;

/// Why the configuration file is refused; sections are numbered from 1 as
/// they appear in the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    #[error("[[oidc]] #{index}: {source}")]
    Issuer {
        index: usize,
        #[source]
        source: IssuerError,
    },
    #[error("[[oidc]] #{index}: issuer {issuer} is configured twice")]
    DuplicateIssuer { index: usize, issuer: String },
    #[error("[[rule]] #{index}: {source}")]
    Rule {
        index: usize,
        #[source]
        source: RuleError,
    },
    #[error(
        "[basic]: max_failures_per_user and max_failures_per_address must be at least 1, failure_window_secs from 1 to 86400"
    )]
    BasicLimits,
    #[error("[web]: {0}")]
    Web(String),
}

/// Why one `[[oidc]]` section is refused.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("issuer {issuer:?} is not a URL: {source}")]
    NotUrl {
        issuer: String,
        #[source]
        source: url::ParseError,
    },
    #[error("issuer {0:?} must not have a query or fragment")]
    QueryOrFragment(String),
    #[error(
        "issuer {0:?} uses plain HTTP: keys fetched that way can be forged; use https \
         (plain HTTP is accepted on loopback only, for tests)"
    )]
    PlainHttp(String),
    #[error("issuer {issuer:?}: unsupported scheme {scheme}")]
    Scheme { issuer: String, scheme: String },
    #[error("audience is empty")]
    EmptyAudience,
    #[error("algorithms is empty")]
    NoAlgorithms,
    #[error(transparent)]
    Algorithm(#[from] AlgorithmError),
    #[error("leeway_secs = {0}: at most {MAX_LEEWAY_SECS}")]
    Leeway(u64),
    #[error("jwks_refresh_min_secs = 0: at least 1, or forged tokens could make the hub hammer the issuer")]
    ZeroRefresh,
    #[error("subject_claim is empty")]
    EmptySubjectClaim,
}

/// Why a signature algorithm is refused.
#[derive(Debug, thiserror::Error)]
pub enum AlgorithmError {
    #[error("algorithm \"none\" (unsigned tokens) is never accepted")]
    Unsigned,
    #[error("algorithm {0:?}: HMAC algorithms are never accepted (use RS*, PS*, ES* or EdDSA)")]
    Hmac(String),
    #[error("unknown algorithm {0:?} (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)")]
    Unknown(String),
}

/// Why one `[[rule]]` section is refused.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("datasets is empty")]
    NoDatasets,
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error("{permission}: {source}")]
    Grantee {
        permission: &'static str,
        #[source]
        source: GranteeError,
    },
}

impl Config {
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text)?;
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base_dir.join(p) };
        let mut issuers: Vec<IssuerConfig> = Vec::new();
        for (i, o) in file.oidc.into_iter().enumerate() {
            let index = i + 1;
            let c = issuer(o, &resolve).map_err(|source| ConfigError::Issuer { index, source })?;
            if issuers.iter().any(|x| x.issuer == c.issuer) {
                return Err(ConfigError::DuplicateIssuer { index, issuer: c.issuer });
            }
            issuers.push(c);
        }
        let defaults = FailureLimits::default();
        let basic_limits = match &file.basic {
            None => defaults,
            Some(b) => {
                let l = FailureLimits {
                    per_user: b.max_failures_per_user.unwrap_or(defaults.per_user),
                    per_address: b.max_failures_per_address.unwrap_or(defaults.per_address),
                    window: b.failure_window_secs.map_or(defaults.window, Duration::from_secs),
                };
                if l.per_user == 0 || l.per_address == 0 || !(1..=86_400).contains(&l.window.as_secs()) {
                    return Err(ConfigError::BasicLimits);
                }
                l
            }
        };
        let users_file = file.basic.map(|b| resolve(b.users_file));
        let known_issuers: Vec<&str> = issuers.iter().map(|i| i.issuer.as_str()).collect();
        let mut rules = Vec::new();
        for (i, r) in file.rules.into_iter().enumerate() {
            rules.push(rule(r, &known_issuers).map_err(|source| ConfigError::Rule { index: i + 1, source })?);
        }
        let web = match file.web {
            None => WebConfig::default(),
            Some(w) => web(w, &known_issuers, &resolve).map_err(ConfigError::Web)?,
        };
        Ok(Config { metrics: file.metrics, issuers, users_file, basic_limits, rules, web })
    }
}

/// Longest web session.
const WEB_SESSION_MAX_SECS: u64 = 7 * 86_400;

fn web(w: WebFile, issuers: &[&str], resolve: &dyn Fn(PathBuf) -> PathBuf) -> Result<WebConfig, String> {
    let oidc = match w.client_id.filter(|c| !c.trim().is_empty()) {
        None if w.issuer.is_some() || w.redirect_base.is_some() => {
            return Err("issuer and redirect_base need a client_id".into());
        }
        None => None,
        Some(client_id) => {
            let issuer = match (w.issuer, issuers) {
                (Some(i), _) if issuers.contains(&i.as_str()) => i,
                (Some(i), _) => return Err(format!("issuer {i:?} is not a configured [[oidc]] issuer")),
                (None, [only]) => only.to_string(),
                (None, []) => return Err("client_id needs an [[oidc]] issuer to sign in with".into()),
                (None, _) => return Err("several [[oidc]] issuers: say which one people sign in with (issuer)".into()),
            };
            let redirect_base = w
                .redirect_base
                .map(|b| {
                    let u = url::Url::parse(&b).map_err(|e| format!("redirect_base {b:?}: {e}"))?;
                    if !matches!(u.scheme(), "http" | "https") || u.query().is_some() || u.fragment().is_some() {
                        return Err(format!("redirect_base {b:?}: an http(s) URL without query or fragment"));
                    }
                    Ok(u)
                })
                .transpose()?;
            Some(WebOidc { client_id, issuer, redirect_base, scopes: w.scopes })
        }
    };
    if let Some(s) = w.session_secs
        && !(60..=WEB_SESSION_MAX_SECS).contains(&s)
    {
        return Err(format!("session_secs = {s}: from 60 to {WEB_SESSION_MAX_SECS}"));
    }
    Ok(WebConfig {
        oidc,
        session_key_file: w.session_key_file.map(resolve),
        session_key: None,
        session_secs: w.session_secs,
    })
}

fn issuer(o: OidcFile, resolve: &dyn Fn(PathBuf) -> PathBuf) -> Result<IssuerConfig, IssuerError> {
    let url = match url::Url::parse(&o.issuer) {
        Ok(u) => u,
        Err(source) => return Err(IssuerError::NotUrl { issuer: o.issuer, source }),
    };
    if url.fragment().is_some() || url.query().is_some() {
        return Err(IssuerError::QueryOrFragment(o.issuer));
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&url) => {}
        "http" => return Err(IssuerError::PlainHttp(o.issuer)),
        s => return Err(IssuerError::Scheme { scheme: s.to_string(), issuer: o.issuer }),
    }
    if o.audience.trim().is_empty() {
        return Err(IssuerError::EmptyAudience);
    }
    let names = o.algorithms.unwrap_or_else(|| vec!["RS256".to_string()]);
    if names.is_empty() {
        return Err(IssuerError::NoAlgorithms);
    }
    let mut algorithms = Vec::new();
    for n in &names {
        algorithms.push(algorithm(n)?);
    }
    let leeway_secs = o.leeway_secs.unwrap_or(DEFAULT_LEEWAY_SECS);
    if leeway_secs > MAX_LEEWAY_SECS {
        return Err(IssuerError::Leeway(leeway_secs));
    }
    let refresh_min = o.jwks_refresh_min_secs.unwrap_or(DEFAULT_JWKS_REFRESH_MIN_SECS);
    if refresh_min == 0 {
        return Err(IssuerError::ZeroRefresh);
    }
    let subject_claim = o.subject_claim.unwrap_or_else(|| "sub".to_string());
    if subject_claim.is_empty() {
        return Err(IssuerError::EmptySubjectClaim);
    }
    Ok(IssuerConfig {
        issuer: o.issuer,
        audience: o.audience,
        algorithms,
        token_type: o.token_type,
        subject_claim,
        groups_claim: o.groups_claim.filter(|g| !g.is_empty()),
        leeway_secs,
        jwks_refresh_min: Duration::from_secs(refresh_min),
        ca_file: o.ca_file.map(resolve),
        discovery_token_file: o.discovery_token_file.map(resolve),
    })
}

fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An asymmetric signature algorithm. `none` and the HMAC family are refused:
/// with HMAC the verification key is the signing key, and a verifier handed a
/// public key as an HMAC secret accepts tokens anyone can forge.
pub(crate) fn algorithm(name: &str) -> Result<Algorithm, AlgorithmError> {
    let upper = name.to_ascii_uppercase();
    if upper == "NONE" {
        return Err(AlgorithmError::Unsigned);
    }
    if upper.starts_with("HS") {
        return Err(AlgorithmError::Hmac(name.to_string()));
    }
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "RS384" => Ok(Algorithm::RS384),
        "RS512" => Ok(Algorithm::RS512),
        "PS256" => Ok(Algorithm::PS256),
        "PS384" => Ok(Algorithm::PS384),
        "PS512" => Ok(Algorithm::PS512),
        "ES256" => Ok(Algorithm::ES256),
        "ES384" => Ok(Algorithm::ES384),
        "EdDSA" => Ok(Algorithm::EdDSA),
        _ => Err(AlgorithmError::Unknown(name.to_string())),
    }
}

fn rule(r: RuleFile, issuers: &[&str]) -> Result<Rule, RuleError> {
    let patterns = match r.datasets {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    if patterns.is_empty() {
        return Err(RuleError::NoDatasets);
    }
    let patterns = patterns.iter().map(|p| Pattern::parse(p)).collect::<Result<Vec<_>, _>>()?;
    let grantees = |list: &[String], permission: &'static str| {
        list.iter()
            .map(|g| Grantee::parse(g, issuers).map_err(|source| RuleError::Grantee { permission, source }))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Rule {
        patterns,
        read: grantees(&r.read, "read")?,
        write: grantees(&r.write, "write")?,
        admin: grantees(&r.admin, "admin")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, String> {
        Config::parse(s, Path::new("/etc/aetherfs")).map_err(|e| aetherfs_util::one_line(&e))
    }

    #[test]
    fn full_example() {
        let c = parse(
            r#"
            metrics = "authenticated"
            [[oidc]]
            issuer = "https://idp.example"
            audience = "urn:aetherfs"
            algorithms = ["RS256", "ES256"]
            groups_claim = "groups"
            [[oidc]]
            issuer = "https://kubernetes.default.svc"
            audience = "aetherfs"
            token_type = "kubernetes"
            ca_file = "k8s-ca.crt"
            [basic]
            users_file = "users"
            [[rule]]
            datasets = "team-a/*"
            read = ["group:readers", "anonymous"]
            write = ["user:ci-bot", "group:team-a"]
            admin = ["group:admins", "user:https://idp.example#root"]
            [[rule]]
            datasets = ["public/**", "demo"]
            read = ["authenticated"]
            "#,
        )
        .expect("valid");
        assert_eq!(c.metrics, MetricsAccess::Authenticated);
        assert_eq!(c.issuers.len(), 2);
        assert_eq!(c.issuers[0].algorithms, vec![Algorithm::RS256, Algorithm::ES256]);
        assert_eq!(c.issuers[0].leeway_secs, DEFAULT_LEEWAY_SECS);
        assert_eq!(c.issuers[1].token_type, TokenType::Kubernetes);
        assert_eq!(c.issuers[1].algorithms, vec![Algorithm::RS256]);
        assert_eq!(c.issuers[1].ca_file.as_deref(), Some(Path::new("/etc/aetherfs/k8s-ca.crt")));
        assert_eq!(c.users_file.as_deref(), Some(Path::new("/etc/aetherfs/users")));
        assert_eq!(c.rules.len(), 2);
    }

    #[test]
    fn refuses_mistakes() {
        let oidc = |extra: &str| format!("[[oidc]]\nissuer = \"https://idp.example\"\naudience = \"a\"\n{extra}");
        for (text, needle) in [
            (oidc("algorithms = [\"HS256\"]"), "HMAC"),
            (oidc("algorithms = [\"none\"]"), "none"),
            (oidc("algorithms = []"), "empty"),
            (oidc("leeway_secs = 3600"), "at most"),
            (oidc("jwks_refresh_min_secs = 0"), "at least 1"),
            (oidc("token_type = \"id\""), "token_type"),
            (oidc("audiences = [\"x\"]"), "unknown field"),
            ("[[oidc]]\nissuer = \"http://idp.example\"\naudience = \"a\"".into(), "plain HTTP"),
            ("[[oidc]]\nissuer = \"https://idp.example\"\naudience = \"\"".into(), "audience"),
            ("[[rule]]\ndatasets = \"a/*\"\nread = [\"everyone\"]".into(), "everyone"),
            ("[[rule]]\ndatasets = \"a/**b\"\nread = [\"anonymous\"]".into(), "**"),
            ("[[rule]]\ndatasets = []\nread = [\"anonymous\"]".into(), "empty"),
            ("[[rule]]\ndatasets = \"a\"\nread = [\"user:https://other.example#x\"]".into(), "not a configured issuer"),
            (format!("{}\n{}", oidc(""), oidc("")), "twice"),
        ] {
            let err = parse(&text).expect_err(&text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn web_section() {
        let iss = "[[oidc]]\nissuer = \"https://idp.example\"\naudience = \"a\"\n";
        let c = parse(&format!("{iss}[web]\nclient_id = \"web\"\nsession_key_file = \"k\"")).expect("valid");
        let o = c.web.oidc.expect("oidc");
        assert_eq!((o.client_id.as_str(), o.issuer.as_str()), ("web", "https://idp.example"));
        assert_eq!(c.web.session_key_file.as_deref(), Some(Path::new("/etc/aetherfs/k")));
        for (text, needle) in [
            ("[web]\nclient_id = \"web\"".to_string(), "needs an [[oidc]]"),
            (format!("{iss}[web]\nclient_id = \"w\"\nissuer = \"https://x\""), "not a configured"),
            (format!("{iss}[web]\nclient_id = \"w\"\nredirect_base = \"ftp://x\""), "http(s)"),
            (format!("{iss}[web]\nsession_secs = 1"), "from 60"),
            (format!("{iss}[web]\nclient = \"w\""), "unknown field"),
        ] {
            let err = parse(&text).expect_err(&text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn loopback_http_issuer_is_allowed() {
        for iss in ["http://127.0.0.1:4000", "http://localhost:4000", "http://[::1]:4000"] {
            parse(&format!("[[oidc]]\nissuer = \"{iss}\"\naudience = \"a\"")).expect(iss);
        }
    }
}
