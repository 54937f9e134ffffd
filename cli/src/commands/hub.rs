use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use aetherfs_hub::serve::{ConnectionLimits, serve};
use aetherfs_hub::tls::{Tls, TlsFiles};
use aetherfs_hub::{Auth, Encryption, Hub, HubOptions, Lifecycle};
use anyhow::{Context, Result, bail};

use crate::cli::{HubAction, HubArgs, PasswdArgs, SseKind};
use crate::commands::shutdown_signal;

pub async fn run(a: HubArgs) -> Result<()> {
    if let Some(HubAction::Passwd(p)) = a.action {
        return passwd(p);
    }
    let auth = match &a.auth_config {
        Some(path) => Auth::load(path).await.context("cannot load the auth configuration")?,
        None => Auth::open(),
    };
    let encryption = encryption(&a)?;
    let tls = match (a.tls_cert, a.tls_key) {
        (Some(cert), Some(key)) => Some(Tls::load(TlsFiles { cert, key }).context("cannot set up TLS")?),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    let storage = match a.storage {
        Some(s) => s,
        None => {
            let dir = default_data_dir()?;
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            format!("file://{}", dir.display())
        }
    };
    let lifecycle = match &a.lifecycle {
        Some(path) => Lifecycle::load(path)
            .with_context(|| format!("cannot load the lifecycle configuration {}", path.display()))?,
        None => Lifecycle::default(),
    };
    let gc = &lifecycle.gc;
    eprintln!(
        "aetherfs hub: gc {}, grace {}, {} retention rule(s)",
        gc.interval
            .map_or_else(|| "on request only".to_string(), |i| format!("every {}", aetherfs_util::format_duration(i))),
        aetherfs_util::format_duration(gc.grace),
        lifecycle.retention.len()
    );
    let opts = HubOptions {
        storage,
        encryption: encryption.clone(),
        redirect_reads: a.redirect_reads.then(|| std::time::Duration::from_secs(a.redirect_expiry_secs)),
        max_pack_bytes: a.max_pack_mib << 20,
        auth: auth.clone(),
        lifecycle,
        allowed_hosts: a.allowed_hosts.clone(),
        body_stall: std::time::Duration::from_secs(a.body_timeout_secs),
        max_index_bytes: a.max_index_mib << 20,
        index_window: std::time::Duration::from_secs(a.index_window_secs),
        read_cache_bytes: a.read_cache_mib << 20,
        long_poll_max: std::time::Duration::from_secs(a.long_poll_max_secs),
        tls: tls.is_some(),
        ..HubOptions::default()
    };
    let hub = Hub::open(opts).await.context("cannot open the hub's storage")?;
    if encryption != Encryption::StoreDefault {
        eprintln!("aetherfs hub: encryption at rest: {}", encryption.describe());
    }
    if a.redirect_reads {
        eprintln!("aetherfs hub: pack reads redirect to presigned URLs valid {} s", a.redirect_expiry_secs);
    }
    let listener =
        tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to find an ephemeral port.
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("aetherfs hub: listening on {scheme}://{addr} (storage {})", hub.storage_description());
    eprintln!("aetherfs hub: web page at {scheme}://{addr}/");
    if auth.is_open() {
        if addr.ip().is_loopback() {
            eprintln!("aetherfs hub: no authentication configured: any local process can read and write");
        } else {
            eprintln!(
                "aetherfs hub: WARNING: no authentication configured and listening on {addr}: anyone who can reach it can read and write"
            );
        }
    } else {
        for line in auth.describe() {
            eprintln!("aetherfs hub: auth: {line}");
        }
        if tls.is_none() && !addr.ip().is_loopback() {
            eprintln!(
                "aetherfs hub: WARNING: no TLS on {addr}: tokens and passwords cross the network in clear text (use --tls-cert and --tls-key)"
            );
        }
    }
    if let Some(tls) = &tls {
        tls.spawn_reloader(aetherfs_hub::tls::RELOAD_EVERY);
    }
    let limits = ConnectionLimits {
        max_connections: a.max_connections,
        header_read_timeout: std::time::Duration::from_secs(a.header_timeout_secs),
        ..ConnectionLimits::default()
    };
    serve(listener, hub.router(), tls.as_ref(), limits, shutdown_signal()).await?;
    eprintln!("aetherfs hub: stopped");
    Ok(())
}

/// The server-side encryption the flags ask for.
fn encryption(a: &HubArgs) -> Result<Encryption> {
    if a.sse.is_some() && a.azure_encryption_key_file.is_some() {
        bail!("--sse (S3) and --azure-encryption-key-file (Azure) do not go together");
    }
    if a.sse_kms_key_id.is_some() && !matches!(a.sse, Some(SseKind::Kms | SseKind::DsseKms)) {
        bail!("--sse-kms-key-id needs --sse kms or --sse dsse-kms");
    }
    if a.sse_bucket_key && a.sse != Some(SseKind::Kms) {
        bail!("--sse-bucket-key needs --sse kms");
    }
    if let Some(path) = &a.azure_encryption_key_file {
        let key = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let key = key.trim().to_string();
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .with_context(|| format!("{}: not base64", path.display()))?;
        if raw.len() != 32 {
            bail!("{}: the key must be 32 bytes (base64 of them), not {}", path.display(), raw.len());
        }
        if a.redirect_reads {
            bail!(
                "--redirect-reads cannot be used with --azure-encryption-key-file: Azure needs the key on every read"
            );
        }
        return Ok(Encryption::AzureCustomerKey(key));
    }
    let key_id = a.sse_kms_key_id.clone();
    Ok(match a.sse {
        None => Encryption::StoreDefault,
        Some(SseKind::S3) => Encryption::S3Managed,
        Some(SseKind::Kms) => Encryption::S3Kms { key_id, bucket_key: a.sse_bucket_key },
        Some(SseKind::DsseKms) => Encryption::S3DsseKms { key_id },
    })
}

/// `aetherfs hub passwd FILE USER`: the password comes from stdin (asked
/// twice, without echo, on a terminal); only its argon2id hash is written.
fn passwd(p: PasswdArgs) -> Result<()> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = read_hidden(&format!("password for {}: ", p.user))?;
        let again = read_hidden("again: ")?;
        if first != again {
            bail!("the passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).context("cannot read the password from stdin")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() {
        bail!("empty password");
    }
    let hash = aetherfs_hub::auth::hash_password(&password)?;
    aetherfs_hub::auth::set_user(&p.file, &p.user, &hash, &p.groups)?;
    eprintln!("aetherfs hub: set the password of {} in {}", p.user, p.file.display());
    Ok(())
}

/// A line from the terminal with echo off (`stty`, as no unsafe code may call termios).
fn read_hidden(prompt: &str) -> Result<String> {
    use std::process::{Command, Stdio};
    let stty = |arg: &str| Command::new("stty").arg(arg).stdin(Stdio::inherit()).status();
    eprint!("{prompt}");
    let hidden = stty("-echo").is_ok_and(|s| s.success());
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if hidden {
        let _ = stty("echo");
        eprintln!();
    }
    read.context("cannot read the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// `$AETHERFS_DATA_DIR`, else `$XDG_DATA_HOME/aetherfs/hub`, else `~/.local/share/aetherfs/hub`.
fn default_data_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("AETHERFS_DATA_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(d).join("aetherfs/hub"));
    }
    let home = std::env::var_os("HOME").context("set --storage or AETHERFS_DATA_DIR: no HOME to put data under")?;
    Ok(PathBuf::from(home).join(".local/share/aetherfs/hub"))
}
