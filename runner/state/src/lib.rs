//! ferrobeam's durable state: the [`StateBackend`] trait with an in-memory
//! and a RocksDB implementation, the key layout the engine uses inside
//! them, and checkpoints on disk (layout, manifests, retention).
//!
//! The engine decides *what* goes in (user state cells, and at checkpoint
//! time its timers, buffers and deferred work); this crate decides *how*
//! it is stored and snapshotted.

pub mod backend;
pub mod checkpoint;
pub mod codec;
mod error;
pub mod keys;
pub mod memory;
pub mod rocks;

pub use backend::{open, open_snapshot, BackendKind, StateBackend, WriteBatch};
pub use error::{Result, StateError};
