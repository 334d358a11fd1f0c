//! Squashfs 4.0 writer and reader (issue 5).
