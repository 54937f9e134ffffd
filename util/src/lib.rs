//! Small helpers that every AetherFS crate shares and that belong to none of
//! them. No dependencies beyond `std`.
//!
//! - [`one_line`]: an error and its causes as one line, for logs and for the
//!   one-line errors the command line prints.
//! - [`pseudo_random`]: deterministic test bytes, the one generator every
//!   test uses (the chunker's golden vectors are computed over it).
//! - [`parse_duration`] / [`format_duration`]: `90s`, `10m`, `1h30m`, `7d`, as
//!   flags and configuration files write them.
//! - [`host_allowed`]: the Host check that keeps DNS rebinding away from
//!   servers without authentication.
//! - [`quote`]: a dataset path (or any untrusted text) safe to print on a
//!   terminal or in a log line.
//! - [`range`]: the one parser of HTTP `Range` headers.
//! - [`memory`]: the process's resident and peak memory.

use std::error::Error;

pub mod memory;
pub mod range;

/// `e` and its chain of causes joined with `": "`, skipping a cause whose
/// text the line already holds (many errors repeat their source's message).
pub fn one_line(e: &(dyn Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        push_cause(&mut line, &c.to_string());
        cur = c.source();
    }
    line
}

/// Appends one cause to an error line unless the line already says it.
pub fn push_cause(line: &mut String, cause: &str) {
    if cause.is_empty() || line.contains(cause) {
        return;
    }
    if !line.is_empty() {
        line.push_str(": ");
    }
    line.push_str(cause);
}

/// Deterministic, incompressible pseudo-random bytes (xorshift64*): the same
/// `(len, seed)` gives the same bytes on every machine and in every version.
/// Distinct seeds give distinct chunks.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    // xorshift never leaves zero: seed 0 starts elsewhere; every other seed is its own stream.
    let mut x = if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed };
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn joins_causes_once() {
        let e = E(
            "cannot fetch: connection refused",
            Some(Box::new(E("connection refused", Some(Box::new(E("os error 111", None)))))),
        );
        assert_eq!(one_line(&e), "cannot fetch: connection refused: os error 111");
        assert_eq!(one_line(&E("alone", None)), "alone");
    }

    #[test]
    fn bytes_are_stable() {
        let a = pseudo_random(1000, 7);
        assert_eq!(a, pseudo_random(1000, 7));
        assert_ne!(a, pseudo_random(1000, 9));
        assert_eq!(a.len(), 1000);
        // Pinned: the chunker's golden vectors are computed over these bytes.
        assert_eq!(hex(&a[..8]), "ae2e8d727faffbd1");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError(pub String);

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid duration {:?}: use a number with a unit, e.g. 0s, 90s, 10m, 1h30m, 7d", self.0)
    }
}

impl Error for DurationError {}

/// Parses `0`, `90s`, `10m`, `1h30m`, `7d`, `2w` (units s, m, h, d, w; a
/// bare number only for zero). At most 100 years.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, DurationError> {
    let err = || DurationError(s.to_string());
    let t = s.trim();
    if t == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if t.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut num: Option<u64> = None;
    for c in t.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(num.unwrap_or(0).checked_mul(10).and_then(|n| n.checked_add(u64::from(d))).ok_or_else(err)?);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(err()),
        };
        let n = num.take().ok_or_else(err)?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(err)?;
    }
    if num.is_some() || total > 100 * 365 * 86_400 {
        return Err(err());
    }
    Ok(std::time::Duration::from_secs(total))
}

/// The shortest form [`parse_duration`] reads back: `1h30m`, `7d`, `0s`.
pub fn format_duration(d: std::time::Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

#[cfg(test)]
mod duration_tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        for (s, secs) in
            [("0", 0), ("0s", 0), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("7d", 604_800), ("2w", 1_209_600)]
        {
            assert_eq!(parse_duration(s), Ok(std::time::Duration::from_secs(secs)), "{s}");
        }
        for bad in ["", "5", "h", "1x", "1h5", "-1s", "99999999999999999999d", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
        for secs in [0, 59, 90, 3600, 5400, 90_061] {
            let d = std::time::Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}

/// Characters that reorder or hide text on display: the Unicode bidi
/// embeddings, overrides and isolates, and the invisible marks.
fn is_deceptive(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `s` as it may be printed: unchanged when it holds nothing a terminal or a
/// reader could misread, else in double quotes with C escapes (`\n`, `\t`,
/// `\"`, `\\`) and `\u{…}` for other control and bidi characters, as git
/// quotes paths. A path that needed quoting never prints as another path.
pub fn quote(s: &str) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| c.is_control() || is_deceptive(c) || c == '"' || c == '\\';
    if !s.chars().any(needs) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    out.push('"');
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || is_deceptive(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod quote_tests {
    use super::quote;

    #[test]
    fn quotes_what_a_terminal_would_misread() {
        assert_eq!(quote("data/été-日本語.csv"), "data/été-日本語.csv");
        assert_eq!(quote("a b"), "a b");
        assert_eq!(quote("evil\n\x1b[31mred"), "\"evil\\n\\u{001b}[31mred\"");
        assert_eq!(quote("invoice\u{202E}fdp.exe"), "\"invoice\\u{202e}fdp.exe\"");
        assert_eq!(quote("back\\slash\"q"), "\"back\\\\slash\\\"q\"");
        assert_eq!(quote("cr\rlf"), "\"cr\\rlf\"");
        // Quoting is unambiguous: a quoted path never equals a plain one.
        assert_ne!(quote("\"x\""), "\"x\"");
    }
}

/// Whether a request's `Host` (or `:authority`) may reach a server without
/// authentication. A web page can make a browser send requests to a local
/// server under the page's own host name by rebinding that name's DNS to
/// 127.0.0.1 (DNS rebinding); the Host header still carries the page's name.
/// So: IP literals (v4, or v6 in brackets) and `localhost` (and
/// `*.localhost`, which resolves to loopback by definition) are accepted,
/// as is any name in `allowed` (compared without port, case and trailing
/// dot; `"*"` accepts every host). Anything else is refused.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim();
    if host.starts_with('[') {
        // [v6]:port — an address, not a name.
        return host.find(']').is_some_and(|end| host[1..end].parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = match host.rsplit_once(':') {
        Some((n, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => n,
        Some(_) => return false,
        None => host,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return false;
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() || name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    allowed.iter().any(|a| a == "*" || a.trim_end_matches('.').eq_ignore_ascii_case(&name))
}

#[cfg(test)]
mod host_tests {
    use super::host_allowed;

    #[test]
    fn only_addresses_loopback_names_and_configured_names_pass() {
        let none: Vec<String> = Vec::new();
        for ok in
            ["127.0.0.1:7070", "127.0.0.1", "10.1.2.3:80", "[::1]:7070", "localhost:7070", "LOCALHOST.", "a.localhost"]
        {
            assert!(host_allowed(ok, &none), "{ok} refused");
        }
        for bad in [
            "evil.example",
            "evil.example:7070",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "",
            ":80",
            "[::1",
            "a:b",
        ] {
            assert!(!host_allowed(bad, &none), "{bad} accepted");
        }
        let names = vec!["hub.internal".to_string()];
        assert!(host_allowed("HUB.internal:7070", &names));
        assert!(!host_allowed("other.internal", &names));
        assert!(host_allowed("anything", &["*".to_string()]));
    }
}

/// An IP address range in CIDR notation (`10.0.0.0/8`, `::1/128`); a bare
/// address is the range of that one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: std::net::IpAddr,
    prefix: u8,
}

/// Why a CIDR range did not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid address range {0:?}: write an address or ADDRESS/PREFIX, such as 10.0.0.0/8 or ::1/128")]
pub struct CidrError(String);

impl Cidr {
    /// Every IPv4 address.
    pub const ANY_V4: Cidr = Cidr { net: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), prefix: 0 };

    /// 127.0.0.0/8 and ::1: every address a loopback client connects from.
    pub const LOOPBACK: [Cidr; 2] = [
        Cidr { net: std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)), prefix: 8 },
        Cidr { net: std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), prefix: 128 },
    ];

    fn bits(ip: std::net::IpAddr) -> (u128, u8) {
        match ip {
            std::net::IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            std::net::IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    /// Whether `ip` lies in the range; an IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`) counts as the IPv4 address it carries.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        let ((net, width), (addr, addr_width)) = (Self::bits(self.net), Self::bits(ip));
        if width != addr_width {
            return false;
        }
        let host_bits = u32::from(width - self.prefix);
        net.checked_shr(host_bits).unwrap_or(0) == addr.checked_shr(host_bits).unwrap_or(0)
    }

    /// Whether this range holds every address of `other`.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.prefix <= other.prefix && self.contains(other.net)
    }
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let bad = || CidrError(s.to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let net: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let width = Self::bits(net).1;
        let prefix = match prefix {
            None => width,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= width).ok_or_else(bad)?,
        };
        // Normalize: the network address, host bits cleared.
        let host_bits = u32::from(width - prefix);
        let masked = Self::bits(net).0.checked_shr(host_bits).unwrap_or(0).checked_shl(host_bits).unwrap_or(0);
        let net = match net {
            std::net::IpAddr::V4(_) => std::net::IpAddr::V4(std::net::Ipv4Addr::from(masked as u32)),
            std::net::IpAddr::V6(_) => std::net::IpAddr::V6(std::net::Ipv6Addr::from(masked)),
        };
        Ok(Cidr { net, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod cidr_tests {
    use super::Cidr;

    fn c(s: &str) -> Cidr {
        s.parse().expect(s)
    }

    #[test]
    fn ranges_parse_normalize_and_contain() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect(s);
        assert_eq!(c("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(c("192.168.1.7").to_string(), "192.168.1.7/32");
        assert!(c("10.0.0.0/8").contains(ip("10.255.0.1")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("0.0.0.0/0").contains(ip("8.8.8.8")) && !c("0.0.0.0/0").contains(ip("::2")));
        assert!(c("::/0").contains(ip("2001:db8::1")));
        assert!(c("127.0.0.0/8").contains(ip("::ffff:127.0.0.5")), "v4-mapped counts as v4");
        assert!(Cidr::LOOPBACK.iter().any(|r| r.contains(ip("::1"))));
        assert!(c("127.0.0.0/8").covers(&c("127.1.0.0/16")) && !c("127.1.0.0/16").covers(&c("127.0.0.0/8")));
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0/8", "10.0.0.0/-1", "host/8", "1.2.3.4/"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
