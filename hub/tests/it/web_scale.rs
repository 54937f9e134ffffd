//! The web page over a version of 100,000 files in one directory: every
//! page (the dataset's, the tree's, the diff's) answers with a bounded
//! amount of HTML, paginated, and the last page holds the last entries.

use aetherfs_format::{ChunkParams, ChunkRef, Entry, EntryKind, FileEntry, Manifest};
use axum::http::StatusCode;

use crate::harness::{TestHub, build_pack};

const FILES: usize = 100_000;
/// Rows per page of a tree or a diff (hub/src/web/pages.rs).
const PAGE: usize = 500;
/// No page may grow with the version: 500 rows of ~250 bytes, plus the frame.
const MAX_PAGE_BYTES: usize = 256 << 10;

/// `many/f000000 … many/f099999`, each file one chunk: `a` for all of v1; v2
/// gives every other file chunk `b`.
fn version(pack: &aetherfs_format::pack::BuiltPack, changed: bool) -> Vec<u8> {
    let refs: Vec<ChunkRef> = pack
        .entries
        .iter()
        .map(|e| ChunkRef { digest: e.digest, len: e.len, location: e.location(pack.digest) })
        .collect();
    let mut m = Manifest::new(ChunkParams::default());
    m.entries.push(Entry { path: "many".into(), mode: 0o755, kind: EntryKind::Dir });
    for i in 0..FILES {
        let chunk = if changed && i % 2 == 1 { &refs[1] } else { &refs[0] };
        m.entries.push(Entry {
            path: format!("many/f{i:06}"),
            mode: 0o644,
            kind: EntryKind::File(FileEntry::new(vec![*chunk])),
        });
    }
    m.sort();
    m.encode().expect("valid manifest")
}

fn rows(body: &str) -> usize {
    body.matches("<tr><td>").count()
}

#[tokio::test]
async fn pages_of_a_hundred_thousand_files_stay_bounded() {
    let t = TestHub::memory().await;
    let pack = build_pack(&[b"first content\n".to_vec(), b"second content\n".to_vec()]);
    assert_eq!(t.put_pack(&pack).await.status, StatusCode::CREATED);
    let (v1, v2) = (version(&pack, false), version(&pack, true));
    let (d1, d2) = (aetherfs_format::Digest::of(&v1), aetherfs_format::Digest::of(&v2));
    for m in [&v1, &v2] {
        let r = t.put_manifest("acme/geoip", m).await;
        assert!(r.status.is_success(), "{}", r.text());
    }
    t.set_tag("acme/geoip", "v1", &d1, None).await.ok();
    t.set_tag("acme/geoip", "latest", &d2, None).await.ok();

    let page = |uri: String| {
        let t = &t;
        async move {
            let r = t.get(&uri).await;
            assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text());
            let body = r.text();
            assert!(body.len() < MAX_PAGE_BYTES, "{uri}: {} bytes", body.len());
            body
        }
    };

    // The dataset page: both versions with their sizes.
    let body = page("/web/datasets/acme/geoip".into()).await;
    assert!(body.contains("latest") && body.contains(&d1.to_string()[..15]), "{body}");

    // The directory: 500 rows a page, 200 pages, the last ends at f099999.
    let tree = format!("/web/datasets/acme/geoip/-/tree/{d2}?path=many");
    let first = page(tree.clone()).await;
    assert_eq!(rows(&first), PAGE);
    assert!(first.contains("f000000") && first.contains("f000499") && !first.contains("f000500"));
    assert!(first.contains(&format!("1–{PAGE} of {FILES}")), "{first}");
    assert!(first.contains("rel=\"next\""));
    let last = page(format!("{tree}&page={}", FILES / PAGE)).await;
    assert_eq!(rows(&last), PAGE);
    assert!(last.contains("f099999") && !last.contains("rel=\"next\""), "{last}");
    // The root holds one entry: the directory, with its count.
    let root = page(format!("/web/datasets/acme/geoip/-/tree/{d2}")).await;
    assert!(root.contains(&format!("{FILES} entries")), "{root}");

    // The diff: half the files changed, 100 pages of them.
    let diff = "/web/datasets/acme/geoip/-/diff?from=v1&to=latest".to_string();
    let first = page(diff.clone()).await;
    assert_eq!(rows(&first), PAGE);
    assert!(first.contains(&format!("<strong>{}</strong> changed", FILES / 2)), "{first}");
    let last = page(format!("{diff}&page={}", FILES / 2 / PAGE)).await;
    assert_eq!(rows(&last), PAGE);
    assert!(last.contains("many/f099999") && !last.contains("rel=\"next\""));
}
