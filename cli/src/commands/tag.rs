use aetherfs_format::api::Expected;
use anyhow::{Context, Result, bail};

use crate::cli::{GlobalArgs, TagAction, TagArgs, TagRmArgs};
use crate::commands::{client, parse_ref, print_json};

pub async fn run(g: &GlobalArgs, a: TagArgs) -> Result<()> {
    let (source, target) = match (a.action, a.source, a.target) {
        (Some(TagAction::Rm(rm)), _, _) => return remove(g, rm).await,
        (None, Some(s), Some(t)) => (s, t),
        _ => bail!("give SOURCE and TARGET, or `tag rm NAME:TAG`"),
    };
    let source = parse_ref(&source)?;
    let typed = target;
    let target = parse_ref(&typed)?;
    let (Some(tag), None) = (&target.tag, &target.digest) else {
        bail!("the target must be NAME:TAG, got {typed:?}");
    };
    let expected = a
        .expect
        .as_deref()
        .map(|s| s.parse::<Expected>().with_context(|| format!("bad --expect {s:?}: use a digest or `absent`")))
        .transpose()?;
    let client = client(g)?;
    let digest = client.resolve(&source).await.with_context(|| format!("cannot resolve {source}"))?;
    if target.name != source.name {
        // Manifests live per dataset; chunks are shared, so copying the
        // manifest is all it takes to tag a version under another name.
        let (_, bytes) = client.get_manifest(&source.name, &digest).await?;
        client
            .put_manifest(&target.name, bytes)
            .await
            .with_context(|| format!("cannot copy the manifest to {}", target.name))?;
    }
    let rec = client
        .set_tag(&target.name, tag, digest, expected)
        .await
        .with_context(|| format!("cannot move {}:{tag}", target.name))?;
    if g.json {
        return print_json(&rec);
    }
    if !g.quiet {
        println!("{}:{} -> {}", rec.name, rec.tag, digest);
    }
    Ok(())
}

/// `tag rm NAME:TAG`.
async fn remove(g: &GlobalArgs, a: TagRmArgs) -> Result<()> {
    let target = parse_ref(&a.target)?;
    let (Some(tag), None) = (&target.tag, &target.digest) else {
        bail!("give the tag to delete as NAME:TAG, got {:?}", a.target);
    };
    let expected = a
        .expect
        .as_deref()
        .map(|s| s.parse().with_context(|| format!("bad --expect {s:?}: use a digest")))
        .transpose()?;
    let rec = client(g)?
        .delete_tag(&target.name, tag, expected)
        .await
        .with_context(|| format!("cannot delete {}:{tag}", target.name))?;
    if g.json {
        return print_json(&rec);
    }
    if !g.quiet {
        println!("deleted {}:{}", rec.name, rec.tag);
    }
    Ok(())
}
