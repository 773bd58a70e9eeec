//! How much of the capacity an entry uses.

/// Gives the weight of an entry: how much of the cache's capacity it uses.
///
/// A cache built with [`Cache::new`](crate::Cache::new) counts entries ([`UnitWeigher`]); one
/// built with [`Cache::with_weigher`](crate::Cache::with_weigher) counts whatever the weigher
/// returns, typically bytes. Any `Fn(&K, &V) -> u64` is a weigher.
///
/// The weight is taken once, when the entry is inserted. A weight of 0 is counted as 1, so the
/// number of entries is always bounded by the capacity.
///
/// # Example
///
/// ```
/// use kv_cache::Weigher;
///
/// let by_len = |_key: &u32, value: &Vec<u8>| value.len() as u64;
/// assert_eq!(by_len.weight(&1, &vec![0; 100]), 100);
/// ```
pub trait Weigher<K, V> {
    /// The weight of `value` stored under `key`.
    fn weight(&self, key: &K, value: &V) -> u64;
}

/// The default weigher: every entry weighs 1, so the capacity counts entries.
///
/// # Example
///
/// ```
/// use kv_cache::{UnitWeigher, Weigher};
///
/// assert_eq!(UnitWeigher.weight(&"key", &"any value"), 1);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnitWeigher;

impl<K, V> Weigher<K, V> for UnitWeigher {
    #[inline]
    fn weight(&self, _key: &K, _value: &V) -> u64 {
        1
    }
}

impl<K, V, F> Weigher<K, V> for F
where
    F: Fn(&K, &V) -> u64,
{
    #[inline]
    fn weight(&self, key: &K, value: &V) -> u64 {
        self(key, value)
    }
}
