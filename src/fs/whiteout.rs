//! Whiteout model: OverlayFS and AUFS forms (issue 6).
