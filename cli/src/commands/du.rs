//! `aetherfs du NAME`: what each version of a dataset costs, and what
//! deduplication saves.

use std::collections::BTreeMap;

use aetherfs_format::Digest;
use aetherfs_format::diff::{VersionChunks, usage};
use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};

use crate::cli::{DuArgs, GlobalArgs};
use crate::commands::{client, parse_ref, print_json};
use crate::progress::{Bar, human_bytes};

/// Manifests read at once.
const PARALLEL: usize = 4;

#[derive(serde::Serialize)]
struct Row {
    #[serde(flatten)]
    usage: aetherfs_format::diff::VersionUsage,
    stored_at: String,
    tags: Vec<String>,
}

#[derive(serde::Serialize)]
struct Report {
    name: String,
    versions: Vec<Row>,
    logical_bytes: u64,
    stored_bytes: u64,
    saving: f64,
}

pub async fn run(g: &GlobalArgs, a: DuArgs) -> Result<()> {
    let r = parse_ref(&a.name)?;
    anyhow::ensure!(r.tag.is_none() && r.digest.is_none(), "give a dataset NAME, not a version ({})", a.name);
    let name = r.name;
    let client = client(g)?;
    let versions = client.list_versions(&name).await.with_context(|| format!("cannot list the versions of {name}"))?;
    let tags = client.list_tags(&name).await.with_context(|| format!("cannot list the tags of {name}"))?;
    let mut tagged: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    for t in &tags.tags {
        if let Some(d) = t.digest {
            tagged.entry(d).or_default().push(t.tag.to_string());
        }
    }
    let bar = Bar::new(!g.json && !g.quiet);
    bar.spin(&format!("reading {} versions of {name}", versions.versions.len()));
    // Keep only each version's distinct chunks, not its manifest.
    let chunks: Vec<VersionChunks> = futures::stream::iter(versions.versions.iter().map(|v| {
        let (client, name) = (&client, &name);
        async move {
            let (m, _) = client
                .get_manifest(name, &v.digest)
                .await
                .with_context(|| format!("cannot read {name}@{}", v.digest))?;
            Ok::<_, anyhow::Error>(VersionChunks::of(v.digest, &m))
        }
    }))
    .buffered(PARALLEL)
    .try_collect()
    .await?;
    bar.finish();
    let u = usage(&chunks);
    let report = Report {
        name: name.to_string(),
        logical_bytes: u.logical_bytes,
        stored_bytes: u.stored_bytes,
        saving: u.saving,
        versions: u
            .versions
            .into_iter()
            .zip(&versions.versions)
            .map(|(usage, v)| Row {
                tags: tagged.get(&usage.digest).cloned().unwrap_or_default(),
                stored_at: v.stored_at.clone(),
                usage,
            })
            .collect(),
    };
    if g.json {
        return print_json(&report);
    }
    println!(
        "{:<20} {:<20} {:>8} {:>11} {:>11} {:>11} {:>11}  TAGS",
        "VERSION", "STORED AT", "FILES", "LOGICAL", "STORED", "SHARED", "EXCLUSIVE"
    );
    for row in &report.versions {
        let v = &row.usage;
        let digest = v.digest.to_string();
        println!(
            "{:<20} {:<20} {:>8} {:>11} {:>11} {:>11} {:>11}  {}",
            digest.get(..19).unwrap_or(&digest),
            row.stored_at.get(..19).unwrap_or(&row.stored_at),
            v.files,
            human_bytes(v.logical_bytes),
            human_bytes(v.stored_bytes),
            human_bytes(v.shared_bytes),
            human_bytes(v.exclusive_bytes),
            row.tags.join(","),
        );
    }
    if !g.quiet {
        println!(
            "{name}: {} versions, {} logical, {} stored ({:.1}% saved by deduplication and compression)",
            report.versions.len(),
            human_bytes(report.logical_bytes),
            human_bytes(report.stored_bytes),
            100.0 * report.saving,
        );
    }
    Ok(())
}
