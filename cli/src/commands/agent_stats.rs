//! `aetherfs agent-stats ADDR`: the admin endpoint's `/v1/stats` as a table.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::cli::{AgentStatsArgs, GlobalArgs};
use crate::progress::human_bytes;

/// The admin endpoint answers from memory: anything slower is broken.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read (a few mounts, 8 versions, `--top` files each).
const MAX_BODY: usize = 16 << 20;

#[derive(Deserialize)]
struct Stats {
    mounts: Vec<MountStats>,
}

#[derive(Deserialize)]
struct MountStats {
    reference: String,
    digest: String,
    versions: Vec<Version>,
}

#[derive(Deserialize)]
struct Version {
    digest: String,
    reads: u64,
    bytes_read: u64,
    errors: u64,
    memory_hits: u64,
    disk_hits: u64,
    fetched_chunks: u64,
    fetched_bytes: u64,
    readahead_bytes: u64,
    cache_hit_ratio: Option<f64>,
    latency: Latency,
    files_read: u64,
    top_files: Vec<File>,
}

#[derive(Deserialize)]
struct Latency {
    mean_ms: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

#[derive(Deserialize)]
struct File {
    path: String,
    reads: u64,
    bytes: u64,
}

fn url(addr: &str, top: usize) -> Result<reqwest::Url> {
    let base = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
    let mut u = reqwest::Url::parse(&base).with_context(|| format!("bad admin address {addr:?}: use HOST:PORT"))?;
    if !matches!(u.scheme(), "http" | "https") {
        bail!("bad admin address {addr:?}: use HOST:PORT or http://HOST:PORT");
    }
    u.set_path("/v1/stats");
    u.set_query(Some(&format!("top={top}")));
    Ok(u)
}

pub async fn run(g: &GlobalArgs, a: AgentStatsArgs) -> Result<()> {
    let url = url(&a.addr, a.top)?;
    let http = reqwest::Client::builder().timeout(TIMEOUT).build()?;
    let mut req = http.get(url.clone());
    if let Some(f) = &a.admin_token_file {
        let token = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        req = req.bearer_auth(token.trim());
    }
    let mut res = req.send().await.with_context(|| format!("cannot reach the admin endpoint {url}"))?;
    if res.status() == reqwest::StatusCode::UNAUTHORIZED {
        bail!("the admin endpoint {url} needs its token (--admin-token-file)");
    }
    if !res.status().is_success() {
        bail!("the admin endpoint {url} answered {}", res.status());
    }
    let mut body = Vec::new();
    while let Some(piece) = res.chunk().await.context("reading the admin endpoint's answer")? {
        if body.len() + piece.len() > MAX_BODY {
            bail!("the admin endpoint's answer is larger than {MAX_BODY} bytes");
        }
        body.extend_from_slice(&piece);
    }
    if g.json {
        let v: serde_json::Value = serde_json::from_slice(&body).context("the admin endpoint's answer is not JSON")?;
        return crate::commands::print_json(&v);
    }
    let stats: Stats = serde_json::from_slice(&body).context("the admin endpoint's answer is not /v1/stats")?;
    if stats.mounts.is_empty() && !g.quiet {
        println!("no mounts");
    }
    for m in &stats.mounts {
        println!("{}", m.reference);
        for v in &m.versions {
            print_version(v, v.digest == m.digest);
        }
    }
    Ok(())
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2} ms"))
}

fn print_version(v: &Version, current: bool) {
    let short = v.digest.get(..19).unwrap_or(&v.digest);
    println!("  {short}{}", if current { " (current)" } else { "" });
    let ratio = v.cache_hit_ratio.map_or_else(|| "-".to_string(), |r| format!("{:.1}%", 100.0 * r));
    println!("    reads {}  read {}  errors {}  files {}", v.reads, human_bytes(v.bytes_read), v.errors, v.files_read);
    println!(
        "    chunks: {} memory, {} disk, {} hub (cache hit ratio {ratio}); fetched {} for readers, {} read ahead",
        v.memory_hits,
        v.disk_hits,
        v.fetched_chunks,
        human_bytes(v.fetched_bytes),
        human_bytes(v.readahead_bytes),
    );
    println!(
        "    latency: mean {}, p50 <= {}, p99 <= {}",
        ms(v.latency.mean_ms),
        ms(v.latency.p50_ms),
        ms(v.latency.p99_ms)
    );
    if !v.top_files.is_empty() {
        println!("    {:>8} {:>12}  FILE", "READS", "BYTES");
        for f in &v.top_files {
            println!("    {:>8} {:>12}  {}", f.reads, human_bytes(f.bytes), aetherfs_util::quote(&f.path));
        }
    }
}
