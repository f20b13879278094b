//! Beam URNs the job service reads or writes.
//!
//! They are declared as proto options in Beam's model, which prost does not
//! expose, so they are spelled out here once.

/// Artifact type: a file on a filesystem the reader can see.
pub const ARTIFACT_TYPE_FILE: &str = "beam:artifact:type:file:v1";
/// Artifact role: copy the artifact to the worker under a given name.
pub const ARTIFACT_ROLE_STAGING_TO: &str = "beam:artifact:role:staging_to:v1";
