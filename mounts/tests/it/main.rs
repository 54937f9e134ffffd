//! The front ends against real clients, in one test binary: the kernel
//! through FUSE (`fuse`), libnfs (`nfs`), rclone, davfs2 and raw HTTP
//! (`webdav`). `support` holds what they share: a sample tree with the
//! awkward cases, a child-process runner that cannot hang a test, and the
//! expected listing of a local tree.

#![allow(clippy::unwrap_used)]

mod fuse;
mod nfs;
mod support;
mod webdav;
