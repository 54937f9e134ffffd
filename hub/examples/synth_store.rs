//! Writes a large synthetic hub store for bench/index.py: `PACKS` packs of
//! `CHUNKS` chunks each (5,000,000 chunks by default) in the real storage
//! layout (docs/storage-layout.md), spread over `DATASETS` datasets, each
//! with one tagged version whose manifest and placement cover its packs.
//! Pack indexes, manifests, placements, links, tag records and the pack log
//! are encoded with the real format code; pack bodies are sparse files of
//! the right size (the hub never reads them unless asked for a chunk), and
//! pack digests are synthetic (no body to hash). Every pack is logged 30
//! days ago, as in a store that grew over months, except the newest
//! `--recent N`, logged within the last hour.
//!
//!     cargo run --release -p aetherfs-hub --example synth_store -- DIR [--packs N] [--chunks N] [--datasets N] [--recent N]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aetherfs_format::api::TagRecord;
use aetherfs_format::pack::{PackEntry, encode_index};
use aetherfs_format::placement::PlacedChunk;
use aetherfs_format::{ChunkParams, ChunkRef, Compression, Digest, Entry, EntryKind, FileEntry, Manifest, Placement};

const CHUNK_LEN: u32 = 65_536;

fn write(root: &Path, key: &str, bytes: &[u8]) -> std::io::Result<()> {
    let path = root.join(key);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::File::create(path)?.write_all(bytes)
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(root) = args.get(1).map(PathBuf::from) else {
        eprintln!("usage: synth_store DIR [--packs N] [--chunks N] [--datasets N] [--recent N]");
        std::process::exit(2);
    };
    let packs = arg(&args, "--packs", 10_000);
    let per_pack = arg(&args, "--chunks", 500);
    let datasets = arg(&args, "--datasets", 100).max(1);
    let recent = arg(&args, "--recent", 0);
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let old_ms = now_ms - 30 * 24 * 3600 * 1000;
    let per_dataset = packs.div_ceil(datasets);
    let mut chunk_no = 0u64;
    for ds in 0..datasets {
        let name = format!("synth/d{ds:03}");
        let mut manifest = Manifest::new(ChunkParams::default());
        let mut placed = Vec::new();
        for p in ds * per_dataset..((ds + 1) * per_dataset).min(packs) {
            let pack = Digest::of(format!("synth-pack-{p}").as_bytes());
            let entries: Vec<PackEntry> = (0..per_pack as u64)
                .map(|i| {
                    chunk_no += 1;
                    PackEntry {
                        digest: Digest::of(format!("synth-chunk-{chunk_no}").as_bytes()),
                        offset: 8 + i * u64::from(CHUNK_LEN),
                        stored_len: CHUNK_LEN,
                        len: CHUNK_LEN,
                        compression: Compression::None,
                    }
                })
                .collect();
            let index = encode_index(&entries);
            let hex = pack.hex();
            write(&root, &format!("packs/{hex}.idx"), &index)?;
            let body = root.join(format!("packs/{hex}.pack"));
            fs::File::create(&body)?.set_len(8 + per_pack as u64 * u64::from(CHUNK_LEN) + index.len() as u64 + 16)?;
            write(&root, &format!("packs/{hex}.links/{name}"), b"")?;
            let ms = if p + recent >= packs { now_ms - 3_600_000 + p as u64 } else { old_ms + p as u64 };
            write(&root, &format!("index/log/{:08}/{ms:020}-{hex}", ms / 86_400_000), b"")?;
            let refs: Vec<ChunkRef> =
                entries.iter().map(|e| ChunkRef { digest: e.digest, len: e.len, location: e.location(pack) }).collect();
            placed.extend(refs.iter().map(|c| PlacedChunk { digest: c.digest, len: c.len, location: c.location }));
            manifest.entries.push(Entry {
                path: format!("part-{p:05}.bin"),
                mode: 0o644,
                kind: EntryKind::File(FileEntry::new(refs)),
            });
        }
        manifest.sort();
        let bytes = manifest.encode().map_err(std::io::Error::other)?;
        let digest = Digest::of(&bytes);
        let placement = Placement::new(digest, placed);
        write(&root, &format!("datasets/{name}/_manifests/{}", digest.hex()), &bytes)?;
        write(&root, &format!("datasets/{name}/_placements/{}", digest.hex()), &placement.encode())?;
        let record = TagRecord {
            name: name.parse().map_err(std::io::Error::other)?,
            tag: "latest".parse().map_err(std::io::Error::other)?,
            digest: Some(digest),
            previous: None,
            by: "synth".into(),
            at: "2026-11-01T00:00:00.000Z".into(),
            seq: 1,
        };
        let json = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        write(&root, &format!("datasets/{name}/_tags/latest/{:020}", 1), &json)?;
        write(&root, &format!("datasets/{name}/_tags/latest/head"), b"1")?;
    }
    println!("{{\"packs\": {packs}, \"chunks\": {chunk_no}, \"datasets\": {datasets}, \"recent\": {recent}}}");
    Ok(())
}
