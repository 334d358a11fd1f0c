//! Integration tests: ocisif.
