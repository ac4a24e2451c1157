//! Which member owns which shard: rendezvous (highest random weight) hashing
//! with a load bound. Every member computes the same answer from the same
//! member list, with no coordination. Each shard, in order, goes to its
//! highest-ranked member that holds fewer than `ceil(1.1 x shards / members)`;
//! so no member holds much above the mean, and a join or a leave moves close
//! to the minimum (about `shards / members`), where jump hashing would move
//! about half of everything when a member in the middle leaves.

/// How far above the mean a member may be loaded with shards.
const LOAD_BOUND: f64 = 1.1;

/// The owner (index into `members`) of every shard, for `members` sorted or
/// not (the result does not depend on their order). Empty without members.
pub(crate) fn assign(members: &[&str], shards: u32) -> Vec<usize> {
    assign_bounded(members, shards, LOAD_BOUND)
}

/// As [`assign`], no member above `bound` times the mean (rounded up):
/// stream slots, a handful, are spread evenly with a bound of 1.
pub(crate) fn assign_bounded(members: &[&str], shards: u32, bound: f64) -> Vec<usize> {
    if members.is_empty() {
        return Vec::new();
    }
    let n = members.len();
    let cap = ((f64::from(shards) * bound) / n as f64).ceil().max(1.0) as usize;
    let seeds: Vec<u64> = members.iter().map(|m| fnv1a(m.as_bytes())).collect();
    let mut load = vec![0usize; n];
    let mut owners = Vec::with_capacity(shards as usize);
    let mut ranked: Vec<(u64, &str, usize)> = Vec::with_capacity(n);
    for shard in 0..shards {
        ranked.clear();
        ranked.extend(
            seeds
                .iter()
                .zip(members)
                .enumerate()
                .map(|(i, (seed, name))| (weight(*seed, shard), *name, i)),
        );
        // Highest weight first; the name breaks (astronomically rare) ties so
        // that every member sorts the same way.
        ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let owner = ranked
            .iter()
            .map(|r| r.2)
            .find(|&i| load.get(i).is_some_and(|&l| l < cap))
            .unwrap_or(0);
        if let Some(l) = load.get_mut(owner) {
            *l += 1;
        }
        owners.push(owner);
    }
    owners
}

/// The weight of member `seed` for `shard`: a 64-bit mix (SplitMix64's
/// finalizer), stable across builds and platforms like everything that places data.
fn weight(seed: u64, shard: u32) -> u64 {
    let mut z = seed ^ u64::from(shard).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("pushgate-{i}")).collect()
    }

    fn owners_by_name(members: &[String], shards: u32) -> Vec<String> {
        let refs: Vec<&str> = members.iter().map(String::as_str).collect();
        assign(&refs, shards)
            .into_iter()
            .map(|i| members[i].clone())
            .collect()
    }

    fn moved(a: &[String], b: &[String]) -> usize {
        a.iter().zip(b).filter(|(x, y)| x != y).count()
    }

    #[test]
    fn every_member_computes_the_same_assignment_whatever_the_order() {
        let mut m = names(5);
        let a = owners_by_name(&m, 1024);
        m.reverse();
        assert_eq!(a, owners_by_name(&m, 1024));
    }

    #[test]
    fn load_stays_within_the_bound() {
        for n in [1usize, 2, 3, 5, 10, 50] {
            let m = names(n);
            let owners = owners_by_name(&m, 1024);
            let cap = (1024.0 * LOAD_BOUND / n as f64).ceil() as usize;
            for name in &m {
                let held = owners.iter().filter(|o| *o == name).count();
                assert!(held <= cap, "{n} members: {name} holds {held} > {cap}");
                assert!(held > 0, "{n} members: {name} holds nothing");
            }
        }
    }

    #[test]
    fn a_join_or_a_leave_moves_close_to_the_minimum() {
        for n in [3usize, 10] {
            let before = names(n);
            let mut joined = before.clone();
            joined.push("pushgate-new".into());
            let ideal = 1024 / (n + 1);
            let moved_on_join = moved(
                &owners_by_name(&before, 1024),
                &owners_by_name(&joined, 1024),
            );
            assert!(
                moved_on_join <= ideal * 13 / 10,
                "join of 1 to {n}: moved {moved_on_join}, ideal {ideal}"
            );
            let mut left = before.clone();
            left.remove(n / 2);
            let ideal = 1024 / n;
            let moved_on_leave =
                moved(&owners_by_name(&before, 1024), &owners_by_name(&left, 1024));
            assert!(
                moved_on_leave <= ideal * 13 / 10,
                "leave from {n}: moved {moved_on_leave}, ideal {ideal}"
            );
        }
    }

    #[test]
    fn a_bound_of_one_spreads_a_few_slots_evenly() {
        let m = ["a", "b", "c"];
        let mut owners = assign_bounded(&m, 3, 1.0);
        owners.sort_unstable();
        assert_eq!(owners, vec![0, 1, 2]);
        let two = assign_bounded(&m, 2, 1.0);
        assert_ne!(two[0], two[1]);
    }

    #[test]
    fn fixed_values_so_a_change_is_deliberate() {
        // Nodes of different versions must agree during a rolling upgrade.
        let m = ["pushgate-0", "pushgate-1", "pushgate-2"];
        assert_eq!(assign(&m, 8), vec![0, 2, 1, 1, 0, 0, 1, 2]);
        assert_eq!(assign(&[], 8), Vec::<usize>::new());
    }
}
