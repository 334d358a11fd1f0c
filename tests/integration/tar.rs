//! Integration tests: tar.
