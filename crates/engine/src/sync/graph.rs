//! The object graph of a scope: the primitive mutations (insert an object, set a property,
//! remove an object), which keep every object's parent references in step, record their
//! inverse in an undo log, and note which objects may have become unreachable; and the
//! orphan sweep that removes those that did.
//!
//! **Invariant** (between changesets): every object in the scope is reachable from the root
//! through reference properties, and `parents` of each object lists exactly the references
//! to it held by objects in the scope (parent UUID, number of references).
//!
//! The sweep is incremental. An object whose last reference goes is removed at once (and
//! its children lose a reference in turn). An object that loses a reference but keeps others
//! may still have become unreachable, through a cycle that lost its last link to the root:
//! for that object (a *suspect*) the sweep walks up its parents, depth first, until it meets
//! the root or an object already known to be reachable (usually a few steps: the path it
//! hangs from). If the walk runs out of parents, everything it visited is unreachable (any
//! ancestor of an unreachable object is unreachable) and is removed. If the walks of one
//! sweep visit more objects than the scope holds, the sweep falls back to one full marking
//! pass from the root.

use tether_proto::jetstream::Uuid;

use super::hash::{UuidMap, UuidSet};
use super::scope::{Obj, Parents, ScopeState};
use super::value::Slot;

/// The inverse of one primitive mutation.
#[derive(Debug)]
pub(super) enum Undo {
    /// The object was inserted (with default values and no parents): remove it.
    Inserted(Uuid),
    /// A property was set: restore `old`.
    Set {
        /// The object.
        obj: Uuid,
        /// The property index.
        prop: usize,
        /// The value before.
        old: Slot,
    },
    /// The object was removed: put it back (its parents list is as it was then).
    Removed(Uuid, Obj),
}

/// What the mutations of one changeset leave behind for the sweep, and (for an atomic
/// changeset) for the rollback.
#[derive(Debug, Default)]
pub(super) struct Tx {
    /// The undo log, when the changeset may have to be rolled back.
    pub(super) log: Option<Vec<Undo>>,
    /// Objects whose last reference went.
    pub(super) orphans: Vec<Uuid>,
    /// Objects that lost a reference but kept others.
    pub(super) suspects: Vec<Uuid>,
}

impl Tx {
    /// A transaction that keeps an undo log if `undoable`.
    pub(super) fn new(undoable: bool) -> Self {
        Self { log: undoable.then(Vec::new), orphans: Vec::new(), suspects: Vec::new() }
    }

    fn record(&mut self, undo: Undo) {
        if let Some(log) = &mut self.log {
            log.push(undo);
        }
    }
}

impl ScopeState {
    /// Inserts a new object of model `cls` with its default values.
    pub(super) fn insert_object(&mut self, uuid: Uuid, cls: usize, tx: Option<&mut Tx>) {
        let slots: Box<[Slot]> = self.schema.model(cls).props.iter().map(|p| p.default.clone()).collect();
        self.objects.insert(uuid, Obj { cls, slots, parents: Parents::default() });
        if let Some(tx) = tx {
            tx.record(Undo::Inserted(uuid));
        }
    }

    /// Sets property `prop` of `obj` to `new` (already verified: every reference in it is to
    /// an object in the scope), updating the parents of the objects it gains or loses.
    pub(super) fn set_slot(&mut self, obj: Uuid, prop: usize, new: Slot, mut tx: Option<&mut Tx>) {
        let Some(slot) = self.objects.get_mut(&obj).and_then(|o| o.slots.get_mut(prop)) else {
            return;
        };
        let old = std::mem::replace(slot, new);
        let deltas = ref_deltas(old.refs(), slot.refs());
        // Gains first, so that no object passes through zero references on the way.
        for &(child, d) in deltas.iter().filter(|(_, d)| *d > 0) {
            self.add_parent(child, obj, d.unsigned_abs());
        }
        for &(child, d) in deltas.iter().filter(|(_, d)| *d < 0) {
            self.drop_parent(child, obj, d.unsigned_abs(), tx.as_deref_mut());
        }
        if let Some(tx) = tx {
            tx.record(Undo::Set { obj, prop, old });
        }
    }

    /// Removes an object; its children lose its references.
    pub(super) fn remove_object(&mut self, uuid: Uuid, mut tx: Option<&mut Tx>) {
        let Some(obj) = self.objects.remove(&uuid) else {
            return;
        };
        for slot in obj.slots.iter() {
            for &child in slot.refs() {
                // A reference to itself went with it.
                if child != uuid {
                    self.drop_parent(child, uuid, 1, tx.as_deref_mut());
                }
            }
        }
        if let Some(tx) = tx {
            tx.record(Undo::Removed(uuid, obj));
        }
    }

    /// Undoes a log, newest first: afterwards the scope is exactly as before the first
    /// logged mutation (parents lists may list the same entries in another order).
    pub(super) fn undo(&mut self, log: Vec<Undo>) {
        for op in log.into_iter().rev() {
            match op {
                Undo::Inserted(uuid) => {
                    self.objects.remove(&uuid);
                }
                Undo::Set { obj, prop, old } => self.set_slot(obj, prop, old, None),
                Undo::Removed(uuid, obj) => {
                    let children: Vec<Uuid> = obj
                        .slots
                        .iter()
                        .flat_map(|s| s.refs().iter().copied())
                        .filter(|&c| c != uuid)
                        .collect();
                    self.objects.insert(uuid, obj);
                    for child in children {
                        self.add_parent(child, uuid, 1);
                    }
                }
            }
        }
    }

    fn add_parent(&mut self, child: Uuid, parent: Uuid, n: u64) {
        let Some(c) = self.objects.get_mut(&child) else {
            return;
        };
        c.parents.add(parent, u32::try_from(n).unwrap_or(u32::MAX));
    }

    fn drop_parent(&mut self, child: Uuid, parent: Uuid, n: u64, tx: Option<&mut Tx>) {
        let Some(c) = self.objects.get_mut(&child) else {
            return;
        };
        c.parents.remove(parent, u32::try_from(n).unwrap_or(u32::MAX));
        if let Some(tx) = tx {
            if c.parents.is_empty() {
                tx.orphans.push(child);
            } else {
                tx.suspects.push(child);
            }
        }
    }

    /// Removes every object the mutations of `tx` left unreachable (step 7 of a changeset).
    pub(super) fn sweep(&mut self, tx: &mut Tx) {
        // Steps of upward walks allowed before one full pass is cheaper.
        let budget = self.objects.len() + 64;
        self.sweep_within(tx, budget);
    }

    /// [`sweep`](Self::sweep), with `budget` steps of upward walks before a full pass.
    pub(super) fn sweep_within(&mut self, tx: &mut Tx, mut budget: usize) {
        let mut known = UuidSet::default();
        loop {
            if let Some(u) = tx.orphans.pop() {
                match self.objects.get(&u) {
                    _ if u == self.root => {}
                    None => {}
                    Some(o) if o.parents.is_empty() => self.remove_object(u, Some(tx)),
                    // It lost its last reference, then gained one later in the changeset,
                    // maybe from an object that is itself cut off (or from itself).
                    Some(_) => tx.suspects.push(u),
                }
                continue;
            }
            let Some(s) = tx.suspects.pop() else {
                break;
            };
            if s == self.root || known.contains(&s) {
                continue;
            }
            match self.objects.get(&s) {
                None => continue,
                Some(o) if o.parents.is_empty() => {
                    tx.orphans.push(s);
                    continue;
                }
                Some(_) => {}
            }
            match self.walk_up(s, &mut known, &mut budget) {
                Walk::Reachable => {}
                Walk::Unreachable(dead) => {
                    for u in dead {
                        self.remove_object(u, Some(tx));
                    }
                }
                Walk::OverBudget => {
                    self.remove_unreachable(Some(tx));
                    tx.orphans.clear();
                    tx.suspects.clear();
                    break;
                }
            }
        }
    }

    /// Walks up from `start` through parents (depth first) looking for the root or a
    /// known-reachable object.
    fn walk_up(&self, start: Uuid, known: &mut UuidSet, budget: &mut usize) -> Walk {
        let mut seen = UuidSet::default();
        seen.insert(start);
        let mut visited = vec![start];
        // The current path, each with the index of the next parent to try.
        let mut stack: Vec<(Uuid, usize)> = vec![(start, 0)];
        while let Some((node, next)) = stack.last_mut() {
            let Some(p) = self.objects.get(node).and_then(|o| o.parents.get(*next)) else {
                stack.pop();
                continue;
            };
            *next += 1;
            if *budget == 0 {
                return Walk::OverBudget;
            }
            *budget -= 1;
            if p == self.root || known.contains(&p) {
                // Everything on the path hangs from `p`.
                known.extend(stack.iter().map(|(u, _)| *u));
                return Walk::Reachable;
            }
            if seen.insert(p) {
                visited.push(p);
                stack.push((p, 0));
            }
        }
        Walk::Unreachable(visited)
    }

    /// Removes every object not reachable from the root (one full marking pass).
    pub(super) fn remove_unreachable(&mut self, mut tx: Option<&mut Tx>) {
        let live = self.reachable();
        if live.len() == self.objects.len() {
            return;
        }
        let mut dead: Vec<Uuid> = self.objects.keys().filter(|u| !live.contains(u)).copied().collect();
        // Removal order only shows in the undo log; sorted, it does not depend on hashing.
        dead.sort_unstable();
        for u in dead {
            self.remove_object(u, tx.as_deref_mut());
        }
    }

    /// Every object reachable from the root.
    pub(super) fn reachable(&self) -> UuidSet {
        let mut live = UuidSet::with_capacity_and_hasher(self.objects.len(), Default::default());
        let mut stack = vec![self.root];
        while let Some(u) = stack.pop() {
            if !live.insert(u) {
                continue;
            }
            if let Some(o) = self.objects.get(&u) {
                stack.extend(
                    o.slots.iter().flat_map(|s| s.refs().iter().copied()).filter(|c| !live.contains(c)),
                );
            }
        }
        live.retain(|u| self.objects.contains_key(u));
        live
    }
}

/// The outcome of [`ScopeState::walk_up`].
enum Walk {
    /// The root is above.
    Reachable,
    /// No path from the root: these objects (all ancestors of the start) are unreachable.
    Unreachable(Vec<Uuid>),
    /// Gave up: a full pass is due.
    OverBudget,
}

/// The net change in the number of references to each object, going from `old` to `new`
/// (sorted by UUID, zeros left out). The common prefix and suffix are skipped first, so that
/// appending to a long collection costs little beyond the comparison.
fn ref_deltas(old: &[Uuid], new: &[Uuid]) -> Vec<(Uuid, i64)> {
    let pre = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let (old, new) = (&old[pre..], &new[pre..]);
    let suf = old.iter().rev().zip(new.iter().rev()).take_while(|(a, b)| a == b).count();
    let (old, new) = (&old[..old.len() - suf], &new[..new.len() - suf]);
    if old.is_empty() && new.is_empty() {
        return Vec::new();
    }
    let changes = old.iter().map(|u| (*u, -1i64)).chain(new.iter().map(|u| (*u, 1i64)));
    let mut out: Vec<(Uuid, i64)> = if old.len() + new.len() <= 32 {
        let mut acc: Vec<(Uuid, i64)> = Vec::with_capacity(old.len() + new.len());
        for (u, d) in changes {
            match acc.iter_mut().find(|(v, _)| *v == u) {
                Some((_, n)) => *n += d,
                None => acc.push((u, d)),
            }
        }
        acc
    } else {
        let mut acc: UuidMap<i64> =
            UuidMap::with_capacity_and_hasher(old.len() + new.len(), Default::default());
        for (u, d) in changes {
            *acc.entry(u).or_insert(0) += d;
        }
        acc.into_iter().collect()
    };
    out.retain(|(_, d)| *d != 0);
    out.sort_unstable();
    out
}
