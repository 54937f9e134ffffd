//! `aetherfs usage NAME`: which readers (agents) serve which versions of a
//! dataset, and what their readers read, from the readers' leases.

use std::collections::{BTreeMap, BTreeSet};

use aetherfs_format::Digest;
use anyhow::{Context, Result};

use crate::cli::{GlobalArgs, UsageArgs};
use crate::commands::{client, parse_ref, print_json};
use crate::progress::human_bytes;

#[derive(serde::Serialize)]
struct Row {
    reader: String,
    version: Digest,
    tags: Vec<String>,
    /// The reader holds this version now (a mount or an open file uses it).
    serving: bool,
    in_force: bool,
    renewed_at: String,
    bytes_read: Option<u64>,
    fetched_bytes: Option<u64>,
}

pub async fn run(g: &GlobalArgs, a: UsageArgs) -> Result<()> {
    let r = parse_ref(&a.name)?;
    anyhow::ensure!(r.tag.is_none() && r.digest.is_none(), "give a dataset NAME, not a version ({})", a.name);
    let client = client(g)?;
    let leases = client.list_leases(&r.name).await.with_context(|| format!("cannot list the readers of {}", r.name))?;
    let tags = client.list_tags(&r.name).await.with_context(|| format!("cannot list the tags of {}", r.name))?;
    let mut tagged: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    for t in &tags.tags {
        if let Some(d) = t.digest {
            tagged.entry(d).or_default().push(t.tag.to_string());
        }
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut rows = Vec::new();
    for l in &leases.leases {
        let in_force = i64::try_from(l.expires_unix).is_ok_and(|e| e > now);
        let held: BTreeSet<Digest> = l.versions.iter().copied().collect();
        let served: BTreeMap<Digest, _> = l.served.iter().map(|s| (s.version, s)).collect();
        for v in held.iter().chain(served.keys().filter(|d| !held.contains(d))) {
            rows.push(Row {
                reader: l.reader.clone(),
                version: *v,
                tags: tagged.get(v).cloned().unwrap_or_default(),
                serving: held.contains(v),
                in_force,
                renewed_at: l.renewed_at.clone(),
                bytes_read: served.get(v).map(|s| s.bytes_read),
                fetched_bytes: served.get(v).map(|s| s.fetched_bytes),
            });
        }
    }
    if g.json {
        return print_json(&serde_json::json!({ "name": leases.name, "readers": rows }));
    }
    if rows.is_empty() {
        if !g.quiet {
            println!("no reader holds a lease on {} (agents renew theirs while they serve)", r.name);
        }
        return Ok(());
    }
    println!(
        "{:<24} {:<9} {:<20} {:<20} {:>11} {:>11}  TAGS",
        "READER", "LEASE", "RENEWED", "VERSION", "READ", "FETCHED"
    );
    for row in &rows {
        let digest = row.version.to_string();
        let short = digest.get(..19).unwrap_or(&digest);
        let bytes = |b: Option<u64>| b.map_or_else(|| "-".to_string(), human_bytes);
        println!(
            "{:<24} {:<9} {:<20} {:<20} {:>11} {:>11}  {}{}",
            aetherfs_util::quote(&row.reader),
            if row.in_force { "in force" } else { "expired" },
            row.renewed_at.get(..19).unwrap_or(&row.renewed_at),
            short,
            bytes(row.bytes_read),
            bytes(row.fetched_bytes),
            row.tags.join(","),
            if row.serving { "" } else { " (served earlier)" },
        );
    }
    Ok(())
}
