//! Beam's portability protos, generated at build time from `proto/beam_model.binpb`.
//!
//! Module paths mirror the proto packages, e.g.
//! [`pipeline::v1::Pipeline`] is `org.apache.beam.model.pipeline.v1.Pipeline`.
#![allow(clippy::all, missing_docs)]

pub mod pipeline {
    pub mod v1 {
        tonic::include_proto!("org.apache.beam.model.pipeline.v1");
    }
}
pub mod fn_execution {
    pub mod v1 {
        tonic::include_proto!("org.apache.beam.model.fn_execution.v1");
    }
}
pub mod job_management {
    pub mod v1 {
        tonic::include_proto!("org.apache.beam.model.job_management.v1");
    }
}
pub mod expansion {
    pub mod v1 {
        tonic::include_proto!("org.apache.beam.model.expansion.v1");
    }
}

/// ferrobeam's own job controls (`proto/ferrobeam/job_control.proto`).
pub mod ferrobeam_control {
    tonic::include_proto!("ferrobeam.v1");
}

pub use fn_execution::v1 as fn_api;
pub use job_management::v1 as job_api;
pub use pipeline::v1 as runner_api;
