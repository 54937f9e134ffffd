//! `aetherfs digest PATH...`: a local file's AetherFS file digest, to check it
//! against what `inspect --files` shows for a version.

use std::fs::File;
use std::path::Path;

use aetherfs_format::{ChunkParams, Chunker};
use aetherfs_util::quote;
use anyhow::{Context, Result, bail};

use crate::cli::{DigestArgs, GlobalArgs};
use crate::commands::print_json;

#[derive(serde::Serialize)]
struct Row {
    path: String,
    size: u64,
    digest: String,
    chunks: usize,
}

pub fn run(g: &GlobalArgs, a: DigestArgs) -> Result<()> {
    // The parameters `push` chunks with: the digest depends on the cut points.
    let mut chunker = Chunker::new(ChunkParams::default());
    let mut rows = Vec::with_capacity(a.paths.len());
    for path in &a.paths {
        let shown = path.to_string_lossy().into_owned();
        let fc = if path == Path::new("-") {
            chunker.chunk(std::io::stdin().lock()).context("cannot read standard input")?
        } else {
            let file = File::open(path).with_context(|| format!("cannot open {}", quote(&shown)))?;
            if file.metadata().is_ok_and(|m| m.is_dir()) {
                bail!("{} is a directory: give files (`inspect --files` lists a version's)", quote(&shown));
            }
            chunker.chunk(file).with_context(|| format!("cannot read {}", quote(&shown)))?
        };
        if !g.json {
            // b3sum's layout: digest, two spaces, path.
            println!("{}  {}", fc.digest, quote(&shown));
        }
        rows.push(Row { path: shown, size: fc.size, digest: fc.digest.to_string(), chunks: fc.chunks.len() });
    }
    if g.json {
        return print_json(&rows);
    }
    Ok(())
}
