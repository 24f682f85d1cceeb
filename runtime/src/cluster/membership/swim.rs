//! The membership actor: owns the `foca` state machine, the node's UDP socket (the node's
//! port number) and foca's timers, and runs one input at a time — a datagram, a timer, a
//! request — then does what foca asked: datagrams out, timers in, notifications to the view.
//! While the actor's own timers fire late (a starved node), foca's probe and suspicion
//! timers are stretched ([`Health`]).
//!
//! Datagrams are sealed under the cookie when there is one, and unsealed ones are dropped.
//! A newcomer whose name is already held by a live member is refused before foca hears of it.
//! The actor stops when the node's token is cancelled; leaving first tells every member.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use foca::{AccumulatingRuntime, Codec, Foca, Timer};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::health::{Change, Health};
use super::hosting::{self, Hosting};
use super::view::View;
use super::{Cmd, Directory, Member, MemberEvent, MemberStatus, Membership, SyncState};
use crate::link::auth::{self, Sealed};
use crate::link::LogLimit;
use crate::wire::swim::{
    decode_datagram, encode_datagram, Datagram, SwimCodec, SwimId, MAX_DATAGRAM,
};

/// What the actor starts with.
pub(crate) struct SwimStart {
    /// This node, as members know it.
    pub(crate) me: SwimId,
    /// Bound to the node's address, the TCP listener's port.
    pub(crate) socket: UdpSocket,
    pub(crate) config: foca::Config,
    pub(crate) cookie: Option<String>,
}

type Swim = Foca<SwimId, SwimCodec, StdRng, hosting::Handler>;

/// Starts the actor on `tasks`; it stops when `stop` is cancelled.
pub(crate) fn start(start: SwimStart, stop: CancellationToken, tasks: &TaskTracker) -> Membership {
    let (tx, rx) = mpsc::channel(64);
    let (events, _) = broadcast::channel(256);
    let (active_tx, active) = watch::channel(0);
    let (refused_tx, refused) = watch::channel(None);
    let stretch = Arc::new(AtomicU32::new(1));
    let directory = Directory::default();
    let me = Member {
        name: start.me.name.clone(),
        id: start.me.id,
        incarnation: start.me.incarnation,
        addr: Some(start.me.addr),
        status: MemberStatus::Up,
    };
    let forget = start.config.remove_down_after;
    let config = start.config.clone();
    let refresh = start.config.probe_period;
    let health = Health::new(start.config.probe_rtt);
    let table = hosting::Table::default();
    let relay = Arc::new(AtomicBool::new(true));
    let handler = hosting::Handler {
        table: table.clone(),
        me: start.me.id,
        relay: relay.clone(),
    };
    let mine = Hosting {
        node: start.me.id,
        version: 0,
        types: Vec::new(),
        groups: Vec::new(),
    };
    let actor = Actor {
        foca: Foca::with_custom_broadcast(
            start.me,
            start.config,
            StdRng::from_os_rng(),
            SwimCodec,
            handler,
        ),
        config,
        hosting: table,
        relay,
        mine: Arc::new(mine),
        publishes: 0,
        rebroadcast_at: None,
        runtime: AccumulatingRuntime::new(),
        socket: start.socket,
        cookie: start.cookie,
        timers: BinaryHeap::new(),
        health,
        stretch: stretch.clone(),
        view: View::new(me, forget),
        directory: directory.clone(),
        events: events.clone(),
        active: active_tx,
        refused: refused_tx,
        left: false,
        announced: VecDeque::new(),
        refusals: LogLimit::default(),
        dropped: LogLimit::default(),
        strangers: strangers::Strangers::new(tasks.clone(), stop.child_token()),
        graveyard: graveyard::Graveyard::default(),
        unpublished: Vec::new(),
        flush_at: None,
        published: 0,
    };
    let mut actor = actor;
    actor.publish();
    tasks.spawn(actor.run(rx, stop, refresh));
    Membership {
        tx,
        events,
        directory,
        active,
        stretch,
        refused,
    }
}

struct Actor {
    foca: Swim,
    /// foca's configuration as last set (`max_transmissions` follows the cluster's size).
    config: foca::Config,
    /// What every other member hosts (shared with foca's broadcast handler).
    hosting: hosting::Table,
    /// Whether the handler relays entries (see [`hosting::MAX_RELAYED`]).
    relay: Arc<AtomicBool>,
    /// What this node hosts.
    mine: Arc<Hosting>,
    /// How many times the directory was published.
    publishes: u64,
    /// When this node's hosting entry was last spread again.
    rebroadcast_at: Option<Instant>,
    /// Where foca puts what it wants done; drained after every input.
    runtime: AccumulatingRuntime<SwimId>,
    socket: UdpSocket,
    cookie: Option<String>,
    /// foca's timers, earliest first, delivered in order.
    timers: BinaryHeap<Reverse<(Instant, Timer<SwimId>)>>,
    /// How starved this node is: its failure-detection timers are stretched by as much.
    health: Health,
    /// The stretch, for `/metrics`.
    stretch: Arc<AtomicU32>,
    view: View,
    directory: Directory,
    events: broadcast::Sender<MemberEvent>,
    active: watch::Sender<usize>,
    /// Set when a member refuses this node before it has joined.
    refused: watch::Sender<Option<String>>,
    /// Set once this node has left: nothing is answered any more.
    left: bool,
    /// The latest addresses announced to (bounded): a node that leaves before the answer
    /// to its announce arrived still says goodbye to the seed that already lists it.
    announced: VecDeque<SocketAddr>,
    refusals: LogLimit,
    dropped: LogLimit,
    /// Strangers vouched for, or being checked, without a cookie ([`strangers`]).
    strangers: strangers::Strangers,
    /// Runs that went down or left ([`graveyard`]).
    graveyard: graveyard::Graveyard,
    /// Events waiting for the next flush, and when it is due (`None`: nothing changed).
    /// Publishing costs O(members): a join storm is published every [`flush_delay`], not
    /// once per datagram.
    unpublished: Vec<MemberEvent>,
    flush_at: Option<Instant>,
    /// A digest of foca's states at the last publish, to skip refreshes that change nothing.
    published: u64,
}

/// At most this many members are taken from one state sync.
const MAX_SYNC: usize = 100_000;

/// At most this often, a node spreads its hosting entry again when members come up.
const REBROADCAST_EVERY: Duration = Duration::from_secs(1);

/// How many announced-to addresses a leaving node remembers to say goodbye to.
const MAX_ANNOUNCED: usize = 64;

/// How long a change waits before it is published (with the changes that join it), at
/// least; see [`flush_delay`].
const FLUSH_AFTER: Duration = Duration::from_millis(20);

/// The longest a change waits before it is published.
const FLUSH_AT_MOST: Duration = Duration::from_secs(1);

/// Publishing costs O(members), so in a big cluster changes wait longer (0.5 ms per member:
/// half a second for a thousand): during a join storm, when every node publishes all the
/// time, a node's publishing cost per second stays flat whatever the cluster's size.
fn flush_delay(members: usize) -> Duration {
    let scaled =
        Duration::from_micros(500).saturating_mul(u32::try_from(members).unwrap_or(u32::MAX));
    scaled.clamp(FLUSH_AFTER, FLUSH_AT_MOST)
}

mod graveyard;
mod leave;
mod names;
mod publish;
mod strangers;

impl Actor {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Cmd>,
        stop: CancellationToken,
        refresh: Duration,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        // Suspicion changes come without notifications: the view is refreshed every probe
        // period, and at once on every notification.
        let mut tick = tokio::time::interval(refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let flush_at = self.flush_at;
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    None => break,
                    Some(Cmd::Announce(addrs)) => self.announce(&addrs),
                    Some(Cmd::Leave(reply)) => {
                        self.leave().await;
                        let _ = reply.send(()); // the node stopped waiting
                    }
                    Some(Cmd::State(reply)) => {
                        let mut hosting = self.hosting.all();
                        hosting.push(Hosting::clone(&self.mine));
                        let members = self.foca.iter_membership_state().cloned().collect();
                        let _ = reply.send(SyncState { members, hosting }); // the asker gave up
                    }
                    Some(Cmd::Apply(state, reply)) => {
                        let _ = reply.send(self.apply(state)); // the asker gave up
                    }
                    Some(Cmd::Host { types, groups, reply }) => {
                        let _ = reply.send(self.host(types, groups)); // the asker gave up
                    }
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => self.datagram(&buf[..n], from).await,
                    Err(error) => debug!(%error, "membership receive failed"),
                },
                _ = tokio::time::sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                    self.due_timers();
                }
                _ = tokio::time::sleep_until(flush_at.unwrap_or_else(Instant::now)), if flush_at.is_some() => {
                    self.flush();
                }
                due = tick.tick() => {
                    self.health.late(due.elapsed());
                    self.health_period();
                    self.view.forget(Instant::now());
                    // Suspicion changes come without notifications.
                    if self.digest() != self.published {
                        self.changed(Vec::new());
                    }
                }
            }
            self.drain().await;
            // A member's hosting entry arrived (piggybacked, or in a sync).
            if self.hosting.is_changed() {
                self.changed(Vec::new());
            }
        }
    }

    fn announce(&mut self, addrs: &[SocketAddr]) {
        if self.left {
            return;
        }
        for addr in addrs {
            if !self.announced.contains(addr) {
                if self.announced.len() == MAX_ANNOUNCED {
                    self.announced.pop_front();
                }
                self.announced.push_back(*addr);
            }
            if let Err(error) = self.foca.announce(SwimId::at(*addr), &mut self.runtime) {
                debug!(%addr, %error, "cannot announce");
            }
        }
    }

    /// Members from a state sync: those whose name a live member holds are left out, as a
    /// newcomer announcing itself would be. This node's own entry goes to foca too: a sync
    /// may be the only way it learns that it is suspected — a suspicion copied by a sync
    /// has no timer behind it on the copying node and is never gossiped, so only this
    /// node's refutation (foca bumps its incarnation) ends it. Returns how many members were
    /// new here.
    fn apply(&mut self, state: SyncState) -> usize {
        if self.left {
            return 0;
        }
        let me_id = self.mine.node;
        for entry in state.hosting.into_iter().take(MAX_SYNC) {
            if entry.node != me_id {
                self.hosting.offer(entry, hosting::Source::Relay);
            }
        }
        let members = state.members;
        let me = self.foca.identity().clone();
        let news = members
            .into_iter()
            .take(MAX_SYNC)
            .filter(|m| !m.id().name.is_empty())
            .filter(|m| m.id() == &me || self.conflict(m.id()).is_none());
        let news: Vec<_> = news.collect();
        let before = self.foca.num_members();
        if let Err(error) = self
            .foca
            .apply_many(news.into_iter(), false, &mut self.runtime)
        {
            debug!(%error, "applying a state sync");
        }
        self.foca.num_members().saturating_sub(before)
    }

    /// Replaces what this node hosts and spreads the new entry.
    fn host(
        &mut self,
        mut types: Vec<String>,
        mut groups: Vec<(String, Option<String>)>,
    ) -> Result<(), String> {
        types.sort();
        types.dedup();
        groups.sort();
        groups.dedup();
        let entry = Hosting {
            node: self.mine.node,
            version: self.mine.version + 1,
            types,
            groups,
        };
        let bytes = entry.encode()?;
        self.foca
            .add_broadcast(&bytes)
            .map_err(|e| format!("cannot spread what this node hosts: {e}"))?;
        self.mine = Arc::new(entry);
        // At once: the caller may route to this node's new type right after.
        self.flush();
        Ok(())
    }

    fn due_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, timer))) = self.timers.pop() else {
                break;
            };
            self.health.late(now - at);
            if let Err(error) = self.foca.handle_timer(timer, &mut self.runtime) {
                debug!(%error, "membership timer");
            }
        }
    }

    /// One datagram from the network.
    async fn datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        if self.left {
            return;
        }
        let Some(body) = self.unseal(bytes) else {
            if let Some(more) = self.dropped.admit() {
                debug!(%from, more, "dropped an unsigned or mis-signed membership datagram");
            }
            return;
        };
        match decode_datagram(body) {
            Ok(Datagram::Swim(payload)) => self.swim(payload, from).await,
            Ok(Datagram::Goodbye(id)) => self.goodbye(&id, from).await,
            Ok(Datagram::Refused(reason)) => self.refused_by(from, &reason),
            Err(error) => {
                if let Some(more) = self.dropped.admit() {
                    debug!(%from, %error, more, "ignored a datagram");
                }
            }
        }
    }

    /// A foca message: checked for a name conflict, then handed to foca. Without a cookie,
    /// a stranger not at the address it claims waits until the node there vouches for it
    /// ([`strangers`]): it cannot forge members by the thousand from one socket, nor make
    /// nodes answer to a victim's address.
    async fn swim(&mut self, payload: &[u8], from: SocketAddr) {
        let Ok(header) = SwimCodec.decode_header(payload) else {
            return debug!("ignored an undecodable membership message");
        };
        if !self.admits(&header.src, from) {
            return; // until the node at its address vouches for it
        }
        if self.haunted(payload, &header.src).await {
            return;
        }
        if let Some(refusal) = self.conflict(&header.src) {
            if let Some(more) = self.refusals.admit() {
                warn!(member = %header.src.name, addr = %header.src.addr, reason = %refusal.ours, more, "refused a member");
            }
            self.send(header.src.addr, &Datagram::Refused(refusal.theirs))
                .await;
            return;
        }
        if let Err(error) = self.foca.handle_data(payload, &mut self.runtime) {
            debug!(%error, "membership message");
        }
    }

    /// Does what foca asked for.
    async fn drain(&mut self) {
        while let Some((to, payload)) = self.runtime.to_send() {
            self.send(to.addr, &Datagram::Swim(&payload)).await;
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            let after = self.health.delay(&timer, after);
            self.timers.push(Reverse((now + after, timer)));
        }
        let room = self.foca.custom_broadcast_backlog() < hosting::MAX_RELAYED;
        self.relay.store(room, Ordering::Relaxed);
        let mut changed = false;
        let mut events = Vec::new();
        while let Some(notification) = self.runtime.to_notify() {
            changed = true;
            self.bury_gone(&notification);
            events.extend(self.view.notified(notification));
        }
        if changed {
            self.changed(events);
        }
    }

    async fn send(&self, to: SocketAddr, datagram: &Datagram<'_>) {
        let Ok(mut bytes) = encode_datagram(datagram) else {
            return;
        };
        if let Some(cookie) = &self.cookie {
            let mac = auth::seal(cookie, Sealed::Datagram, &bytes);
            bytes.extend_from_slice(&mac);
        }
        if let Err(error) = self.socket.send_to(&bytes, to).await {
            debug!(%to, %error, "membership send failed");
        }
    }

    /// Ends a probe period of the health score (see [`Health`]).
    fn health_period(&mut self) {
        let stretch = self.health.multiplier();
        match self.health.period() {
            Some(Change::Degraded) => info!(
                stretch = self.health.multiplier(),
                "this node is running late: it waits longer before suspecting members"
            ),
            Some(Change::Recovered) => info!(was = stretch, "this node keeps time again"),
            None => {}
        }
        self.stretch
            .store(self.health.multiplier(), Ordering::Relaxed);
    }

    /// The datagram without its MAC, if it is sealed as it must be.
    fn unseal<'a>(&self, bytes: &'a [u8]) -> Option<&'a [u8]> {
        if bytes.len() > MAX_DATAGRAM {
            return None;
        }
        let Some(cookie) = &self.cookie else {
            return Some(bytes);
        };
        let split = bytes.len().checked_sub(32)?;
        let (body, mac) = bytes.split_at(split);
        auth::verify_seal(cookie, Sealed::Datagram, body, mac).then_some(body)
    }
}

#[cfg(test)]
mod tests;
