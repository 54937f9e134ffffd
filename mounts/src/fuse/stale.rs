//! Finding and removing stale mounts: ones whose server died without
//! unmounting, so every access fails with ENOTCONN.

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::warn;

use super::{FuseError, MAX_STACKED, PROBE_TIMEOUT, absolute};

/// Removes a stale mount at `mountpoint`: one whose server is gone, so that
/// every access fails with ENOTCONN ("Transport endpoint is not connected"),
/// or a FUSE mount listed in `/proc/self/mountinfo` that does not answer
/// within 5 s. Runs `fusermount3 -uz` (`umount -l` if that fails), for every
/// stale mount stacked there. Returns whether it removed any. A FUSE mount
/// that answers is left alone ([`FuseError::AlreadyMounted`]); other
/// filesystems mounted there (a volume) are not its business.
pub fn clear_stale_mount(mountpoint: &Path) -> Result<bool, FuseError> {
    let path = absolute(mountpoint);
    let mut cleared = false;
    for _ in 0..MAX_STACKED {
        let fstype = top_mount_type(&path).map_err(|source| FuseError::Probe { path: path.clone(), source })?;
        let fuse = fstype.as_deref().is_some_and(|t| t == "fuse" || t.starts_with("fuse."));
        match probe(&path) {
            Probe::Disconnected => {}
            Probe::Unresponsive if fuse => {}
            Probe::Alive if fuse => return Err(FuseError::AlreadyMounted(path)),
            Probe::Failed(source) if fuse => return Err(FuseError::Probe { path, source }),
            _ => return Ok(cleared),
        }
        warn!(mountpoint = %path.display(), "clearing a stale FUSE mount");
        lazy_unmount(&path)?;
        cleared = true;
    }
    Ok(cleared)
}

enum Probe {
    Alive,
    Disconnected,
    Unresponsive,
    Failed(io::Error),
}

/// Stats the path, then a name no cache can hold (so the kernel must ask the
/// server), in a thread: a hung server would block the caller forever.
fn probe(path: &Path) -> Probe {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    let spawned = std::thread::Builder::new().name("aetherfs-probe".into()).spawn(move || {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let nonce = format!(".aetherfs-probe-{}-{nanos}", std::process::id());
        let answer = || -> io::Result<()> {
            std::fs::symlink_metadata(&p)?;
            match std::fs::symlink_metadata(p.join(nonce)) {
                Err(e) if is_disconnected(&e) => Err(e),
                _ => Ok(()),
            }
        };
        let _ = tx.send(answer());
    });
    if let Err(e) = spawned {
        return Probe::Failed(e);
    }
    match rx.recv_timeout(PROBE_TIMEOUT) {
        Ok(Ok(())) => Probe::Alive,
        Ok(Err(e)) if is_disconnected(&e) => Probe::Disconnected,
        Ok(Err(e)) => Probe::Failed(e),
        Err(_) => Probe::Unresponsive,
    }
}

fn is_disconnected(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED))
}

/// Detaches the mount at `path` now, whatever still uses it.
pub(super) fn lazy_unmount(path: &Path) -> Result<(), FuseError> {
    let mut errors = Vec::new();
    for (prog, args) in [("fusermount3", ["-u", "-z"].as_slice()), ("umount", ["-l"].as_slice())] {
        match Command::new(prog).args(args).arg(path).stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => errors.push(format!("{prog}: {}", String::from_utf8_lossy(&out.stderr).trim())),
            Err(e) => errors.push(format!("{prog}: {e}")),
        }
    }
    Err(FuseError::Unmount { path: path.to_path_buf(), source: io::Error::other(errors.join("; ")) })
}

/// The filesystem type of the topmost mount at `path`, from `/proc/self/mountinfo`.
fn top_mount_type(path: &Path) -> io::Result<Option<String>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = path.as_os_str().as_encoded_bytes();
    let mut top = None;
    for line in info.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
        let mut fields = line.split(' ');
        let Some(mp) = fields.nth(4) else { continue };
        if unescape_mountinfo(mp) != want {
            continue;
        }
        if let Some(fstype) = fields.skip_while(|f| *f != "-").nth(1) {
            top = Some(fstype.to_string());
        }
    }
    Ok(top)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b\134c"), b"/tmp/a b\\c");
        assert_eq!(unescape_mountinfo(r"/x\04"), b"/x\\04");
        assert_eq!(unescape_mountinfo("/plain"), b"/plain");
    }
}
