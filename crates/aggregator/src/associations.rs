//! What the aggregator knows about the service tree: child → parent, with interned parents.
//!
//! Updates are cumulative: a pair for a new child adds it, a pair for a known child moves it
//! (the later update wins), and nothing is ever removed. Parents are interned to dense `u32`
//! indexes so that the per-window count map is keyed by one `u64` (source parent, destination
//! parent) instead of two 128-bit ids. Both maps are capped so a misbehaving server cannot grow
//! memory without bound; over-cap updates are rejected and counted by the caller.
use std::collections::HashMap;

use crate::protocol::Id;

/// Dense index of an interned parent.
pub(crate) type ParentIdx = u32;

/// Outcome of one association update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Update {
    /// A child seen for the first time.
    Added,
    /// A known child now has another parent.
    Moved,
    /// Nothing changed.
    Unchanged,
    /// Rejected: the child or parent cap is reached.
    Full,
}

/// The child → parent map.
#[derive(Debug)]
pub(crate) struct Associations {
    parent_of: HashMap<Id, ParentIdx, ahash::RandomState>,
    parent_index: HashMap<Id, ParentIdx, ahash::RandomState>,
    parents: Vec<Id>,
    max_children: usize,
    max_parents: usize,
}

impl Associations {
    /// An empty map holding at most `max_children` children and `max_parents` parents.
    pub(crate) fn new(max_children: usize, max_parents: usize) -> Self {
        Self {
            parent_of: HashMap::default(),
            parent_index: HashMap::default(),
            parents: Vec::new(),
            max_children,
            max_parents,
        }
    }

    /// Records that `child` belongs to `parent` from now on.
    pub(crate) fn update(&mut self, parent: Id, child: Id) -> Update {
        let known = self.parent_of.get(&child).copied();
        if known.is_none() && self.parent_of.len() >= self.max_children {
            return Update::Full;
        }
        let Some(idx) = self.intern(parent) else { return Update::Full };
        self.parent_of.insert(child, idx);
        match known {
            None => Update::Added,
            Some(old) if old == idx => Update::Unchanged,
            Some(_) => Update::Moved,
        }
    }

    /// The interned parent of `child`, if known.
    #[inline]
    pub(crate) fn parent_of(&self, child: Id) -> Option<ParentIdx> {
        self.parent_of.get(&child).copied()
    }

    /// The id of an interned parent.
    pub(crate) fn parent_id(&self, idx: ParentIdx) -> Id {
        self.parents[idx as usize]
    }

    /// Number of known children.
    pub(crate) fn children(&self) -> usize {
        self.parent_of.len()
    }

    fn intern(&mut self, parent: Id) -> Option<ParentIdx> {
        if let Some(idx) = self.parent_index.get(&parent) {
            return Some(*idx);
        }
        if self.parents.len() >= self.max_parents {
            return None;
        }
        let idx = ParentIdx::try_from(self.parents.len()).ok()?;
        self.parents.push(parent);
        self.parent_index.insert(parent, idx);
        Some(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_update_wins_and_parents_are_interned_once() {
        let mut a = Associations::new(10, 10);
        assert_eq!(a.update(1, 100), Update::Added);
        assert_eq!(a.update(1, 101), Update::Added);
        assert_eq!(a.update(1, 100), Update::Unchanged);
        assert_eq!(a.update(2, 100), Update::Moved);
        let p = a.parent_of(100).unwrap();
        assert_eq!(a.parent_id(p), 2);
        assert_eq!(a.parent_id(a.parent_of(101).unwrap()), 1);
        assert_eq!(a.parent_of(999), None);
        assert_eq!(a.children(), 2);
    }

    #[test]
    fn caps_reject_new_entries_but_still_move_known_children() {
        let mut a = Associations::new(2, 2);
        assert_eq!(a.update(1, 100), Update::Added);
        assert_eq!(a.update(2, 101), Update::Added);
        assert_eq!(a.update(1, 102), Update::Full, "child cap");
        assert_eq!(a.update(3, 100), Update::Full, "parent cap");
        assert_eq!(a.update(2, 100), Update::Moved);
        assert_eq!(a.children(), 2);
    }
}
