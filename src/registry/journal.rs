//! The embedded store's journal: what each group commit changed, appended
//! to a file of its own and made durable there with one `fdatasync`.
//!
//! A durable redb commit writes every page the transaction dirtied, and a
//! registration dirties a random leaf in each of two tables (its node id is
//! an HMAC): at a million registrations, ~1,000 pages per commit of 512,
//! whatever the batch (BENCHMARKS.md, "Registrations: where the time goes").
//! So the writer commits to redb without syncing (readers see the change at
//! once; redb keeps the pages in memory, and a later durable commit writes
//! each page once however many commits touched it), and makes the commit
//! durable by appending its changes here: one sequential write. Every so
//! often (a checkpoint) redb commits durably and the journal is emptied.
//!
//! After a crash, redb opens at its last durable commit, the checkpoint the
//! journal starts from, and the journal's frames are applied again in
//! order. Each change is a final value (put this value, remove this key),
//! so applying a frame twice is harmless. A frame torn by the crash was
//! never acknowledged: reading stops there.
//!
//! On disk, a frame is `PGJ1`, the payload's length (u32, little-endian),
//! the first 8 bytes of the payload's SHA-256, then the payload: changes,
//! each a table code, 1 (put) or 0 (remove), the key's length (u32) and
//! the key, and for a put the value's length (u32) and the value.

use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

const MAGIC: &[u8; 4] = b"PGJ1";
const HEADER: usize = 16;

/// A table a change is made to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    /// `registrations`.
    Registrations,
    /// `account_nodes`.
    AccountNodes,
    /// `outbox`.
    Outbox,
}

impl Table {
    fn code(self) -> u8 {
        match self {
            Self::Registrations => 1,
            Self::AccountNodes => 2,
            Self::Outbox => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Registrations),
            2 => Some(Self::AccountNodes),
            3 => Some(Self::Outbox),
            _ => None,
        }
    }
}

/// One change read back: `value` is `None` for a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub table: Table,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// The changes of one commit, as they are made.
#[derive(Debug, Default)]
pub(crate) struct Frame {
    payload: Vec<u8>,
}

impl Frame {
    /// Records that `key` of `table` now holds `value`.
    pub(crate) fn put(&mut self, table: Table, key: &str, value: &[u8]) {
        self.change(table, key, Some(value));
    }

    /// Records that `key` of `table` is gone.
    pub(crate) fn remove(&mut self, table: Table, key: &str) {
        self.change(table, key, None);
    }

    fn change(&mut self, table: Table, key: &str, value: Option<&[u8]>) {
        self.payload.push(table.code());
        self.payload.push(u8::from(value.is_some()));
        push_field(&mut self.payload, key.as_bytes());
        if let Some(value) = value {
            push_field(&mut self.payload, value);
        }
    }

    /// Whether nothing was recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }
}

fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    // A key or value over 4 GiB cannot reach here: redb refuses them first.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(payload);
    digest.first_chunk::<8>().copied().unwrap_or_default()
}

/// The journal file, appended to at `len`.
pub(crate) struct Journal {
    file: File,
    len: u64,
}

impl Journal {
    /// Opens (creating) the journal at `path`; also returns the changes of
    /// every whole frame in it, in order.
    pub(crate) fn open(path: &Path) -> io::Result<(Self, Vec<Change>)> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        // It holds device tokens, as the database does: the owner's alone.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (changes, whole) = read_frames(&bytes);
        let len = u64::try_from(whole).unwrap_or(u64::MAX);
        Ok((Self { file, len }, changes))
    }

    /// Appends `frame` and waits until it is on disk. After a failure the
    /// bytes past the last whole frame are overwritten by the next append
    /// (or cut by [`Self::reset`]).
    pub(crate) fn append(&mut self, frame: &Frame) -> io::Result<()> {
        let len = u32::try_from(frame.payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "journal frame over 4 GiB"))?;
        let mut bytes = Vec::with_capacity(HEADER + frame.payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&checksum(&frame.payload));
        bytes.extend_from_slice(&frame.payload);
        self.file.seek(SeekFrom::Start(self.len))?;
        self.file.write_all(&bytes)?;
        self.file.sync_data()?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Empties the journal, durably: called once redb has committed
    /// durably everything the journal held.
    pub(crate) fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.len = 0;
        Ok(())
    }

    /// Bytes of whole frames held.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

/// The changes of the whole frames at the start of `bytes`, and how many
/// bytes those frames take.
pub(super) fn read_frames(bytes: &[u8]) -> (Vec<Change>, usize) {
    let mut changes = Vec::new();
    let mut at = 0;
    while let Some((payload, next)) = frame_at(bytes, at) {
        match read_changes(payload) {
            Some(mut read) => changes.append(&mut read),
            None => break,
        }
        at = next;
    }
    (changes, at)
}

/// The payload of the frame at `at`, if a whole one is there, and where
/// the next starts.
fn frame_at(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let (magic, rest) = header.split_at(4);
    let (len, sum) = rest.split_at(4);
    if magic != MAGIC {
        return None;
    }
    let len = usize::try_from(u32::from_le_bytes(len.try_into().ok()?)).ok()?;
    let start = at + HEADER;
    let end = start.checked_add(len)?;
    let payload = bytes.get(start..end)?;
    (checksum(payload) == sum).then_some((payload, end))
}

fn read_changes(mut payload: &[u8]) -> Option<Vec<Change>> {
    let mut changes = Vec::new();
    while let [code, put, rest @ ..] = payload {
        let table = Table::from_code(*code)?;
        let (key, rest) = field(rest)?;
        let (value, rest) = match put {
            1 => {
                let (value, rest) = field(rest)?;
                (Some(value.to_vec()), rest)
            }
            0 => (None, rest),
            _ => return None,
        };
        changes.push(Change {
            table,
            key: String::from_utf8(key.to_vec()).ok()?,
            value,
        });
        payload = rest;
    }
    payload.is_empty().then_some(changes)
}

fn field(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> (Frame, Frame) {
        let mut first = Frame::default();
        first.put(Table::Registrations, "n1", b"value one");
        first.put(Table::AccountNodes, "a/n1", b"");
        let mut second = Frame::default();
        second.remove(Table::Registrations, "n1");
        second.put(Table::Outbox, "o1", &[0, 255, 7]);
        (first, second)
    }

    fn expected() -> Vec<Change> {
        let change = |table, key: &str, value: Option<&[u8]>| Change {
            table,
            key: key.to_owned(),
            value: value.map(<[u8]>::to_vec),
        };
        vec![
            change(Table::Registrations, "n1", Some(b"value one")),
            change(Table::AccountNodes, "a/n1", Some(b"")),
            change(Table::Registrations, "n1", None),
            change(Table::Outbox, "o1", Some(&[0, 255, 7])),
        ]
    }

    #[test]
    fn frames_read_back_in_order_and_reset_empties() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let (mut journal, none) = Journal::open(&path).expect("open");
        assert!(none.is_empty());
        let (first, second) = frames();
        journal.append(&first).expect("append");
        journal.append(&second).expect("append");
        let (mut journal, changes) = Journal::open(&path).expect("reopen");
        assert_eq!(changes, expected());
        assert_eq!(journal.len(), std::fs::metadata(&path).expect("meta").len());
        journal.reset().expect("reset");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
        let (_, changes) = Journal::open(&path).expect("reopen");
        assert!(changes.is_empty());
    }

    /// The format is the one the module describes (and the `records` fuzz
    /// target's seeds were written by hand from that description).
    #[test]
    fn the_documented_format_reads() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/records");
        let two = std::fs::read(seeds.join("journal-two-frames")).expect("seed");
        let (changes, whole) = read_frames(&two);
        assert_eq!(whole, two.len());
        assert_eq!(
            changes,
            vec![
                Change {
                    table: Table::Registrations,
                    key: "node-1".into(),
                    value: Some(br#"{"v":1}"#.to_vec()),
                },
                Change {
                    table: Table::AccountNodes,
                    key: "acct/node-1".into(),
                    value: Some(Vec::new()),
                },
                Change {
                    table: Table::Outbox,
                    key: "node-1/7".into(),
                    value: None,
                },
                Change {
                    table: Table::Registrations,
                    key: "node-1".into(),
                    value: None,
                },
            ]
        );
        let torn = std::fs::read(seeds.join("journal-torn")).expect("seed");
        assert_eq!(read_frames(&torn).0.len(), 3);
    }

    /// A crash in the middle of an append leaves a torn frame: reading
    /// stops before it, and the next append goes where it began.
    #[test]
    fn a_torn_or_corrupt_tail_is_not_read_and_is_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let (first, second) = frames();
        let (mut journal, _) = Journal::open(&path).expect("open");
        journal.append(&first).expect("append");
        let whole = journal.len();
        journal.append(&second).expect("append");
        let full = std::fs::read(&path).expect("read");
        let first_two = expected().into_iter().take(2).collect::<Vec<_>>();
        for cut in [full.len() - 1, whole as usize + 3, whole as usize + HEADER] {
            std::fs::write(&path, &full[..cut]).expect("cut");
            let (journal, changes) = Journal::open(&path).expect("reopen");
            assert_eq!(changes, first_two, "cut at {cut}");
            assert_eq!(journal.len(), whole);
        }
        let mut corrupt = full.clone();
        if let Some(last) = corrupt.last_mut() {
            *last ^= 1;
        }
        std::fs::write(&path, &corrupt).expect("corrupt");
        let (mut journal, changes) = Journal::open(&path).expect("reopen");
        assert_eq!(changes, first_two);
        journal
            .append(&second)
            .expect("append over the corrupt frame");
        let (_, changes) = Journal::open(&path).expect("reopen");
        assert_eq!(changes, expected());
    }
}
