//! Merging `beam:metrics:bounded_trie:v1` payloads (a serialized
//! `BoundedTrie` message from metrics.proto).
//!
//! A bounded trie records string paths (e.g. lineage: `("bigquery",
//! "project", "dataset")`) but never more than `bound` of them: when a merge
//! makes it too big, the subtree with the most paths is cut at its deepest
//! all-leaf node and marked truncated ("some paths under this prefix").
//! The rules here follow Beam's SDKs so that a trie the runner merged reads
//! the same as one the SDK merged itself:
//! - the size of a node is 1 if it is a leaf or truncated, else the sum of
//!   its children's sizes;
//! - merging a truncated node truncates; a leaf adds nothing to a node that
//!   has children (a path that is a prefix of another is not kept apart);
//! - the merged bound is the smaller of the two;
//! - trimming repeatedly shrinks the largest child until the size fits.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use ferrobeam_proto::pipeline::v1::{BoundedTrie, BoundedTrieNode};
use prost::Message;

use super::MergeError;

/// Beam's default bound (`BoundedTrieData._DEFAULT_BOUND`), used when a
/// payload carries none: a bound below 1 could never be satisfied.
const DEFAULT_BOUND: i32 = 100;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    truncated: bool,
    children: BTreeMap<String, Node>,
    /// Paths below this node: cached, because trimming asks for it often.
    size: usize,
}

impl Node {
    fn leaf() -> Node {
        Node {
            truncated: false,
            children: BTreeMap::new(),
            size: 1,
        }
    }

    fn truncated() -> Node {
        Node {
            truncated: true,
            children: BTreeMap::new(),
            size: 1,
        }
    }

    fn from_proto(proto: BoundedTrieNode) -> Node {
        if proto.truncated {
            return Node::truncated();
        }
        let mut node = Node::leaf();
        node.children = proto
            .children
            .into_iter()
            .map(|(k, v)| (k, Node::from_proto(v)))
            .collect();
        node.resize();
        node
    }

    fn into_proto(self) -> BoundedTrieNode {
        BoundedTrieNode {
            truncated: self.truncated,
            children: self
                .children
                .into_iter()
                .map(|(k, v)| (k, v.into_proto()))
                .collect(),
        }
    }

    fn resize(&mut self) {
        self.size = self.children.values().map(|c| c.size).sum::<usize>().max(1);
    }

    fn add(&mut self, path: &[String]) {
        let Some((head, tail)) = path.split_first() else {
            return;
        };
        if self.truncated {
            return;
        }
        self.children
            .entry(head.clone())
            .or_insert_with(Node::leaf)
            .add(tail);
        self.resize();
    }

    fn merge(&mut self, other: Node) {
        if self.truncated || (!other.truncated && other.children.is_empty()) {
            return;
        }
        if other.truncated {
            *self = Node::truncated();
            return;
        }
        if self.children.is_empty() {
            *self = other;
            return;
        }
        for (segment, child) in other.children {
            match self.children.entry(segment) {
                Entry::Vacant(e) => {
                    e.insert(child);
                }
                Entry::Occupied(mut e) => e.get_mut().merge(child),
            }
        }
        self.resize();
    }

    /// Makes the trie smaller by at least one path: follows the largest
    /// child (the first one in key order on ties) down to a node whose
    /// children are all leaves and truncates it.
    fn trim(&mut self) {
        let mut largest: Option<&mut Node> = None;
        for child in self.children.values_mut() {
            if largest.as_ref().is_none_or(|l| child.size > l.size) {
                largest = Some(child);
            }
        }
        let Some(largest) = largest else { return };
        if largest.size == 1 {
            *self = Node::truncated();
        } else {
            largest.trim();
            self.resize();
        }
    }
}

/// The three shapes a `BoundedTrie` payload takes.
enum Data {
    Empty,
    Singleton(Vec<String>),
    Root(Node),
}

fn decode(payload: &[u8]) -> Result<(i32, Data), MergeError> {
    let proto = BoundedTrie::decode(payload)
        .map_err(|e| MergeError::Malformed(format!("bounded trie: {e}")))?;
    let bound = if proto.bound > 0 {
        proto.bound
    } else {
        DEFAULT_BOUND
    };
    let data = if !proto.singleton.is_empty() {
        Data::Singleton(proto.singleton)
    } else if let Some(root) = proto.root {
        Data::Root(Node::from_proto(root))
    } else {
        Data::Empty
    };
    Ok((bound, data))
}

/// Merges two serialized `BoundedTrie`s.
pub(super) fn merge(a: &[u8], b: &[u8]) -> Result<Vec<u8>, MergeError> {
    let (bound_a, data_a) = decode(a)?;
    let (bound_b, data_b) = decode(b)?;
    let (mut root, other) = match (data_a, data_b) {
        (Data::Empty, _) => return Ok(b.to_vec()),
        (_, Data::Empty) => return Ok(a.to_vec()),
        // Merge into the side that already is a trie.
        (Data::Singleton(path), Data::Root(root)) | (Data::Root(root), Data::Singleton(path)) => {
            (root, Data::Singleton(path))
        }
        (Data::Singleton(path), other) => {
            let mut root = Node::leaf();
            root.add(&path);
            (root, other)
        }
        (Data::Root(root), other) => (root, other),
    };
    match other {
        Data::Singleton(path) => root.add(&path),
        Data::Root(other) => root.merge(other),
        Data::Empty => {}
    }
    let bound = bound_a.min(bound_b);
    while root.size > bound as usize {
        root.trim();
    }
    Ok(BoundedTrie {
        bound,
        root: Some(root.into_proto()),
        singleton: Vec::new(),
    }
    .encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(node: &Node, prefix: &mut Vec<String>, out: &mut Vec<String>) {
        if node.truncated {
            out.push(format!("{}+", prefix.join("/")));
        } else if node.children.is_empty() {
            out.push(prefix.join("/"));
        } else {
            for (k, c) in &node.children {
                prefix.push(k.clone());
                paths(c, prefix, out);
                prefix.pop();
            }
        }
    }

    fn flattened(payload: &[u8]) -> (i32, Vec<String>) {
        let (bound, data) = decode(payload).unwrap();
        let mut out = Vec::new();
        match data {
            Data::Empty => {}
            Data::Singleton(p) => out.push(p.join("/")),
            Data::Root(root) => paths(&root, &mut Vec::new(), &mut out),
        }
        (bound, out)
    }

    fn singleton(path: &[&str]) -> Vec<u8> {
        BoundedTrie {
            bound: 100,
            root: None,
            singleton: path.iter().map(|s| s.to_string()).collect(),
        }
        .encode_to_vec()
    }

    fn trie(bound: i32, paths: &[&[&str]]) -> Vec<u8> {
        let mut root = Node::leaf();
        for p in paths {
            root.add(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        BoundedTrie {
            bound,
            root: Some(root.into_proto()),
            singleton: vec![],
        }
        .encode_to_vec()
    }

    #[test]
    fn singletons_and_tries_union() {
        let m = merge(&singleton(&["a", "b"]), &singleton(&["a", "c"])).unwrap();
        assert_eq!(flattened(&m), (100, vec!["a/b".into(), "a/c".into()]));
        let m = merge(&singleton(&["x"]), &m).unwrap();
        assert_eq!(flattened(&m).1, ["a/b", "a/c", "x"]);
        // Empty payloads are the identity.
        let empty = BoundedTrie {
            bound: 100,
            root: None,
            singleton: vec![],
        }
        .encode_to_vec();
        assert_eq!(merge(&empty, &m).unwrap(), m);
        assert_eq!(merge(&m, &empty).unwrap(), m);
    }

    #[test]
    fn prefixes_do_not_add_paths_and_truncation_wins() {
        let m = merge(&trie(100, &[&["a", "b"]]), &singleton(&["a"])).unwrap();
        assert_eq!(flattened(&m).1, ["a/b"]);
        let truncated = BoundedTrie {
            bound: 100,
            root: Some(BoundedTrieNode {
                truncated: false,
                children: [(
                    "a".to_owned(),
                    BoundedTrieNode {
                        truncated: true,
                        children: Default::default(),
                    },
                )]
                .into(),
            }),
            singleton: vec![],
        }
        .encode_to_vec();
        let m = merge(&trie(100, &[&["a", "b"], &["a", "c"], &["d"]]), &truncated).unwrap();
        assert_eq!(flattened(&m).1, ["a+", "d"]);
    }

    #[test]
    fn merged_tries_are_trimmed_to_the_smaller_bound() {
        // 3 + 2 paths under a bound of 4: the largest subtree (a) is cut.
        let m = merge(
            &trie(10, &[&["a", "1"], &["a", "2"], &["a", "3"]]),
            &trie(4, &[&["b", "1"], &["b", "2"]]),
        )
        .unwrap();
        assert_eq!(
            flattened(&m),
            (4, vec!["a+".into(), "b/1".into(), "b/2".into()])
        );
        // A bound of one leaves a single truncated root.
        let m = merge(&trie(1, &[&["a"]]), &trie(1, &[&["b"]])).unwrap();
        assert_eq!(flattened(&m), (1, vec!["+".into()]));
    }

    #[test]
    fn trimming_descends_into_the_largest_child() {
        // a has 2 leaves under x and 1 under y; b has 1: cut a/x first.
        let m = merge(
            &trie(100, &[&["a", "x", "1"], &["a", "x", "2"], &["a", "y", "1"]]),
            &trie(3, &[&["b"]]),
        )
        .unwrap();
        assert_eq!(flattened(&m).1, ["a/x+", "a/y/1", "b"]);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(merge(&[0xff, 0xff], &singleton(&["a"])).is_err());
    }
}
