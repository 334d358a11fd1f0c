//! Tar layer writer and reader (issue 6).
