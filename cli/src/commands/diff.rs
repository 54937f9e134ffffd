//! `aetherfs diff A B`: what changed between two versions, and how much of
//! the newer one is new data versus chunks already stored.

use aetherfs_format::diff::{Change, PathChange, diff};
use aetherfs_util::quote;
use anyhow::{Context, Result};

use crate::cli::{DiffArgs, GlobalArgs};
use crate::commands::{client, parse_ref, print_json};
use crate::progress::human_bytes;

#[derive(serde::Serialize)]
struct Report {
    old: String,
    new: String,
    #[serde(flatten)]
    diff: aetherfs_format::diff::VersionDiff,
}

pub async fn run(g: &GlobalArgs, a: DiffArgs) -> Result<()> {
    let (old_ref, new_ref) = (parse_ref(&a.old)?, parse_ref(&a.new)?);
    let client = client(g)?;
    let old_digest = client.resolve(&old_ref).await.with_context(|| format!("cannot resolve {old_ref}"))?;
    let new_digest = client.resolve(&new_ref).await.with_context(|| format!("cannot resolve {new_ref}"))?;
    let (old, _) =
        client.get_manifest(&old_ref.name, &old_digest).await.with_context(|| format!("cannot read {old_ref}"))?;
    let (new, _) =
        client.get_manifest(&new_ref.name, &new_digest).await.with_context(|| format!("cannot read {new_ref}"))?;
    let d = tokio::task::spawn_blocking(move || diff(&old, &new)).await.context("comparing the versions")?;
    if g.json {
        let report = Report {
            old: format!("{}@{old_digest}", old_ref.name),
            new: format!("{}@{new_digest}", new_ref.name),
            diff: d,
        };
        return print_json(&report);
    }
    for p in &d.paths {
        println!("{}", path_line(p));
    }
    if !g.quiet {
        let t = &d.totals;
        let share =
            if t.new_version_bytes == 0 { 0.0 } else { 100.0 * t.reused_bytes as f64 / t.new_version_bytes as f64 };
        println!(
            "{} added, {} removed, {} changed, {} unchanged; {} of {} is new ({} chunks, {} stored: what a pull from {} downloads), {:.1}% reused",
            t.added,
            t.removed,
            t.changed,
            t.unchanged,
            human_bytes(t.new_bytes),
            human_bytes(t.new_version_bytes),
            t.new_chunks,
            human_bytes(t.new_stored_bytes),
            old_ref,
            share,
        );
    }
    Ok(())
}

/// `M path  (300 B -> 900 B, 800 B new)`, git's letters.
fn path_line(p: &PathChange) -> String {
    let (letter, sizes) = match p.change {
        Change::Added => ('A', p.new_size.map(human_bytes)),
        Change::Removed => ('D', p.old_size.map(human_bytes)),
        Change::Changed => (
            'M',
            match (p.old_size, p.new_size) {
                (Some(a), Some(b)) => Some(format!("{} -> {}", human_bytes(a), human_bytes(b))),
                _ => None,
            },
        ),
    };
    let suffix = if p.kind == "file" {
        ""
    } else if p.kind == "dir" {
        "/"
    } else {
        " (symlink)"
    };
    let mut line = format!("{letter} {}{suffix}", quote(&p.path));
    match (sizes, p.change) {
        (Some(s), Change::Removed) => line.push_str(&format!("  ({s})")),
        (Some(s), _) => line.push_str(&format!("  ({s}, {} new)", human_bytes(p.new_bytes))),
        (None, _) => {}
    }
    line
}
