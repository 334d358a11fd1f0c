//! The OCI image layout stored inside a SIF (issue 3).
