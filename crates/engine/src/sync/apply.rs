//! Applying a changeset: steps 3–8 of the reference's `Scope.applySyncFragments`, with
//! Tether's atomic mode. The steps are documented on [`ScopeState::apply`].

use std::sync::Arc;

use serde_json::Value;
use tether_proto::jetstream::{FragmentKind, SyncFragment, Uuid};

use super::error::{self, FragmentError};
use super::graph::Tx;
use super::hash::{UuidMap, UuidSet};
use super::scope::ScopeState;
use super::value::Slot;
use super::verify::{Sets, Source, verify};

/// The outcome of [`ScopeState::apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// One reply per fragment, aligned with the changeset: `Ok(())` is `{}` on the wire.
    pub replies: Vec<Result<(), FragmentError>>,
    /// The fragments that were applied, normalised (UUIDs lower-case, dates as epoch
    /// seconds, numbers as JavaScript would print them, enumeration values as declared, a
    /// change's `clsName` the object's model, a repeated key once), in changeset order:
    /// what to broadcast to the scope's other sessions and to log. Empty if none was.
    pub applied: Vec<SyncFragment>,
}

/// An add fragment that passed step 1.
struct Pending {
    /// Its index in the changeset.
    frag: usize,
    /// Its model.
    model: usize,
    /// Still on course to be applied.
    ok: bool,
    /// Its verified values (until set).
    sets: Option<Sets>,
    /// The other pending adds its values refer to.
    deps: Vec<Uuid>,
}

impl ScopeState {
    /// Applies one changeset. Returns one reply per fragment, aligned 1:1, and the applied
    /// fragments, normalised, in the order to broadcast.
    ///
    /// The steps (the reference's steps 3 to 8):
    ///
    /// 1. **Adds**, in order: the UUID must be new (not in the scope, not added earlier in
    ///    the changeset: "ModelObject with UUID 'u' already exists") and `clsName` a model
    ///    this scope can hold ("No such class type 'X'").
    /// 2. **Add properties**: each add is verified; references may point at objects in the
    ///    scope or added by the changeset. An add that refers to an add that failed fails
    ///    too ("No such ModelObject"), whatever their order: a failed object never exists, so
    ///    nothing may refer to it. Then the objects are created, with defaults for what
    ///    they were not given.
    /// 3. **Changes**, in order: the object must be in the scope ("ModelObject not found";
    ///    objects added by the same changeset are not in it yet). Each fragment is verified
    ///    completely before anything is set, so each is all-or-nothing. `clsName` is not
    ///    checked (the object's model is used).
    /// 4. **Commit**: an added object fails with "No parents, parent sync fragment failed"
    ///    unless an applied change refers to it, or an added object that does
    ///    (recursively). This is the reference's "gained a parent", read on the fragments
    ///    rather than on the final graph, so that replaying the applied fragments alone
    ///    always reproduces the same state with every fragment accepted: no applied fragment
    ///    refers to an object whose add was not applied.
    /// 5. **Orphan sweep**: objects no longer reachable from the root are removed,
    ///    recursively, cycles cut off from the root included. An added object that was
    ///    committed but hangs from nothing (its parent was detached in the same changeset)
    ///    goes too, its fragment still applied.
    /// 6. **Result**: a reply per fragment, and the applied fragments in changeset order,
    ///    normalised (see [`Applied::applied`]): what the scope's other sessions are sent and
    ///    what the store logs. A changeset where nothing applied gives an empty list (the
    ///    reference still broadcasts it, as an empty `ScopeSync`).
    ///
    /// With `atomic`, every fragment applies or none does: if any fails, the scope is
    /// exactly as before (rolled back through an undo log, not restored from a copy),
    /// `applied` is empty, each failing fragment gets its own error and every other one
    /// "Atomic changeset rejected: another fragment failed" (kind
    /// `atomic-changeset-rejected`).
    pub fn apply(&mut self, fragments: &[SyncFragment], atomic: bool) -> Applied {
        let schema = Arc::clone(&self.schema);
        let n = fragments.len();
        let mut replies: Vec<Result<(), FragmentError>> = vec![Ok(()); n];
        // The normalised properties of each fragment applied so far.
        let mut wire: Vec<Option<Vec<(String, Value)>>> = vec![None; n];
        let mut tx = Tx::new(atomic);

        // Step 1 (reference step 3): adds.
        let reach = &schema.model(self.root_cls).reach;
        let mut pending: UuidMap<Pending> = UuidMap::default();
        let mut adds: Vec<Uuid> = Vec::new();
        for (i, f) in fragments.iter().enumerate().filter(|(_, f)| f.kind == FragmentKind::Add) {
            if self.objects.contains_key(&f.uuid) || pending.contains_key(&f.uuid) {
                replies[i] = Err(error::already_exists(&f.uuid.to_string()));
                continue;
            }
            match schema.model_id(&f.cls_name).filter(|&m| reach[m]) {
                Some(model) => {
                    pending
                        .insert(f.uuid, Pending { frag: i, model, ok: true, sets: None, deps: Vec::new() });
                    adds.push(f.uuid);
                }
                None => replies[i] = Err(error::no_such_class(&f.cls_name)),
            }
        }

        // Step 2 (reference step 4): add properties.
        if !adds.is_empty() {
            let mut failed: Vec<Uuid> = Vec::new();
            for u in &adds {
                let Some(p) = pending.get(u) else { continue };
                let resolve =
                    |x: &Uuid| self.objects.get(x).map(|o| o.cls).or_else(|| pending.get(x).map(|q| q.model));
                let result =
                    verify(&schema, p.model, &fragments[p.frag].properties, &resolve, None, Source::Incoming);
                let frag = p.frag;
                match result {
                    Ok(sets) => {
                        let deps = pending_refs(&sets, &pending);
                        if let Some(p) = pending.get_mut(u) {
                            p.deps = deps;
                            p.sets = Some(sets);
                        }
                    }
                    Err(e) => {
                        replies[frag] = Err(e);
                        failed.push(*u);
                    }
                }
            }
            if !failed.is_empty() {
                self.cascade_add_failures(fragments, &adds, &mut pending, failed, &mut replies);
            }
            for u in &adds {
                if let Some(p) = pending.get(u).filter(|p| p.ok) {
                    self.insert_object(*u, p.model, Some(&mut tx));
                }
            }
            for u in &adds {
                let Some(p) = pending.get_mut(u).filter(|p| p.ok) else { continue };
                let (frag, sets) = (p.frag, p.sets.take().unwrap_or_default());
                wire[frag] = Some(self.wire_properties(p.model, &sets));
                for (prop, slot) in sets {
                    self.set_slot(*u, prop, slot, Some(&mut tx));
                }
            }
        }

        // Step 3 (reference step 5): changes, in order.
        let mut anchors: Vec<Uuid> = Vec::new();
        let mut change_cls: Vec<Option<usize>> = vec![None; n];
        for (i, f) in fragments.iter().enumerate().filter(|(_, f)| f.kind == FragmentKind::Change) {
            let target = self.objects.get(&f.uuid).filter(|_| !pending.get(&f.uuid).is_some_and(|p| p.ok));
            let Some(target) = target else {
                replies[i] = Err(error::object_not_found());
                continue;
            };
            let cls = target.cls;
            let resolve = |x: &Uuid| self.objects.get(x).map(|o| o.cls);
            match verify(&schema, cls, &f.properties, &resolve, Some(&target.slots), Source::Incoming) {
                Ok(sets) => {
                    if !pending.is_empty() {
                        anchors.extend(pending_refs(&sets, &pending));
                    }
                    wire[i] = Some(self.wire_properties(cls, &sets));
                    change_cls[i] = Some(cls);
                    for (prop, slot) in sets {
                        self.set_slot(f.uuid, prop, slot, Some(&mut tx));
                    }
                }
                Err(e) => replies[i] = Err(e),
            }
        }

        // Step 4 (reference step 6): commit the adds something applied refers to.
        if pending.values().any(|p| p.ok) {
            let mut anchored = UuidSet::default();
            while let Some(u) = anchors.pop() {
                if anchored.insert(u)
                    && let Some(p) = pending.get(&u)
                {
                    anchors.extend(p.deps.iter().copied());
                }
            }
            for u in &adds {
                let Some(p) = pending.get(u).filter(|p| p.ok) else { continue };
                if anchored.contains(u) {
                    // Committed; the sweep checks it hangs from the root.
                    tx.suspects.push(*u);
                } else {
                    replies[p.frag] = Err(error::no_parents());
                    wire[p.frag] = None;
                    self.remove_object(*u, Some(&mut tx));
                }
            }
        }

        let failed = replies.iter().any(Result::is_err);
        if atomic && failed {
            if let Some(log) = tx.log.take() {
                self.undo(log);
            }
            let replies = replies
                .into_iter()
                .map(|r| match r {
                    Ok(()) => Err(error::atomic_rejected()),
                    Err(e) => Err(e),
                })
                .collect();
            return Applied { replies, applied: Vec::new() };
        }

        // Step 5 (reference step 7): the orphan sweep. It cannot fail, so nothing after this
        // point is ever rolled back.
        tx.log = None;
        self.sweep(&mut tx);

        // Step 6 (reference step 8): what was applied.
        let applied = fragments
            .iter()
            .zip(wire)
            .zip(change_cls)
            .filter_map(|((f, props), cls)| {
                let properties = props?;
                let cls_name = match cls {
                    Some(c) => schema.model(c).name.clone(),
                    None => f.cls_name.clone(),
                };
                Some(SyncFragment { kind: f.kind, uuid: f.uuid, cls_name, properties })
            })
            .collect();
        Applied { replies, applied }
    }

    /// An add that refers to a failed add fails too, and so on. Their messages are those
    /// verification gives once the failed adds are taken as nonexistent.
    fn cascade_add_failures(
        &self,
        fragments: &[SyncFragment],
        adds: &[Uuid],
        pending: &mut UuidMap<Pending>,
        mut failed: Vec<Uuid>,
        replies: &mut [Result<(), FragmentError>],
    ) {
        let mut referrers: UuidMap<Vec<Uuid>> = UuidMap::default();
        for u in adds {
            if let Some(p) = pending.get(u) {
                for d in &p.deps {
                    referrers.entry(*d).or_default().push(*u);
                }
            }
        }
        let mut cascaded: Vec<Uuid> = Vec::new();
        for u in &failed {
            if let Some(p) = pending.get_mut(u) {
                p.ok = false;
                p.sets = None;
            }
        }
        while let Some(u) = failed.pop() {
            for r in referrers.get(&u).map(Vec::as_slice).unwrap_or_default() {
                if let Some(p) = pending.get_mut(r).filter(|p| p.ok) {
                    p.ok = false;
                    p.sets = None;
                    failed.push(*r);
                    cascaded.push(*r);
                }
            }
        }
        for u in cascaded {
            let Some(p) = pending.get(&u) else { continue };
            let resolve = |x: &Uuid| {
                self.objects
                    .get(x)
                    .map(|o| o.cls)
                    .or_else(|| pending.get(x).filter(|q| q.ok).map(|q| q.model))
            };
            let e = verify(
                &self.schema,
                p.model,
                &fragments[p.frag].properties,
                &resolve,
                None,
                Source::Incoming,
            )
            .err()
            // Unreachable (it refers to a failed add), but never report success for it.
            .unwrap_or_else(error::no_parents);
            replies[p.frag] = Err(e);
        }
    }

    /// The wire form of verified values.
    fn wire_properties(&self, model: usize, sets: &Sets) -> Vec<(String, Value)> {
        let m = self.schema.model(model);
        sets.iter().map(|(p, slot)| (m.props[*p].name.clone(), slot.to_json())).collect()
    }
}

/// The pending adds `sets` refers to.
fn pending_refs(sets: &Sets, pending: &UuidMap<Pending>) -> Vec<Uuid> {
    sets.iter()
        .flat_map(|(_, s): &(usize, Slot)| s.refs().iter().copied())
        .filter(|u| pending.contains_key(u))
        .collect()
}
