//! Which shard a node belongs to. Every backend and every cluster node must agree
//! on this function forever: it places data. FNV-1a (64 bit) is stable across
//! Rust versions and platforms, unlike `std`'s hasher, and node ids are already
//! uniform (HMAC output), so nothing stronger is needed.

/// The shard of `node` among `shards` (which must be at least 1).
pub fn shard_of(node: &str, shards: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = node
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    // The remainder is below `shards`, so it fits.
    u32::try_from(hash % u64::from(shards.max(1))).unwrap_or(0)
}

/// The node an outbox key belongs to: keys are `node` or `node#…` (calls).
pub fn node_of_outbox_key(key: &str) -> &str {
    key.split_once('#').map_or(key, |(node, _)| node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        // Fixed values: changing the function would move every stored registration.
        assert_eq!(shard_of("", 1024), 805); // 0xcbf2_9ce4_8422_2325 % 1024
        assert_eq!(shard_of("a", 1024), 140); // 0xaf63_dc4c_8601_ec8c % 1024
        let mut seen = vec![0u32; 16];
        for i in 0..16_000 {
            let s = shard_of(&format!("node-{i}"), 16) as usize;
            if let Some(n) = seen.get_mut(s) {
                *n += 1;
            }
        }
        assert!(seen.iter().all(|&n| n > 800), "uneven: {seen:?}");
        assert_eq!(shard_of("anything", 1), 0);
    }

    #[test]
    fn outbox_keys_are_placed_with_their_node() {
        assert_eq!(node_of_outbox_key("abc"), "abc");
        assert_eq!(node_of_outbox_key("abc#call#01"), "abc");
    }
}
