//! Access control: who may read, write or administer which datasets.
//!
//! A rule names dataset patterns and, per permission, the identities granted
//! it. Permissions are ordered (admin implies write implies read) and rules
//! only grant: a caller holds the highest permission any matching rule gives
//! it, and nothing no rule gives it. There are no deny rules, so the order of
//! rules does not matter.
//!
//! Patterns are globs over name segments: `*` matches within one segment
//! (`team-*`, `*`), `**` as a whole segment matches any number of segments
//! (zero included), anything else matches itself.

use std::fmt;

/// What a request needs on a dataset. Ordered: each implies those before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    /// Resolve tags, read history and manifests, fetch packs.
    Read,
    /// Upload packs, publish manifests, move tags.
    Write,
    /// Delete tags (and, later, garbage collection).
    Admin,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        })
    }
}

/// Who is calling, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The subject (`sub` or the configured claim) or the basic-auth user name.
    pub subject: String,
    /// The issuer URL, or `basic` for a basic-auth user.
    pub issuer: String,
    pub groups: Vec<String>,
}

/// The literal issuer of basic-auth identities in `user:basic#NAME`.
pub(crate) const BASIC_ISSUER: &str = "basic";

/// Why a grantee (`user:…`, `group:…`, …) in a rule is refused.
#[derive(Debug, thiserror::Error)]
pub enum GranteeError {
    #[error("{0:?}: empty subject")]
    EmptySubject(String),
    #[error("{grantee:?}: {issuer} is not a configured issuer")]
    UnknownIssuer { grantee: String, issuer: String },
    #[error("{0:?}: empty group")]
    EmptyGroup(String),
    #[error("{0:?}: expected anonymous, authenticated, user:SUBJECT, user:ISSUER#SUBJECT or group:NAME")]
    Unknown(String),
}

/// Why a dataset pattern in a rule is refused.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("empty dataset pattern")]
    Empty,
    #[error("dataset pattern {0:?} has an empty segment")]
    EmptySegment(String),
    #[error("dataset pattern {0:?}: `**` must be a whole segment")]
    PartialDoubleStar(String),
    #[error("dataset pattern {0:?}: names are lower-case letters, digits and . _ -; globs add * and **")]
    Character(String),
}

/// An identity a rule grants something to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Grantee {
    /// Everyone, with or without credentials.
    Anonymous,
    /// Anyone who presented valid credentials.
    Authenticated,
    /// A subject from any identity source, or from one (`user:ISSUER#SUB`).
    User {
        issuer: Option<String>,
        subject: String,
    },
    Group(String),
}

impl Grantee {
    /// `anonymous`, `authenticated`, `user:SUB`, `user:ISSUER#SUB` (ISSUER a
    /// configured issuer URL or `basic`), `group:NAME`.
    pub fn parse(s: &str, issuers: &[&str]) -> Result<Grantee, GranteeError> {
        match s {
            "anonymous" => return Ok(Grantee::Anonymous),
            "authenticated" => return Ok(Grantee::Authenticated),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix("user:") {
            if rest.is_empty() {
                return Err(GranteeError::EmptySubject(s.to_string()));
            }
            if let Some((iss, sub)) = rest.split_once('#')
                && (iss == BASIC_ISSUER || iss.starts_with("https://") || iss.starts_with("http://"))
            {
                if iss != BASIC_ISSUER && !issuers.contains(&iss) {
                    return Err(GranteeError::UnknownIssuer { grantee: s.to_string(), issuer: iss.to_string() });
                }
                if sub.is_empty() {
                    return Err(GranteeError::EmptySubject(s.to_string()));
                }
                return Ok(Grantee::User { issuer: Some(iss.to_string()), subject: sub.to_string() });
            }
            return Ok(Grantee::User { issuer: None, subject: rest.to_string() });
        }
        if let Some(g) = s.strip_prefix("group:") {
            if g.is_empty() {
                return Err(GranteeError::EmptyGroup(s.to_string()));
            }
            return Ok(Grantee::Group(g.to_string()));
        }
        Err(GranteeError::Unknown(s.to_string()))
    }

    fn matches(&self, who: Option<&Identity>) -> bool {
        match (self, who) {
            (Grantee::Anonymous, _) => true,
            (Grantee::Authenticated, Some(_)) => true,
            (Grantee::User { issuer, subject }, Some(id)) => {
                id.subject == *subject && issuer.as_ref().is_none_or(|i| *i == id.issuer)
            }
            (Grantee::Group(g), Some(id)) => id.groups.iter().any(|x| x == g),
            (_, None) => false,
        }
    }
}

/// A dataset name pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// `**`: any number of whole segments.
    Any,
    /// A glob within one segment (`*` = any run of characters).
    Glob(String),
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, PatternError> {
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        let mut segments = Vec::new();
        for seg in s.split('/') {
            if seg.is_empty() {
                return Err(PatternError::EmptySegment(s.to_string()));
            }
            if seg == "**" {
                segments.push(Segment::Any);
            } else if seg.contains("**") {
                return Err(PatternError::PartialDoubleStar(s.to_string()));
            } else if !seg.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-*".contains(&c)) {
                return Err(PatternError::Character(s.to_string()));
            } else {
                segments.push(Segment::Glob(seg.to_string()));
            }
        }
        Ok(Pattern { text: s.to_string(), segments })
    }

    /// `**`: every dataset.
    pub fn is_everything(&self) -> bool {
        matches!(self.segments.as_slice(), [Segment::Any])
    }

    pub fn matches(&self, name: &str) -> bool {
        let parts: Vec<&str> = name.split('/').collect();
        match_segments(&self.segments, &parts)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn match_segments(pat: &[Segment], name: &[&str]) -> bool {
    match pat.split_first() {
        None => name.is_empty(),
        Some((Segment::Any, rest)) => (0..=name.len()).any(|skip| match_segments(rest, &name[skip..])),
        Some((Segment::Glob(g), rest)) => name
            .split_first()
            .is_some_and(|(first, tail)| glob(g.as_bytes(), first.as_bytes()) && match_segments(rest, tail)),
    }
}

/// `*` matches any run of bytes (the name has no '/' here); the rest literally.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    // Iterative matching with backtracking to the last star: linear in practice.
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// One `[[rule]]`.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub patterns: Vec<Pattern>,
    pub read: Vec<Grantee>,
    pub write: Vec<Grantee>,
    pub admin: Vec<Grantee>,
}

impl Rule {
    /// The highest permission this rule gives `who`, whatever the dataset.
    fn grants(&self, who: Option<&Identity>) -> Option<Permission> {
        let any = |list: &[Grantee]| list.iter().any(|g| g.matches(who));
        if any(&self.admin) {
            Some(Permission::Admin)
        } else if any(&self.write) {
            Some(Permission::Write)
        } else if any(&self.read) {
            Some(Permission::Read)
        } else {
            None
        }
    }

    fn covers(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(name))
    }
}

/// Every rule of a configuration. Empty: nothing is granted to anyone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    pub fn new(rules: Vec<Rule>) -> Policy {
        Policy { rules }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The highest permission `who` (`None`: no credentials) holds on `name`.
    pub fn permission(&self, who: Option<&Identity>, name: &str) -> Option<Permission> {
        self.rules.iter().filter(|r| r.covers(name)).filter_map(|r| r.grants(who)).max()
    }

    pub fn allows(&self, who: Option<&Identity>, need: Permission, name: &str) -> bool {
        self.permission(who, name).is_some_and(|p| p >= need)
    }

    /// Whether `who` holds `need` on every dataset: a rule for `**` grants it.
    pub fn allows_everywhere(&self, who: Option<&Identity>, need: Permission) -> bool {
        self.rules
            .iter()
            .filter(|r| r.patterns.iter().any(Pattern::is_everything))
            .filter_map(|r| r.grants(who))
            .any(|p| p >= need)
    }

    /// Whether `who` holds `need` on at least one dataset pattern.
    pub fn allows_somewhere(&self, who: Option<&Identity>, need: Permission) -> bool {
        self.rules.iter().filter_map(|r| r.grants(who)).any(|p| p >= need)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> Pattern {
        Pattern::parse(s).expect(s)
    }

    #[test]
    fn globs() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("team-a/*", &["team-a/x", "team-a/geo.ip"], &["team-a", "team-a/x/y", "team-b/x", "team-ab/x"]),
            ("team-a/**", &["team-a", "team-a/x", "team-a/x/y/z"], &["team-ab/x", "team-b"]),
            ("**", &["a", "a/b/c"], &[]),
            ("**/geoip", &["geoip", "acme/geoip", "a/b/geoip"], &["geoip2", "acme/geoip/x"]),
            ("team-*/shared", &["team-a/shared", "team-/shared"], &["team-a/other", "x/team-a/shared"]),
            ("acme/geoip", &["acme/geoip"], &["acme/geoip2", "acme", "acme/geoip/x"]),
            ("*-prod/*", &["eu-prod/x"], &["prod/x", "eu-prod"]),
            ("a*b*c", &["abc", "axxbyyc", "abbc"], &["ab", "acb"]),
            ("a/**/z", &["a/z", "a/b/z", "a/b/c/z"], &["a", "z", "a/z/y"]),
        ];
        for (p, yes, no) in cases {
            let pattern = pat(p);
            for n in *yes {
                assert!(pattern.matches(n), "{p} should match {n}");
            }
            for n in *no {
                assert!(!pattern.matches(n), "{p} should not match {n}");
            }
        }
        for bad in ["", "a//b", "a/**b", "A/b", "a/b?", "/a"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn id(sub: &str, iss: &str, groups: &[&str]) -> Identity {
        Identity { subject: sub.into(), issuer: iss.into(), groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    #[test]
    fn grantees() {
        let issuers = ["https://idp.example"];
        let g = |s: &str| Grantee::parse(s, &issuers).expect(s);
        let alice = id("alice", "https://idp.example", &["team-a"]);
        let basic_alice = id("alice", BASIC_ISSUER, &[]);
        assert!(g("anonymous").matches(None));
        assert!(g("anonymous").matches(Some(&alice)));
        assert!(!g("authenticated").matches(None));
        assert!(g("authenticated").matches(Some(&alice)));
        assert!(g("user:alice").matches(Some(&alice)) && g("user:alice").matches(Some(&basic_alice)));
        assert!(g("user:https://idp.example#alice").matches(Some(&alice)));
        assert!(!g("user:https://idp.example#alice").matches(Some(&basic_alice)));
        assert!(g("user:basic#alice").matches(Some(&basic_alice)));
        assert!(!g("user:basic#alice").matches(Some(&alice)));
        assert!(g("group:team-a").matches(Some(&alice)) && !g("group:team-b").matches(Some(&alice)));
        assert!(!g("user:alice").matches(None) && !g("group:team-a").matches(None));
        // A subject that merely contains '#' is a plain subject.
        assert_eq!(g("user:a#b"), Grantee::User { issuer: None, subject: "a#b".into() });
        // Kubernetes subjects contain ':'.
        assert_eq!(
            g("user:system:serviceaccount:ns:sa"),
            Grantee::User { issuer: None, subject: "system:serviceaccount:ns:sa".into() }
        );
        for bad in ["user:", "group:", "everyone", "user:https://other.example#x", "user:basic#"] {
            assert!(Grantee::parse(bad, &issuers).is_err(), "{bad}");
        }
    }

    #[test]
    fn permissions_combine_and_imply() {
        let g = |s: &str| Grantee::parse(s, &[]).expect(s);
        let policy = Policy::new(vec![
            Rule {
                patterns: vec![pat("team-a/**")],
                read: vec![g("group:readers")],
                write: vec![g("group:team-a")],
                admin: vec![g("group:admins")],
            },
            Rule { patterns: vec![pat("public/*")], read: vec![g("anonymous")], write: vec![], admin: vec![] },
            Rule { patterns: vec![pat("**")], read: vec![], write: vec![], admin: vec![g("user:root")] },
        ]);
        let reader = id("r", "i", &["readers"]);
        let writer = id("w", "i", &["team-a"]);
        let root = id("root", "i", &[]);
        use Permission::*;
        assert_eq!(policy.permission(Some(&reader), "team-a/x"), Some(Read));
        assert_eq!(policy.permission(Some(&writer), "team-a/x"), Some(Write));
        assert_eq!(policy.permission(Some(&writer), "team-b/x"), None);
        assert_eq!(policy.permission(Some(&writer), "public/x"), Some(Read));
        assert_eq!(policy.permission(None, "public/x"), Some(Read));
        assert_eq!(policy.permission(None, "team-a/x"), None);
        assert_eq!(policy.permission(Some(&root), "anything/at/all"), Some(Admin));
        assert!(policy.allows(Some(&writer), Read, "team-a/x"));
        assert!(!policy.allows(Some(&writer), Admin, "team-a/x"));
        assert!(policy.allows_somewhere(Some(&writer), Write));
        assert!(!policy.allows_somewhere(Some(&reader), Write));
        assert!(policy.allows_somewhere(None, Read));
        assert!(!policy.allows_somewhere(None, Write));
        assert!(!Policy::default().allows_somewhere(Some(&root), Read));
    }
}
