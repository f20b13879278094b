//! Making every data-plane coder splittable by the runner.
//!
//! The runner must find element boundaries in every byte stream it
//! receives, and keys inside kv elements. It cannot for SDK-specific coders
//! (pickled Python objects, Java serializable, ...), so before handing a
//! coder to an SDK on a data-plane port it rewrites it: each coder it
//! cannot delimit is wrapped in `beam:coder:length_prefix:v1`, recursing
//! through the standard composites so that the parts the runner needs
//! (keys, windows, timestamps) stay readable. The SDK understands
//! `length_prefix` around any coder, so both sides agree on the bytes.

use std::collections::HashMap;

use ferrobeam_proto::pipeline::v1::{Coder as CoderProto, Components, FunctionSpec};

use crate::coder::{urns, MAX_DEPTH};
use crate::Coder;

/// Returns the id of a coder equivalent to `coder_id` in which every coder
/// the runner cannot delimit is wrapped in `length_prefix`.
///
/// Returns `coder_id` itself when nothing needs wrapping. New coders get
/// deterministic ids derived from the original (`<id>_lp`, then `<id>_lp2`,
/// ... if that id is taken by a different coder), and an identical coder
/// already present under that id is reused, so calling this repeatedly
/// (or for many ports) does not grow the components.
///
/// What gets wrapped: coders with non-standard URNs, ids missing from the
/// components, standard coders with the wrong number of components, and
/// rows whose schema the runner cannot code (e.g. Python `Any` fields).
/// `length_prefix` coders are left alone: they are already delimited.
/// `param_windowed_value`'s window coder is left alone because its payload
/// is encoded with it.
pub fn wrap_unknown_coders(components: &mut Components, coder_id: &str) -> String {
    Wrapper {
        components,
        memo: HashMap::new(),
    }
    .wrap(coder_id, 0)
}

struct Wrapper<'a> {
    components: &'a mut Components,
    memo: HashMap<String, String>,
}

impl Wrapper<'_> {
    fn wrap(&mut self, id: &str, depth: usize) -> String {
        if let Some(done) = self.memo.get(id) {
            return done.clone();
        }
        let result = self.wrap_uncached(id, depth);
        self.memo.insert(id.to_string(), result.clone());
        result
    }

    fn wrap_uncached(&mut self, id: &str, depth: usize) -> String {
        let Some(proto) = self.components.coders.get(id).cloned() else {
            return self.length_prefix(id);
        };
        if depth > MAX_DEPTH {
            return self.length_prefix(id);
        }
        let urn = proto.spec.as_ref().map(|s| s.urn.as_str()).unwrap_or("");
        match urns::component_count(urn) {
            Some(n) if n == proto.component_coder_ids.len() => {}
            // Unknown URN, or a standard one the runner could not parse.
            _ => return self.length_prefix(id),
        }
        match urn {
            urns::LENGTH_PREFIX => id.to_string(),
            urns::ROW => {
                // Rows are leaves; wrap them only if the runner cannot
                // code their schema.
                match Coder::from_components(self.components, id) {
                    Ok(c) if c.is_skippable() => id.to_string(),
                    _ => self.length_prefix(id),
                }
            }
            urns::PARAM_WINDOWED_VALUE => {
                // The payload is encoded with the window coder: keep it.
                let value = self.wrap(&proto.component_coder_ids[0], depth + 1);
                let window = proto.component_coder_ids[1].clone();
                self.rebuild(id, &proto, vec![value, window])
            }
            _ => {
                let new_ids: Vec<String> = proto
                    .component_coder_ids
                    .iter()
                    .map(|c| self.wrap(c, depth + 1))
                    .collect();
                self.rebuild(id, &proto, new_ids)
            }
        }
    }

    /// `proto` with new component ids, or `id` itself if they did not change.
    fn rebuild(&mut self, id: &str, proto: &CoderProto, new_ids: Vec<String>) -> String {
        if new_ids == proto.component_coder_ids {
            return id.to_string();
        }
        let rebuilt = CoderProto {
            spec: proto.spec.clone(),
            component_coder_ids: new_ids,
        };
        self.insert(id, rebuilt)
    }

    /// A `length_prefix` coder around `id`.
    fn length_prefix(&mut self, id: &str) -> String {
        let lp = CoderProto {
            spec: Some(FunctionSpec {
                urn: urns::LENGTH_PREFIX.to_string(),
                payload: Default::default(),
            }),
            component_coder_ids: vec![id.to_string()],
        };
        self.insert(id, lp)
    }

    /// Adds `coder` under a fresh id derived from `base`, or returns the id
    /// under which an identical coder already is.
    fn insert(&mut self, base: &str, coder: CoderProto) -> String {
        for n in 1.. {
            let candidate = if n == 1 {
                format!("{base}_lp")
            } else {
                format!("{base}_lp{n}")
            };
            match self.components.coders.get(&candidate) {
                Some(existing) if *existing == coder => return candidate,
                Some(_) => continue,
                None => {
                    self.components.coders.insert(candidate.clone(), coder);
                    return candidate;
                }
            }
        }
        unreachable!("ids are unbounded")
    }
}
