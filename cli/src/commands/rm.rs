use anyhow::{Context, Result, bail};

use crate::cli::{GlobalArgs, RmArgs};
use crate::commands::{client, parse_ref, print_json};

#[derive(serde::Serialize)]
struct Removed {
    name: String,
    tags_deleted: Vec<String>,
    versions_deleted: Vec<String>,
}

pub async fn run(g: &GlobalArgs, a: RmArgs) -> Result<()> {
    let r = parse_ref(&a.reference)?;
    let client = client(g)?;
    let mut out = Removed { name: r.name.to_string(), tags_deleted: Vec::new(), versions_deleted: Vec::new() };
    match (r.digest, &r.tag, a.all) {
        (Some(d), None, false) => {
            client.delete_version(&r.name, &d).await.with_context(|| format!("cannot delete {}@{d}", r.name))?;
            out.versions_deleted.push(d.to_string());
        }
        (None, None, true) => {
            // Tags first: a version is deletable only once no tag points at it.
            let tags =
                client.list_tags(&r.name).await.with_context(|| format!("cannot list the tags of {}", r.name))?;
            for t in tags.tags.iter().filter(|t| t.digest.is_some()) {
                client
                    .delete_tag(&r.name, &t.tag, t.digest)
                    .await
                    .with_context(|| format!("cannot delete {}:{}", r.name, t.tag))?;
                out.tags_deleted.push(t.tag.to_string());
            }
            let versions = client
                .list_versions(&r.name)
                .await
                .with_context(|| format!("cannot list the versions of {}", r.name))?;
            for v in versions.versions {
                client
                    .delete_version(&r.name, &v.digest)
                    .await
                    .with_context(|| format!("cannot delete {}@{}", r.name, v.digest))?;
                out.versions_deleted.push(v.digest.to_string());
            }
        }
        (_, Some(_), _) => bail!("to delete a tag use `aetherfs tag rm NAME:TAG`"),
        (Some(_), None, true) => bail!("give NAME@DIGEST or NAME --all, not both"),
        (None, None, false) => bail!("give NAME@DIGEST to delete a version, or NAME --all to delete the dataset"),
    }
    if g.json {
        return print_json(&out);
    }
    if g.quiet {
        return Ok(());
    }
    for t in &out.tags_deleted {
        println!("deleted tag {}:{t}", out.name);
    }
    for v in &out.versions_deleted {
        println!("deleted version {}@{v}", out.name);
    }
    Ok(())
}
