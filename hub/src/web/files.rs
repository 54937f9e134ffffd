//! A file of a version: its bytes (with Range), and previews of text, CSV,
//! JSON and SQLite files. Reads go through the version's tree and the
//! chunk cache the WebDAV views share (routes/dav.rs); previews read at most
//! [`PREVIEW_BYTES`] (JSON up to [`JSON_BYTES`], SQLite up to
//! [`super::sqlite::FILE_MAX`]).

use std::sync::Arc;

use aetherfs_format::Name;
use aetherfs_mounts::{DatasetFs, Kind};
use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::html::{Html, bytes, esc, page, q};
use super::pages::{Fail, PageResult, allowed, finish, open_version, resolve};
use super::session::Viewer;
use crate::Hub;
use crate::auth::Permission;

/// Bytes read for a text or CSV preview.
const PREVIEW_BYTES: u64 = 256 << 10;
/// Largest JSON file pretty-printed (larger ones show as text).
const JSON_BYTES: u64 = 1 << 20;
/// Rows of a CSV preview.
const CSV_ROWS: usize = 100;
/// Columns of a CSV preview.
const CSV_COLUMNS: usize = 50;
/// Bytes one read of a download asks for.
const READ_PIECE: u32 = 1 << 20;

/// A file node of a version.
pub(crate) struct Opened {
    pub fs: Arc<DatasetFs>,
    pub ino: u64,
    pub size: u64,
    pub digest: aetherfs_format::Digest,
    pub path: String,
    pub name: Name,
    pub version: aetherfs_format::Digest,
}

async fn open_file(hub: &Hub, viewer: &Viewer, raw: &str, reference: &str, req: &Parts) -> Result<Opened, Fail> {
    let name = allowed(viewer, raw, Permission::Read)?;
    let qs = super::query(&req.uri).map_err(|m| Fail(StatusCode::BAD_REQUEST, m))?;
    let path = qs.get("path").map(|p| p.trim_matches('/').to_string()).unwrap_or_default();
    let version = resolve(hub, &name, reference).await?;
    let fs = open_version(hub, &name, version).await?;
    let attr =
        fs.lookup_path(&path).map_err(|_| Fail(StatusCode::NOT_FOUND, format!("{path} is not in this version.")))?;
    if attr.kind != Kind::File {
        return Err(Fail(StatusCode::NOT_FOUND, format!("{path} is not a file.")));
    }
    Ok(Opened { fs, ino: attr.ino, size: attr.size, digest: attr.digest, path, name, version })
}

impl Opened {
    /// `len` bytes from `offset` (fewer at the end of the file).
    pub async fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, Fail> {
        let end = offset.saturating_add(len).min(self.size);
        let mut out = Vec::with_capacity(usize::try_from(end.saturating_sub(offset)).unwrap_or(0));
        let mut at = offset;
        while at < end {
            let want = u32::try_from((end - at).min(u64::from(READ_PIECE))).unwrap_or(READ_PIECE);
            let got = self.fs.read(self.ino, at, want).await.map_err(unreadable)?;
            if got.is_empty() {
                break;
            }
            at += got.len() as u64;
            out.extend_from_slice(&got);
        }
        Ok(out)
    }
}

fn unreadable(e: aetherfs_mounts::FsError) -> Fail {
    tracing::warn!(error = ?e, "web: a file read failed");
    Fail(StatusCode::SERVICE_UNAVAILABLE, "The file cannot be read right now.".into())
}

/// The single range of a `Range: bytes=…` header, against `size`:
/// `Ok(None)` for the whole file (absent, or a form answered whole),
/// `Err(())` when unsatisfiable.
fn range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None); // several ranges: answered whole (RFC 9110 allows it)
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return Ok(None) };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() { size } else { b.parse::<u64>().map_err(|_| ())?.saturating_add(1).min(size) };
        (start, end)
    };
    if start >= size || start >= end {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// `GET …/-/file/REF?path=`: the file's bytes, with Range.
pub(crate) async fn download(hub: &Hub, raw: &str, reference: &str, req: Request) -> Response {
    let viewer = Viewer::of(hub, req.headers());
    let (parts, _) = req.into_parts();
    let r = download_file(hub, &viewer, raw, reference, &parts).await;
    finish(&viewer, r)
}

async fn download_file(hub: &Hub, viewer: &Viewer, raw: &str, reference: &str, req: &Parts) -> PageResult {
    let f = open_file(hub, viewer, raw, reference, req).await?;
    let size = f.size;
    let asked = req.headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let etag = format!("\"{}\"", f.digest);
    // If-Range with another validator: the whole file.
    let if_range_ok = req.headers.get(header::IF_RANGE).is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let span = match range(asked.filter(|_| if_range_ok), size) {
        Ok(s) => s,
        Err(()) => {
            let mut res = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                res.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(res);
        }
    };
    let (start, end) = span.unwrap_or((0, size));
    let base = f.path.rsplit('/').next().unwrap_or("download").to_string();
    let ascii: String =
        base.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    let disposition = format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{}", percent_encoding_rfc5987(&base));
    let status = if span.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let body = if req.method == Method::HEAD {
        Body::empty()
    } else {
        let f = Arc::new(f);
        let stream = futures::stream::unfold(start, move |at| {
            let f = f.clone();
            async move {
                if at >= end {
                    return None;
                }
                let want = u32::try_from((end - at).min(u64::from(READ_PIECE))).unwrap_or(READ_PIECE);
                match f.fs.read(f.ino, at, want).await {
                    Ok(b) if b.is_empty() => None,
                    Ok(b) => {
                        let next = at + b.len() as u64;
                        Some((Ok::<Bytes, std::io::Error>(b), next))
                    }
                    Err(e) => Some((Err(std::io::Error::other(format!("{e:?}"))), end)),
                }
            }
        });
        Body::from_stream(stream)
    };
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if span.is_some()
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(res)
}

/// RFC 5987 `ext-value` characters.
fn percent_encoding_rfc5987(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a preview shows a file as.
#[derive(Debug, PartialEq, Eq)]
enum Shown {
    Csv(u8),
    Json,
    Sqlite,
    Text,
}

fn shown_as(path: &str, head: &[u8]) -> Shown {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    if head.starts_with(b"SQLite format 3\0") {
        return Shown::Sqlite;
    }
    match ext.as_str() {
        "csv" => Shown::Csv(b','),
        "tsv" => Shown::Csv(b'\t'),
        "json" => Shown::Json,
        _ => Shown::Text,
    }
}

/// `GET …/-/preview/REF?path=`.
pub(crate) async fn preview(hub: &Hub, raw: &str, reference: &str, req: Request) -> Response {
    let viewer = Viewer::of(hub, req.headers());
    let (parts, _) = req.into_parts();
    let r = preview_page(hub, &viewer, raw, reference, &parts).await;
    finish(&viewer, r)
}

async fn preview_page(hub: &Hub, viewer: &Viewer, raw: &str, reference: &str, req: &Parts) -> PageResult {
    let f = open_file(hub, viewer, raw, reference, req).await?;
    let head = f.read(0, 16).await?;
    let kind = shown_as(&f.path, &head);
    let tree = format!("/web/datasets/{}/-/tree/{}", f.name, f.version);
    let file_href = format!("/web/datasets/{}/-/file/{}?path={}", f.name, f.version, q(&f.path));
    let mut h = Html::new();
    h.fmt(format_args!(
        "<p>{} · <code>{}</code> · <a href=\"{}\" download>Download</a></p>",
        bytes(f.size),
        f.digest,
        esc(&file_href)
    ));
    match kind {
        Shown::Sqlite => super::sqlite::preview(hub, &f, &mut h).await?,
        Shown::Json if f.size <= JSON_BYTES => {
            let data = f.read(0, JSON_BYTES).await?;
            match serde_json::from_slice::<serde_json::Value>(&data) {
                Ok(v) => {
                    let mut pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
                    let cut = truncate_at(&mut pretty, PREVIEW_BYTES as usize);
                    h.raw("<pre class=\"preview\">").text(&pretty).raw("</pre>");
                    if cut {
                        h.raw("<p>… the rest is not shown.</p>");
                    }
                }
                Err(e) => {
                    h.raw("<p>Not valid JSON: ").text(&e.to_string()).raw("</p>");
                    text_preview(&mut h, &data, f.size);
                }
            }
        }
        Shown::Csv(sep) => {
            let data = f.read(0, PREVIEW_BYTES).await?;
            csv_table(&mut h, &data, sep, f.size > PREVIEW_BYTES);
        }
        Shown::Json | Shown::Text => {
            let data = f.read(0, PREVIEW_BYTES).await?;
            text_preview(&mut h, &data, f.size);
        }
    }
    let crumbs = vec![(format!("/web/datasets/{}", f.name), f.name.to_string()), (tree, "tree".to_string())];
    Ok(page(viewer, StatusCode::OK, &f.path, &crumbs, &h.into_string()))
}

fn truncate_at(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

fn text_preview(h: &mut Html, data: &[u8], size: u64) {
    if data.contains(&0) {
        h.raw("<p>A binary file: no preview.</p>");
        return;
    }
    let text = String::from_utf8_lossy(data);
    h.raw("<pre class=\"preview\">").text(&text).raw("</pre>");
    if size > data.len() as u64 {
        h.fmt(format_args!("<p>The first {} of {}.</p>", bytes(data.len() as u64), bytes(size)));
    }
}

/// The first rows of CSV text (RFC 4180 quoting), as a table.
fn csv_table(h: &mut Html, data: &[u8], sep: u8, partial: bool) {
    let text = String::from_utf8_lossy(data);
    let mut rows = parse_csv(&text, sep as char, CSV_ROWS + 1);
    // The last row of a partial read may be cut.
    if partial && rows.len() <= CSV_ROWS {
        rows.pop();
    }
    let Some((head, body)) = rows.split_first() else {
        h.raw("<p>Empty.</p>");
        return;
    };
    h.raw("<div class=\"scroll\"><table class=\"csv\"><caption>First rows</caption><thead><tr>");
    for c in head.iter().take(CSV_COLUMNS) {
        h.raw("<th scope=\"col\">").text(c).raw("</th>");
    }
    h.raw("</tr></thead><tbody>");
    for r in body.iter().take(CSV_ROWS) {
        h.raw("<tr>");
        for c in r.iter().take(CSV_COLUMNS) {
            h.raw("<td>").text(c).raw("</td>");
        }
        h.raw("</tr>");
    }
    h.raw("</tbody></table></div>");
}

fn parse_csv(text: &str, sep: char, max_rows: usize) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if rows.len() >= max_rows {
            return rows;
        }
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if field.is_empty() => quoted = true,
            c if c == sep && !quoted => row.push(std::mem::take(&mut field)),
            '\r' if !quoted => {}
            '\n' if !quoted => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            c => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows.truncate(max_rows);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(range(None, 10), Ok(None));
        assert_eq!(range(Some("bytes=0-3"), 10), Ok(Some((0, 4))));
        assert_eq!(range(Some("bytes=5-"), 10), Ok(Some((5, 10))));
        assert_eq!(range(Some("bytes=-3"), 10), Ok(Some((7, 10))));
        assert_eq!(range(Some("bytes=8-100"), 10), Ok(Some((8, 10))));
        assert_eq!(range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(range(Some("bytes=x-"), 10), Err(()));
        assert_eq!(range(Some("bytes=0-1,3-4"), 10), Ok(None));
        assert_eq!(range(Some("items=0-1"), 10), Ok(None));
    }

    #[test]
    fn csv_quotes_and_separators() {
        let rows = parse_csv("a,b\n\"x, y\",\"say \"\"hi\"\"\"\r\n1,2", ',', 10);
        assert_eq!(rows, vec![vec!["a", "b"], vec!["x, y", "say \"hi\""], vec!["1", "2"]]);
        assert_eq!(parse_csv("a\nb\nc\n", ',', 2).len(), 2);
    }

    #[test]
    fn kinds() {
        assert_eq!(shown_as("x/db.bin", b"SQLite format 3\0"), Shown::Sqlite);
        assert_eq!(shown_as("a.CSV", b"a,b"), Shown::Csv(b','));
        assert_eq!(shown_as("a.json", b"{}"), Shown::Json);
        assert_eq!(shown_as("README", b"hi"), Shown::Text);
    }
}
