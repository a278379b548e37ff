//! The simulated service tree and the frames that describe it.
//!
//! Parents own children; every update moves one announced child to another parent (a later
//! update for the same child wins), announces the child introduced at the previous update, and
//! introduces a new one that messages use *before* it is announced. A small pool of children
//! is never announced at all. Frames can be padded with whitespace and use the `children` key,
//! as deployed servers do.
use std::collections::HashMap;
use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// Shape of the simulated tree and of its frames.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub(crate) parents: usize,
    pub(crate) children_per_parent: usize,
    pub(crate) unknown_ratio: f64,
    pub(crate) pad: bool,
    pub(crate) children_key: bool,
    pub(crate) seed: u64,
}

/// The simulated tree.
pub(crate) struct World {
    rng: StdRng,
    shape: Shape,
    parents: Vec<Uuid>,
    children: Vec<Uuid>,
    parent_of: HashMap<Uuid, Uuid>,
    /// Introduced but not yet announced: (child, its future parent).
    late: Option<(Uuid, Uuid)>,
    never_announced: Vec<Uuid>,
}

impl World {
    /// A tree of `shape`.
    pub(crate) fn new(shape: Shape) -> Self {
        let mut rng = StdRng::seed_from_u64(shape.seed);
        let mut uuid = || random_uuid(&mut rng);
        let parents: Vec<Uuid> = (0..shape.parents.max(1)).map(|_| uuid()).collect();
        let mut parent_of = HashMap::new();
        let mut children = Vec::new();
        for p in &parents {
            for _ in 0..shape.children_per_parent.max(1) {
                let c = uuid();
                parent_of.insert(c, *p);
                children.push(c);
            }
        }
        let never_announced = (0..3).map(|_| uuid()).collect();
        Self { rng, shape, parents, children, parent_of, late: None, never_announced }
    }

    /// Every announced association (sent on each new connection).
    pub(crate) fn full_list(&self) -> Vec<(Uuid, Uuid)> {
        self.children.iter().map(|c| (self.parent_of[c], *c)).collect()
    }

    /// One update: move a child, announce the late child, introduce a new late one.
    pub(crate) fn update(&mut self) -> Vec<(Uuid, Uuid)> {
        let mut out = Vec::new();
        if let (Some(&child), Some(&parent)) =
            (self.children.choose(&mut self.rng), self.parents.choose(&mut self.rng))
        {
            self.parent_of.insert(child, parent);
            out.push((parent, child));
        }
        if let Some((child, parent)) = self.late.take() {
            self.parent_of.insert(child, parent);
            self.children.push(child);
            out.push((parent, child));
        }
        let parent = *self.parents.choose(&mut self.rng).unwrap_or(&Uuid::nil());
        self.late = Some((random_uuid(&mut self.rng), parent));
        out
    }

    /// The (source, destination) children of the next message.
    pub(crate) fn pick_message(&mut self) -> (Uuid, Uuid) {
        let source = *self.children.choose(&mut self.rng).unwrap_or(&Uuid::nil());
        let roll: f64 = self.rng.random();
        let destination = if roll < self.shape.unknown_ratio {
            *self.never_announced.choose(&mut self.rng).unwrap_or(&Uuid::nil())
        } else if roll < self.shape.unknown_ratio + 0.05
            && let Some((late, _)) = self.late
        {
            late
        } else {
            *self.children.choose(&mut self.rng).unwrap_or(&Uuid::nil())
        };
        (source, destination)
    }

    /// An association-list frame for `pairs`, written into one buffer (a million-child list
    /// is ~95 MB; no per-entry strings).
    pub(crate) fn association_frame(&mut self, pairs: &[(Uuid, Uuid)]) -> String {
        let mut out = String::with_capacity(2 + pairs.len() * 96);
        out.push('[');
        for (i, (p, c)) in pairs.iter().enumerate() {
            if i > 0 {
                out.push_str(",\n");
            }
            let key = if self.shape.children_key && i % 2 == 1 { "children" } else { "child" };
            let _ = write!(out, r#"{{"parent":"{p}","{key}":"{c}"}}"#);
        }
        out.push(']');
        self.pad(out)
    }

    /// A message frame.
    pub(crate) fn message_frame(&mut self, source: Uuid, destination: Uuid) -> String {
        let status = [200, 201, 400, 404, 500].choose(&mut self.rng).copied().unwrap_or(200);
        self.pad(format!(
            r#"{{"source":"{source}","destination":"{destination}","method":"GET","path":"/list","httpStatus":{status}}}"#
        ))
    }

    /// A frame the client must skip.
    pub(crate) fn malformed_frame(&mut self) -> String {
        let c = self.children[0];
        let bad = [
            "{\"source\":".to_owned(),
            "garbage".to_owned(),
            "   \n\t ".to_owned(),
            format!(r#"{{"source":"{c}","destination":"not-a-uuid"}}"#),
            format!(r#"{{"source":"{c}"}}"#),
            format!(r#"[{{"parent":"x","child":"{c}"}}]"#),
            "[1,2,".to_owned(),
        ];
        bad.choose(&mut self.rng).cloned().unwrap_or_default()
    }

    fn pad(&mut self, frame: String) -> String {
        if !self.shape.pad || !self.rng.random_bool(0.3) {
            return frame;
        }
        const WS: [&str; 4] = [" ", "\n", "\t", "\r\n"];
        let ws = |rng: &mut StdRng| -> String {
            (0..rng.random_range(1..4)).map(|_| *WS.choose(rng).unwrap_or(&" ")).collect()
        };
        let (before, after) = (ws(&mut self.rng), ws(&mut self.rng));
        format!("{before}{frame}{after}")
    }
}

fn random_uuid(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{self, Frame, FrameLimits};

    #[test]
    fn frames_parse_with_the_client_protocol() {
        let mut w = World::new(Shape {
            parents: 2,
            children_per_parent: 2,
            unknown_ratio: 0.5,
            pad: true,
            children_key: true,
            seed: 7,
        });
        let list = w.full_list();
        assert_eq!(list.len(), 4);
        let text = w.association_frame(&list);
        let limits = FrameLimits::new(1 << 20, 10);
        let Ok(Frame::Associations(parsed)) = protocol::parse(&text, &limits) else {
            panic!("bad association frame {text}")
        };
        let mut pairs = 0;
        assert_eq!(parsed.for_each(|_, _| pairs += 1), 0);
        assert_eq!(pairs, 4);
        for _ in 0..50 {
            let (s, d) = w.pick_message();
            let text = w.message_frame(s, d);
            assert!(matches!(protocol::parse(&text, &limits), Ok(Frame::Message { .. })), "{text}");
            let bad = w.malformed_frame();
            if let Ok(f) = protocol::parse(&bad, &limits) {
                let Frame::Associations(list) = f else { panic!("{bad} parsed as a message") };
                assert_eq!(list.for_each(|_, _| panic!("{bad} has a valid pair")), 1, "{bad}");
            }
        }
        assert!(!w.update().is_empty());
    }
}
