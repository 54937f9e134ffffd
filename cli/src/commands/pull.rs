use std::sync::Arc;

use aetherfs_hub_client::{PullEvent, PullOptions, pull};
use anyhow::{Context, Result};

use crate::cli::{GlobalArgs, PullArgs};
use crate::commands::{client, parse_ref, print_json};
use crate::progress::{Bar, human_bytes};

pub async fn run(g: &GlobalArgs, a: PullArgs) -> Result<()> {
    let reference = parse_ref(&a.reference)?;
    let client = client(g)?;
    let digest = client.resolve(&reference).await.with_context(|| format!("cannot resolve {reference}"))?;
    let opts =
        PullOptions { delete: a.delete, fsync: !a.no_fsync, stat_cache: a.stat_cache.dir(), ..PullOptions::default() };
    let bar = Arc::new(Bar::new(!g.json && !g.quiet));
    let b = bar.clone();
    let progress = Arc::new(move |e: PullEvent| match e {
        PullEvent::Resolved { bytes, .. } => b.phase("indexing", bytes),
        PullEvent::Indexed { bytes } => b.inc(bytes),
        PullEvent::Planned { fetch_bytes, .. } => b.phase("fetching", fetch_bytes),
        PullEvent::Fetched { bytes } => b.inc(bytes),
        PullEvent::Written { .. } => {}
    });
    let report = pull(&client, &reference.name, &digest, &a.dir, &opts, progress)
        .await
        .with_context(|| format!("pull of {}@{digest} into {} failed", reference.name, a.dir.display()))?;
    bar.finish();
    if g.json {
        return print_json(&report);
    }
    if !g.quiet {
        eprintln!(
            "pulled {} files, {}: {} written, {} unchanged; fetched {} in {} requests, reused {} from the directory",
            report.files,
            human_bytes(report.bytes),
            report.files_written,
            report.files_unchanged,
            human_bytes(report.fetched_bytes),
            report.range_requests,
            human_bytes(report.reused_bytes),
        );
        if report.extraneous > 0 {
            eprintln!(
                "note: {} entries in {} are not in this version and were left in place (use --delete to remove them)",
                report.extraneous,
                a.dir.display()
            );
        }
    }
    println!("{}@{}", reference.name, digest);
    Ok(())
}
