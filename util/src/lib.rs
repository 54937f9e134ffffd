//! Small helpers that every AetherFS crate shares and that belong to none of
//! them. No dependencies beyond `std`.
//!
//! - [`one_line`]: an error and its causes as one line, for logs and for the
//!   one-line errors the command line prints.
//! - [`pseudo_random`]: deterministic test bytes, the one generator every
//!   test uses (the chunker's golden vectors are computed over it).

use std::error::Error;

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
