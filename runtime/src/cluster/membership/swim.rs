//! The membership actor: owns the `foca` state machine, the node's UDP socket (the node's
//! port number) and foca's timers, and runs one input at a time — a datagram, a timer, a
//! request — then does what foca asked: datagrams out, timers in, notifications to the view.
//!
//! Datagrams are sealed under the cookie when there is one, and unsealed ones are dropped.
//! A newcomer whose name is already held by a live member is refused before foca hears of it.
//! The actor stops when the node's token is cancelled; leaving first tells every member.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use foca::{AccumulatingRuntime, Codec, Foca, NoCustomBroadcast, State, Timer};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::view::View;
use super::{Cmd, Directory, Member, MemberEvent, Membership, Snapshot, Status};
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

type Swim = Foca<SwimId, SwimCodec, StdRng, NoCustomBroadcast>;

/// Starts the actor on `tasks`; it stops when `stop` is cancelled.
pub(crate) fn start(start: SwimStart, stop: CancellationToken, tasks: &TaskTracker) -> Membership {
    let (tx, rx) = mpsc::channel(64);
    let (events, _) = broadcast::channel(256);
    let (active_tx, active) = watch::channel(0);
    let directory = Directory::default();
    let me = Member {
        name: start.me.name.clone(),
        id: start.me.id,
        incarnation: start.me.incarnation,
        addr: Some(start.me.addr),
        status: Status::Up,
    };
    let forget = start.config.remove_down_after;
    let refresh = start.config.probe_period;
    let actor = Actor {
        foca: Foca::new(start.me, start.config, StdRng::from_os_rng(), SwimCodec),
        runtime: AccumulatingRuntime::new(),
        socket: start.socket,
        cookie: start.cookie,
        timers: BinaryHeap::new(),
        view: View::new(me, forget),
        directory: directory.clone(),
        events: events.clone(),
        active: active_tx,
        left: false,
        announced: VecDeque::new(),
        refusals: LogLimit::default(),
        dropped: LogLimit::default(),
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
    }
}

struct Actor {
    foca: Swim,
    /// Where foca puts what it wants done; drained after every input.
    runtime: AccumulatingRuntime<SwimId>,
    socket: UdpSocket,
    cookie: Option<String>,
    /// foca's timers, earliest first, delivered in order.
    timers: BinaryHeap<Reverse<(Instant, Timer<SwimId>)>>,
    view: View,
    directory: Directory,
    events: broadcast::Sender<MemberEvent>,
    active: watch::Sender<usize>,
    /// Set once this node has left: nothing is answered any more.
    left: bool,
    /// The latest addresses announced to (bounded): a node that leaves before the answer
    /// to its announce arrived still says goodbye to the seed that already lists it.
    announced: VecDeque<SocketAddr>,
    refusals: LogLimit,
    dropped: LogLimit,
    /// Events waiting for the next flush, and when it is due (`None`: nothing changed).
    /// Publishing costs O(members): a join storm is published every [`FLUSH_AFTER`], not
    /// once per datagram.
    unpublished: Vec<MemberEvent>,
    flush_at: Option<Instant>,
    /// A digest of foca's states at the last publish, to skip refreshes that change nothing.
    published: u64,
}

/// At most this many members are taken from one state sync.
const MAX_SYNC: usize = 100_000;

/// How many announced-to addresses a leaving node remembers to say goodbye to.
const MAX_ANNOUNCED: usize = 64;

/// How long a change waits before it is published (with the changes that join it).
const FLUSH_AFTER: Duration = Duration::from_millis(20);

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
                        let all = self.foca.iter_membership_state().cloned().collect();
                        let _ = reply.send(all); // the asker gave up
                    }
                    Some(Cmd::Apply(members)) => self.apply(members),
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
                _ = tick.tick() => {
                    self.view.forget(Instant::now());
                    // Suspicion changes come without notifications.
                    if self.digest() != self.published {
                        self.changed(Vec::new());
                    }
                }
            }
            self.drain().await;
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
    /// newcomer announcing itself would be.
    fn apply(&mut self, members: Vec<super::SwimMember>) {
        if self.left {
            return;
        }
        let me = self.foca.identity().clone();
        let news = members
            .into_iter()
            .take(MAX_SYNC)
            .filter(|m| m.id() != &me && !m.id().name.is_empty())
            .filter(|m| self.conflict(m.id()).is_none());
        let news: Vec<_> = news.collect();
        if let Err(error) = self
            .foca
            .apply_many(news.into_iter(), false, &mut self.runtime)
        {
            debug!(%error, "applying a state sync");
        }
    }

    fn due_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
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
            Ok(Datagram::Swim(payload)) => self.swim(payload).await,
            Ok(Datagram::Goodbye(id)) => self.goodbye(&id),
            Ok(Datagram::Refused(reason)) => {
                if let Some(more) = self.refusals.admit() {
                    warn!(%from, %reason, more, "a member refused this node");
                }
            }
            Err(error) => {
                if let Some(more) = self.dropped.admit() {
                    debug!(%from, %error, more, "ignored a datagram");
                }
            }
        }
    }

    /// A foca message: checked for a name conflict, then handed to foca.
    async fn swim(&mut self, payload: &[u8]) {
        let Ok(header) = SwimCodec.decode_header(payload) else {
            return debug!("ignored an undecodable membership message");
        };
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

    /// Why `src` may not join, if it may not: its name is held by a live member.
    fn conflict(&self, src: &SwimId) -> Option<Refusal> {
        let me = self.foca.identity();
        let name = &src.name;
        if *name == me.name && src.id != me.id {
            return Some(Refusal {
                theirs: format!("it is itself named `{name}`: choose another --name for this node"),
                ours: format!("the sender is named `{name}` like this node"),
            });
        }
        let snapshot = self.directory.snapshot();
        let holder = snapshot.by_name(name)?;
        let taken =
            holder.status == Status::Up && holder.id != src.id && holder.addr != Some(src.addr);
        taken.then(|| {
            let ours = format!("name `{name}` is already used by live node {}", holder.id);
            Refusal {
                theirs: format!("{ours}: choose another --name for this node"),
                ours,
            }
        })
    }

    /// A member leaves: `left` at once, and down in foca so it is no longer probed.
    fn goodbye(&mut self, id: &SwimId) {
        // The run, under whichever identity this node last heard of it.
        let known = self
            .foca
            .iter_membership_state()
            .filter(|m| m.id().id == id.id)
            .max_by_key(|m| m.id().bump)
            .map(|m| (m.id().clone(), m.incarnation()));
        let Some((known, incarnation)) = known else {
            return; // not a member we know: nothing to forget
        };
        if let Some(event) = self.view.goodbye(&known, Instant::now()) {
            self.emit(event);
        }
        let down = foca::Member::new(known, incarnation, State::Down);
        if let Err(error) = self
            .foca
            .apply_many(std::iter::once(down), true, &mut self.runtime)
        {
            debug!(%error, "applying a goodbye");
        }
        self.publish();
    }

    /// Tells every live member this node leaves, then stops answering.
    async fn leave(&mut self) {
        if self.left {
            return;
        }
        let me = self.foca.identity().clone();
        let mut live: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        live.extend(self.announced.iter().copied());
        live.sort_unstable();
        live.dedup();
        for addr in &live {
            self.send(*addr, &Datagram::Goodbye(me.clone())).await;
        }
        if let Err(error) = self.foca.leave_cluster(&mut self.runtime) {
            debug!(%error, "leaving the cluster");
        }
        self.drain().await;
        self.flush();
        self.left = true;
        info!(told = live.len(), "left the cluster");
    }

    /// Does what foca asked for.
    async fn drain(&mut self) {
        while let Some((to, payload)) = self.runtime.to_send() {
            self.send(to.addr, &Datagram::Swim(&payload)).await;
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timers.push(Reverse((now + after, timer)));
        }
        let mut changed = false;
        let mut events = Vec::new();
        while let Some(notification) = self.runtime.to_notify() {
            changed = true;
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

    fn emit(&self, event: MemberEvent) {
        match &event {
            MemberEvent::NodeUp(m) => {
                info!(member = %m.name, id = %m.id, addr = %show(m), "member up")
            }
            MemberEvent::NodeDown(m) => {
                warn!(member = %m.name, id = %m.id, addr = %show(m), "member down")
            }
            MemberEvent::NodeLeft(m) => {
                info!(member = %m.name, id = %m.id, addr = %show(m), "member left")
            }
        }
        let _ = self.events.send(event); // no subscriber
    }

    /// Something changed: publish it (with `events`) at the next flush.
    fn changed(&mut self, events: Vec<MemberEvent>) {
        self.unpublished.extend(events);
        if self.flush_at.is_none() {
            self.flush_at = Some(Instant::now() + FLUSH_AFTER);
        }
    }

    /// Publishes the view, then the events that led to it: a subscriber told of a change
    /// finds it in the directory.
    fn flush(&mut self) {
        self.flush_at = None;
        self.publish();
        for event in std::mem::take(&mut self.unpublished) {
            self.emit(event);
        }
    }

    /// Publishes the view to the directory and the count of live members.
    fn publish(&mut self) {
        let members = self.view.members(self.foca.iter_membership_state());
        let live = members
            .iter()
            .filter(|m| m.status.is_live())
            .count()
            .saturating_sub(1);
        self.directory.publish(Snapshot::new(members));
        self.active
            .send_if_modified(|n| std::mem::replace(n, live) != live);
        self.published = self.digest();
    }

    /// A digest of every member's identity and state, and of the goodbyes heard; the same
    /// whatever order foca keeps its members in.
    fn digest(&self) -> u64 {
        let mix = |h: u64, x: u64| (h ^ x).wrapping_mul(0x0100_0000_01b3);
        let states = self
            .foca
            .iter_membership_state()
            .map(|m| {
                let state = match m.state() {
                    State::Alive => 0,
                    State::Suspect => 1,
                    State::Down => 2,
                };
                let id = m.id();
                mix(
                    mix(mix(0xcbf2_9ce4_8422_2325, id.id.0), u64::from(id.bump)),
                    state,
                )
            })
            .fold(0u64, u64::wrapping_add);
        mix(states, self.view.goodbyes() as u64)
    }
}

fn show(m: &Member) -> String {
    m.addr.map_or_else(|| "none".to_owned(), |a| a.to_string())
}

/// A refusal in the sender's words (it is sent) and in ours (it is logged).
struct Refusal {
    theirs: String,
    ours: String,
}
