//! Integration tests: sif.
