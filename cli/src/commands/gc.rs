use std::collections::BTreeMap;

use aetherfs_format::api::{GcReport, GcRequest};
use anyhow::{Context, Result};

use crate::cli::{GcArgs, GlobalArgs};
use crate::commands::{client, print_json};
use crate::progress::{Bar, human_bytes};

pub async fn run(g: &GlobalArgs, a: GcArgs) -> Result<()> {
    let client = client(g)?;
    let req = GcRequest { dry_run: a.dry_run, grace_secs: a.grace.map(|d| d.as_secs()) };
    // One request that can take long: a spinner says it is working.
    let spinner = Bar::new(!g.quiet && !g.json);
    spinner.spin(if a.dry_run { "planning garbage collection" } else { "collecting garbage" });
    let report = client.gc(&req).await.context("garbage collection failed");
    spinner.finish();
    let report = report?;
    if g.json {
        return print_json(&report);
    }
    if !g.quiet {
        print!("{}", summary(&report));
    }
    Ok(())
}

/// The text report: removals grouped by the rule that decided, what leases
/// hold, and the space.
fn summary(r: &GcReport) -> String {
    let mut out = String::new();
    let would = if r.dry_run { "would remove" } else { "removed" };
    let mut by_rule: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for v in &r.versions_removed {
        let mut line = format!("  {}@{}  ({})", v.name, v.digest, v.reason);
        if !v.readers.is_empty() {
            line.push_str(&format!("; last read by {} (lease expired)", v.readers.join(", ")));
        }
        by_rule.entry(v.rule.as_str()).or_default().push(line);
    }
    if by_rule.is_empty() {
        out.push_str(&format!("{would} no version\n"));
    }
    for (rule, lines) in &by_rule {
        out.push_str(&format!("{rule}: {would} {} version(s)\n", lines.len()));
        for l in lines {
            out.push_str(l);
            out.push('\n');
        }
    }
    for h in &r.held_by_leases {
        out.push_str(&format!("kept for readers {}: {}@{}\n", h.readers.join(", "), h.name, h.digest));
    }
    let reclaimed = r.stored_bytes_before.saturating_sub(r.stored_bytes_after);
    let verb = if r.dry_run { "would reclaim" } else { "reclaimed" };
    out.push_str(&format!(
        "packs: {} deleted, {} rewritten into {} ({} copied){}\n",
        r.packs_deleted,
        r.packs_rewritten,
        r.packs_written,
        human_bytes(r.bytes_written),
        if r.packs_waiting > 0 { format!(", {} waiting out the grace period", r.packs_waiting) } else { String::new() }
    ));
    out.push_str(&format!(
        "store: {} -> {} ({verb} {}; live {})\n",
        human_bytes(r.stored_bytes_before),
        human_bytes(r.stored_bytes_after),
        human_bytes(reclaimed),
        human_bytes(r.live_bytes)
    ));
    out
}

#[cfg(test)]
mod tests {
    use aetherfs_format::Digest;
    use aetherfs_format::api::GcVersion;

    use super::*;

    #[test]
    fn groups_removals_by_rule() {
        let v = |rule: &str, seed: &[u8]| GcVersion {
            name: "acme/x".parse().expect("name"),
            digest: Digest::of(seed),
            rule: rule.to_string(),
            reason: "no tag points at it".into(),
            readers: vec![],
        };
        let r = GcReport {
            dry_run: true,
            versions_removed: vec![v("default", b"1"), v("rule 1 (acme/**)", b"2"), v("default", b"3")],
            ..GcReport::default()
        };
        let text = summary(&r);
        assert!(text.contains("default: would remove 2 version(s)"), "{text}");
        assert!(text.contains("rule 1 (acme/**): would remove 1 version(s)"), "{text}");
        assert!(text.contains("would reclaim"), "{text}");
    }
}
