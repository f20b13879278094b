//! Keyed stages: which partition a key is in, which worker slot owns a
//! partition, and the cache tokens that let a worker keep state across
//! bundles.
//!
//! The SDK caches user state under the token of the bundle that read or
//! wrote it and trusts the cache for every later bundle with the same
//! token.  So a token may only be reused while nobody else can have changed
//! the cached cells: every bundle of a partition runs on the partition's
//! owner (slot `partition % workers`) under the owner's token; a bundle run
//! anywhere else (taken over while the owner was not ready) gets a token of
//! its own and retires the owner's token; a bundle whose writes are dropped
//! retires its worker's token; a replaced worker is a new worker instance
//! with a new id.  Side inputs do not change during a batch job, so each
//! has one token for the whole stage.

use std::collections::HashMap;

use bytes::Bytes;
use ferrobeam_proto::fn_api::process_bundle_request::{cache_token, CacheToken};
use parking_lot::Mutex;

/// The partition (of `partitions`) that a key belongs to.  `key` is the
/// key's encoding as it appears in the stage's input elements (the nested
/// encoding of the KV's key), which is also how the SDK encodes it in state
/// keys and timers.  Stable for the life of the process, so timers and
/// elements of one key always meet in the same partition.
pub fn key_partition(key: &[u8], partitions: usize) -> usize {
    assert!(partitions > 0, "at least one partition");
    // FNV-1a, then a 64-bit finalizer so that keys differing only in
    // their last bytes still spread over every partition.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h % partitions as u64) as usize
}

/// The worker slot that runs every bundle of `partition`.
pub fn partition_slot(partition: usize, workers: usize) -> usize {
    partition % workers.max(1)
}

/// Cache tokens of one job's keyed stages.
#[derive(Default)]
pub struct CacheTokens {
    /// (descriptor id, slot) → how often the slot's token was retired.
    epochs: Mutex<HashMap<(String, usize), u64>>,
}

impl CacheTokens {
    /// The token for bundles of partitions that `slot` owns, run on its
    /// current worker.
    pub fn owner(&self, descriptor_id: &str, slot: usize, worker_id: &str) -> Bytes {
        let epoch = self
            .epochs
            .lock()
            .get(&(descriptor_id.to_owned(), slot))
            .copied()
            .unwrap_or(0);
        format!("{descriptor_id}/user-state/slot{slot}/{worker_id}/e{epoch}").into()
    }

    /// A token used by one bundle only: its cache entries are never trusted again.
    pub fn one_off(descriptor_id: &str, instruction_id: &str) -> Bytes {
        format!("{descriptor_id}/user-state/bundle/{instruction_id}").into()
    }

    /// Retires `slot`'s current token: someone else changed (or may have
    /// changed) state its worker has cached.
    pub fn retire(&self, descriptor_id: &str, slot: usize) {
        *self
            .epochs
            .lock()
            .entry((descriptor_id.to_owned(), slot))
            .or_default() += 1;
    }
}

/// The side-input tokens of a stage: one per side input, valid for the
/// whole batch job because side inputs are complete before the stage runs.
pub fn side_input_tokens<'a>(
    descriptor_id: &str,
    side_inputs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<CacheToken> {
    side_inputs
        .into_iter()
        .map(|(transform_id, side_input_id)| CacheToken {
            token: format!("{descriptor_id}/side-input/{transform_id}/{side_input_id}").into(),
            r#type: Some(cache_token::Type::SideInput(cache_token::SideInput {
                transform_id: transform_id.to_owned(),
                side_input_id: side_input_id.to_owned(),
            })),
        })
        .collect()
}

/// A user-state cache token entry.
pub fn user_state_token(token: Bytes) -> CacheToken {
    CacheToken {
        token,
        r#type: Some(cache_token::Type::UserState(cache_token::UserState {})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        let n = 7;
        let mut counts = vec![0usize; n];
        for i in 0..70_000u32 {
            let key = i.to_be_bytes();
            let p = key_partition(&key, n);
            assert_eq!(p, key_partition(&key, n));
            counts[p] += 1;
        }
        assert!(
            counts.iter().all(|&c| c > 8_000 && c < 12_000),
            "{counts:?}"
        );
        assert_eq!(partition_slot(9, 4), 1);
    }

    #[test]
    fn retiring_changes_only_that_slots_token() {
        let t = CacheTokens::default();
        let a0 = t.owner("d", 0, "w1");
        let b0 = t.owner("d", 1, "w2");
        assert_eq!(a0, t.owner("d", 0, "w1"));
        t.retire("d", 0);
        assert_ne!(a0, t.owner("d", 0, "w1"));
        assert_eq!(b0, t.owner("d", 1, "w2"));
        // A new worker instance in the same slot never shares a token.
        assert_ne!(t.owner("d", 0, "w1"), t.owner("d", 0, "w3"));
        assert_ne!(
            CacheTokens::one_off("d", "b1"),
            CacheTokens::one_off("d", "b2")
        );
    }
}
