//! How the engine lays out its keys in a backend.  It lives here, beside
//! the backends, so that tools that only read checkpoints (`ferrobeam
//! checkpoint inspect`) decode keys exactly as the engine writes them.
//!
//! Every key starts with a kind byte and the 4-byte namespace of the
//! transform that owns it.  Namespaces are small numbers handed out per
//! transform *unique name* and recorded in each manifest, so a changed
//! pipeline whose transform ids moved still finds its state by name.

/// User state cells: `U ns kind state_id window key`.
pub const USER_STATE: u8 = b'U';
/// Snapshot entries of the engine's own structures (timers, GroupByKey
/// buffers, deferred work, sinks, sources): `R ns name`.
pub const RUNTIME: u8 = b'R';

/// A stateful stage's timers (RocksDB only; see the engine's `timers`):
/// `T ns ...`.
pub const TIMERS: u8 = b'T';

/// A streaming GroupByKey's buffered values (RocksDB only; see the engine's
/// `streaming::gbk_values`): `G ns window_end window key seq`.
pub const GBK_VALUES: u8 = b'G';

/// Cell kinds after the namespace (the SDK's two user-state key types).
pub const BAG: u8 = b'b';
pub const ORDERED_LIST: u8 = b'o';

pub type Namespace = u32;

/// `U ns kind len(state_id) state_id len(window) window key`.
pub fn user_state_key(
    ns: Namespace,
    kind: u8,
    state_id: &[u8],
    window: &[u8],
    key: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + state_id.len() + window.len() + key.len());
    out.push(USER_STATE);
    out.extend_from_slice(&ns.to_be_bytes());
    out.push(kind);
    for part in [state_id, window] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(key);
    out
}

/// The prefix of every user-state cell of one transform.
pub fn user_state_prefix(ns: Namespace) -> Vec<u8> {
    let mut out = vec![USER_STATE];
    out.extend_from_slice(&ns.to_be_bytes());
    out
}

/// The parts of a user-state key.
#[derive(Debug, PartialEq, Eq)]
pub struct UserStateKey<'a> {
    pub ns: Namespace,
    pub kind: u8,
    pub state_id: &'a [u8],
    pub window: &'a [u8],
    pub key: &'a [u8],
}

pub fn parse_user_state_key(k: &[u8]) -> Option<UserStateKey<'_>> {
    if k.first() != Some(&USER_STATE) || k.len() < 6 {
        return None;
    }
    let ns = Namespace::from_be_bytes(k[1..5].try_into().ok()?);
    let kind = k[5];
    let mut at = 6;
    let mut part = || {
        let len = u32::from_be_bytes(k.get(at..at + 4)?.try_into().ok()?) as usize;
        let p = k.get(at + 4..at + 4 + len)?;
        at += 4 + len;
        Some(p)
    };
    let state_id = part()?;
    let window = part()?;
    Some(UserStateKey {
        ns,
        kind,
        state_id,
        window,
        key: &k[at..],
    })
}

/// The prefix of every timer entry of one transform.
pub fn timers_prefix(ns: Namespace) -> Vec<u8> {
    kind_and_namespace(TIMERS, ns)
}

fn kind_and_namespace(kind: u8, ns: Namespace) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&ns.to_be_bytes());
    out
}

/// The namespace of a key of `kind`, and the rest of the key.
fn split_namespace(kind: u8, k: &[u8]) -> Option<(Namespace, &[u8])> {
    if k.first() != Some(&kind) || k.len() < 5 {
        return None;
    }
    Some((Namespace::from_be_bytes(k[1..5].try_into().ok()?), &k[5..]))
}

/// The namespace and the rest of a timer entry's key; the rest starts
/// with `I` for a timer's identity entry (one per pending timer).
pub fn parse_timers_key(k: &[u8]) -> Option<(Namespace, &[u8])> {
    split_namespace(TIMERS, k)
}

/// The prefix of every buffered GroupByKey value of one transform.
pub fn gbk_values_prefix(ns: Namespace) -> Vec<u8> {
    kind_and_namespace(GBK_VALUES, ns)
}

/// The namespace of a buffered GroupByKey value's key.
pub fn parse_gbk_values_key(k: &[u8]) -> Option<Namespace> {
    split_namespace(GBK_VALUES, k).map(|(ns, _)| ns)
}

/// The identity entries' marker after a timer key's namespace.
pub const TIMER_IDENTITY: u8 = b'I';

/// `R ns name`.
pub fn runtime_key(ns: Namespace, name: &str) -> Vec<u8> {
    let mut out = kind_and_namespace(RUNTIME, ns);
    out.extend_from_slice(name.as_bytes());
    out
}

pub fn parse_runtime_key(k: &[u8]) -> Option<(Namespace, &str)> {
    let (ns, name) = split_namespace(RUNTIME, k)?;
    Some((ns, std::str::from_utf8(name).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_state_keys_round_trip() {
        let k = user_state_key(7, BAG, b"count", b"\x00\x01", b"key");
        let p = parse_user_state_key(&k).unwrap();
        assert_eq!(
            p,
            UserStateKey {
                ns: 7,
                kind: BAG,
                state_id: b"count",
                window: b"\x00\x01",
                key: b"key"
            }
        );
        assert!(k.starts_with(&user_state_prefix(7)));
        assert!(parse_user_state_key(&k[..8]).is_none());
    }

    #[test]
    fn runtime_keys_round_trip() {
        assert_eq!(
            parse_runtime_key(&runtime_key(3, "timers")),
            Some((3, "timers"))
        );
    }
}
