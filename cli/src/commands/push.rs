use std::collections::BTreeMap;
use std::sync::Arc;

use aetherfs_format::Tag;
use aetherfs_hub_client::{PushEvent, PushOptions, push};
use anyhow::{Context, Result, bail};

use crate::cli::{GlobalArgs, PushArgs};
use crate::commands::{client, parse_ref, print_json};
use crate::progress::{Bar, human_bytes};

pub async fn run(g: &GlobalArgs, a: PushArgs) -> Result<()> {
    let reference = parse_ref(&a.reference)?;
    if reference.digest.is_some() {
        bail!("push takes NAME[:TAG], not a digest: the digest is computed from the data");
    }
    let mut tags: Vec<Tag> = reference.tag.iter().cloned().collect();
    for t in &a.tags {
        let t: Tag = t.parse().with_context(|| format!("bad --tag {t:?}"))?;
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    if tags.is_empty() {
        tags.push(Tag::latest());
    }
    let mut annotations = BTreeMap::new();
    for kv in &a.annotations {
        let (k, v) = kv.split_once('=').with_context(|| format!("--annotation {kv:?} is not KEY=VALUE"))?;
        annotations.insert(k.to_string(), v.to_string());
    }
    if let Ok(abs) = std::fs::canonicalize(&a.dir) {
        annotations.entry("source".into()).or_insert_with(|| abs.display().to_string());
    }
    if let Ok(user) = std::env::var("USER") {
        annotations.entry("author".into()).or_insert(user);
    }
    let opts = PushOptions {
        compress: !a.no_compress,
        uploads: a.uploads.max(1),
        pack_target: usize::from(a.pack_mib) << 20,
        annotations,
        stat_cache: a.stat_cache.dir(),
        ..PushOptions::default()
    };
    let client = client(g)?;
    let bar = Arc::new(Bar::new(!g.json && !g.quiet));
    let b = bar.clone();
    let progress = Arc::new(move |e: PushEvent| match e {
        // Reading, hashing and uploading overlap: the bar follows the reading.
        PushEvent::Scanned { bytes, .. } => b.phase("pushing", bytes),
        PushEvent::StatCacheHits { bytes, .. } | PushEvent::Hashed { bytes } => b.inc(bytes),
        PushEvent::Planned { .. }
        | PushEvent::PackUploaded { .. }
        | PushEvent::Published { .. }
        | PushEvent::Tagged { .. } => {}
    });
    let report = push(&client, &a.dir, &reference.name, &tags, &opts, progress)
        .await
        .with_context(|| format!("push of {} failed", a.dir.display()))?;
    bar.finish();
    if g.json {
        return print_json(&report);
    }
    if !g.quiet {
        let tags: Vec<String> = report.tags.iter().map(|t| t.to_string()).collect();
        eprintln!(
            "pushed {} files, {} in {} chunks ({} files unchanged since the last push, not read); new: {} chunks, {} ({} uploaded in {} packs); tagged {}",
            report.files,
            human_bytes(report.bytes),
            report.chunks,
            report.stat_cache_hits,
            report.new_chunks,
            human_bytes(report.new_bytes),
            human_bytes(report.uploaded_bytes),
            report.packs_uploaded,
            tags.join(", ")
        );
    }
    println!("{}@{}", report.name, report.digest);
    Ok(())
}
