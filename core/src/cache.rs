//! The result cache: node outputs keyed by signature, bounded by a memory budget.
//!
//! Eviction is GreedyDual-Size: each entry's priority is the cache's running
//! "inflation" value plus recompute cost divided by size, refreshed on every
//! hit. The lowest priority goes first and raises the inflation value, so a
//! large, cheap-to-recompute result leaves before a small, expensive one,
//! and entries nobody touches age out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::value::Value;

/// A node's cache key: its type, literal inputs, fingerprint and its
/// ancestors' signatures, but never its id.
pub type Signature = blake3::Hash;

pub type Outputs = Arc<[Value]>;

struct Entry {
    outputs: Outputs,
    size: usize,
    cost_per_byte: f64,
    /// The key under which this entry sits in `by_priority`.
    rank: (u64, u64),
}

pub struct Cache {
    budget: usize,
    used: usize,
    inflation: f64,
    seq: u64,
    entries: HashMap<Signature, Entry>,
    /// Rank (priority bits, insertion sequence) to key; lowest is evicted first.
    by_priority: BTreeMap<(u64, u64), Signature>,
    /// Which lazy inputs a node asked for, keyed by its eager signature.
    selections: HashMap<Signature, Arc<[bool]>>,
}

/// Bytes counted for an entry even when its values are tiny, so a flood of
/// scalars is still bounded.
const ENTRY_OVERHEAD: usize = 64;
const MAX_SELECTIONS: usize = 1 << 16;

impl Cache {
    pub fn new(budget_bytes: usize) -> Self {
        Cache {
            budget: budget_bytes,
            used: 0,
            inflation: 0.0,
            seq: 0,
            entries: HashMap::new(),
            by_priority: BTreeMap::new(),
            selections: HashMap::new(),
        }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    pub fn set_budget(&mut self, budget_bytes: usize) {
        self.budget = budget_bytes;
        self.evict_to(self.budget);
    }

    pub fn used_bytes(&self) -> usize {
        self.used
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, key: &Signature) -> bool {
        self.entries.contains_key(key)
    }

    pub fn clear(&mut self) {
        *self = Cache::new(self.budget);
    }

    /// Looks up a result and marks it recently useful.
    pub fn get(&mut self, key: &Signature) -> Option<Outputs> {
        let entry = self.entries.get_mut(key)?;
        self.by_priority.remove(&entry.rank);
        self.seq += 1;
        entry.rank = (
            priority_bits(self.inflation + entry.cost_per_byte),
            self.seq,
        );
        self.by_priority.insert(entry.rank, *key);
        Some(entry.outputs.clone())
    }

    /// Stores a result that took `cost` to compute. A result larger than the
    /// whole budget is not kept.
    pub fn insert(&mut self, key: Signature, outputs: Outputs, cost: Duration) {
        let size = outputs.iter().map(Value::size_bytes).sum::<usize>() + ENTRY_OVERHEAD;
        if size > self.budget {
            return;
        }
        self.remove(&key);
        self.evict_to(self.budget - size);
        let cost_per_byte = cost.as_secs_f64().max(1e-9) / size as f64 * 1e9;
        self.seq += 1;
        let rank = (priority_bits(self.inflation + cost_per_byte), self.seq);
        self.by_priority.insert(rank, key);
        self.used += size;
        self.entries.insert(
            key,
            Entry {
                outputs,
                size,
                cost_per_byte,
                rank,
            },
        );
    }

    pub fn remove(&mut self, key: &Signature) -> bool {
        match self.entries.remove(key) {
            Some(entry) => {
                self.by_priority.remove(&entry.rank);
                self.used -= entry.size;
                true
            }
            None => false,
        }
    }

    fn evict_to(&mut self, target: usize) {
        while self.used > target {
            let Some((rank, key)) = self.by_priority.pop_first() else {
                break;
            };
            self.inflation = f64::from_bits(rank.0);
            if let Some(entry) = self.entries.remove(&key) {
                self.used -= entry.size;
            }
        }
    }

    pub(crate) fn selection(&self, eager: &Signature) -> Option<Arc<[bool]>> {
        self.selections.get(eager).cloned()
    }

    pub(crate) fn remember_selection(&mut self, eager: Signature, selection: Arc<[bool]>) {
        if self.selections.len() >= MAX_SELECTIONS {
            self.selections.clear();
        }
        self.selections.insert(eager, selection);
    }
}

/// Non-negative floats order like their bit patterns.
fn priority_bits(priority: f64) -> u64 {
    priority.max(0.0).to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Signature {
        blake3::hash(&[n])
    }

    fn bytes(n: usize) -> Outputs {
        Arc::from(vec![Value::String("x".repeat(n).into())])
    }

    #[test]
    fn stays_within_budget_and_counts_bytes() {
        let mut cache = Cache::new(1000);
        cache.insert(key(1), bytes(300), Duration::from_millis(1));
        cache.insert(key(2), bytes(300), Duration::from_millis(1));
        assert_eq!(cache.used_bytes(), 2 * (300 + ENTRY_OVERHEAD));
        cache.insert(key(3), bytes(300), Duration::from_millis(1));
        assert!(cache.used_bytes() <= 1000);
        assert_eq!(cache.len(), 2);
        cache.insert(key(4), bytes(5000), Duration::from_secs(1));
        assert!(
            !cache.contains(&key(4)),
            "larger than the budget is not kept"
        );
    }

    #[test]
    fn expensive_small_results_outlive_cheap_large_ones() {
        let mut cache = Cache::new(1000);
        cache.insert(key(1), bytes(100), Duration::from_secs(10));
        cache.insert(key(2), bytes(500), Duration::from_millis(1));
        cache.insert(key(3), bytes(400), Duration::from_millis(1));
        assert!(cache.contains(&key(1)));
        assert!(
            !cache.contains(&key(2)),
            "the cheap large one was evicted first"
        );
    }

    #[test]
    fn hits_refresh_priority() {
        let mut cache = Cache::new(3 * (100 + ENTRY_OVERHEAD));
        for n in 1..=3 {
            cache.insert(key(n), bytes(100), Duration::from_millis(1));
        }
        // Evicting one raises the inflation value, so a refreshed entry
        // outranks an equally costly one that was never touched again.
        cache.insert(key(4), bytes(100), Duration::from_millis(1));
        assert!(!cache.contains(&key(1)));
        assert!(cache.get(&key(2)).is_some());
        cache.insert(key(5), bytes(100), Duration::from_millis(1));
        assert!(cache.contains(&key(2)), "refreshed entry survives");
        assert!(
            !cache.contains(&key(3)),
            "untouched entry of equal cost goes"
        );
    }
}
