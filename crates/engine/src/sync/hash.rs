//! Hash maps keyed by UUID.
//!
//! Looking objects up by UUID is most of the work of applying a changeset (every reference
//! in it is checked), and SipHash, the standard hasher, costs more than the rest of a
//! lookup into a warm table. UUIDs are 16 bytes chosen by clients, so the hash is keyed
//! (a client must not be able to pick colliding UUIDs): one folded 64×64→128-bit multiply
//! of the two halves, each mixed with a secret key drawn from the standard library's own
//! per-process random keys, as `HashMap::new` does.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

/// A map keyed by UUID.
pub(crate) type UuidMap<V> = HashMap<tether_proto::jetstream::Uuid, V, UuidState>;

/// A set of UUIDs.
pub(crate) type UuidSet = HashSet<tether_proto::jetstream::Uuid, UuidState>;

/// The keys of one map's hasher.
#[derive(Debug, Clone)]
pub(crate) struct UuidState {
    k0: u64,
    k1: u64,
}

impl Default for UuidState {
    fn default() -> Self {
        let s = RandomState::new();
        Self { k0: s.hash_one(0x243f_6a88_85a3_08d3_u64), k1: s.hash_one(0x1319_8a2e_0370_7344_u64) }
    }
}

impl BuildHasher for UuidState {
    type Hasher = UuidHasher;

    fn build_hasher(&self) -> UuidHasher {
        UuidHasher { k0: self.k0, k1: self.k1, acc: 0 }
    }
}

/// The hasher of [`UuidState`]. Correct for any input; fast for 16 bytes.
#[derive(Debug)]
pub(crate) struct UuidHasher {
    k0: u64,
    k1: u64,
    acc: u64,
}

fn folded_multiply(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    // Both halves: the truncation is the point.
    #[allow(clippy::cast_possible_truncation)]
    let (lo, hi) = (r as u64, (r >> 64) as u64);
    lo ^ hi
}

impl Hasher for UuidHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(16) {
            let mut buf = [0u8; 16];
            buf[..chunk.len()].copy_from_slice(chunk);
            let (a, b) = buf.split_at(8);
            let lo = u64::from_le_bytes(a.try_into().unwrap_or_default());
            let hi = u64::from_le_bytes(b.try_into().unwrap_or_default());
            self.acc = folded_multiply(lo ^ self.k0 ^ self.acc, hi ^ self.k1);
        }
    }

    fn write_usize(&mut self, n: usize) {
        // The length prefix of a slice: the same for every UUID, mixed in all the same.
        self.acc = self.acc.rotate_left(17) ^ n as u64;
    }

    fn finish(&self) -> u64 {
        // hashbrown takes its control byte from the top bits and the bucket from the bottom.
        self.acc.rotate_left(26)
    }
}
