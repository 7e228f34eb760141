//! Channel history: the recent publications of one channel, numbered by offset, under an
//! epoch.
//!
//! Every publication on a channel with history gets the next offset (1, 2, …). The epoch
//! names one unbroken sequence of offsets: it changes whenever the history is lost (a
//! restart without a persistent store, a reset), so a position `(offset, epoch)` a client
//! kept from before can never be mistaken for a position in a new sequence.
//!
//! The history keeps at most `max_count` publications and none older than `max_age_ms`.
//! A client that comes back with its last position either gets **every** publication it
//! missed, in order, or is told it cannot be recovered ([`Recovery::NotRecovered`]) and
//! gets the current position instead: never a partial recovery. Trimming by age happens
//! on every write and read with the caller's clock, so an expired entry is never served.
//!
//! Pure: the caller passes the time and the epoch (randomness lives with the caller).

use std::collections::VecDeque;
use std::sync::Arc;

/// A position in a channel's stream: the offset of the last publication seen, in an
/// epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// Offset of the last publication (0: none yet).
    pub offset: u64,
    /// The epoch the offset belongs to.
    pub epoch: Arc<str>,
}

/// How much history a channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most publications kept (at least 1 is used).
    pub max_count: usize,
    /// Oldest publication kept, in milliseconds (0: no age limit).
    pub max_age_ms: u64,
}

/// One kept publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    /// Its offset.
    pub offset: u64,
    /// When it was published (caller's clock, milliseconds).
    pub at_ms: u64,
    /// The publication.
    pub item: T,
}

/// Why a position could not be recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRecovered {
    /// The position is from another epoch: the history it belonged to is gone.
    EpochChanged,
    /// Some publications after the position are no longer kept (count or age limit).
    Trimmed,
    /// More publications were missed than one recovery may return.
    TooMany,
    /// The position is ahead of the channel (a forged or foreign position).
    Ahead,
}

/// The result of a recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery<T> {
    /// Every publication after the position, in order (possibly none).
    Recovered(Vec<Entry<T>>),
    /// Nothing is returned: the client must start over from the current position.
    NotRecovered(NotRecovered),
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The entries, oldest first (forward) or newest first (backward).
    pub entries: Vec<Entry<T>>,
    /// The channel's position when the page was read.
    pub position: Position,
}

/// The history of one channel.
#[derive(Debug, Clone)]
pub struct ChannelHistory<T> {
    epoch: Arc<str>,
    /// Offset of the last publication (0: none yet).
    top: u64,
    /// Kept publications, oldest first, offsets consecutive and ending at `top`.
    entries: VecDeque<Entry<T>>,
    limits: HistoryLimits,
}

impl<T: Clone> ChannelHistory<T> {
    /// An empty history in a new epoch.
    pub fn new(epoch: Arc<str>, limits: HistoryLimits) -> Self {
        Self { epoch, top: 0, entries: VecDeque::new(), limits }
    }

    /// A history restored from a store: `top` is the last offset published, `entries`
    /// the kept publications (they must end at `top` with consecutive offsets; anything
    /// else is dropped, keeping the longest consecutive run that ends at `top`).
    pub fn restore(epoch: Arc<str>, top: u64, entries: Vec<Entry<T>>, limits: HistoryLimits) -> Self {
        let mut kept: VecDeque<Entry<T>> = VecDeque::with_capacity(entries.len());
        let mut expect = top;
        for e in entries.into_iter().rev() {
            if e.offset != expect || expect == 0 {
                break;
            }
            expect -= 1;
            kept.push_front(e);
        }
        Self { epoch, top, entries: kept, limits }
    }

    /// The current position.
    pub fn position(&self) -> Position {
        Position { offset: self.top, epoch: Arc::clone(&self.epoch) }
    }

    /// Number of publications kept right now (before trimming by age).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a publication; returns its offset.
    pub fn append(&mut self, item: T, now_ms: u64) -> u64 {
        self.top += 1;
        self.entries.push_back(Entry { offset: self.top, at_ms: now_ms, item });
        let max = self.limits.max_count.max(1);
        while self.entries.len() > max {
            self.entries.pop_front();
        }
        self.trim(now_ms);
        self.top
    }

    /// Drops what is older than `max_age_ms`.
    pub fn trim(&mut self, now_ms: u64) {
        if self.limits.max_age_ms == 0 {
            return;
        }
        let oldest = now_ms.saturating_sub(self.limits.max_age_ms);
        while self.entries.front().is_some_and(|e| e.at_ms < oldest) {
            self.entries.pop_front();
        }
    }

    /// Everything published after `since`, if all of it is kept and there are at most
    /// `limit` publications (0: no limit); otherwise [`Recovery::NotRecovered`] and
    /// nothing.
    pub fn recover(&mut self, since: &Position, limit: usize, now_ms: u64) -> Recovery<T> {
        self.trim(now_ms);
        if *since.epoch != *self.epoch {
            return Recovery::NotRecovered(NotRecovered::EpochChanged);
        }
        if since.offset > self.top {
            return Recovery::NotRecovered(NotRecovered::Ahead);
        }
        let missed = self.top - since.offset;
        if missed == 0 {
            return Recovery::Recovered(Vec::new());
        }
        if limit != 0 && missed > limit as u64 {
            return Recovery::NotRecovered(NotRecovered::TooMany);
        }
        match self.entries.front() {
            Some(first) if first.offset <= since.offset + 1 => {}
            _ => return Recovery::NotRecovered(NotRecovered::Trimmed),
        }
        let skip = usize::try_from(since.offset + 1 - self.entries[0].offset).unwrap_or(usize::MAX);
        Recovery::Recovered(self.entries.iter().skip(skip).cloned().collect())
    }

    /// A page of what is kept. Forward: oldest first, offsets above `since` (or from the
    /// oldest kept). Backward: newest first, offsets below `since` (or from the newest).
    /// At most `limit` entries (0: no limit).
    pub fn page(&mut self, since: Option<u64>, limit: usize, backward: bool, now_ms: u64) -> Page<T> {
        self.trim(now_ms);
        let limit = if limit == 0 { usize::MAX } else { limit };
        let entries = if backward {
            let below = since.unwrap_or(u64::MAX);
            self.entries.iter().rev().filter(|e| e.offset < below).take(limit).cloned().collect()
        } else {
            let above = since.unwrap_or(0);
            self.entries.iter().filter(|e| e.offset > above).take(limit).cloned().collect()
        };
        Page { entries, position: self.position() }
    }

    /// Drops everything and starts a new epoch at offset 0 (history lost on purpose).
    pub fn reset(&mut self, epoch: Arc<str>) {
        self.epoch = epoch;
        self.top = 0;
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests;
