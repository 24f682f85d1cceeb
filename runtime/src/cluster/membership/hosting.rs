//! What each member hosts — the virtual-actor types it may activate and the process groups
//! it belongs to — spread as foca custom broadcasts (piggybacked on SWIM's own messages)
//! and swapped whole in state syncs. Every node's entry carries a version it bumps on each
//! change; a newer version replaces the older everywhere. Entries of members that are gone
//! are dropped at the next publish. Plain data: the membership actor owns the table.
//!
//! An entry's word is the member's own when the datagram that carried it came from that
//! member; otherwise it is relayed. Newer versions win, with two bounds: a relayed entry
//! moves a version the member gave itself forward by at most [`MAX_STEP`], and the member's
//! own word replaces a relayed entry more than [`MAX_STEP`] ahead of it. So a relay (a cookie
//! holder that forged an entry at version 2⁶⁴−1, say) cannot lock a member's entry for good,
//! its forgery stops at the nodes that heard the member, and a relayed entry that is merely
//! newer (datagrams cross) is not undone by the member's older word arriving late.
//!
//! A node relays an entry that is news to it only while fewer than [`MAX_RELAYED`] custom
//! broadcasts wait in its foca backlog: foca walks its whole backlog for every datagram it
//! sends, and in a thousand-node join storm every node would otherwise hold an entry of
//! every other one. Entries it does not relay it still keeps; the owner's own broadcasts
//! and the state syncs (right after joining, then at doubling intervals) bring them to the
//! others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foca::{BroadcastHandler, Invalidates};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::wire::codec::{self, CodecError};
use crate::wire::swim::SwimId;
use crate::wire::NodeId;

/// Longest type or group name.
pub(crate) const MAX_NAME: usize = 128;

/// A node relays others' entries while its custom-broadcast backlog is shorter than this.
pub(crate) const MAX_RELAYED: usize = 64;

/// Most bytes one node's entry may take encoded (it must ride in one datagram).
pub(crate) const MAX_HOSTING: usize = 900;

/// How far a relayed entry may move the version its member last gave itself: far more
/// changes than a node makes between two of its own broadcasts.
pub(crate) const MAX_STEP: u64 = 1024;

/// Who vouches for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The member itself sent it.
    Member,
    /// Another node passed it on (a piggybacked relay, a state sync).
    Relay,
}

/// What one node hosts, at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hosting {
    pub(crate) node: NodeId,
    /// Bumped by the node on every change.
    pub(crate) version: u64,
    /// Virtual-actor types it may activate, sorted.
    pub(crate) types: Vec<String>,
    /// Groups it belongs to, sorted: `(group, actor)`; no actor means the node itself.
    pub(crate) groups: Vec<(String, Option<String>)>,
}

impl Hosting {
    /// The encoded entry, or why it cannot be spread.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, String> {
        let mut buf = bytes::BytesMut::new();
        codec::encode_into(self, &mut buf).map_err(|e| e.0)?;
        if buf.len() > MAX_HOSTING {
            return Err(format!(
                "what this node hosts takes {} bytes encoded, more than the {MAX_HOSTING} one \
                 membership datagram carries: use fewer or shorter type and group names",
                buf.len()
            ));
        }
        Ok(buf.to_vec())
    }
}

/// The key foca keeps a broadcast under: a newer version of a node's entry replaces an
/// older one still being spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    node: NodeId,
    version: u64,
}

impl Invalidates for Version {
    fn invalidates(&self, other: &Self) -> bool {
        self.node == other.node && self.version >= other.version
    }
}

/// Every node's latest entry; shared between the actor and foca's broadcast handler.
#[derive(Clone, Default)]
pub(crate) struct Table {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// Each entry, when its member was last known to membership, and whether the entry is
    /// the member's own word.
    entries: HashMap<NodeId, (Arc<Hosting>, Instant, Source)>,
    /// Set when an entry changed since the last [`Table::take_changed`].
    changed: bool,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `entry` if it is news by the rules of the module doc; true if it did.
    pub(crate) fn offer(&self, entry: Hosting, from: Source) -> bool {
        let mut inner = self.lock();
        let take = match inner.entries.get(&entry.node) {
            None => true,
            Some((known, _, was)) => match (from, was) {
                (Source::Member, Source::Relay) => {
                    entry.version > known.version || known.version - entry.version > MAX_STEP
                }
                (Source::Member, Source::Member) | (Source::Relay, Source::Relay) => {
                    entry.version > known.version
                }
                (Source::Relay, Source::Member) => {
                    entry.version > known.version && entry.version - known.version <= MAX_STEP
                }
            },
        };
        if take {
            let kept = (Arc::new(entry), Instant::now(), from);
            inner.entries.insert(kept.0.node, kept);
            inner.changed = true;
        }
        take
    }

    /// Whether an entry changed since the last [`Table::take_changed`].
    pub(crate) fn is_changed(&self) -> bool {
        self.lock().changed
    }

    /// Every entry, for a state sync.
    pub(crate) fn all(&self) -> Vec<Hosting> {
        self.lock()
            .entries
            .values()
            .map(|(e, _, _)| Hosting::clone(e))
            .collect()
    }

    /// Every entry, and whether anything changed since the last call. Entries of members
    /// membership has not known (`known`) for `forget` are dropped: an entry may arrive
    /// before its member does, and a member declared down may come back with its entry.
    pub(crate) fn take_changed(
        &self,
        known: impl Fn(NodeId) -> bool,
        now: Instant,
        forget: Duration,
    ) -> (Vec<(NodeId, Arc<Hosting>)>, bool) {
        let mut inner = self.lock();
        let before = inner.entries.len();
        inner.entries.retain(|id, (_, seen, _)| {
            if known(*id) {
                *seen = now;
            }
            now.duration_since(*seen) < forget
        });
        let changed = std::mem::take(&mut inner.changed) || inner.entries.len() != before;
        let entries = inner
            .entries
            .iter()
            .map(|(id, (e, _, _))| (*id, e.clone()))
            .collect();
        (entries, changed)
    }
}

/// foca's side: decodes the entries that arrive piggybacked and keeps the newer ones.
pub(crate) struct Handler {
    pub(crate) table: Table,
    pub(crate) me: NodeId,
    /// Whether foca's backlog has room for relayed entries ([`MAX_RELAYED`]); set by the
    /// membership actor after each input.
    pub(crate) relay: Arc<AtomicBool>,
}

impl BroadcastHandler<SwimId> for Handler {
    type Key = Version;
    type Error = CodecError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&SwimId>,
    ) -> Result<Option<Version>, CodecError> {
        if data.len() > MAX_HOSTING {
            return Err(CodecError(format!("{} bytes of hosting", data.len())));
        }
        let entry: Hosting = codec::decode_exact(data)?;
        let key = Version {
            node: entry.node,
            version: entry.version,
        };
        if entry.node == self.me {
            // Ours: spread it when this node adds it (no sender), not when it comes back.
            return Ok(sender.is_none().then_some(key));
        }
        // Foca names the datagram's sender; under the cookie only a node can have sealed it.
        let from = match sender {
            Some(sender) if sender.id == entry.node => Source::Member,
            _ => Source::Relay,
        };
        let news = self.table.offer(entry, from);
        Ok((news && self.relay.load(Ordering::Relaxed)).then_some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(node: u64, version: u64, types: &[&str]) -> Hosting {
        Hosting {
            node: NodeId(node),
            version,
            types: types.iter().map(|t| t.to_string()).collect(),
            groups: Vec::new(),
        }
    }

    #[test]
    fn a_newer_version_replaces_an_older_one_and_not_the_reverse() {
        let table = Table::default();
        let relay = Source::Relay;
        assert!(table.offer(entry(1, 2, &["a"]), relay));
        assert!(!table.offer(entry(1, 1, &["b"]), relay));
        assert!(table.offer(entry(1, 3, &["c"]), relay));
        let (t0, forget) = (Instant::now(), Duration::from_secs(60));
        let (all, changed) = table.take_changed(|_| true, t0, forget);
        assert!(changed);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, NodeId(1));
        assert_eq!(all[0].1.types, ["c"]);
        let (_, changed) = table.take_changed(|_| true, t0, forget);
        assert!(!changed, "nothing new since");
        let unknown = |id| id != NodeId(1);
        let (all, _) = table.take_changed(unknown, t0 + forget / 2, forget);
        assert_eq!(
            all.len(),
            1,
            "kept a while: its member may be about to arrive"
        );
        let (all, changed) = table.take_changed(unknown, t0 + forget, forget);
        assert!(
            changed && all.is_empty(),
            "a member unknown for long is dropped"
        );
    }

    #[test]
    fn news_is_kept_always_but_relayed_only_while_the_backlog_has_room() {
        let relay = Arc::new(AtomicBool::new(true));
        let mut handler = Handler {
            table: Table::default(),
            me: NodeId(9),
            relay: relay.clone(),
        };
        let sender = SwimId::at("127.0.0.1:1".parse().unwrap());
        let bytes = |e: Hosting| e.encode().unwrap();
        let relayed = handler.receive_item(&bytes(entry(1, 1, &["a"])), Some(&sender));
        assert!(relayed.unwrap().is_some(), "news, and room: relayed");
        relay.store(false, Ordering::Relaxed);
        let relayed = handler.receive_item(&bytes(entry(2, 1, &["b"])), Some(&sender));
        assert!(relayed.unwrap().is_none(), "no room: not relayed");
        let (all, _) =
            handler
                .table
                .take_changed(|_| true, Instant::now(), Duration::from_secs(60));
        assert_eq!(all.len(), 2, "but kept");
    }

    #[test]
    fn an_entry_too_big_for_a_datagram_is_refused() {
        let names: Vec<String> = (0..100).map(|i| format!("type-number-{i}")).collect();
        let big = Hosting {
            types: names,
            ..entry(1, 1, &[])
        };
        assert!(big.encode().unwrap_err().contains("fewer or shorter"));
        assert!(entry(1, 1, &["vcounter"]).encode().is_ok());
    }

    /// Row 5 of issue 21: an entry forged at version 2⁶⁴−1 and relayed kept a member's
    /// types from it until it restarted.
    #[test]
    fn a_relayed_entry_cannot_outrank_the_members_own_word_for_long() {
        let table = Table::default();
        let types = |table: &Table| {
            let (all, _) = table.take_changed(|_| true, Instant::now(), Duration::from_secs(60));
            all[0].1.types.clone()
        };
        assert!(table.offer(entry(1, 5, &["vcounter"]), Source::Member));
        // A forged jump far past what the member said is refused...
        assert!(!table.offer(entry(1, u64::MAX, &[]), Source::Relay));
        assert_eq!(types(&table), ["vcounter"]);
        // ... a newer one within reach is taken, and the member's older word arriving late
        // (datagrams cross) does not undo it.
        assert!(table.offer(entry(1, 6, &["vcounter", "counter"]), Source::Relay));
        assert!(!table.offer(entry(1, 5, &["vcounter"]), Source::Member));
        assert_eq!(types(&table), ["vcounter", "counter"]);
        // A forgery about a member not heard yet is replaced by its first own word.
        assert!(table.offer(entry(2, u64::MAX, &[]), Source::Relay));
        assert!(table.offer(entry(2, 1, &["vcounter"]), Source::Member));
        assert!(
            !table.offer(entry(2, 1, &["vcounter"]), Source::Member),
            "no news"
        );
    }
}
