//! The SQLite preview: tables, their columns and row counts. The file is
//! copied into a private temporary file (SQLite needs a real file), at most
//! [`FILE_MAX`] bytes, and opened read-only with untrusted-schema defences;
//! a progress handler stops any query after [`TIME_LIMIT`], and a count it
//! stops shows as unknown.

use std::io::Write;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::files::Opened;
use super::html::{Html, bytes};
use super::pages::Fail;
use crate::Hub;
use crate::error::AppError;

/// Largest database previewed.
pub(crate) const FILE_MAX: u64 = 256 << 20;
/// Longest the whole preview's queries may take.
const TIME_LIMIT: Duration = Duration::from_secs(3);
/// Tables and columns listed.
const TABLES_MAX: usize = 200;
const COLUMNS_MAX: usize = 100;
/// Bytes copied per read.
const PIECE: u64 = 4 << 20;

struct Table {
    name: String,
    columns: Vec<(String, String)>,
    rows: Option<i64>,
}

pub(crate) async fn preview(hub: &Hub, f: &Opened, h: &mut Html) -> Result<(), Fail> {
    if f.size > FILE_MAX {
        h.fmt(format_args!("<p>A SQLite database larger than {}: not previewed.</p>", bytes(FILE_MAX)));
        return Ok(());
    }
    // One decoded preview at a time per JSON-view slot: bounds disk and CPU.
    let _permit =
        hub.inner.json_views.clone().acquire_owned().await.map_err(|e| AppError::internal("waiting to preview", e))?;
    let mut tmp = tempfile::NamedTempFile::new().map_err(|e| AppError::internal("creating a temporary file", e))?;
    let mut at = 0;
    while at < f.size {
        let piece = f.read(at, PIECE).await?;
        if piece.is_empty() {
            break;
        }
        at += piece.len() as u64;
        tmp.write_all(&piece).map_err(|e| AppError::internal("writing a temporary file", e))?;
    }
    tmp.flush().map_err(|e| AppError::internal("writing a temporary file", e))?;
    let tables = crate::routes::blocking("reading a SQLite database", move || {
        let r = inspect(tmp.path());
        drop(tmp);
        Ok(r)
    })
    .await?;
    let tables = match tables {
        Ok(t) => t,
        Err(e) => {
            h.raw("<p>Not a readable SQLite database: ").text(&e).raw("</p>");
            return Ok(());
        }
    };
    if tables.is_empty() {
        h.raw("<p>No tables.</p>");
    }
    h.raw("<table class=\"sqlite\"><caption>Tables</caption><thead><tr><th scope=\"col\">Table</th><th scope=\"col\">Rows</th><th scope=\"col\">Columns</th></tr></thead><tbody>");
    for t in &tables {
        h.raw("<tr><td>").text(&t.name).raw("</td><td>");
        match t.rows {
            Some(n) => h.fmt(format_args!("{n}")),
            None => h.raw("unknown (took too long)"),
        };
        h.raw("</td><td>");
        for (i, (c, ty)) in t.columns.iter().enumerate() {
            if i > 0 {
                h.raw(", ");
            }
            h.raw("<code>").text(c).raw("</code>");
            if !ty.is_empty() {
                h.raw(" ").text(ty);
            }
        }
        h.raw("</td></tr>");
    }
    h.raw("</tbody></table>");
    Ok(())
}

fn inspect(path: &std::path::Path) -> Result<Vec<Table>, String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + TIME_LIMIT;
    // Called every 10,000 virtual machine steps: true interrupts the query.
    conn.progress_handler(10_000, Some(move || Instant::now() > deadline)).map_err(|e| e.to_string())?;
    // A crafted schema must not run functions through views or triggers.
    conn.execute_batch("PRAGMA trusted_schema = OFF; PRAGMA query_only = ON;").map_err(|e| e.to_string())?;
    let mut names: Vec<String> = Vec::new();
    {
        let mut st = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .map_err(|e| e.to_string())?;
        let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(|e| e.to_string())?;
        for r in rows.take(TABLES_MAX) {
            names.push(r.map_err(|e| e.to_string())?);
        }
    }
    let mut out = Vec::new();
    for name in names {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let mut columns = Vec::new();
        if let Ok(mut st) = conn.prepare("SELECT name, type FROM pragma_table_info(?1)")
            && let Ok(rows) = st.query_map([&name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        {
            columns.extend(rows.take(COLUMNS_MAX).filter_map(Result::ok));
        }
        let rows = conn.query_row(&format!("SELECT count(*) FROM {quoted}"), [], |r| r.get::<_, i64>(0)).ok();
        out.push(Table { name, columns, rows });
    }
    Ok(out)
}
