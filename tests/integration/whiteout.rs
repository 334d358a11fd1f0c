//! Integration tests: whiteout.
