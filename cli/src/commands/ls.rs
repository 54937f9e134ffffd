use anyhow::{Result, bail};

use crate::cli::{GlobalArgs, LsArgs};
use crate::commands::{client, parse_ref, print_json};

pub async fn run(g: &GlobalArgs, a: LsArgs) -> Result<()> {
    let client = client(g)?;
    let Some(target) = a.target else {
        let list = client.list_datasets().await?;
        if g.json {
            return print_json(&list);
        }
        for d in list.datasets {
            let tags: Vec<String> = d.tags.iter().map(|t| t.to_string()).collect();
            println!("{}\t{}", d.name, tags.join(","));
        }
        return Ok(());
    };
    let r = parse_ref(&target)?;
    if r.digest.is_some() {
        bail!("ls takes NAME or NAME:TAG; use `inspect` for a digest");
    }
    match r.tag {
        None => {
            let list = client.list_tags(&r.name).await?;
            if g.json {
                return print_json(&list);
            }
            for t in list.tags {
                let d = t.digest.map(|d| d.to_string()).unwrap_or_default();
                println!("{}\t{}\t{}\t{}", t.tag, d, t.at, t.by);
            }
        }
        Some(tag) => {
            let h = client.tag_history(&r.name, &tag).await?;
            if g.json {
                return print_json(&h);
            }
            // Each move: when, by whom, from what to what.
            for t in h.records {
                let d = t.digest.map_or_else(|| "(deleted)".to_string(), |d| d.to_string());
                let from = t.previous.map_or_else(|| "(new)".to_string(), |d| d.to_string());
                println!("{}\t{}\t{}\t{}\t{}", t.seq, d, t.at, t.by, from);
            }
        }
    }
    Ok(())
}
