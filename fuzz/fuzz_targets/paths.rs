//! Paths inside a dataset, as manifests and mounts receive them: a path
//! that validates is relative and normalized (it cannot escape a mount or a
//! materialized directory), holds no control character, is within the
//! length limits, and so are all its ancestors.
#![no_main]

use aetherfs_format::{ancestors, validate_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let ok = validate_path(s).is_ok();
    let expected = !s.is_empty()
        && s.len() <= 4096
        && !s.chars().any(char::is_control)
        && s.split('/').all(|g| !g.is_empty() && g != "." && g != ".." && g.len() <= 255);
    assert_eq!(ok, expected, "validate_path({s:?})");
    if !ok {
        return;
    }
    assert!(!s.starts_with('/') && !s.ends_with('/') && !s.contains('\0'));
    let std_path = std::path::Path::new(s);
    assert!(std_path.is_relative());
    assert!(
        std_path.components().all(|c| matches!(c, std::path::Component::Normal(_))),
        "{s:?} has a component other than a plain name"
    );
    let up: Vec<&str> = ancestors(s).collect();
    assert_eq!(up.len(), s.matches('/').count());
    for (i, a) in up.iter().enumerate() {
        assert!(validate_path(a).is_ok(), "ancestor {a:?} of {s:?}");
        assert!(s.starts_with(a) && s.as_bytes()[a.len()] == b'/');
        if i > 0 {
            assert!(a.len() > up[i - 1].len());
        }
    }
});
