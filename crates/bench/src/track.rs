//! Payload stamps, per-subscriber sequence tracking and latency histograms.
//!
//! Every publication's data is `{"p":P,"seq":N,"t":T,"pad":"…"}`: publisher index,
//! that publisher's sequence number on that channel, and the publish time in Unix
//! nanoseconds. Subscribers find the stamp with one substring search and three integer
//! parses; nothing else of the push is looked at.

use std::io::Write as _;
use std::sync::{LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use memchr::memmem::Finder;

use crate::ws::parse_u64;

/// Unix time in nanoseconds.
pub(crate) fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Writes a publication's data object with `pad` filling it to about `payload_bytes`.
pub(crate) fn write_data(out: &mut Vec<u8>, p: usize, seq: u64, pad: &[u8]) {
    let t = now_nanos();
    let _ = write!(out, r#"{{"p":{p},"seq":{seq},"t":{t},"pad":""#);
    out.extend_from_slice(pad);
    out.extend_from_slice(b"\"}");
}

/// The padding that brings the data object to `payload_bytes` (at least one byte).
pub(crate) fn make_pad(payload_bytes: usize) -> Vec<u8> {
    // {"p":0,"seq":123456,"t":1763850000000000000,"pad":""} is about 55 bytes.
    vec![b'x'; payload_bytes.saturating_sub(55).max(1)]
}

/// A publication's stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Publisher index.
    pub(crate) p: usize,
    /// Sequence number (per publisher and channel), from 0.
    pub(crate) seq: u64,
    /// Publish time, Unix nanoseconds.
    pub(crate) t: u64,
}

static STAMP: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#"{"p":"#));

/// Finds the stamp in a push frame.
pub(crate) fn parse_stamp(frame: &[u8]) -> Option<Stamp> {
    let mut i = STAMP.find(frame)? + 5;
    let (p, n) = parse_u64(&frame[i..])?;
    i += n;
    i += expect(&frame[i..], br#","seq":"#)?;
    let (seq, n) = parse_u64(&frame[i..])?;
    i += n;
    i += expect(&frame[i..], br#","t":"#)?;
    let (t, _) = parse_u64(&frame[i..])?;
    Some(Stamp { p: usize::try_from(p).ok()?, seq, t })
}

fn expect(b: &[u8], lit: &[u8]) -> Option<usize> {
    b.starts_with(lit).then_some(lit.len())
}

#[derive(Debug, Default, Clone)]
struct Stream {
    /// One past the highest sequence number seen.
    next: u64,
    /// Distinct sequence numbers seen.
    distinct: u64,
    /// Bit per sequence number, once one arrived past a gap. Until then (the usual case:
    /// everything in order) every number below `next` has been seen and nothing else, so
    /// `next` alone says what was seen and the bitmap is left empty.
    bits: Vec<u64>,
    /// Whether `bits` is in use.
    gapped: bool,
}

/// What one subscriber saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct SeqTracker {
    streams: Vec<Stream>,
    /// Publications received (including duplicates).
    pub(crate) received: u64,
    /// Sequence numbers received more than once.
    pub(crate) duplicates: u64,
    /// Sequence numbers that arrived after a higher one from the same publisher.
    pub(crate) out_of_order: u64,
    /// Pushes whose stamp could not be found.
    pub(crate) unparsed: u64,
}

impl SeqTracker {
    /// Records one received stamp; `true` if it was not seen before.
    pub(crate) fn on(&mut self, p: usize, seq: u64) -> bool {
        self.received += 1;
        if p >= self.streams.len() {
            if p > 1 << 16 {
                self.unparsed += 1;
                return false;
            }
            self.streams.resize(p + 1, Stream::default());
        }
        let s = &mut self.streams[p];
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if w > 1 << 26 {
            self.unparsed += 1;
            return false;
        }
        if !s.gapped {
            if seq == s.next {
                s.next += 1;
                s.distinct += 1;
                return true;
            }
            if seq < s.next {
                self.duplicates += 1;
                return false;
            }
            // The first gap: from now on, a bit per number (all below `next` seen).
            s.gapped = true;
            let full = (s.next / 64) as usize;
            s.bits.clear();
            s.bits.resize(full, u64::MAX);
            if !s.next.is_multiple_of(64) {
                s.bits.push((1u64 << (s.next % 64)) - 1);
            }
        }
        if w >= s.bits.len() {
            s.bits.resize((w + 1).next_power_of_two(), 0);
        }
        if s.bits[w] & (1 << b) != 0 {
            self.duplicates += 1;
            return false;
        }
        s.bits[w] |= 1 << b;
        s.distinct += 1;
        if seq < s.next {
            self.out_of_order += 1;
        } else {
            self.next_set(p, seq + 1);
        }
        true
    }

    fn next_set(&mut self, p: usize, next: u64) {
        self.streams[p].next = next;
    }

    /// Distinct publications seen from all publishers.
    pub(crate) fn distinct_total(&self) -> u64 {
        self.streams.iter().map(|s| s.distinct).sum()
    }
}

/// Latency histograms in microseconds, sharded so connections record without contention
/// and the shards merge at the end. One shard per connection would cost ~100 KiB each at
/// three significant digits, which for 10,000 connections is a gigabyte of cold memory.
#[derive(Debug)]
pub(crate) struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

/// Highest latency recorded (one hour, in microseconds); above is clamped.
const MAX_MICROS: u64 = 3_600_000_000;

/// A fresh latency histogram (1 µs .. 1 h, 3 significant digits).
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

impl Latencies {
    /// `n` shards.
    pub(crate) fn new(n: usize) -> Self {
        Self { shards: (0..n.max(1)).map(|_| Mutex::new(new_histogram())).collect() }
    }

    /// Records a batch of latencies (microseconds) into shard `key % n`.
    pub(crate) fn record(&self, key: usize, micros: &[u64]) {
        if micros.is_empty() {
            return;
        }
        let mut h = self.shards[key % self.shards.len()].lock().unwrap_or_else(|e| e.into_inner());
        for &m in micros {
            h.saturating_record(m.clamp(1, MAX_MICROS));
        }
    }

    /// All shards merged.
    pub(crate) fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for s in &self.shards {
            let h = s.lock().unwrap_or_else(|e| e.into_inner());
            let _ = all.add(&*h);
        }
        all
    }
}

/// Percentiles of a histogram as a JSON object (milliseconds).
pub(crate) fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |us: u64| us as f64 / 1000.0;
    if h.is_empty() {
        return serde_json::json!(null);
    }
    serde_json::json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": h.mean() / 1000.0,
    })
}

/// A one-line human rendering of latency percentiles.
pub(crate) fn latency_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".to_owned();
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  (n={})",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0,
        h.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trip() {
        let mut d = Vec::new();
        write_data(&mut d, 3, 42, b"xx");
        let push = [br#"{"push":"pub","channel":"bench:c1","data":"#.as_slice(), &d, b"}"].concat();
        let s = parse_stamp(&push).unwrap();
        assert_eq!((s.p, s.seq), (3, 42));
        assert!(s.t > 0);
    }

    #[test]
    fn tracker_counts() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 3, 2, 2, 5] {
            t.on(0, s);
        }
        assert_eq!(t.received, 6);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.out_of_order, 1);
        assert_eq!(t.distinct_total(), 5);
    }

    /// The in-order fast path and the bitmap (after a gap) agree with a plain set.
    #[test]
    fn tracker_matches_a_set() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for round in 0..200 {
            let mut t = SeqTracker::default();
            let mut seen = std::collections::HashSet::new();
            let (mut dup, mut ooo, mut hi) = (0, 0, None::<u64>);
            let mut next = 0u64;
            for _ in 0..300 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                // Mostly the next one; sometimes a repeat, a jump back or a gap.
                let seq = match rng % 16 {
                    0 if round % 2 == 0 => next + rng % 150,
                    1 => next.saturating_sub(1 + rng % 70),
                    _ => next,
                };
                let new = seen.insert(seq);
                assert_eq!(t.on((round % 3) as usize, seq), new, "round {round} seq {seq}");
                if !new {
                    dup += 1;
                } else if hi.is_some_and(|h| seq < h) {
                    ooo += 1;
                }
                hi = hi.max(Some(seq));
                next = next.max(seq + 1);
            }
            assert_eq!((t.duplicates, t.out_of_order), (dup, ooo), "round {round}");
            assert_eq!(t.distinct_total(), seen.len() as u64);
        }
    }
}
