//! Integration tests: seal.
