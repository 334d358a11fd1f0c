//! Integration tests: squashfs.
