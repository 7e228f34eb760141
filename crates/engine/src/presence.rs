//! Channel presence: who is subscribed to one channel right now, per connection, with a
//! time to live so that a crashed process leaves no ghosts.
//!
//! Every entry belongs to one connection ([`ConnId`]) and carries the user it
//! authenticated as (if any) and the opaque `info` from its token. An entry lives until
//! `now_ms + ttl_ms`; the connection's heartbeat ([`ChannelPresence::refresh`]) pushes that
//! back. If the process holding the connection dies, nobody refreshes and the entry simply
//! runs out: there is no "clean shutdown" path that has to run for presence to be right.
//!
//! # Events are per connection
//!
//! [`PresenceEvent::Join`] and [`PresenceEvent::Leave`] describe one connection, not one
//! user: a user with two tabs open joins twice and, when one tab closes, produces a `Leave`
//! for that tab while staying present through the other. The unique-user count
//! ([`PresenceCounts::users`]) drops only when the user's **last** live connection leaves or
//! expires; [`ChannelPresence::user_connections`] says how many are left.
//!
//! Events are state assertions keyed by client id: `Join(info)` means "this connection is
//! present with `info`" and `Leave` means "this connection is gone". A consumer that
//! applies every returned event in order (`Join`: insert or replace, `Leave`: remove)
//! holds exactly the stored entries, and therefore exactly [`ChannelPresence::entries`]
//! once [`ChannelPresence::expire`] has run for the same `now_ms`. This is why a `join`
//! whose `info` differs from the stored one (an anonymous connection that logged in)
//! returns a `Join` although the client was present: staying silent would leave every
//! consumer with the old identity.
//!
//! # Dead entries and the sweep
//!
//! An entry whose expiry is `<= now_ms` is *dead*. Dead entries stay stored until
//! [`ChannelPresence::expire`] removes them and returns their `Leave`s: that is the only
//! way those events can reach anyone, so no read ever removes an entry behind the caller's
//! back (a `counts(&mut self)` that swept first would have to drop the `Leave`s it
//! produced). Reads take `now_ms` and skip dead entries instead:
//!
//! - [`ChannelPresence::entries`], [`ChannelPresence::counts`] and
//!   [`ChannelPresence::user_connections`] never count a dead entry. Counts are kept
//!   incrementally (a connection count and a per-user reference count, updated on every
//!   insert and removal), and a read corrects them for the dead entries not yet swept by
//!   walking only those, through the expiry index. So `counts` is O(1) right after
//!   `expire(now_ms)` and O(d log d) with `d` dead entries pending otherwise: never a scan
//!   of every entry.
//! - [`ChannelPresence::refresh`] of a dead entry returns `false` and leaves it for the
//!   sweep (its `Leave` is still owed); the caller re-joins.
//! - [`ChannelPresence::join`] of a client whose entry is dead replaces it and returns a
//!   `Join`: the client was not present. The old entry's `Leave` is not announced; the new
//!   `Join` supersedes it for any consumer keyed by client id.
//! - [`ChannelPresence::leave`] of a dead entry removes it and returns its `Leave`, which
//!   was still owed.
//!
//! A caller that wants the strict sequence (`Leave` before the re-`Join`) calls
//! `expire(now_ms)` before anything else at that time; [`ChannelPresence::next_expiry`]
//! says when the next sweep is due.
//!
//! # Cost
//!
//! Entries are kept in client order (a `BTreeMap`) and indexed by `(expiry, client)` (a
//! `BTreeSet`), so `expire` costs O(k log n) for the `k` entries it removes and finding
//! the next expiry is O(log n). Every returned vector has a defined order (entries by
//! client id, expiry `Leave`s by expiry then client id); the only hash map, the per-user
//! reference counts, is never iterated.
//!
//! # Time
//!
//! Pure: the caller passes `now_ms` (any monotonic-enough millisecond clock) on every
//! call. Expiries saturate at `u64::MAX` (and at `now_ms == u64::MAX` every entry is dead).
//! Time going backwards is not an error: each call judges liveness against the `now_ms` it
//! is given, so an entry dead at 100 is live again at 50 if it has not been swept; a swept
//! entry stays gone. A `ttl_ms` of 0 makes an entry that is dead at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::hub::ConnId;

/// Who one present connection is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PresenceInfo {
    /// The connection.
    pub client: ConnId,
    /// The user it authenticated as (`None`: anonymous).
    pub user: Option<Arc<str>>,
    /// Opaque information from its credential (JSON text, passed through untouched).
    pub info: Option<Arc<str>>,
}

/// A change in a channel's presence, for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceEvent {
    /// The connection is present with this information (insert or replace by client id).
    Join(PresenceInfo),
    /// The connection is gone (graceful leave or expiry); carries its last information.
    Leave(PresenceInfo),
}

impl PresenceEvent {
    /// The connection the event is about.
    pub fn info(&self) -> &PresenceInfo {
        match self {
            Self::Join(info) | Self::Leave(info) => info,
        }
    }
}

/// How many are present at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PresenceCounts {
    /// Live connections, anonymous ones included.
    pub connections: usize,
    /// Distinct users with at least one live connection (anonymous connections are not
    /// users).
    pub users: usize,
}

/// One stored entry.
#[derive(Debug, Clone)]
struct Slot {
    info: PresenceInfo,
    /// Dead once `expires_ms <= now_ms`.
    expires_ms: u64,
}

/// The presence of one channel. See the [module docs](self) for the semantics.
#[derive(Debug, Clone, Default)]
pub struct ChannelPresence {
    /// Every stored entry, live or dead, by client id.
    slots: BTreeMap<ConnId, Slot>,
    /// `(expires_ms, client)` of every stored entry: the sweep order.
    by_expiry: BTreeSet<(u64, ConnId)>,
    /// Stored entries per user (live or dead); a user is a key only while its count is
    /// positive. Looked up, never iterated.
    users: HashMap<Arc<str>, usize>,
}

impl ChannelPresence {
    /// No one present.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `info.client`, or refreshes it, expiring at `now_ms + ttl_ms`.
    ///
    /// Returns `Some(Join)` if the client was not present (never joined, left, or dead at
    /// `now_ms`) or if it was present with different `user`/`info` (the entry is replaced:
    /// see the [module docs](self) on why). A join of a live client with the same
    /// information is a refresh and returns `None`.
    pub fn join(&mut self, info: PresenceInfo, now_ms: u64, ttl_ms: u64) -> Option<PresenceEvent> {
        let expires_ms = now_ms.saturating_add(ttl_ms);
        let client = info.client;
        if let Some(slot) = self.slots.get_mut(&client)
            && slot.expires_ms > now_ms
            && slot.info == info
        {
            self.by_expiry.remove(&(slot.expires_ms, client));
            slot.expires_ms = expires_ms;
            self.by_expiry.insert((expires_ms, client));
            return None;
        }
        self.remove(client);
        self.insert(info.clone(), expires_ms);
        Some(PresenceEvent::Join(info))
    }

    /// Heartbeat: sets the expiry of `client` to `now_ms + ttl_ms` (the latest heartbeat
    /// wins, even if that shortens it).
    ///
    /// Returns `false`, changing nothing, if the client is not present at `now_ms`: it
    /// left or its entry is dead (still owed a `Leave` by [`expire`](Self::expire)). The
    /// caller should then [`join`](Self::join) again.
    pub fn refresh(&mut self, client: ConnId, now_ms: u64, ttl_ms: u64) -> bool {
        let Some(slot) = self.slots.get_mut(&client) else {
            return false;
        };
        if slot.expires_ms <= now_ms {
            return false;
        }
        let expires_ms = now_ms.saturating_add(ttl_ms);
        self.by_expiry.remove(&(slot.expires_ms, client));
        slot.expires_ms = expires_ms;
        self.by_expiry.insert((expires_ms, client));
        true
    }

    /// Removes `client` (graceful leave). Returns its `Leave` if it was stored, dead or
    /// not (a dead entry's `Leave` has not been announced yet); `None` if it was not.
    ///
    /// The `Leave` is per connection: the user stays counted while it has another live
    /// connection.
    pub fn leave(&mut self, client: ConnId) -> Option<PresenceEvent> {
        self.remove(client).map(|slot| PresenceEvent::Leave(slot.info))
    }

    /// Removes every entry dead at `now_ms` (expiry `<= now_ms`) and returns one `Leave`
    /// per removed entry, by expiry then client id. Costs O(k log n) for `k` removed.
    pub fn expire(&mut self, now_ms: u64) -> Vec<PresenceEvent> {
        let mut events = Vec::new();
        while let Some(&(expires_ms, client)) = self.by_expiry.first() {
            if expires_ms > now_ms {
                break;
            }
            match self.remove(client) {
                Some(slot) => events.push(PresenceEvent::Leave(slot.info)),
                // Unreachable while the index matches the slots; never loop on it.
                None => {
                    self.by_expiry.remove(&(expires_ms, client));
                }
            }
        }
        events
    }

    /// The entries live at `now_ms`, by client id. Does not remove dead ones.
    pub fn entries(&self, now_ms: u64) -> Vec<PresenceInfo> {
        self.slots.values().filter(|slot| slot.expires_ms > now_ms).map(|slot| slot.info.clone()).collect()
    }

    /// Live connections and distinct users at `now_ms`. Anonymous connections count as
    /// connections only. O(1) when nothing is dead at `now_ms` (after
    /// [`expire`](Self::expire)), else O(d log d) for the `d` dead entries not yet swept.
    pub fn counts(&self, now_ms: u64) -> PresenceCounts {
        let mut counts = PresenceCounts { connections: self.slots.len(), users: self.users.len() };
        let mut dead_per_user: BTreeMap<&str, usize> = BTreeMap::new();
        for slot in self.dead(now_ms) {
            counts.connections = counts.connections.saturating_sub(1);
            if let Some(user) = &slot.info.user {
                *dead_per_user.entry(user).or_default() += 1;
            }
        }
        for (user, dead) in dead_per_user {
            if self.users.get(user).is_some_and(|&stored| stored <= dead) {
                counts.users = counts.users.saturating_sub(1);
            }
        }
        counts
    }

    /// How many connections of `user` are live at `now_ms` (0: the user is not present).
    /// O(1) plus O(d) for the `d` dead entries not yet swept.
    pub fn user_connections(&self, user: &str, now_ms: u64) -> usize {
        let stored = self.users.get(user).copied().unwrap_or(0);
        if stored == 0 {
            return 0;
        }
        let dead = self.dead(now_ms).filter(|slot| slot.info.user.as_deref() == Some(user)).count();
        stored.saturating_sub(dead)
    }

    /// True if nothing is stored, not even a dead entry awaiting its sweep: the caller may
    /// drop this channel's presence.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The earliest expiry among stored entries: when [`expire`](Self::expire) next has
    /// something to do (it may already be `<= now`). `None` if nothing is stored.
    pub fn next_expiry(&self) -> Option<u64> {
        self.by_expiry.first().map(|&(expires_ms, _)| expires_ms)
    }

    /// The stored entries dead at `now_ms`, through the expiry index.
    fn dead(&self, now_ms: u64) -> impl Iterator<Item = &Slot> {
        self.by_expiry.range(..=(now_ms, ConnId::MAX)).filter_map(|(_, client)| self.slots.get(client))
    }

    /// Stores an entry for a client that has none.
    fn insert(&mut self, info: PresenceInfo, expires_ms: u64) {
        let client = info.client;
        if let Some(user) = &info.user {
            *self.users.entry(Arc::clone(user)).or_default() += 1;
        }
        self.by_expiry.insert((expires_ms, client));
        self.slots.insert(client, Slot { info, expires_ms });
    }

    /// Removes a client's entry and everything that counts it.
    fn remove(&mut self, client: ConnId) -> Option<Slot> {
        let slot = self.slots.remove(&client)?;
        self.by_expiry.remove(&(slot.expires_ms, client));
        if let Some(user) = &slot.info.user
            && let Some(count) = self.users.get_mut(&**user)
        {
            *count -= 1;
            if *count == 0 {
                self.users.remove(&**user);
            }
        }
        Some(slot)
    }
}

#[cfg(test)]
mod tests;
