//! The agent's configuration file (TOML, docs/agent.md): parsing and
//! validation never panic, and a configuration that validates can work:
//! it has mounts, each with a valid reference and a front end, no path or
//! address used twice, workable fetch settings and a valid reader id.
#![no_main]

use std::collections::HashSet;

use aetherfs_agent::config::{AgentConfig, Size};
use aetherfs_format::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };

    // A size setting ("512MiB", "10GiB", "1.5GB", a number).
    if let Ok(Size(n)) = text.parse::<Size>() {
        let t = text.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && t.len() <= 15 {
            assert_eq!(t.parse::<u64>().ok(), Some(n), "a plain number of bytes is exact");
        }
    }

    let Ok(cfg) = toml::from_str::<AgentConfig>(text) else { return };
    let first = cfg.validate().map_err(|e| e.to_string());
    assert_eq!(cfg.validate().map_err(|e| e.to_string()), first, "validation is deterministic");
    if first.is_err() {
        return;
    }
    assert!(!cfg.mounts.is_empty());
    assert!(cfg.fetch.timeout_secs > 0 && cfg.fetch.concurrency > 0);
    if let Some(r) = &cfg.reader {
        assert!(aetherfs_format::api::valid_reader(r));
    }
    let mut paths = HashSet::new();
    for m in &cfg.mounts {
        let r: Reference = m.reference.parse().expect("a validated mount has a valid reference");
        assert_eq!(r.to_string(), m.reference);
        assert!(m.fuse.is_some() || m.materialize.is_some() || m.nfs.is_some() || m.webdav.is_some());
        assert!(m.keep_versions() >= 1);
        if m.keep_versions.is_some() {
            assert!(m.materialize.is_some());
        }
        for p in [&m.fuse, &m.materialize].into_iter().flatten() {
            assert!(paths.insert(p.clone()), "path {} used twice", p.display());
        }
        if let Some(h) = &m.on_switch {
            assert!(h.command.is_some() != h.url.is_some());
            assert!((1..=3600).contains(&h.timeout_secs));
        }
    }
    assert!(!cfg.frontends.nfs_allow.is_empty());
});
