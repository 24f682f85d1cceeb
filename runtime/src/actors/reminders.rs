//! Reminders: durable timers of virtual actors (Orleans' and Dapr's reminders). A reminder —
//! type, key, name and period — lives in the node's state store, so it outlives every node.
//! It fires on whichever node owns its key, through the type's `on_reminder` hook (the
//! node-only method `TYPE.on_reminder/KEY(key, name)`), which activates the key if it must;
//! what the hook changes is written like any call's.
//!
//! Each node with a store runs [`run`]: it reads the table every second, and at once after a
//! change made through it, and fires the reminders whose key it owns, every period counted
//! from when it found itself the owner. Missed ticks are not caught up: after its owner dies,
//! a reminder fires on the new owner within a period (and a second) of the new owner's view
//! changing. A fire still running when the next is due skips that one. A timer a method
//! starts dies with its activation; a reminder does not. The task stops with the node.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{ActorRef, Ctx};
use crate::error::RpcError;
use crate::handlers::Handlers;
use crate::state::{Reminder, ReminderOp, StateStore};
use crate::wire::ErrorKind;

/// How often each node reads the reminders table.
const REFRESH: Duration = Duration::from_secs(1);
/// The shortest period a reminder may have.
pub(crate) const MIN_PERIOD: Duration = Duration::from_millis(100);
/// The longest: a year.
const MAX_PERIOD: Duration = Duration::from_secs(366 * 24 * 3600);
/// The longest reminder name.
const MAX_NAME: usize = 256;
/// The method of a type that a reminder fires through.
pub(crate) const ON_REMINDER: &str = "on_reminder";

/// Whether this node hosts `type` and owns `key` in its view now.
pub(crate) type Owns = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// A reminder as this node schedules it.
struct Scheduled {
    period: Duration,
    /// When it fires next, while this node owns its key.
    due: Option<Instant>,
    /// A fire is running.
    busy: Arc<AtomicBool>,
}

type Id = (String, String, String);

/// Fires the reminders this node owns until the node stops; `changed` asks for a fresh read
/// of the table.
pub(crate) async fn run(ctx: Ctx, store: Arc<dyn StateStore>, owns: Owns, changed: Arc<Notify>) {
    let mut schedule: HashMap<Id, Scheduled> = HashMap::new();
    // Reminders whose type has no hook: said once each.
    let warned: Arc<Mutex<HashSet<Id>>> = Arc::default();
    let mut read_at = Instant::now();
    loop {
        if Instant::now() >= read_at {
            match store.reminders(ReminderOp::List).await {
                Ok(all) => reconcile(&mut schedule, all),
                Err(error) => warn!(%error, "cannot read the reminders; trying again"),
            }
            read_at = Instant::now() + REFRESH;
        }
        let now = Instant::now();
        for (id, reminder) in &mut schedule {
            let mine = !ctx.closing() && owns(&id.0, &id.1);
            reminder.due = match (mine, reminder.due) {
                (false, _) => None,
                (true, None) => Some(now + reminder.period),
                (true, Some(due)) if due <= now => {
                    fire(&ctx, id, reminder, &warned);
                    // The next tick after now, on the same beat.
                    let behind = now.duration_since(due).as_nanos() / reminder.period.as_nanos();
                    let ticks = u32::try_from(behind + 1).unwrap_or(u32::MAX);
                    Some(due + reminder.period.saturating_mul(ticks))
                }
                (true, due) => due,
            };
        }
        let wake = (schedule.values().filter_map(|r| r.due))
            .chain([read_at])
            .min()
            .unwrap_or(read_at);
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = changed.notified() => read_at = Instant::now(),
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Brings the schedule in line with the table: new reminders are added (not due until this
/// node finds it owns them), gone ones dropped, a changed period starts over.
fn reconcile(schedule: &mut HashMap<Id, Scheduled>, all: Vec<Reminder>) {
    let mut seen = HashSet::with_capacity(all.len());
    for r in all {
        let period = Duration::from_millis(r.period_ms).max(MIN_PERIOD);
        let id = (r.kind, r.key, r.name);
        seen.insert(id.clone());
        let entry = schedule.entry(id).or_insert_with(|| Scheduled {
            period,
            due: None,
            busy: Arc::default(),
        });
        if entry.period != period {
            entry.period = period;
            entry.due = None;
        }
    }
    schedule.retain(|id, _| seen.contains(id));
}

/// Calls the key's `on_reminder` hook, unless its last fire is still running.
fn fire(ctx: &Ctx, id: &Id, reminder: &Scheduled, warned: &Arc<Mutex<HashSet<Id>>>) {
    if reminder.busy.swap(true, Ordering::AcqRel) {
        return;
    }
    let (ctx2, id, busy, warned) = (
        ctx.clone(),
        id.clone(),
        reminder.busy.clone(),
        warned.clone(),
    );
    let timeout = reminder.period.max(ctx.default_timeout);
    ctx.tasks.spawn(async move {
        let (kind, key, name) = &id;
        let target = ActorRef::new(ctx2, kind, key);
        let fired = (target.call_timeout::<()>(ON_REMINDER, (key, name), timeout)).await;
        busy.store(false, Ordering::Release);
        match fired {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::MethodNotFound => {
                if warned.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone()) {
                    warn!(kind = %kind, %key, reminder = %name, "a reminder fired, but its type has no on_reminder hook");
                }
            }
            Err(error) => debug!(kind = %kind, %key, reminder = %name, %error, "a reminder's fire failed"),
        }
    });
}

/// A reminder as `system.reminders` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Listed {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) period_ms: u64,
    /// The member that fires it, in this node's view.
    pub(crate) owner: Option<String>,
}

/// Why a reminder cannot be set: what is wrong with it, or that there is no store.
fn refused(method: &str, detail: String) -> RpcError {
    RpcError::BadArguments {
        method: method.to_owned(),
        detail,
    }
}

fn store(ctx: &Ctx, method: &str) -> Result<Arc<dyn StateStore>, RpcError> {
    ctx.store.clone().ok_or_else(|| {
        refused(
            method,
            "reminders live in the state store, and this node has none (--state)".to_owned(),
        )
    })
}

fn unavailable(method: &str, e: impl std::fmt::Display) -> RpcError {
    RpcError::Application {
        method: method.to_owned(),
        message: e.to_string(),
        data: None,
    }
}

/// Stores `name` for `kind`/`key`, firing every `period` (a second set changes the period).
pub(crate) async fn set(
    ctx: &Ctx,
    kind: &str,
    key: &str,
    name: &str,
    period: Duration,
) -> Result<(), RpcError> {
    const METHOD: &str = "remind";
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(refused(
            METHOD,
            format!("a reminder is named by 1 to {MAX_NAME} bytes"),
        ));
    }
    if !(MIN_PERIOD..=MAX_PERIOD).contains(&period) {
        return Err(refused(
            METHOD,
            format!("a reminder's period is {MIN_PERIOD:?} to a year, not {period:?}"),
        ));
    }
    let reminder = Reminder {
        kind: kind.to_owned(),
        key: key.to_owned(),
        name: name.to_owned(),
        period_ms: period.as_millis() as u64,
    };
    let store = store(ctx, METHOD)?;
    (store.reminders(ReminderOp::Set(reminder)).await).map_err(|e| unavailable(METHOD, e))?;
    ctx.reminders.notify_one();
    Ok(())
}

/// Removes `name` of `kind`/`key`; whether there was one.
pub(crate) async fn forget(ctx: &Ctx, kind: &str, key: &str, name: &str) -> Result<bool, RpcError> {
    const METHOD: &str = "forget";
    let op = ReminderOp::Forget {
        kind: kind.to_owned(),
        key: key.to_owned(),
        name: name.to_owned(),
    };
    let store = store(ctx, METHOD)?;
    let gone = (store.reminders(op).await).map_err(|e| unavailable(METHOD, e))?;
    ctx.reminders.notify_one();
    Ok(!gone.is_empty())
}

/// Every reminder in the store, with the member that fires it.
pub(crate) async fn list(ctx: &Ctx) -> Result<Vec<Listed>, RpcError> {
    let store = store(ctx, "system.reminders")?;
    let all = (store.reminders(ReminderOp::List).await)
        .map_err(|e| unavailable("system.reminders", e))?;
    Ok(all
        .into_iter()
        .map(|r| Listed {
            owner: ActorRef::new(ctx.clone(), &r.kind, &r.key).owner(),
            kind: r.kind,
            key: r.key,
            name: r.name,
            period_ms: r.period_ms,
        })
        .collect())
}

/// `system.reminders`, `.set` and `.forget`: the reminders of the cluster, through any node.
pub(crate) fn register(handlers: &Handlers, ctx: &Ctx) {
    let c = ctx.clone();
    handlers
        .register_async("system.reminders", move |(): ()| {
            let ctx = c.clone();
            async move { list(&ctx).await.map_err(|e| e.to_string()) }
        })
        .help("system.reminders() -> [{type, key, name, period_ms, owner}]: every reminder in the cluster's state store, and the member that fires it in this node's view");
    let c = ctx.clone();
    handlers
        .register_async(
            "system.reminders.set",
            move |(kind, key, name, period_ms): (String, String, String, u64)| {
                let ctx = c.clone();
                async move {
                    let period = Duration::from_millis(period_ms);
                    set(&ctx, &kind, &key, &name, period).await.map_err(|e| e.to_string())
                }
            },
        )
        .params(&["type", "key", "name", "period_ms"])
        .help("system.reminders.set(type, key, name, period_ms): stores a reminder that calls TYPE's on_reminder hook for KEY every period_ms (at least 100), on whichever member owns KEY; setting it again changes the period");
    let c = ctx.clone();
    handlers
        .register_async(
            "system.reminders.forget",
            move |(kind, key, name): (String, String, String)| {
                let ctx = c.clone();
                async move { forget(&ctx, &kind, &key, &name).await.map_err(|e| e.to_string()) }
            },
        )
        .params(&["type", "key", "name"])
        .help("system.reminders.forget(type, key, name) -> bool: removes a reminder; whether there was one");
}
