use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn who(client: ConnId, user: Option<&str>) -> PresenceInfo {
    PresenceInfo { client, user: user.map(Arc::from), info: None }
}

fn join(p: &PresenceInfo) -> Option<PresenceEvent> {
    Some(PresenceEvent::Join(p.clone()))
}

fn leave(p: &PresenceInfo) -> Option<PresenceEvent> {
    Some(PresenceEvent::Leave(p.clone()))
}

fn clients(entries: &[PresenceInfo]) -> Vec<ConnId> {
    entries.iter().map(|e| e.client).collect()
}

fn counts(connections: usize, users: usize) -> PresenceCounts {
    PresenceCounts { connections, users }
}

#[test]
fn join_refresh_and_leave_produce_one_event_each_way() {
    let mut p = ChannelPresence::new();
    let a = who(1, Some("ann"));
    assert_eq!(p.join(a.clone(), 0, 1_000), join(&a));
    assert_eq!(p.join(a.clone(), 10, 1_000), None, "a second join of a live client is a refresh");
    assert!(p.refresh(1, 20, 1_000));
    assert!(!p.refresh(2, 20, 1_000), "unknown client");
    assert_eq!(p.leave(1), leave(&a));
    assert_eq!(p.leave(1), None, "already gone");
    assert!(!p.refresh(1, 30, 1_000), "a client that left must join again");
    assert!(p.is_empty());
    assert_eq!(p.join(a.clone(), 40, 1_000), join(&a));
}

#[test]
fn a_join_with_new_information_replaces_the_entry_and_says_so() {
    let mut p = ChannelPresence::new();
    let anonymous = who(1, None);
    let logged_in = who(1, Some("ann"));
    p.join(anonymous, 0, 1_000);
    assert_eq!(p.counts(0), counts(1, 0));
    assert_eq!(p.join(logged_in.clone(), 10, 1_000), join(&logged_in));
    assert_eq!(p.counts(10), counts(1, 1));
    assert_eq!(p.entries(10), vec![logged_in.clone()]);
    assert_eq!(p.leave(1), leave(&logged_in));
    assert_eq!(p.counts(10), counts(0, 0));
}

#[test]
fn an_entry_nobody_refreshes_expires_and_leaves_no_ghost() {
    let mut p = ChannelPresence::new();
    let a = who(1, Some("ann"));
    p.join(a.clone(), 1_000, 500);
    assert_eq!(clients(&p.entries(1_499)), [1]);
    // Dead at exactly its expiry, even before the sweep runs.
    assert_eq!(p.entries(1_500), vec![]);
    assert_eq!(p.counts(1_500), counts(0, 0));
    assert_eq!(p.user_connections("ann", 1_500), 0);
    assert!(!p.refresh(1, 1_500, 500), "too late: the caller must join again");
    assert!(!p.is_empty(), "its Leave is still owed");
    assert_eq!(p.expire(1_499), vec![]);
    assert_eq!(p.expire(1_500), vec![PresenceEvent::Leave(a)]);
    assert!(p.is_empty());
    assert_eq!(p.next_expiry(), None);
    assert_eq!(p.expire(u64::MAX), vec![]);
}

#[test]
fn heartbeats_keep_an_entry_alive_past_its_first_ttl() {
    let mut p = ChannelPresence::new();
    p.join(who(1, None), 0, 1_000);
    for now in (500..=5_000).step_by(500) {
        assert!(p.refresh(1, now, 1_000), "heartbeat at {now}");
        assert_eq!(p.expire(now), vec![]);
    }
    assert_eq!(clients(&p.entries(5_999)), [1]);
    assert_eq!(p.expire(6_000).len(), 1);
}

#[test]
fn counts_connections_and_unique_users() {
    let mut p = ChannelPresence::new();
    p.join(who(1, Some("ann")), 0, 1_000);
    p.join(who(2, Some("ann")), 0, 1_000);
    p.join(who(3, None), 0, 1_000);
    assert_eq!(p.counts(0), counts(3, 1));
    assert_eq!(p.user_connections("ann", 0), 2);
    assert_eq!(p.user_connections("bob", 0), 0);
    assert_eq!(clients(&p.entries(0)), [1, 2, 3]);
}

#[test]
fn one_of_two_connections_leaving_keeps_the_user_counted() {
    let mut p = ChannelPresence::new();
    let tab1 = who(1, Some("ann"));
    let tab2 = who(2, Some("ann"));
    p.join(tab1.clone(), 0, 1_000);
    p.join(tab2.clone(), 0, 2_000);
    // Events are per connection: the user stays, the connection goes.
    assert_eq!(p.leave(1), leave(&tab1));
    assert_eq!(p.counts(0), counts(1, 1));
    assert_eq!(p.user_connections("ann", 0), 1);
    // The same holds when one expires and the other does not.
    p.join(tab1.clone(), 0, 1_000);
    assert_eq!(p.counts(1_000), counts(1, 1));
    assert_eq!(p.expire(1_000), vec![PresenceEvent::Leave(tab1)]);
    assert_eq!(p.counts(1_000), counts(1, 1));
    // The last connection takes the user with it.
    assert_eq!(p.counts(2_000), counts(0, 0));
    assert_eq!(p.expire(2_000), vec![PresenceEvent::Leave(tab2)]);
}

#[test]
fn next_expiry_is_the_earliest_and_follows_refreshes() {
    let mut p = ChannelPresence::new();
    assert_eq!(p.next_expiry(), None);
    p.join(who(1, None), 0, 300);
    p.join(who(2, None), 0, 100);
    p.join(who(3, None), 0, 200);
    assert_eq!(p.next_expiry(), Some(100));
    p.refresh(2, 50, 1_000);
    assert_eq!(p.next_expiry(), Some(200));
    p.leave(3);
    assert_eq!(p.next_expiry(), Some(300));
    let left: Vec<ConnId> = p.expire(10_000).iter().map(|e| e.info().client).collect();
    assert_eq!(left, [1, 2], "by expiry");
    assert_eq!(p.next_expiry(), None);
}

#[test]
fn expiry_leaves_come_by_expiry_then_client() {
    let mut p = ChannelPresence::new();
    for (client, ttl) in [(5, 20), (3, 10), (9, 10), (1, 20)] {
        p.join(who(client, None), 0, ttl);
    }
    let left: Vec<ConnId> = p.expire(20).iter().map(|e| e.info().client).collect();
    assert_eq!(left, [3, 9, 1, 5]);
}

#[test]
fn a_join_over_a_dead_entry_is_a_new_join() {
    let mut p = ChannelPresence::new();
    let a = who(1, Some("ann"));
    p.join(a.clone(), 0, 100);
    assert_eq!(p.join(a.clone(), 100, 100), join(&a), "dead at 100: not present");
    assert_eq!(p.counts(100), counts(1, 1));
    assert_eq!(p.expire(100), vec![], "the old entry was replaced, not left behind");
    // A leave of a dead entry that was never swept still announces it.
    assert_eq!(p.leave(1), leave(&a));
}

#[test]
fn odd_inputs_never_panic() {
    let mut p = ChannelPresence::new();
    assert_eq!(p.leave(7), None);
    assert!(!p.refresh(7, 0, 0));
    assert_eq!(p.expire(0), vec![]);
    // ttl 0: dead at once.
    p.join(who(1, None), 10, 0);
    assert_eq!(p.entries(10), vec![]);
    assert_eq!(p.expire(10).len(), 1);
    // Saturating expiry at the end of time; at u64::MAX everything is dead.
    p.join(who(2, Some("ann")), u64::MAX - 1, u64::MAX);
    assert_eq!(p.next_expiry(), Some(u64::MAX));
    assert!(p.refresh(2, u64::MAX - 1, u64::MAX));
    assert_eq!(p.counts(u64::MAX - 1), counts(1, 1));
    assert_eq!(p.counts(u64::MAX), counts(0, 0));
    // Time going backwards: liveness is judged against the time given.
    p.join(who(3, None), 1_000, 100);
    assert_eq!(clients(&p.entries(1_100)), [2]);
    assert_eq!(clients(&p.entries(500)), [2, 3]);
    assert!(p.refresh(3, 500, 100), "live at 500");
    assert_eq!(p.next_expiry(), Some(600), "the latest heartbeat wins");
    assert_eq!(p.expire(u64::MAX).len(), 2);
    assert!(p.is_empty());
}

// ---------------------------------------------------------------------------------------
// Model-based test.

const USERS: [Option<&str>; 3] = [None, Some("ann"), Some("bob")];
const INFOS: [Option<&str>; 2] = [None, Some(r#"{"tab":1}"#)];

#[derive(Debug, Clone)]
enum Op {
    Join {
        client: ConnId,
        user: usize,
        info: usize,
        ttl: u64,
    },
    Refresh {
        client: ConnId,
        ttl: u64,
    },
    Leave {
        client: ConnId,
    },
    Expire,
    Advance {
        dt: u64,
    },
    /// Time goes backwards (a caller with a clock that is not monotonic).
    Back {
        dt: u64,
    },
    /// Jump to near the end of time, to exercise saturation.
    Jump,
}

fn ttl() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => Just(0u64),
        8 => 1u64..300,
        1 => Just(u64::MAX),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..5, 0..USERS.len(), 0..INFOS.len(), ttl())
            .prop_map(|(client, user, info, ttl)| Op::Join { client, user, info, ttl }),
        4 => (0u64..5, ttl()).prop_map(|(client, ttl)| Op::Refresh { client, ttl }),
        2 => (0u64..5).prop_map(|client| Op::Leave { client }),
        2 => Just(Op::Expire),
        4 => (0u64..200).prop_map(|dt| Op::Advance { dt }),
        1 => (0u64..200).prop_map(|dt| Op::Back { dt }),
        1 => Just(Op::Jump),
    ]
}

/// The naive model: every entry with its expiry, scanned on every question.
#[derive(Debug, Default)]
struct Model {
    entries: Vec<(PresenceInfo, u64)>,
}

impl Model {
    fn position(&self, client: ConnId) -> Option<usize> {
        self.entries.iter().position(|(i, _)| i.client == client)
    }

    fn join(&mut self, info: PresenceInfo, now: u64, ttl: u64) -> Option<PresenceEvent> {
        let expires = now.saturating_add(ttl);
        match self.position(info.client) {
            Some(i) if self.entries[i].1 > now && self.entries[i].0 == info => {
                self.entries[i].1 = expires;
                None
            }
            Some(i) => {
                self.entries[i] = (info.clone(), expires);
                Some(PresenceEvent::Join(info))
            }
            None => {
                self.entries.push((info.clone(), expires));
                Some(PresenceEvent::Join(info))
            }
        }
    }

    fn refresh(&mut self, client: ConnId, now: u64, ttl: u64) -> bool {
        match self.position(client) {
            Some(i) if self.entries[i].1 > now => {
                self.entries[i].1 = now.saturating_add(ttl);
                true
            }
            _ => false,
        }
    }

    fn leave(&mut self, client: ConnId) -> Option<PresenceEvent> {
        let i = self.position(client)?;
        Some(PresenceEvent::Leave(self.entries.remove(i).0))
    }

    fn expire(&mut self, now: u64) -> Vec<PresenceEvent> {
        let mut dead: Vec<(PresenceInfo, u64)> =
            self.entries.iter().filter(|(_, e)| *e <= now).cloned().collect();
        self.entries.retain(|(_, e)| *e > now);
        dead.sort_by_key(|(i, e)| (*e, i.client));
        dead.into_iter().map(|(i, _)| PresenceEvent::Leave(i)).collect()
    }

    fn live(&self, now: u64) -> Vec<PresenceInfo> {
        let mut live: Vec<PresenceInfo> =
            self.entries.iter().filter(|(_, e)| *e > now).map(|(i, _)| i.clone()).collect();
        live.sort_by_key(|i| i.client);
        live
    }

    fn counts(&self, now: u64) -> PresenceCounts {
        let live = self.live(now);
        let mut users: Vec<&str> = live.iter().filter_map(|i| i.user.as_deref()).collect();
        users.sort_unstable();
        users.dedup();
        PresenceCounts { connections: live.len(), users: users.len() }
    }

    fn user_connections(&self, user: &str, now: u64) -> usize {
        self.live(now).iter().filter(|i| i.user.as_deref() == Some(user)).count()
    }
}

proptest! {
    /// Against a model that scans a plain list: every event returned, the live entries,
    /// the counts, each user's connections, the next expiry and emptiness agree after
    /// every step; and a consumer that applies the events (Join: upsert by client, Leave:
    /// remove) ends up holding exactly the stored entries.
    #[test]
    fn presence_matches_a_model(ops in prop::collection::vec(op(), 1..150), start in 0u64..1_000) {
        let mut p = ChannelPresence::new();
        let mut model = Model::default();
        let mut consumer: BTreeMap<ConnId, PresenceInfo> = BTreeMap::new();
        let mut now = start;
        for op in ops {
            let events: Vec<PresenceEvent> = match op {
                Op::Join { client, user, info, ttl } => {
                    let info = PresenceInfo {
                        client,
                        user: USERS[user].map(Arc::from),
                        info: INFOS[info].map(Arc::from),
                    };
                    let got = p.join(info.clone(), now, ttl);
                    prop_assert_eq!(&got, &model.join(info, now, ttl));
                    got.into_iter().collect()
                }
                Op::Refresh { client, ttl } => {
                    prop_assert_eq!(p.refresh(client, now, ttl), model.refresh(client, now, ttl));
                    Vec::new()
                }
                Op::Leave { client } => {
                    let got = p.leave(client);
                    prop_assert_eq!(&got, &model.leave(client));
                    got.into_iter().collect()
                }
                Op::Expire => {
                    let got = p.expire(now);
                    prop_assert_eq!(&got, &model.expire(now));
                    got
                }
                Op::Advance { dt } => {
                    now = now.saturating_add(dt);
                    Vec::new()
                }
                Op::Back { dt } => {
                    now = now.saturating_sub(dt);
                    Vec::new()
                }
                Op::Jump => {
                    now = u64::MAX - 100;
                    Vec::new()
                }
            };
            for event in events {
                match event {
                    PresenceEvent::Join(info) => {
                        consumer.insert(info.client, info);
                    }
                    PresenceEvent::Leave(info) => {
                        prop_assert_eq!(consumer.remove(&info.client), Some(info), "a Leave for what was joined");
                    }
                }
            }
            prop_assert_eq!(p.entries(now), model.live(now));
            prop_assert_eq!(p.counts(now), model.counts(now));
            for user in USERS.iter().flatten() {
                prop_assert_eq!(p.user_connections(user, now), model.user_connections(user, now));
            }
            prop_assert_eq!(p.next_expiry(), model.entries.iter().map(|(_, e)| *e).min());
            prop_assert_eq!(p.is_empty(), model.entries.is_empty());
            let stored: Vec<&PresenceInfo> = p.slots.values().map(|slot| &slot.info).collect();
            prop_assert_eq!(consumer.values().collect::<Vec<_>>(), stored);
        }
    }
}
