//! Integration tests: ext.
