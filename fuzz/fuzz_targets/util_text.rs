//! Small parsers of untrusted text in aetherfs-util: `Host` headers (the
//! DNS-rebinding check), durations and CIDR ranges from configuration, and
//! the quoting of paths for terminals and logs. None panics; a duration or
//! a range prints back to itself; a quoted string holds no control or
//! bidi character and unquotes to exactly the input (so no path prints as
//! another); a host that passes with no allowed names is an address or a
//! loopback name.
#![no_main]

use std::borrow::Cow;

use aetherfs_util::{Cidr, format_duration, host_allowed, parse_duration, quote};
use libfuzzer_sys::fuzz_target;

/// The inverse of [`quote`]'s escapes.
fn unquote(q: &str) -> Option<String> {
    let inner = q.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            assert!(c != '"', "an unescaped quote inside {q:?}");
            out.push(c);
            continue;
        }
        match it.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            'u' => {
                let rest: String = it.by_ref().take_while(|&c| c != '}').collect();
                let hex = rest.strip_prefix('{')?;
                out.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

fn deceptive(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };

    match quote(s) {
        Cow::Borrowed(b) => {
            assert_eq!(b, s);
            assert!(!s.chars().any(|c| c.is_control() || deceptive(c) || c == '"' || c == '\\'));
        }
        Cow::Owned(q) => {
            assert!(!q.chars().any(|c| c.is_control() || deceptive(c)), "{q:?} still holds a control character");
            assert_eq!(unquote(&q).as_deref(), Some(s), "{q:?} does not unquote to the input");
        }
    }

    let none: [String; 0] = [];
    if host_allowed(s, &none) {
        let h = s.trim();
        let name = match h.rsplit_once(':') {
            Some((n, _)) if !h.starts_with('[') => n,
            _ => h,
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        assert!(
            h.starts_with('[')
                || name.parse::<std::net::Ipv4Addr>().is_ok()
                || name == "localhost"
                || name.ends_with(".localhost"),
            "{s:?} passed without being an address or a loopback name"
        );
        assert!(host_allowed(s, &["*".to_string()]));
    }

    if let Ok(d) = parse_duration(s) {
        assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{s:?}");
    }

    if let Ok(c) = s.parse::<Cidr>() {
        let back: Cidr = c.to_string().parse().expect("a range prints to a range");
        assert_eq!(back, c);
        assert!(c.covers(&c));
    }
});
