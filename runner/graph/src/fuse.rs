//! Greedy fusion of SDK leaves into stages, and the stage boundaries.

use std::collections::{HashMap, HashSet};

use crate::leaves::{Leaf, LeafKind};

/// A group of leaves that becomes one stage.
#[derive(Debug)]
pub struct Group {
    pub leaves: Vec<usize>,
    pub kind: LeafKind,
}

/// Assigns every leaf to a group.  A leaf joins the group of its main
/// input's producer when both run in the same SDK environment, it does not
/// have to start a stage, and none of its side inputs depends on that group
/// (which would make the stage wait for itself).
pub fn fuse(
    leaves: &[Leaf],
    outputs_of: &dyn Fn(&str) -> Vec<String>,
    inputs_of: &dyn Fn(&str) -> Vec<String>,
) -> (Vec<Group>, Vec<usize>) {
    let mut producer: HashMap<String, usize> = HashMap::new();
    for (i, leaf) in leaves.iter().enumerate() {
        for pc in outputs_of(&leaf.id) {
            producer.insert(pc, i);
        }
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut group_of: Vec<usize> = vec![usize::MAX; leaves.len()];
    for (i, leaf) in leaves.iter().enumerate() {
        let target = match (&leaf.kind, &leaf.main_input) {
            (LeafKind::Sdk { environment_id }, Some(main)) if !leaf.starts_stage => producer
                .get(main)
                .map(|&p| group_of[p])
                .filter(|&g| g != usize::MAX)
                .filter(|&g| matches!(&groups[g].kind, LeafKind::Sdk { environment_id: e } if e == environment_id))
                .filter(|&g| {
                    leaf.side_inputs.iter().all(|(_, pc, _)| match producer.get(pc) {
                        Some(&p) => !depends_on(group_of[p], g, &groups, &group_of, &producer, leaves, inputs_of),
                        None => true,
                    })
                }),
            _ => None,
        };
        match target {
            Some(g) => {
                groups[g].leaves.push(i);
                group_of[i] = g;
            }
            None => {
                group_of[i] = groups.len();
                groups.push(Group {
                    leaves: vec![i],
                    kind: leaf.kind.clone(),
                });
            }
        }
    }
    (groups, group_of)
}

/// Does group `from` (transitively) read anything group `target` produces?
fn depends_on(
    from: usize,
    target: usize,
    groups: &[Group],
    group_of: &[usize],
    producer: &HashMap<String, usize>,
    leaves: &[Leaf],
    inputs_of: &dyn Fn(&str) -> Vec<String>,
) -> bool {
    let mut seen = HashSet::new();
    let mut stack = vec![from];
    while let Some(g) = stack.pop() {
        if g == target {
            return true;
        }
        if g == usize::MAX || !seen.insert(g) {
            continue;
        }
        for &l in &groups[g].leaves {
            for pc in inputs_of(&leaves[l].id) {
                if let Some(&p) = producer.get(&pc) {
                    stack.push(group_of[p]);
                }
            }
        }
    }
    false
}
