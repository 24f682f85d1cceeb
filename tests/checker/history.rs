//! What the checker's clients saw, and what it proves: every `incr` a client invoked, with
//! its outcome — `ok` with the value it returned, `fail` when it surely did not run
//! (`moved`, `overloaded`, `peer_unavailable`…), `unknown` when it may have (a timeout, a
//! lost link) — and the faults, each with its time. After the faults heal and each key's
//! final value is read, [`check`] holds the history to the promise persistence makes:
//!
//! - per key, the values acknowledged `incr`s returned are all different (a value handed out
//!   twice means an acknowledged write was lost, or two activations counted at once);
//! - the final value is at least the number of acknowledged `incr`s (none was lost) and at
//!   most acknowledged + unknown (no failed call ran);
//! - no acknowledged value exceeds the final one.
//!
//! A violation comes with its witness: the operations that show it, and the faults between.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use meshrpc::{ErrorKind, RpcError};

/// How one operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged, with the counter's new value.
    Ok(i64),
    /// Surely not applied: the error says nothing ran.
    Fail(String),
    /// May or may not have been applied.
    Unknown(String),
}

impl Outcome {
    /// A call's result, classified. Only errors that promise nothing ran are failures.
    pub fn of(result: Result<i64, RpcError>) -> Outcome {
        match result {
            Ok(value) => Outcome::Ok(value),
            Err(e) => match e.kind() {
                ErrorKind::Moved
                | ErrorKind::Overloaded
                | ErrorKind::PeerUnavailable
                | ErrorKind::MethodNotFound
                | ErrorKind::BadArguments
                | ErrorKind::Unauthenticated
                | ErrorKind::Forbidden => Outcome::Fail(e.kind().as_str().to_owned()),
                _ => Outcome::Unknown(e.kind().as_str().to_owned()),
            },
        }
    }
}

/// One `incr` by one client, through one node.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub key: String,
    /// The node the client sent it to.
    pub via: String,
    /// Since the run began.
    pub invoked: Duration,
    pub completed: Duration,
    pub outcome: Outcome,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match &self.outcome {
            Outcome::Ok(v) => format!("ok {v}"),
            Outcome::Fail(kind) => format!("fail ({kind})"),
            Outcome::Unknown(kind) => format!("unknown ({kind})"),
        };
        write!(
            f,
            "client {} incr {} via {} [{:.3} s .. {:.3} s] -> {outcome}",
            self.client,
            self.key,
            self.via,
            self.invoked.as_secs_f64(),
            self.completed.as_secs_f64()
        )
    }
}

/// A fault the nemesis caused (or healed), and when.
#[derive(Debug, Clone)]
pub struct Fault {
    pub at: Duration,
    pub what: String,
}

/// Everything recorded in one run.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub ops: Vec<Op>,
    pub faults: Vec<Fault>,
}

/// What the history broke.
#[derive(Debug, Clone)]
pub enum Violation {
    /// Two acknowledged `incr`s returned the same value.
    Duplicate { first: Op, second: Op },
    /// Fewer increments are stored than were acknowledged, or an acknowledged value is
    /// above the final one: `above` are the acknowledged ops beyond it (a few).
    Lost {
        key: String,
        stored: i64,
        acked: usize,
        above: Vec<Op>,
    },
    /// More increments are stored than were acknowledged or unknown: a failed call ran.
    Phantom {
        key: String,
        stored: i64,
        acked: usize,
        unknown: usize,
    },
}

/// The counts of a history and what it broke.
#[derive(Debug, Default)]
pub struct Verdict {
    pub ok: usize,
    pub fail: usize,
    pub unknown: usize,
    pub keys: usize,
    pub faults: usize,
    pub violations: Vec<Violation>,
    /// The faults, to show around a witness.
    history_faults: Vec<Fault>,
}

/// Holds `history` to the promise, given each key's final value.
pub fn check(history: &History, finals: &BTreeMap<String, i64>) -> Verdict {
    let mut verdict = Verdict {
        keys: finals.len(),
        faults: history.faults.len(),
        history_faults: history.faults.clone(),
        ..Verdict::default()
    };
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        match op.outcome {
            Outcome::Ok(_) => verdict.ok += 1,
            Outcome::Fail(_) => verdict.fail += 1,
            Outcome::Unknown(_) => verdict.unknown += 1,
        }
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        let mut seen: BTreeMap<i64, &Op> = BTreeMap::new();
        let mut unknown = 0;
        for op in &ops {
            match op.outcome {
                Outcome::Ok(value) => {
                    if let Some(first) = seen.get(&value) {
                        verdict.violations.push(Violation::Duplicate {
                            first: (*first).clone(),
                            second: (*op).clone(),
                        });
                    } else {
                        seen.insert(value, op);
                    }
                }
                Outcome::Unknown(_) => unknown += 1,
                Outcome::Fail(_) => {}
            }
        }
        let acked = ops
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Ok(_)))
            .count();
        let Some(&stored) = finals.get(key) else {
            continue;
        };
        let above: Vec<Op> = seen
            .range(stored + 1..)
            .take(3)
            .map(|(_, op)| (*op).clone())
            .collect();
        if (stored as usize) < acked || !above.is_empty() {
            verdict.violations.push(Violation::Lost {
                key: key.to_owned(),
                stored,
                acked,
                above,
            });
        }
        if stored as usize > acked + unknown {
            verdict.violations.push(Violation::Phantom {
                key: key.to_owned(),
                stored,
                acked,
                unknown,
            });
        }
    }
    verdict
}

impl Verdict {
    pub fn valid(&self) -> bool {
        self.violations.is_empty()
    }

    /// The faults that led up to `from`..`to`: the last four up to a second after it, from
    /// ten seconds before (a partition may have begun well before the operations it
    /// broke).
    fn faults_between(&self, from: Duration, to: Duration) -> Vec<&Fault> {
        let from = from.saturating_sub(Duration::from_secs(10));
        let to = to + Duration::from_secs(1);
        let near: Vec<&Fault> = (self.history_faults.iter())
            .filter(|f| f.at >= from && f.at <= to)
            .collect();
        near[near.len().saturating_sub(4)..].to_vec()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} operations on {} keys: {} ok, {} failed, {} unknown; {} faults; {}",
            self.ok + self.fail + self.unknown,
            self.keys,
            self.ok,
            self.fail,
            self.unknown,
            self.faults,
            if self.valid() {
                "valid".to_owned()
            } else {
                format!("{} VIOLATIONS", self.violations.len())
            }
        )?;
        // The first violation of each sort is the witness; the rest are counted.
        let mut shown = [false; 3];
        for violation in &self.violations {
            let (sort, span) = match violation {
                Violation::Duplicate { first, second } => {
                    (0, Some((first.invoked, second.completed)))
                }
                Violation::Lost { above, .. } => {
                    (1, above.first().map(|op| (op.invoked, op.completed)))
                }
                Violation::Phantom { .. } => (2, None),
            };
            if shown[sort] {
                continue;
            }
            shown[sort] = true;
            match violation {
                Violation::Duplicate { first, second } => {
                    writeln!(f, "  value handed out twice on {}:", first.key)?;
                    writeln!(f, "    {first}")?;
                    writeln!(f, "    {second}")?;
                }
                Violation::Lost {
                    key,
                    stored,
                    acked,
                    above,
                } => {
                    writeln!(
                        f,
                        "  acknowledged increments lost on {key}: stored {stored}, {acked} acknowledged"
                    )?;
                    for op in above {
                        writeln!(f, "    above the stored value: {op}")?;
                    }
                }
                Violation::Phantom {
                    key,
                    stored,
                    acked,
                    unknown,
                } => writeln!(
                    f,
                    "  a failed call ran on {key}: stored {stored}, but only {acked} acknowledged and {unknown} unknown"
                )?,
            }
            if let Some((from, to)) = span {
                for fault in self.faults_between(from, to) {
                    writeln!(
                        f,
                        "    fault at {:.3} s: {}",
                        fault.at.as_secs_f64(),
                        fault.what
                    )?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, key: &str, at: u64, outcome: Outcome) -> Op {
        Op {
            client,
            key: key.to_owned(),
            via: "a".to_owned(),
            invoked: Duration::from_millis(at),
            completed: Duration::from_millis(at + 1),
            outcome,
        }
    }

    fn finals(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn a_clean_history_is_valid_and_unknowns_may_go_either_way() {
        let history = History {
            ops: vec![
                op(0, "k", 0, Outcome::Ok(1)),
                op(1, "k", 2, Outcome::Unknown("timeout".into())),
                op(0, "k", 4, Outcome::Ok(3)),
                op(1, "k", 6, Outcome::Fail("moved".into())),
                op(1, "k", 8, Outcome::Unknown("disconnected".into())),
            ],
            faults: vec![],
        };
        for stored in [3, 4] {
            let verdict = check(&history, &finals(&[("k", stored)]));
            assert!(verdict.valid(), "{verdict}");
            assert_eq!((verdict.ok, verdict.fail, verdict.unknown), (2, 1, 2));
        }
    }

    #[test]
    fn a_value_handed_out_twice_is_shown_with_both_operations_and_the_fault_between() {
        let history = History {
            ops: vec![
                op(0, "k", 0, Outcome::Ok(1)),
                op(1, "k", 1500, Outcome::Ok(1)),
            ],
            faults: vec![Fault {
                at: Duration::from_millis(700),
                what: "kill -9 b".into(),
            }],
        };
        let verdict = check(&history, &finals(&[("k", 2)]));
        assert!(matches!(verdict.violations[0], Violation::Duplicate { .. }));
        let text = verdict.to_string();
        assert!(text.contains("handed out twice on k"), "{text}");
        assert!(text.contains("client 1 incr k"), "{text}");
        assert!(text.contains("kill -9 b"), "{text}");
    }

    #[test]
    fn a_lost_acknowledgement_and_a_failed_call_that_ran_are_both_caught() {
        let history = History {
            ops: vec![op(0, "k", 0, Outcome::Ok(1)), op(0, "k", 2, Outcome::Ok(2))],
            faults: vec![],
        };
        let lost = check(&history, &finals(&[("k", 1)]));
        assert!(
            matches!(&lost.violations[..], [Violation::Lost { above, .. }] if above.len() == 1)
        );
        let phantom = check(&history, &finals(&[("k", 3)]));
        assert!(matches!(
            &phantom.violations[..],
            [Violation::Phantom { .. }]
        ));
    }
}
