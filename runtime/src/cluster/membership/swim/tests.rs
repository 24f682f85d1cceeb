//! The membership actor with real sockets on loopback: two actors, no node around them.

use std::time::Duration;

use foca::{Member as SwimMember, State};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{start, SwimStart};
use crate::cluster::membership::{swim_config, MemberStatus, Membership, SyncState};
use crate::wire::swim::SwimId;
use crate::wire::NodeId;

async fn actor(
    name: &str,
    id: u64,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> (Membership, SwimId) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let me = SwimId {
        addr: socket.local_addr().expect("addr"),
        id: NodeId(id),
        name: name.to_owned(),
        incarnation: 1,
        bump: 0,
    };
    let swim = SwimStart {
        me: me.clone(),
        socket,
        config: swim_config(Duration::from_millis(100), Duration::from_secs(1)),
        cookie: None,
    };
    (start(swim, stop.clone(), tasks), me)
}

fn status_of(view: &Membership, name: &str) -> Option<MemberStatus> {
    view.members()
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.status)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_suspicion_a_state_sync_copied_is_refuted_by_its_member() {
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let (a, a_id) = actor("a", 1, &stop, &tasks).await;
    let (b, b_id) = actor("b", 2, &stop, &tasks).await;
    until("a and b to see each other up", || {
        a.announce(vec![b_id.addr]); // dropped while a is busy: said again
        status_of(&b, "a") == Some(MemberStatus::Up) && status_of(&a, "b") == Some(MemberStatus::Up)
    })
    .await;
    // b copies a suspicion of a from a third node's sync, as after a partition healed: it
    // holds a suspect with no timer of its own and does not gossip it.
    let suspected = || SyncState {
        members: vec![SwimMember::new(a_id.clone(), 0, State::Suspect)],
        hosting: Vec::new(),
    };
    b.apply(suspected()).await;
    until("b to hold a suspect", || {
        status_of(&b, "a") == Some(MemberStatus::Suspect)
    })
    .await;
    // a hears of it through a sync too: it must refute, or b holds it suspect for good.
    a.apply(suspected()).await;
    until("b to see a up again", || {
        status_of(&b, "a") == Some(MemberStatus::Up)
    })
    .await;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
}
