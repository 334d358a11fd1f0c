//! Read-only ext2/3/4 reader (issue 4).
