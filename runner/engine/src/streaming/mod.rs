//! Streaming execution (issue 4), built piece by piece.
//!
//! * [`driver`]: runs a plan as a sequence of epochs.
//! * [`gbk`]: GroupByKey whose panes fire as data and time arrive.
//! * [`gbk_values`]: where a GroupByKey's buffered values live (memory or
//!   the state backend).
//! * [`kafka`]: Kafka read and write stages.
//! * [`side_inputs`]: side inputs that complete window by window.
//!
//! See `docs/design.md` ("Streaming") for how these pieces fit together.

pub(crate) mod driver;
pub mod gbk;
pub mod gbk_values;
pub mod kafka;
mod side_inputs;
