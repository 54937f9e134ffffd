//! Password guessing, slowed down: basic-auth failures are counted per user
//! and per client address in fixed windows, and once a count reaches its
//! limit, further attempts are refused with 429 and `Retry-After` until the
//! window ends, before any hash is computed.
//!
//! A user's limit does not lock the real user out: an address the user
//! signed in from successfully (within [`TRUSTED_FOR`]) is exempt from that
//! user's limit, though never from its own address limit. A user signing in
//! from a fresh address while someone guesses their password waits at most
//! one window.
//!
//! Memory is bounded: at most [`MAX_TRACKED`] entries per table, expired
//! entries pruned first; user names are kept to their first 64 characters.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a successful sign-in exempts its address from the user's limit.
pub const TRUSTED_FOR: Duration = Duration::from_secs(24 * 3600);
const MAX_TRACKED: usize = 100_000;
const NAME_MAX: usize = 64;

/// `[basic]` limits of the auth configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureLimits {
    /// Failures for one user name (from addresses it has not signed in from).
    pub per_user: u32,
    /// Failures from one client address, whatever the user name.
    pub per_address: u32,
    pub window: Duration,
}

impl Default for FailureLimits {
    fn default() -> Self {
        Self { per_user: 10, per_address: 30, window: Duration::from_secs(60) }
    }
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

#[derive(Default)]
struct Tables {
    users: HashMap<String, Window>,
    addresses: HashMap<IpAddr, Window>,
    trusted: HashMap<(String, IpAddr), Instant>,
}

pub struct Throttle {
    limits: FailureLimits,
    tables: Mutex<Tables>,
}

fn key(user: &str) -> String {
    user.chars().take(NAME_MAX).collect()
}

impl Throttle {
    pub fn new(limits: FailureLimits) -> Self {
        Self { limits, tables: Mutex::new(Tables::default()) }
    }

    /// `Err(wait)` when an attempt for `user` from `addr` must be refused now.
    pub fn check(&self, user: &str, addr: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let t = self.tables.lock();
        let window = self.limits.window;
        let blocked = |w: Option<&Window>, limit: u32| {
            w.filter(|w| w.failures >= limit && now.duration_since(w.start) < window)
                .map(|w| window.saturating_sub(now.duration_since(w.start)))
        };
        if let Some(wait) = blocked(addr.and_then(|a| t.addresses.get(&a)), self.limits.per_address) {
            return Err(wait);
        }
        let name = key(user);
        let trusted = addr
            .and_then(|a| t.trusted.get(&(name.clone(), a)))
            .is_some_and(|at| now.duration_since(*at) < TRUSTED_FOR);
        if !trusted && let Some(wait) = blocked(t.users.get(&name), self.limits.per_user) {
            return Err(wait);
        }
        Ok(())
    }

    pub fn failed(&self, user: &str, addr: Option<IpAddr>, now: Instant) {
        let mut t = self.tables.lock();
        let window = self.limits.window;
        bump(&mut t.users, key(user), now, window);
        if let Some(a) = addr {
            bump(&mut t.addresses, a, now, window);
        }
    }

    pub fn succeeded(&self, user: &str, addr: Option<IpAddr>, now: Instant) {
        let Some(a) = addr else { return };
        let mut t = self.tables.lock();
        if t.trusted.len() >= MAX_TRACKED {
            t.trusted.retain(|_, at| now.duration_since(*at) < TRUSTED_FOR);
        }
        if t.trusted.len() < MAX_TRACKED {
            t.trusted.insert((key(user), a), now);
        }
    }
}

fn bump<K: std::hash::Hash + Eq>(table: &mut HashMap<K, Window>, k: K, now: Instant, window: Duration) {
    if table.len() >= MAX_TRACKED && !table.contains_key(&k) {
        table.retain(|_, w| now.duration_since(w.start) < window);
        if table.len() >= MAX_TRACKED {
            // Full of live windows: this key goes uncounted; the address
            // limit still holds whoever floods the table.
            return;
        }
    }
    let w = table.entry(k).or_insert(Window { start: now, failures: 0 });
    if now.duration_since(w.start) >= window {
        *w = Window { start: now, failures: 0 };
    }
    w.failures = w.failures.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    fn throttle() -> Throttle {
        Throttle::new(FailureLimits { per_user: 3, per_address: 5, window: Duration::from_secs(60) })
    }

    #[test]
    fn a_user_is_limited_but_not_from_an_address_it_signed_in_from() {
        let t = throttle();
        let now = Instant::now();
        t.succeeded("alice", B, now);
        for _ in 0..3 {
            assert_eq!(t.check("alice", A, now), Ok(()));
            t.failed("alice", A, now);
        }
        let wait = t.check("alice", A, now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(60));
        // Another fresh address is limited too; the known one is not.
        assert!(t.check("alice", Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 9, 9, 9))), now).is_err());
        assert_eq!(t.check("alice", B, now), Ok(()));
        assert_eq!(t.check("bob", A, now), Ok(()));
        // The window ends.
        let later = now + Duration::from_secs(61);
        assert_eq!(t.check("alice", A, later), Ok(()));
        assert_eq!(t.check("alice", A, now + Duration::from_secs(45)), Err(Duration::from_secs(15)));
    }

    #[test]
    fn an_address_is_limited_across_user_names_even_for_a_known_user() {
        let t = throttle();
        let now = Instant::now();
        t.succeeded("alice", A, now);
        for i in 0..5 {
            t.failed(&format!("guess-{i}"), A, now);
        }
        assert!(t.check("someone-else", A, now).is_err());
        assert!(t.check("alice", A, now).is_err());
        assert_eq!(t.check("alice", B, now), Ok(()));
        // Without an address (in-process callers) only the user limits apply.
        assert_eq!(t.check("carol", None, now), Ok(()));
    }

    #[test]
    fn long_names_share_a_bounded_key() {
        let t = throttle();
        let now = Instant::now();
        let long = "x".repeat(10_000);
        for i in 0..3 {
            t.failed(&format!("{long}{i}"), None, now);
        }
        assert!(t.check(&long, None, now).is_err());
        assert_eq!(t.tables.lock().users.keys().map(String::len).max(), Some(NAME_MAX));
    }
}
