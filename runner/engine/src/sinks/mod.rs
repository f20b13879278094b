//! Sinks the engine writes itself, so that what they publish is tied to
//! checkpoints (exactly once across crashes and restores).

pub mod lines;
