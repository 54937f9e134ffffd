//! The `on_switch` hook: after each switch, run a command or POST a URL, so
//! a database beside the agent can reopen its files. Its outcome is kept for
//! `/v1/mounts` and the metrics.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use aetherfs_format::Digest;
use parking_lot::Mutex;
use serde::Deserialize;

/// `[mount.on_switch]`: exactly one of `command` and `url`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnSwitchConfig {
    /// argv of a command run after each switch (no shell).
    pub command: Option<Vec<String>>,
    /// URL POSTed a JSON body after each switch.
    pub url: Option<String>,
    /// The hook fails if it takes longer (the agent goes on following).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    30
}

/// What is wrong with an `on_switch` table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnSwitchInvalid {
    #[error("on_switch: give exactly one of command and url")]
    OneOf,
    #[error("on_switch: command must name a program")]
    EmptyCommand,
    #[error("on_switch: url must be http:// or https://")]
    Url,
    #[error("on_switch: timeout_secs must be from 1 to 3600")]
    Timeout,
}

impl OnSwitchConfig {
    pub fn validate(&self) -> Result<(), OnSwitchInvalid> {
        match (&self.command, &self.url) {
            (Some(argv), None) if argv.first().is_none_or(|p| p.is_empty()) => {
                return Err(OnSwitchInvalid::EmptyCommand);
            }
            (None, Some(url)) if !reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) => {
                return Err(OnSwitchInvalid::Url);
            }
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err(OnSwitchInvalid::OneOf),
        }
        if !(1..=3600).contains(&self.timeout_secs) {
            return Err(OnSwitchInvalid::Timeout);
        }
        Ok(())
    }
}

/// One switch, as the hook is told of it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SwitchEvent {
    pub reference: String,
    pub previous: Digest,
    pub digest: Digest,
    /// Materialize mode: the directory `current` now points at.
    pub path: Option<PathBuf>,
}

/// The hook's last outcome, for status pages.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HookStatus {
    pub runs: u64,
    pub failures: u64,
    pub last_digest: Option<String>,
    pub last_ok: Option<bool>,
    /// Why the last run failed.
    pub last_error: Option<String>,
    /// Seconds since the epoch at the end of the last run.
    pub last_at: Option<u64>,
}

/// A run's version, outcome and end.
type Outcome = (Digest, Result<(), String>, SystemTime);

/// A configured hook and its record.
pub struct Hook {
    cfg: OnSwitchConfig,
    http: reqwest::Client,
    runs: AtomicU64,
    failures: AtomicU64,
    last: Mutex<Option<Outcome>>,
}

impl Hook {
    pub fn new(cfg: OnSwitchConfig) -> Self {
        Self {
            cfg,
            http: reqwest::Client::new(),
            runs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    pub fn runs(&self) -> u64 {
        self.runs.load(Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    /// Runs the hook for `ev` and records the outcome; a failure is logged,
    /// never fatal.
    pub async fn run(&self, ev: &SwitchEvent) {
        let timeout = Duration::from_secs(self.cfg.timeout_secs);
        let outcome = match tokio::time::timeout(timeout, self.attempt(ev)).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {}s", self.cfg.timeout_secs)),
        };
        self.runs.fetch_add(1, Relaxed);
        match &outcome {
            Ok(()) => eprintln!("aetherfs agent: {}: on_switch done for {}", ev.reference, ev.digest),
            Err(e) => {
                self.failures.fetch_add(1, Relaxed);
                eprintln!("aetherfs agent: {}: on_switch failed for {}: {e}", ev.reference, ev.digest);
            }
        }
        *self.last.lock() = Some((ev.digest, outcome, SystemTime::now()));
    }

    async fn attempt(&self, ev: &SwitchEvent) -> Result<(), String> {
        if let Some(argv) = &self.cfg.command {
            let (program, args) = argv.split_first().ok_or("no command")?;
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args)
                .env("AETHERFS_REF", &ev.reference)
                .env("AETHERFS_DIGEST", ev.digest.to_string())
                .env("AETHERFS_PREVIOUS_DIGEST", ev.previous.to_string())
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            if let Some(p) = &ev.path {
                cmd.env("AETHERFS_PATH", p);
            }
            let status = cmd.status().await.map_err(|e| format!("cannot run {program}: {e}"))?;
            return if status.success() { Ok(()) } else { Err(format!("{program} exited with {status}")) };
        }
        let url = self.cfg.url.as_deref().ok_or("no url")?;
        let resp = self.http.post(url).json(ev).send().await.map_err(|e| format!("POST {url}: {e}"))?;
        if resp.status().is_success() { Ok(()) } else { Err(format!("POST {url}: HTTP {}", resp.status())) }
    }

    pub fn status(&self) -> HookStatus {
        let last = self.last.lock().clone();
        HookStatus {
            runs: self.runs(),
            failures: self.failures(),
            last_digest: last.as_ref().map(|l| l.0.to_string()),
            last_ok: last.as_ref().map(|l| l.1.is_ok()),
            last_error: last.as_ref().and_then(|l| l.1.clone().err()),
            last_at: last.and_then(|l| l.2.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(command: Option<&[&str]>, url: Option<&str>) -> OnSwitchConfig {
        OnSwitchConfig {
            command: command.map(|c| c.iter().map(|s| s.to_string()).collect()),
            url: url.map(str::to_string),
            timeout_secs: 30,
        }
    }

    #[test]
    fn exactly_one_of_command_and_url() {
        assert_eq!(cfg(Some(&["true"]), None).validate(), Ok(()));
        assert_eq!(cfg(None, Some("http://127.0.0.1:1/reload")).validate(), Ok(()));
        assert_eq!(cfg(None, None).validate(), Err(OnSwitchInvalid::OneOf));
        assert_eq!(cfg(Some(&["true"]), Some("http://x/")).validate(), Err(OnSwitchInvalid::OneOf));
        assert_eq!(cfg(Some(&[]), None).validate(), Err(OnSwitchInvalid::EmptyCommand));
        assert_eq!(cfg(None, Some("file:///etc/passwd")).validate(), Err(OnSwitchInvalid::Url));
        let mut slow = cfg(Some(&["true"]), None);
        slow.timeout_secs = 0;
        assert_eq!(slow.validate(), Err(OnSwitchInvalid::Timeout));
    }

    fn event() -> SwitchEvent {
        SwitchEvent {
            reference: "acme/db:stable".into(),
            previous: Digest::of(b"a"),
            digest: Digest::of(b"b"),
            path: Some(PathBuf::from("/data/current")),
        }
    }

    #[tokio::test]
    async fn a_command_sees_the_switch_and_its_failure_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        let script = format!("echo \"$AETHERFS_DIGEST $AETHERFS_PATH\" > {}", out.display());
        let hook = Hook::new(cfg(Some(&["sh", "-c", &script]), None));
        hook.run(&event()).await;
        let seen = std::fs::read_to_string(&out).unwrap();
        assert_eq!(seen.trim(), format!("{} /data/current", Digest::of(b"b")));
        assert_eq!((hook.status().runs, hook.status().failures, hook.status().last_ok), (1, 0, Some(true)));

        let failing = Hook::new(cfg(Some(&["sh", "-c", "exit 3"]), None));
        failing.run(&event()).await;
        let st = failing.status();
        assert_eq!((st.runs, st.failures, st.last_ok), (1, 1, Some(false)));
        assert!(st.last_error.unwrap().contains("exit status: 3"));
    }

    #[tokio::test]
    async fn a_hook_slower_than_its_timeout_fails() {
        let mut c = cfg(Some(&["sleep", "30"]), None);
        c.timeout_secs = 1;
        let hook = Hook::new(c);
        hook.run(&event()).await;
        assert!(hook.status().last_error.unwrap().contains("timed out"));
    }

    #[tokio::test]
    async fn a_url_is_posted_the_switch() {
        use axum::{Json, Router, http::StatusCode, routing::post};
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
        let app = Router::new()
            .route(
                "/reload",
                post(move |Json(v): Json<serde_json::Value>| async move {
                    let _ = tx.send(v);
                    StatusCode::NO_CONTENT
                }),
            )
            .route("/broken", post(|| async { StatusCode::INTERNAL_SERVER_ERROR }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let hook = Hook::new(cfg(None, Some(&format!("http://{addr}/reload"))));
        hook.run(&event()).await;
        let body = rx.recv().await.unwrap();
        assert_eq!(body["digest"], Digest::of(b"b").to_string());
        assert_eq!(body["reference"], "acme/db:stable");
        assert_eq!(hook.status().last_ok, Some(true));

        let broken = Hook::new(cfg(None, Some(&format!("http://{addr}/broken"))));
        broken.run(&event()).await;
        assert!(broken.status().last_error.unwrap().contains("HTTP 500"));
    }
}
