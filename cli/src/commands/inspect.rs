use aetherfs_format::EntryKind;
use aetherfs_util::quote;
use anyhow::{Context, Result};

use crate::cli::{GlobalArgs, InspectArgs};
use crate::commands::{client, parse_ref, print_json};
use crate::progress::human_bytes;

pub async fn run(g: &GlobalArgs, a: InspectArgs) -> Result<()> {
    let r = parse_ref(&a.reference)?;
    let client = client(g)?;
    let digest = client.resolve(&r).await.with_context(|| format!("cannot resolve {r}"))?;
    let (manifest, bytes) = client.get_manifest(&r.name, &digest).await?;
    if g.json {
        let mut v = manifest.to_json(&digest, a.files);
        v["name"] = serde_json::json!(r.name);
        v["manifest_bytes"] = serde_json::json!(bytes.len());
        return print_json(&v);
    }
    let s = manifest.stats();
    println!("{}@{}", r.name, digest);
    println!(
        "  {} files, {} dirs, {} symlinks, {} in {} chunks; manifest {}",
        s.files,
        s.dirs,
        s.symlinks,
        human_bytes(s.bytes),
        s.chunks,
        human_bytes(bytes.len() as u64)
    );
    let c = manifest.chunking;
    println!("  chunking: FastCDC 2020 min {} avg {} max {}", c.min, c.avg, c.max);
    for (k, v) in &manifest.annotations {
        println!("  {}: {}", quote(k), quote(v));
    }
    if a.files {
        for e in &manifest.entries {
            match &e.kind {
                EntryKind::File(f) => println!(
                    "{:o}\t{}\t{}\t{} chunks\t{}",
                    e.mode,
                    f.size(),
                    f.digest(),
                    f.chunks().len(),
                    quote(&e.path)
                ),
                EntryKind::Dir => println!("{:o}\tdir\t\t\t{}/", e.mode, quote(&e.path)),
                EntryKind::Symlink { target } => {
                    println!("{:o}\tlink\t\t\t{} -> {}", e.mode, quote(&e.path), quote(target))
                }
            }
        }
    }
    Ok(())
}
