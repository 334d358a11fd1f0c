//! OCI digests and order-preserving JSON edits of index, manifest and config (issue 3).
