//! Many clients moving one tag at once with compare-and-swap lose no update,
//! and a restarted hub serves everything it stored.

use aetherfs_format::api::Expected;
use aetherfs_format::{Digest, Name, Tag};

use crate::harness::{Hub, run_ok};

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_compare_and_swap_loses_no_update() {
    let data = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(&format!("file://{}", data.path().display()));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"x").unwrap();
    let mut digests: Vec<Digest> = Vec::new();
    for i in 0..4 {
        let out = run_ok(
            hub.cmd().arg("push").arg(src.path()).arg(format!("acme/cas:seed{i}")).args(["-a", &format!("n={i}")]),
        );
        digests.push(out.trim().lines().last().unwrap().split_once('@').unwrap().1.parse().unwrap());
    }
    let name: Name = "acme/cas".parse().unwrap();
    let tag: Tag = "channel".parse().unwrap();
    let client = hub.client();
    client.set_tag(&name, &tag, digests[0], Some(Expected::Absent)).await.unwrap();

    const WRITERS: usize = 12;
    const MOVES: usize = 5;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (client, name, tag, digests) = (client.clone(), name.clone(), tag.clone(), digests.clone());
        tasks.push(tokio::spawn(async move {
            let (mut done, mut conflicts) = (0, 0);
            while done < MOVES {
                let cur = client.resolve_tag(&name, &tag).await.unwrap().digest.unwrap();
                let pos = digests.iter().position(|d| *d == cur).unwrap();
                let next = digests[(pos + 1 + w % 3) % digests.len()];
                match client.set_tag(&name, &tag, next, Some(Expected::Digest(cur))).await {
                    Ok(rec) => {
                        assert_eq!(rec.previous, Some(cur));
                        done += 1;
                    }
                    Err(e) if e.code() == Some("tag_conflict") => conflicts += 1,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    eprintln!("{} moves, {conflicts} conflicts", WRITERS * MOVES);

    let check = |h: aetherfs_format::api::TagHistory| {
        assert_eq!(h.records.len(), 1 + WRITERS * MOVES, "every successful move is in the history");
        for (i, pair) in h.records.windows(2).enumerate() {
            assert_eq!(pair[1].seq, pair[0].seq + 1);
            assert_eq!(pair[1].previous, pair[0].digest, "record {i}: a move was lost");
        }
        h.records.last().unwrap().digest
    };
    let last = check(client.tag_history(&name, &tag).await.unwrap());
    assert_eq!(client.resolve_tag(&name, &tag).await.unwrap().digest, last);

    // A stale expectation is refused.
    let stale = client.set_tag(&name, &tag, digests[0], Some(Expected::Absent)).await.unwrap_err();
    assert_eq!(stale.code(), Some("tag_conflict"));

    // Restarted on the same storage, the hub serves it all.
    hub.restart();
    let client = hub.client();
    assert_eq!(check(client.tag_history(&name, &tag).await.unwrap()), last);
    let missing = client.missing_chunks(&name, &[Digest::of(b"x")]).await.unwrap();
    assert!(missing.missing.is_empty(), "chunk index rebuilt from storage");
    let dst = tempfile::tempdir().unwrap();
    run_ok(hub.cmd().args(["pull", "acme/cas:channel"]).arg(dst.path()));
    assert_eq!(std::fs::read(dst.path().join("f")).unwrap(), b"x");
}
