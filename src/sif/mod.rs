//! The SIF container codec (issue 2): header, descriptors, objects. No OCI knowledge.
