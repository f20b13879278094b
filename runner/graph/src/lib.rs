//! Translation of a Beam pipeline proto into ferrobeam's operator graph.
//!
//! Pure: proto in, [`Plan`] out, no I/O, so it is unit-tested without workers.
//! The steps: check requirements and URNs → flatten composites into leaves
//! (keeping Reshuffle native, expanding splittable DoFns) → length-prefix
//! coders the runner cannot parse → fuse SDK leaves into stages → build one
//! process bundle descriptor per SDK stage.

mod coders;
pub mod environments;
pub mod error;
mod fuse;
pub mod kafka;
pub mod leaves;
pub mod plan;
mod translate;
pub mod trigger;
pub mod urns;
mod window_merge;

pub use error::GraphError;
pub use plan::*;
pub use translate::{translate, TranslateOptions};
