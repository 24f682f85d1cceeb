//! Membership at 10,000 members, simulated: foca's sans-IO state machines, configured as a
//! meshrpc node configures them (`swim_config`), over an in-memory network with latency and
//! packet loss, in virtual time. For each loss rate it kills 10 members and reports how long
//! until every live member marked all of them down, and how many live members were falsely
//! marked down by anyone. A benchmark, not a test: docs/MEMBERSHIP.md has its table.
//!
//! ```sh
//! cargo bench --bench swim_sim -- [--members 10000] [--heartbeat-ms 1000] [--down-after-ms 5000]
//! ```
//!
//! Identities here are small (an index and a bump) so ten thousand member tables fit in
//! memory; the protocol, its timers and its settings are the real ones.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foca::{AccumulatingRuntime, Foca, Member, NoCustomBroadcast, OwnedNotification, Timer};
use meshrpc::wire::swim::SwimCodec;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
struct SimId {
    idx: u32,
    bump: u16,
}

impl foca::Identity for SimId {
    type Addr = u32;

    fn renew(&self) -> Option<Self> {
        Some(SimId {
            bump: self.bump.wrapping_add(1),
            ..*self
        })
    }

    fn addr(&self) -> u32 {
        self.idx
    }

    fn win_addr_conflict(&self, other: &Self) -> bool {
        self.bump > other.bump
    }
}

type Node = Foca<SimId, SwimCodec, StdRng, NoCustomBroadcast>;

enum Event {
    Deliver { to: u32, data: Bytes },
    Timer { node: u32, timer: Timer<SimId> },
}

/// An event at a virtual time (µs), in the order it was scheduled among equals.
struct Due(u64, u64, Event);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

struct Sim {
    nodes: Vec<Node>,
    alive: Vec<bool>,
    queue: BinaryHeap<Reverse<Due>>,
    now: u64,
    seq: u64,
    net: StdRng,
    loss: f64,
    runtime: AccumulatingRuntime<SimId>,
    /// Down notifications: (time, observer, member).
    downs: Vec<(u64, u32, u32)>,
    messages: u64,
}

impl Sim {
    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Due(at, self.seq, event)));
    }

    /// Does what node `n` asked for.
    fn drain(&mut self, n: u32) {
        while let Some((to, data)) = self.runtime.to_send() {
            self.messages += 1;
            if self.net.random::<f64>() < self.loss {
                continue;
            }
            let latency = self.net.random_range(500..1500);
            self.push(self.now + latency, Event::Deliver { to: to.idx, data });
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.push(
                self.now + after.as_micros() as u64,
                Event::Timer { node: n, timer },
            );
        }
        while let Some(notification) = self.runtime.to_notify() {
            if let OwnedNotification::MemberDown(id) = notification {
                self.downs.push((self.now, n, id.idx));
            }
        }
    }

    /// Runs events until virtual time `until` (µs).
    fn run_until(&mut self, until: u64) {
        while let Some(Reverse(Due(at, _, _))) = self.queue.peek() {
            if *at > until {
                break;
            }
            let Some(Reverse(Due(at, _, event))) = self.queue.pop() else {
                break;
            };
            self.now = at;
            let n = match event {
                Event::Deliver { to, data } => {
                    if !self.alive[to as usize] {
                        continue;
                    }
                    let _ = self.nodes[to as usize].handle_data(&data, &mut self.runtime);
                    to
                }
                Event::Timer { node, timer } => {
                    if !self.alive[node as usize] {
                        continue;
                    }
                    let _ = self.nodes[node as usize].handle_timer(timer, &mut self.runtime);
                    node
                }
            };
            self.drain(n);
        }
        self.now = until;
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let members = arg("--members", 10_000) as u32;
    let heartbeat = Duration::from_millis(arg("--heartbeat-ms", 1000));
    let down_after = Duration::from_millis(arg("--down-after-ms", 5000));
    let mut config = meshrpc::simulation::swim_config(heartbeat, down_after);
    // As a node's membership actor sets it for a cluster of this size.
    config.max_transmissions = meshrpc::simulation::transmissions(members as usize);
    let started = Instant::now();
    // Every member knows every other one from the start, as a converged cluster does.
    // foca's table is a vector searched on each update, so this is the slow part: split it
    // over threads.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = (members as usize).div_ceil(threads);
    let mut nodes: Vec<(u32, Node, AccumulatingRuntime<SimId>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let config = config.clone();
                scope.spawn(move || {
                    let range = (t * chunk) as u32..(((t + 1) * chunk) as u32).min(members);
                    range
                        .map(|i| {
                            let me = SimId { idx: i, bump: 0 };
                            let rng = StdRng::seed_from_u64(u64::from(i));
                            let mut node = Foca::new(me, config.clone(), rng, SwimCodec);
                            let mut runtime = AccumulatingRuntime::new();
                            let others = (0..members)
                                .filter(|&j| j != i)
                                .map(|j| Member::alive(SimId { idx: j, bump: 0 }));
                            node.apply_many(others, false, &mut runtime)
                                .expect("bootstrap");
                            while runtime.to_notify().is_some() {}
                            (i, node, runtime)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("bootstrap thread"))
            .collect()
    });
    nodes.sort_by_key(|(i, _, _)| *i);
    eprintln!(
        "{members} members bootstrapped in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let mut sim = Sim {
        nodes: Vec::with_capacity(members as usize),
        alive: vec![true; members as usize],
        queue: BinaryHeap::new(),
        now: 0,
        seq: 0,
        net: StdRng::seed_from_u64(7),
        loss: 0.0,
        runtime: AccumulatingRuntime::new(),
        downs: Vec::new(),
        messages: 0,
    };
    let mut pending = Vec::new();
    for (i, node, mut runtime) in nodes {
        // Each node's first timers (probing, gossip), spread over a probe period.
        let offset = u64::from(i) * config.probe_period.as_micros() as u64 / u64::from(members);
        while let Some((after, timer)) = runtime.to_schedule() {
            pending.push((offset + after.as_micros() as u64, i, timer));
        }
        sim.nodes.push(node);
    }
    for (at, node, timer) in pending {
        sim.push(at, Event::Timer { node, timer });
    }
    let mut rng = StdRng::seed_from_u64(11);
    let mut dead: HashSet<u32> = HashSet::new();
    println!("| packet loss | all 10 kills marked down everywhere | median (observer, kill) | live members falsely marked down | messages per member per second |");
    println!("|---|---|---|---|---|");
    for loss in [0.0, 0.01, 0.05] {
        sim.loss = loss;
        // Settle under this loss rate; false downs count from here.
        let phase_start = sim.now;
        sim.run_until(sim.now + 20_000_000);
        let victims: Vec<u32> = (0..)
            .map(|_| rng.random_range(0..members))
            .filter(|v| !dead.contains(v))
            .take(10)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let killed_at = sim.now;
        let first_down = sim.downs.len();
        for v in &victims {
            sim.alive[*v as usize] = false;
            dead.insert(*v);
        }
        let messages_before = sim.messages;
        let mut done_at = None;
        while sim.now < killed_at + 60_000_000 {
            sim.run_until(sim.now + 500_000);
            let mut seen: HashSet<(u32, u32)> = HashSet::new();
            for (_, observer, member) in &sim.downs[first_down..] {
                if victims.contains(member) && sim.alive[*observer as usize] {
                    seen.insert((*observer, *member));
                }
            }
            let live = sim.alive.iter().filter(|a| **a).count();
            if seen.len() == live * victims.len() {
                done_at = Some(sim.now);
                break;
            }
        }
        let mut spans: Vec<u64> = sim.downs[first_down..]
            .iter()
            .filter(|(_, o, m)| victims.contains(m) && sim.alive[*o as usize])
            .map(|(t, _, _)| t - killed_at)
            .collect();
        spans.sort_unstable();
        let median = spans.get(spans.len() / 2).copied().unwrap_or(0);
        let falsely: HashSet<u32> = sim
            .downs
            .iter()
            .filter(|(t, _, m)| *t >= phase_start && !dead.contains(m))
            .map(|(_, _, m)| *m)
            .collect();
        let secs = (sim.now - killed_at) as f64 / 1e6;
        let rate = (sim.messages - messages_before) as f64 / secs / f64::from(members);
        let all = done_at.map_or("not within 60 s".to_owned(), |t| {
            format!("{:.1} s", (t - killed_at) as f64 / 1e6)
        });
        println!(
            "| {:.0} % | {all} | {:.1} s | {} | {rate:.1} |",
            loss * 100.0,
            median as f64 / 1e6,
            falsely.len()
        );
    }
    eprintln!(
        "heartbeat {heartbeat:?}, down_after {down_after:?}; {:.0} s of real time",
        started.elapsed().as_secs_f64()
    );
}
