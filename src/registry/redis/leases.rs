//! Cluster membership and shard owner records in Redis (scripts in
//! `scripts.rs`). Time is Redis' own (`TIME`), so nodes' clocks never have to
//! agree.

use super::RedisStore;
use super::connections::Conn;
use crate::registry::RegistryError;

const MEMBERS_KEY: &str = "pg:{m}:members";
const NODES_KEY: &str = "pg:{m}:nodes";

/// A live member as Redis last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its node id.
    pub node: String,
    /// Which start of that node (changes on every join).
    pub incarnation: String,
    /// Where peers reach its gRPC service.
    pub address: String,
    /// When its lease ends, in ms on Redis' clock.
    pub lease_end_ms: u64,
}

/// A shard's owner record: `node|incarnation|epoch`, or `-|-|epoch` once
/// released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnerRecord {
    /// The record as stored, compared whole by every write.
    pub raw: String,
    /// The holder, or `None` when released or never taken.
    pub holder: Option<(String, String)>,
    /// How many times the shard has been taken.
    pub epoch: u64,
}

impl OwnerRecord {
    /// Reads a stored record (`None`: the key does not exist).
    pub(crate) fn parse(raw: Option<String>) -> Self {
        let raw = raw.unwrap_or_default();
        let mut parts = raw.splitn(3, '|');
        let (node, incarnation, epoch) = (parts.next(), parts.next(), parts.next());
        let holder = match (node, incarnation) {
            (Some(n), Some(i)) if n != "-" && !n.is_empty() => Some((n.to_owned(), i.to_owned())),
            _ => None,
        };
        let epoch = epoch.and_then(|e| e.parse().ok()).unwrap_or(0);
        Self { raw, holder, epoch }
    }
}

/// What a membership call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Membership {
    /// Become a member as a new incarnation.
    Join,
    /// Extend the lease of the current incarnation (refused once it expired).
    Renew,
    /// Leave now (graceful shutdown), so peers take over at once.
    Leave,
    /// Only read the live members.
    Read,
}

impl RedisStore {
    /// Joins, renews or leaves; returns Redis' time (ms) and the live members,
    /// or `None` when a renewal was refused because the lease had run out.
    pub(crate) async fn membership(
        &self,
        node: &str,
        incarnation: &str,
        address: &str,
        lease_ms: u64,
        what: Membership,
    ) -> Result<Option<(u64, Vec<Member>)>, RegistryError> {
        let mode = match what {
            Membership::Join => "join",
            Membership::Renew => "renew",
            Membership::Leave => "leave",
            Membership::Read => "read",
        };
        let mut inv = self.scripts.members.key(MEMBERS_KEY);
        inv.key(NODES_KEY)
            .arg(node)
            .arg(format!("{incarnation}|{address}"))
            .arg(lease_ms)
            .arg(mode);
        let reply: Option<Vec<String>> = self
            .conns
            .run(|mut c: Conn| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(reply.map(|fields| parse_members(&fields)))
    }

    /// Whether each record's holder is a live member, judged by `view` (the
    /// members as of this node's last round) where it knows the holder.
    ///
    /// A holder `view` does not know may have joined since that round: the
    /// member list is read again before such a holder is taken for dead, so
    /// a node never takes a shard or stream slot from a live peer it has not
    /// heard of yet (for a stream slot, that would open a second stream,
    /// which Prosody refuses with `<conflict/>`). The records are read before
    /// this list and a node joins before it claims anything, so a holder seen
    /// in a record is in the list unless its lease really ran out.
    pub(crate) async fn holders_alive(
        &self,
        view: &[Member],
        records: &[OwnerRecord],
    ) -> Result<Vec<bool>, RegistryError> {
        let fresh = async {
            let answer = self.membership("", "", "", 0, Membership::Read).await?;
            Ok(answer.map(|(_, members)| members).unwrap_or_default())
        };
        judge_holders(view, records, fresh).await
    }

    /// The records (shard owners, stream slots) at `keys`, in order.
    pub(crate) async fn records(&self, keys: &[String]) -> Result<Vec<OwnerRecord>, RegistryError> {
        let indexes: Vec<u32> = (0..keys.len())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        let raw: Vec<Option<String>> = self
            .on_shards(&indexes, |i| {
                let key = keys.get(i as usize).map_or("", String::as_str);
                redis::cmd("GET").arg(key).to_owned()
            })
            .await?;
        Ok(raw.into_iter().map(OwnerRecord::parse).collect())
    }

    /// Takes each `(key, record read)` as `node|incarnation`; returns the new
    /// record of each one taken (`None` where the record had changed).
    pub(crate) async fn claim(
        &self,
        claims: &[(String, String)],
        holder: &str,
    ) -> Result<Vec<Option<String>>, RegistryError> {
        let invocations: Vec<redis::ScriptInvocation<'_>> = claims
            .iter()
            .map(|(key, seen)| {
                let mut inv = self.scripts.claim.key(key);
                inv.arg(seen).arg(holder);
                inv
            })
            .collect();
        self.invoke_each(&invocations).await
    }

    /// Releases each `(key, record held)`; returns how many were still ours.
    pub(crate) async fn release(&self, held: &[(String, String)]) -> Result<usize, RegistryError> {
        let invocations: Vec<redis::ScriptInvocation<'_>> = held
            .iter()
            .map(|(key, record)| {
                let mut inv = self.scripts.release.key(key);
                inv.arg(record);
                inv
            })
            .collect();
        let results: Vec<bool> = self.invoke_each(&invocations).await?;
        Ok(results.into_iter().filter(|released| *released).count())
    }
}

/// The key of shard `shard`'s owner record.
pub(crate) fn owner_key(shard: u32) -> String {
    super::owner_key(shard)
}

/// The key of component stream slot `slot` (`host:port#n`): all slots share
/// one hash slot, apart from the shards.
pub(crate) fn slot_key(slot: &str) -> String {
    format!("pg:{{x}}:slot:{slot}")
}

/// Whether each record's holder is in `view`, or, when some holder is not,
/// in the member list `fresh` reads (awaited only then).
async fn judge_holders(
    view: &[Member],
    records: &[OwnerRecord],
    fresh: impl Future<Output = Result<Vec<Member>, RegistryError>>,
) -> Result<Vec<bool>, RegistryError> {
    let known = |members: &[Member], h: &(String, String)| {
        members
            .iter()
            .any(|m| m.node == h.0 && m.incarnation == h.1)
    };
    let stranger = records
        .iter()
        .filter_map(|r| r.holder.as_ref())
        .any(|h| !known(view, h));
    let read;
    let members = if stranger {
        read = fresh.await?;
        read.as_slice()
    } else {
        view
    };
    Ok(records
        .iter()
        .map(|r| r.holder.as_ref().is_some_and(|h| known(members, h)))
        .collect())
}

/// `now, (node, lease end, incarnation|address)*` → Redis' time and members.
fn parse_members(fields: &[String]) -> (u64, Vec<Member>) {
    let now = fields.first().and_then(|t| t.parse().ok()).unwrap_or(0);
    let members = fields
        .get(1..)
        .unwrap_or_default()
        .chunks_exact(3)
        .filter_map(|m| {
            let [node, end, info] = m else { return None };
            let (incarnation, address) = info.split_once('|')?;
            Some(Member {
                node: node.clone(),
                incarnation: incarnation.to_owned(),
                address: address.to_owned(),
                lease_end_ms: end.parse::<f64>().ok().map_or(0, |e| e as u64),
            })
        })
        .collect();
    (now, members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node: &str, incarnation: &str) -> Member {
        Member {
            node: node.into(),
            incarnation: incarnation.into(),
            address: String::new(),
            lease_end_ms: 0,
        }
    }

    /// The race a fresh clone's CI hit: a node joined alone, a peer joined
    /// and took a stream slot, and the first node, judging by its list from
    /// before, took the slot from the live peer and opened a second stream.
    #[tokio::test]
    async fn a_holder_missing_from_a_stale_view_is_looked_up_before_it_is_judged_dead() {
        let view = [member("n3", "c")];
        let records = [
            OwnerRecord::parse(Some("n1|a|1".into())),
            OwnerRecord::parse(Some("gone|z|4".into())),
            OwnerRecord::parse(Some("n3|c|2".into())),
            OwnerRecord::parse(Some("-|-|3".into())),
        ];
        let fresh = async { Ok(vec![member("n1", "a"), member("n3", "c")]) };
        let alive = judge_holders(&view, &records, fresh).await.expect("judged");
        assert_eq!(alive, [true, false, true, false]);
        // An old incarnation of a live node is dead.
        let records = [OwnerRecord::parse(Some("n1|old|1".into()))];
        let fresh = async { Ok(vec![member("n1", "a")]) };
        let alive = judge_holders(&view, &records, fresh).await.expect("judged");
        assert_eq!(alive, [false]);
    }

    #[tokio::test]
    async fn holders_the_view_knows_need_no_read() {
        let view = [member("n1", "a"), member("n3", "c")];
        let records = [
            OwnerRecord::parse(Some("n1|a|1".into())),
            OwnerRecord::parse(None),
        ];
        let fresh = async { Err(RegistryError::NotShared) };
        let alive = judge_holders(&view, &records, fresh)
            .await
            .expect("no read");
        assert_eq!(alive, [true, false]);
    }

    #[test]
    fn owner_records_parse_whatever_is_stored() {
        let r = OwnerRecord::parse(Some("n1|abc|7".into()));
        assert_eq!(r.holder, Some(("n1".into(), "abc".into())));
        assert_eq!(r.epoch, 7);
        let released = OwnerRecord::parse(Some("-|-|7".into()));
        assert_eq!((released.holder, released.epoch), (None, 7));
        let none = OwnerRecord::parse(None);
        assert_eq!((none.holder, none.epoch, none.raw.as_str()), (None, 0, ""));
        assert_eq!(OwnerRecord::parse(Some("garbage".into())).holder, None);
    }

    #[test]
    fn members_parse_and_skip_malformed_ones() {
        let f: Vec<String> = [
            "1000",
            "a",
            "11000",
            "i1|10.0.0.1:7700",
            "b",
            "12000",
            "broken",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let (now, members) = parse_members(&f);
        assert_eq!(now, 1000);
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].address, "10.0.0.1:7700");
        assert_eq!(members[0].lease_end_ms, 11_000);
    }
}
