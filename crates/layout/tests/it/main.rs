//! Integration tests of hoard-layout.
//!
//! - `dir`: the `dir://` layout: pinned paths, validation of what is read back, commits,
//!   concurrent writers, temporary files

mod dir;
