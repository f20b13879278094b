//! Custom merging window functions: asking the SDK which windows merge.
//!
//! Merging is user code (`WindowFn.merge`), so before a GroupByKey in such
//! windows the engine collects each key's distinct windows, sends them to a
//! worker of the window function's environment through the plan's
//! `beam:transform:merge_windows:v1` descriptor (one `KV<nonce,
//! iterable<window>>` per key), and reads back which windows merged into
//! which. The GroupByKey then groups every (key, window) under its merged
//! window. Window bytes are compared as the wire encodes them (window coders
//! must be deterministic, as for any grouping).

use std::collections::HashMap;

use bytes::Bytes;
use ferrobeam_coders::{Coder, PaneInfo, Value};
use ferrobeam_fnapi::BundleError;
use ferrobeam_fnapi::{BundleInput, BundleRequest};
use ferrobeam_graph::WindowMerge;
use ferrobeam_proto::pipeline::v1::Components;

use crate::pool::WorkerPool;
use crate::wire::{WireFormat, MIN_TIMESTAMP_MILLIS};
use crate::EngineError;

/// key → (original window → the window it merged into). Windows that did
/// not merge are absent.
pub type MergedWindows = HashMap<Bytes, HashMap<Bytes, Bytes>>;

/// How often the merge may lose its worker before the job fails.
const MAX_ATTEMPTS: u32 = 4;

/// Every key's distinct windows, keys and windows in first-arrival order.
pub fn windows_per_key(
    input: &[Bytes],
    format: &WireFormat,
) -> Result<Vec<(Bytes, Vec<Bytes>)>, EngineError> {
    let mut index: HashMap<Bytes, usize> = HashMap::new();
    let mut out: Vec<(Bytes, Vec<Bytes>)> = Vec::new();
    let mut seen: std::collections::HashSet<(Bytes, Bytes)> = std::collections::HashSet::new();
    for chunk in input {
        format.for_each(chunk, |e| {
            let key = chunk.slice(e.value.start..format.key_end(chunk, e.value.start)?);
            for w in &e.windows {
                let window = chunk.slice(w.clone());
                if seen.insert((key.clone(), window.clone())) {
                    let n = *index.entry(key.clone()).or_insert_with(|| {
                        out.push((key.clone(), Vec::new()));
                        out.len() - 1
                    });
                    out[n].1.push(window);
                }
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// The merge requests: per key, `KV<nonce, iterable<window>>` in the global
/// window, where the nonce is the key's index (keys themselves may be large).
pub fn encode_requests(per_key: &[(Bytes, Vec<Bytes>)]) -> Bytes {
    let mut out = Vec::new();
    let mut value = Vec::new();
    for (n, (_, windows)) in per_key.iter().enumerate() {
        value.clear();
        // Nested bytes: a varint length (4 fits in one byte), then the nonce.
        value.push(4u8);
        value.extend_from_slice(&(n as u32).to_be_bytes());
        value.extend_from_slice(&(windows.len() as u32).to_be_bytes());
        for w in windows {
            value.extend_from_slice(w);
        }
        crate::wire::write_element(
            &mut out,
            MIN_TIMESTAMP_MILLIS,
            &[],
            &PaneInfo::NO_FIRING,
            &[&value],
        );
    }
    Bytes::from(out)
}

/// Reads the SDK's answers (see the module doc) into a [`MergedWindows`].
pub fn decode_responses(
    chunks: &[Bytes],
    response: &Coder,
    window: &Coder,
    per_key: &[(Bytes, Vec<Bytes>)],
) -> Result<MergedWindows, EngineError> {
    let bad = |what: String| EngineError::Internal(format!("bad merge_windows response: {what}"));
    let mut merged = MergedWindows::new();
    for chunk in chunks {
        let mut pos = 0;
        while pos < chunk.len() {
            let (v, end) = response
                .decode_at(chunk, pos, true)
                .map_err(|e| bad(e.to_string()))?;
            pos = end;
            let Value::WindowedValue(wv) = v else {
                return Err(bad("not a windowed value".into()));
            };
            let Value::Kv(nonce, result) = wv.value else {
                return Err(bad("not a KV".into()));
            };
            let key = match *nonce {
                Value::Bytes(b) if b.len() == 4 => {
                    let n = u32::from_be_bytes(b[..].try_into().expect("4 bytes")) as usize;
                    per_key
                        .get(n)
                        .map(|(k, _)| k.clone())
                        .ok_or_else(|| bad(format!("unknown nonce {n}")))?
                }
                other => return Err(bad(format!("nonce {other:?}"))),
            };
            let Value::Kv(_unmerged, merges) = *result else {
                return Err(bad("result is not a KV".into()));
            };
            let Value::Iterable(merges) = *merges else {
                return Err(bad("merges are not an iterable".into()));
            };
            let encode = |v: &Value| {
                window
                    .encode_to_vec(v, true)
                    .map(Bytes::from)
                    .map_err(|e| bad(e.to_string()))
            };
            for m in merges {
                let Value::Kv(to, originals) = m else {
                    return Err(bad("a merge is not a KV".into()));
                };
                let Value::Iterable(originals) = *originals else {
                    return Err(bad("originals are not an iterable".into()));
                };
                let to = encode(&to)?;
                let entry = merged.entry(key.clone()).or_default();
                for o in &originals {
                    entry.insert(encode(o)?, to.clone());
                }
            }
        }
    }
    Ok(merged)
}

/// Runs a plan's merge descriptor on the workers of its environment.
pub struct SdkWindowMerger<'a> {
    pub merge: &'a WindowMerge,
    pub components: &'a Components,
    pub pool: &'a WorkerPool,
    /// The id the descriptor was registered under.
    pub descriptor_id: String,
}

impl SdkWindowMerger<'_> {
    /// Asks the SDK to merge every key's windows (one bundle for all keys).
    pub async fn merge(
        &self,
        per_key: &[(Bytes, Vec<Bytes>)],
    ) -> Result<MergedWindows, EngineError> {
        if per_key.is_empty() {
            return Ok(MergedWindows::new());
        }
        let coder = |id: &str| {
            Coder::from_components(self.components, id)
                .map_err(|e| EngineError::Internal(format!("coder {id}: {e}")))
        };
        let response = coder(&self.merge.output_coder_id)?;
        let window = coder(&self.merge.window_coder_id)?;
        let requests = encode_requests(per_key);
        let sinks = [self.merge.sink.clone()];
        let mut attempts = 0;
        let mut worker = self.pool.worker(0).await?;
        loop {
            let inputs = vec![BundleInput {
                transform_id: self.merge.source.clone(),
                timer_family: None,
                chunks: vec![requests.clone()],
            }];
            let id = worker.new_instruction_id();
            match worker
                .process_bundle(
                    id,
                    BundleRequest {
                        descriptor_id: &self.descriptor_id,
                        inputs,
                        outputs: &sinks,
                        timer_outputs: &[],
                        cache_tokens: Vec::new(),
                    },
                    None,
                )
                .await
            {
                Ok(mut out) => {
                    let chunks = out.outputs.remove(&self.merge.sink).unwrap_or_default();
                    return decode_responses(&chunks, &response, &window, per_key);
                }
                Err(BundleError::WorkerLost {
                    worker: lost,
                    reason,
                }) => {
                    attempts += 1;
                    if attempts >= MAX_ATTEMPTS {
                        return Err(EngineError::Workers(format!(
                            "merging windows lost its SDK worker {attempts} times; last: {lost}: {reason}"
                        )));
                    }
                    worker = self.pool.replace(0, &lost).await?;
                }
                Err(BundleError::Failed(message)) => {
                    return Err(EngineError::UserCode(format!(
                        "The window function's merge failed in the SDK worker:\n{message}"
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrobeam_coders::IntervalWindow;

    fn iw(start: i64, end: i64) -> Bytes {
        let mut b = Vec::new();
        IntervalWindow::new(start, end).encode(&mut b);
        Bytes::from(b)
    }

    fn kv(k: Coder, v: Coder) -> Coder {
        Coder::Kv {
            key: Box::new(k),
            value: Box::new(v),
        }
    }

    fn response_coder(window: Coder) -> Coder {
        let windows = Coder::Iterable(Box::new(window.clone()));
        let merges = Coder::Iterable(Box::new(kv(window, windows.clone())));
        Coder::WindowedValue {
            value: Box::new(kv(Coder::Bytes, kv(windows, merges))),
            window: Box::new(Coder::GlobalWindow),
        }
    }

    #[test]
    fn requests_are_kv_of_nonce_and_windows() {
        let per_key = vec![
            (Bytes::from_static(b"\x01a"), vec![iw(0, 10), iw(5, 15)]),
            (Bytes::from_static(b"\x01b"), vec![iw(1, 2)]),
        ];
        let bytes = encode_requests(&per_key);
        let windows = Coder::Iterable(Box::new(Coder::IntervalWindow));
        let request = Coder::WindowedValue {
            value: Box::new(kv(Coder::Bytes, windows)),
            window: Box::new(Coder::GlobalWindow),
        };
        let (first, end) = request.decode_at(&bytes, 0, true).unwrap();
        let Value::WindowedValue(wv) = first else {
            panic!()
        };
        assert_eq!(wv.timestamp, MIN_TIMESTAMP_MILLIS);
        let Value::Kv(nonce, ws) = wv.value else {
            panic!()
        };
        assert!(matches!(*nonce, Value::Bytes(ref b) if b[..] == [0, 0, 0, 0]));
        let Value::Iterable(ws) = *ws else { panic!() };
        assert_eq!(ws.len(), 2);
        let (second, end2) = request.decode_at(&bytes, end, true).unwrap();
        assert_eq!(end2, bytes.len());
        let Value::WindowedValue(wv) = second else {
            panic!()
        };
        let Value::Kv(nonce, _) = wv.value else {
            panic!()
        };
        assert!(matches!(*nonce, Value::Bytes(ref b) if b[..] == [0, 0, 0, 1]));
    }

    #[test]
    fn responses_map_originals_to_their_merged_window() {
        let per_key = vec![(
            Bytes::from_static(b"ka"),
            vec![iw(0, 10), iw(5, 15), iw(20, 30)],
        )];
        let coder = response_coder(Coder::IntervalWindow);
        let w = |s, e| Value::IntervalWindow(IntervalWindow::new(s, e));
        let value = Value::kv(
            Value::bytes(vec![0u8, 0, 0, 0]),
            Value::kv(
                Value::Iterable(vec![w(20, 30)]),
                Value::Iterable(vec![Value::kv(
                    w(0, 15),
                    Value::Iterable(vec![w(0, 10), w(5, 15)]),
                )]),
            ),
        );
        let wv = Value::WindowedValue(Box::new(ferrobeam_coders::WindowedValue {
            value,
            timestamp: MIN_TIMESTAMP_MILLIS,
            windows: vec![Value::GlobalWindow],
            pane: PaneInfo::default(),
        }));
        let bytes = Bytes::from(coder.encode_to_vec(&wv, true).unwrap());
        let merged = decode_responses(&[bytes], &coder, &Coder::IntervalWindow, &per_key).unwrap();
        let for_key = &merged[&Bytes::from_static(b"ka")];
        assert_eq!(for_key.len(), 2);
        assert_eq!(for_key[&iw(0, 10)], iw(0, 15));
        assert_eq!(for_key[&iw(5, 15)], iw(0, 15));
        assert!(!for_key.contains_key(&iw(20, 30)));
    }

    #[test]
    fn unknown_nonces_are_errors() {
        let coder = response_coder(Coder::IntervalWindow);
        let value = Value::kv(
            Value::bytes(vec![0u8, 0, 0, 7]),
            Value::kv(Value::Iterable(vec![]), Value::Iterable(vec![])),
        );
        let wv = Value::WindowedValue(Box::new(ferrobeam_coders::WindowedValue {
            value,
            timestamp: 0,
            windows: vec![Value::GlobalWindow],
            pane: PaneInfo::default(),
        }));
        let bytes = Bytes::from(coder.encode_to_vec(&wv, true).unwrap());
        let err = decode_responses(&[bytes], &coder, &Coder::IntervalWindow, &[]).unwrap_err();
        assert!(err.to_string().contains("nonce"), "{err}");
    }
}
