//! A small HTML writer whose only way to add untrusted text is escaped:
//! templates are `&'static str` (written by us), everything else goes
//! through [`esc`] (text and attribute values) or [`q`] (query values).

use std::fmt::{self, Display, Write};

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::session::Viewer;
use crate::Hub;

/// Text escaped for HTML content and quoted attribute values.
pub(crate) struct Esc<'a>(&'a str);

pub(crate) fn esc(s: &str) -> Esc<'_> {
    Esc(s)
}

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = 0;
        for (i, c) in self.0.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&self.0[last..i])?;
            f.write_str(rep)?;
            last = i + c.len_utf8();
        }
        f.write_str(&self.0[last..])
    }
}

/// A query-string value, percent-encoded (then safe in an attribute too).
pub(crate) fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An HTML body being written.
#[derive(Default)]
pub(crate) struct Html(String);

impl Html {
    pub fn new() -> Self {
        Self(String::with_capacity(8 << 10))
    }

    /// A fixed piece of markup.
    pub fn raw(&mut self, s: &'static str) -> &mut Self {
        self.0.push_str(s);
        self
    }

    /// Escaped text.
    pub fn text(&mut self, s: &str) -> &mut Self {
        let _ = write!(self.0, "{}", esc(s));
        self
    }

    /// Markup from a template whose arguments are already escaped ([`esc`], [`q`], numbers).
    pub fn fmt(&mut self, args: fmt::Arguments<'_>) -> &mut Self {
        let _ = self.0.write_fmt(args);
        self
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// `1.5 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// The page's security headers: no script at all, styles and forms only from here.
pub(crate) fn secure_headers(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
}

/// A whole page: header with the viewer and sign-out, then `body`.
pub(crate) fn page(
    viewer: &Viewer,
    status: StatusCode,
    title: &str,
    crumbs: &[(String, String)],
    body: &str,
) -> Response {
    let mut h = Html::new();
    h.raw("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        .raw("<link rel=\"stylesheet\" href=\"/web/style.css\"><title>")
        .text(title)
        .raw(" · AetherFS</title></head><body><header><nav aria-label=\"site\"><a class=\"brand\" href=\"/\">AetherFS</a>");
    for (href, label) in crumbs {
        h.fmt(format_args!(" <span aria-hidden=\"true\">/</span> <a href=\"{}\">{}</a>", esc(href), esc(label)));
    }
    h.raw("</nav><div class=\"who\">");
    match viewer.who() {
        Some(who) => {
            h.fmt(format_args!(
                "<span>Signed in as <strong>{}</strong></span> <form method=\"post\" action=\"/web/logout\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form>",
                esc(who),
                esc(&viewer.csrf())
            ));
        }
        None if viewer.can_sign_in() => {
            h.raw("<a href=\"/web/login\">Sign in</a>");
        }
        None => {}
    }
    h.raw("</div></header><main><h1>").text(title).raw("</h1>");
    let mut out = h.into_string();
    out.push_str(body);
    out.push_str("</main></body></html>\n");
    let mut res =
        (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], out).into_response();
    secure_headers(&mut res);
    viewer.set_cookie(&mut res);
    res
}

/// A page that says what went wrong (403, 404, 400…).
pub(crate) fn error_page(hub: &Hub, req: &Request, status: StatusCode, message: &str) -> Response {
    let viewer = Viewer::of(hub, req.headers());
    message_page(&viewer, status, message)
}

pub(crate) fn message_page(viewer: &Viewer, status: StatusCode, message: &str) -> Response {
    let title = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::UNAUTHORIZED => "Sign in needed",
        StatusCode::BAD_REQUEST => "Bad request",
        _ => "Something went wrong",
    };
    let mut h = Html::new();
    h.raw("<p class=\"message\">").text(message).raw("</p>");
    if status == StatusCode::UNAUTHORIZED && viewer.can_sign_in() {
        h.raw("<p><a href=\"/web/login\">Sign in</a></p>");
    }
    h.raw("<p><a href=\"/\">Back to the datasets</a></p>");
    page(viewer, status, title, &[], &h.into_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_html_treats_specially() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>").to_string(),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        assert_eq!(esc("héllo").to_string(), "héllo");
        assert_eq!(q("a b&c=<d>/é"), "a+b%26c%3D%3Cd%3E%2F%C3%A9");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12), "12 B");
    }
}
