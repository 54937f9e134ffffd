//! Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/):
//! valid examples of every input, built with the real encoders, plus edge
//! cases. Deterministic; regression inputs found by fuzzing are kept beside
//! these files by hand (`regression-*`), never rewritten here.
//!
//! `cargo run -p aetherfs-format --example fuzz_seeds -- fuzz/corpus`

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use aetherfs_format::api::{
    DatasetList, DatasetSummary, ErrorBody, ErrorDetail, Expected, GcReport, GcRequest, Lease, LeaseRequest,
    MissingChunksRequest, MissingChunksResponse, PackStored, PresentChunk, SetTagRequest, TagRecord, VersionServed,
};
use aetherfs_format::pack::{PackBuilder, encode_index};
use aetherfs_format::{
    ChunkLocation, ChunkParams, ChunkRef, Compression, Digest, Entry, EntryKind, FileEntry, Manifest, Placement,
};
use aetherfs_util::pseudo_random;

struct Out(PathBuf);

impl Out {
    fn put(&self, target: &str, name: &str, bytes: impl AsRef<[u8]>) {
        let dir = self.0.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn chunk(seed: u64, len: u32, pack: Digest, offset: u64) -> ChunkRef {
    let digest = Digest::of(&pseudo_random(len as usize, seed));
    ChunkRef { digest, len, location: ChunkLocation { pack, offset, stored_len: len, compression: Compression::None } }
}

fn file(path: &str, mode: u32, chunks: Vec<ChunkRef>) -> Entry {
    Entry { path: path.into(), mode, kind: EntryKind::File(FileEntry::new(chunks)) }
}

fn manifests(out: &Out) {
    let pack = Digest::of(b"pack");
    let mut seeds: Vec<(&str, Manifest)> = Vec::new();
    seeds.push(("empty", Manifest::new(ChunkParams::default())));

    let mut m = Manifest::new(ChunkParams::default());
    m.entries = vec![file("f", 0o644, vec![chunk(1, 3, pack, 8)])];
    seeds.push(("one-file", m));

    let mut m = Manifest::new(ChunkParams { min: 64, avg: 256, max: 1024 });
    m.annotations.insert("created".into(), "2026-11-21T00:00:00Z".into());
    m.annotations.insert("source".into(), "git:abc123".into());
    m.entries = vec![
        Entry { path: "a/empty".into(), mode: 0o755, kind: EntryKind::Dir },
        file("a/f.txt", 0o644, vec![chunk(1, 3, pack, 8), chunk(2, 1024, pack, 11)]),
        Entry { path: "a/link".into(), mode: 0o777, kind: EntryKind::Symlink { target: "f.txt".into() } },
        file("b/c/d/deep.bin", 0o600, vec![chunk(3, 1, pack, 1035)]),
        file("données.csv", 0o400, vec![]),
        // The same chunk twice: placed once.
        file("z", 0o644, vec![chunk(1, 3, pack, 8), chunk(1, 3, pack, 8)]),
    ];
    m.sort();
    seeds.push(("mixed", m));

    let mut m = Manifest::new(ChunkParams::default());
    m.entries = vec![file("big", 0o644, (0..40).map(|i| chunk(100 + i, 256 << 10, pack, 8 + (i << 18))).collect())];
    seeds.push(("many-chunks", m));

    let mut m = Manifest::new(ChunkParams::default());
    m.annotations.insert("k".repeat(128), "v".repeat(200));
    m.entries = vec![
        Entry { path: "dir".into(), mode: 0o700, kind: EntryKind::Dir },
        Entry { path: "s".into(), mode: 0o777, kind: EntryKind::Symlink { target: "../../etc/passwd".into() } },
    ];
    seeds.push(("dirs-and-symlinks", m));

    for (name, m) in &seeds {
        let bytes = m.encode().unwrap();
        let placement = Placement::of(m, Digest::of(&bytes));
        out.put("manifest", name, &bytes);
        out.put("placement", name, placement.encode());
    }
    // A placement with compressed chunks in two packs.
    let (p1, p2) = (Digest::of(b"p1"), Digest::of(b"p2"));
    let placed = |seed, pack, offset, compression, stored_len| aetherfs_format::placement::PlacedChunk {
        digest: Digest::of(&pseudo_random(8, seed)),
        len: 5000,
        location: ChunkLocation { pack, offset, stored_len, compression },
    };
    let p = Placement::new(
        Digest::of(b"m"),
        [
            placed(1, p1, 8, Compression::Zstd, 120),
            placed(2, p2, 8, Compression::None, 5000),
            placed(3, p1, 128, Compression::Zstd, 6063),
        ],
    );
    out.put("placement", "two-packs", p.encode());
}

fn packs(out: &Out) {
    let small = |b: &mut PackBuilder, seed: u64, len: usize, compress: bool| {
        let c = pseudo_random(len, seed);
        b.add(Digest::of(&c), &c, compress);
    };
    let empty = PackBuilder::new().finish();
    out.put("pack", "empty", &empty.bytes);

    let mut b = PackBuilder::new();
    small(&mut b, 1, 100, false);
    small(&mut b, 2, 1, false);
    let raw = b.finish();
    out.put("pack", "raw", &raw.bytes);
    out.put("pack", "raw-index", encode_index(&raw.entries));

    let mut b = PackBuilder::new();
    let runs = vec![7u8; 2000];
    b.add(Digest::of(&runs), &runs, true);
    small(&mut b, 3, 300, true);
    let text = b"the quick brown fox jumps over the lazy dog; ".repeat(20);
    b.add(Digest::of(&text), &text, true);
    let zstd = b.finish();
    out.put("pack", "zstd", &zstd.bytes);
    out.put("pack", "zstd-index", encode_index(&zstd.entries));
}

fn json(out: &Out) {
    let d = |s: &[u8]| Digest::of(s);
    let name = || "acme/geoip".parse().unwrap();
    let put = |file: &str, v: serde_json::Value| out.put("api_json", file, serde_json::to_vec(&v).unwrap());

    put("set-tag", to(&SetTagRequest { digest: d(b"v1"), expected: None }));
    put("set-tag-cas", to(&SetTagRequest { digest: d(b"v2"), expected: Some(Expected::Digest(d(b"v1"))) }));
    put("set-tag-absent", to(&SetTagRequest { digest: d(b"v1"), expected: Some(Expected::Absent) }));
    put("missing", to(&MissingChunksRequest { digests: vec![d(b"a"), d(b"b"), d(b"c")] }));
    put("missing-empty", to(&MissingChunksRequest { digests: vec![] }));
    put("gc", to(&GcRequest { dry_run: true, grace_secs: Some(0) }));
    put("gc-default", serde_json::json!({}));
    put("lease", to(&LeaseRequest { versions: vec![d(b"v1"), d(b"v2")], served: vec![] }));
    let served = VersionServed { version: d(b"v1"), bytes_read: 1 << 30, fetched_bytes: 3 << 20 };
    put("lease-served", to(&LeaseRequest { versions: vec![d(b"v1")], served: vec![served] }));
    put(
        "error",
        to(&ErrorBody { error: ErrorDetail { code: "tag_conflict".into(), message: "moved \u{202e}".into() } }),
    );
    put(
        "tag-record",
        to(&TagRecord {
            name: name(),
            tag: "latest".parse().unwrap(),
            digest: Some(d(b"v2")),
            previous: None,
            by: "ci@example".into(),
            at: "2026-11-21T00:00:00Z".into(),
            seq: 1,
        }),
    );
    put(
        "lease-stored",
        to(&Lease {
            name: name(),
            reader: "agent-1".into(),
            versions: vec![d(b"v1")],
            renewed_at: "2026-11-21T00:00:00Z".into(),
            expires_unix: 1_800_000_000,
            lease_secs: 600,
            served: vec![served],
        }),
    );
    let loc = ChunkLocation { pack: d(b"p"), offset: 8, stored_len: 90, compression: Compression::Zstd };
    put(
        "missing-answer",
        to(&MissingChunksResponse {
            missing: vec![d(b"a")],
            present: vec![PresentChunk { digest: d(b"b"), len: 100, location: loc }],
        }),
    );
    put(
        "datasets",
        to(&DatasetList {
            datasets: vec![DatasetSummary {
                name: name(),
                tags: vec!["latest".parse().unwrap(), "v1.0".parse().unwrap()],
            }],
        }),
    );
    put("pack-stored", to(&PackStored { pack: d(b"p"), chunks: 3, bytes: 1 << 20, created: true }));
    put("gc-report", to(&GcReport::default()));
    put("deep", serde_json::Value::String("[".repeat(200)));
    out.put("api_json", "nested", "[".repeat(200));
}

fn to<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

fn text(out: &Out) {
    let d = Digest::of(b"x");
    let names = [
        "acme/geoip".to_string(),
        "a".into(),
        "a.b-c_d/e0".into(),
        "latest".into(),
        "v1.4.0".into(),
        "_x".into(),
        "absent".into(),
        d.to_string(),
        format!("acme/geoip:v2@{d}"),
        format!("acme/geoip@{d}"),
        "acme/geoip:latest".into(),
        "registry.example:5000/acme/x:tag".into(),
        "a//b".into(),
        "A:b".into(),
        format!("{}:{}", "a".repeat(255), "t".repeat(128)),
        "agent-1.host_x".into(),
    ];
    for (i, s) in names.iter().enumerate() {
        out.put("names", &format!("{i:02}"), s);
    }
    let paths = [
        "a",
        "a/b/c.txt",
        "données/été.csv",
        ".hidden/..b/...",
        "a/../b",
        "./a",
        "/etc/passwd",
        "a//b",
        "a\nb",
        "rtl\u{202e}txt",
        "x\\y",
    ];
    for (i, s) in paths.iter().enumerate() {
        out.put("paths", &format!("{i:02}"), s);
    }
    let size = |n: u64, h: &str| [n.to_le_bytes().as_slice(), h.as_bytes()].concat();
    let ranges = [
        size(1000, "bytes=0-9"),
        size(1000, "bytes=990-"),
        size(1000, "bytes=-16"),
        size(5, "bytes=0-18446744073709551615"),
        size(0, "bytes=-1"),
        size(u64::MAX, "bytes=18446744073709551614-"),
        size(100, "bytes=0-1,5-6"),
        size(100, "bytes=9-3"),
        size(100, " bytes= 3-3 "),
        size(100, "items=0-1"),
    ];
    for (i, r) in ranges.iter().enumerate() {
        out.put("range", &format!("{i:02}"), r);
    }
    let util = [
        "127.0.0.1:7070",
        "[::1]:7070",
        "LOCALHOST.",
        "a.localhost",
        "evil.example:80",
        "90s",
        "1h30m",
        "7d",
        "0",
        "10.0.0.0/8",
        "::1/128",
        "fe80::1/10",
        "192.168.1.7",
        "evil\n\x1b[31mred",
        "invoice\u{202E}fdp.exe",
        "back\\slash\"q",
    ];
    for (i, s) in util.iter().enumerate() {
        out.put("util_text", &format!("{i:02}"), s);
    }
}

fn agent_configs(out: &Out) {
    let configs = [
        ("minimal", "[[mount]]\nref = \"acme/x:latest\"\nfuse = \"/data/x\"\n"),
        (
            "full",
            r#"hub = "http://127.0.0.1:7070"
reader = "agent-1"
allowed_hosts = ["hub.internal"]
[admin]
listen = "127.0.0.1:9200"
token_file = "/etc/aetherfs/admin-token"
[frontends]
webdav_token_file = "/etc/aetherfs/dav-token"
nfs_allow = ["10.0.0.0/8", "::1/128"]
[cache]
dir = "/var/cache/aetherfs"
max_size = "2GiB"
memory_size = 134217728
key_file = "/etc/aetherfs/key"
[fetch]
timeout_secs = 5
concurrency = 4
readahead = "8MiB"
poll_secs = 30
[auth]
client_id = "agent"
client_secret_file = "/etc/aetherfs/secret"
issuer = "https://issuer.example"
audience = "aetherfs"
scope = "read"
ca_file = "/etc/aetherfs/ca.pem"
[[mount]]
ref = "acme/geoip:latest"
fuse = "/data/geoip"
prefetch = "all"
allow_other = true
[[mount]]
ref = "acme/models:stable"
webdav = "0.0.0.0:8080"
nfs = "127.0.0.1:11111"
export = "models"
prefetch = "none"
"#,
        ),
        (
            "materialize-hook",
            "[[mount]]\nref = \"acme/db:stable\"\nmaterialize = \"/data\"\nkeep_versions = 3\n\
             [mount.on_switch]\ncommand = [\"/bin/reload\", \"--now\"]\ntimeout_secs = 5\n",
        ),
        ("twice", "[[mount]]\nref = \"acme/x\"\nfuse = \"/x\"\n[[mount]]\nref = \"acme/y\"\nfuse = \"/x\"\n"),
        (
            "unauthenticated",
            "[frontends]\nallow_unauthenticated = true\n[[mount]]\nref = \"acme/x\"\nwebdav = \"0.0.0.0:80\"\n",
        ),
    ];
    for (name, text) in configs {
        out.put("agent_config", name, text);
    }
    let pinned = format!(
        "[[mount]]\nref = \"acme/db@{}\"\nwebdav = \"127.0.0.1:0\"\n[mount.on_switch]\nurl = \"http://127.0.0.1:9/switched\"\n",
        Digest::of(b"v1")
    );
    out.put("agent_config", "pinned-url-hook", pinned);
    for (i, s) in ["10GiB", "512 MiB", "1.5GB", "42", "1e3", "9999999999999999999999TiB"].iter().enumerate() {
        out.put("agent_config", &format!("size-{i}"), s);
    }
}

fn main() {
    let dir = std::env::args_os().nth(1).map(PathBuf::from).unwrap_or_else(|| Path::new("fuzz/corpus").to_path_buf());
    let out = Out(dir);
    manifests(&out);
    packs(&out);
    json(&out);
    text(&out);
    agent_configs(&out);
}
