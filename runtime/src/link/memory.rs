//! Test support: a connection of this node over one end of an in-memory socket, the other
//! end left to the test, which speaks raw frames on it — so a link's timers (deadlines,
//! heartbeats, silence) run on tokio's paused time with no network.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::{Connection, Parts};
use super::transport::Socket;
use super::{Dispatch, Limits, LinkCtx, Request, Responder};
use crate::config::NodeConfig;
use crate::wire::{Identity, NodeId};

/// Keeps every request it is handed, unanswered.
#[derive(Default)]
pub(crate) struct Keep {
    pub(crate) methods: Mutex<Vec<(String, Responder)>>,
    pub(crate) arrived: Notify,
}

impl Dispatch for Keep {
    fn dispatch(&self, request: Request<'_>) {
        let kept = (request.method.to_owned(), request.responder);
        self.methods.lock().unwrap().push(kept);
        self.arrived.notify_one();
    }
}

/// The link, and the raw far end of its socket.
pub(crate) fn memory_link(
    keep: Arc<Keep>,
    tasks: &TaskTracker,
    heartbeat: Duration,
    silence: Duration,
) -> (Connection, Socket) {
    let (ours, theirs) = Socket::loopback("127.0.0.1:1".parse().unwrap());
    let identity = Identity {
        id: NodeId(2),
        name: "peer".into(),
        listen: Some("127.0.0.1:1".into()),
        max_frame: 1 << 20,
        incarnation: 1,
    };
    let config = NodeConfig::default();
    let parts = Parts {
        peer: super::transport::peer_info(&identity, &ours),
        socket: ours,
        conn_id: 1,
        outbound: true,
        max_frame: 1 << 20,
        max_frame_in: 1 << 20,
        heartbeat,
        silence,
    };
    let ctx = LinkCtx {
        dispatch: keep,
        limits: Arc::new(Limits::new(Arc::default(), &config, false)),
        tasks: tasks.clone(),
    };
    let conn = Connection::start(parts, None, ctx, CancellationToken::new(), |_, _| {});
    (conn, theirs)
}

/// A link's timers, on paused time: deadlines, heartbeats, silence.
mod timers {
    use futures_util::StreamExt;
    use tokio::time::Instant;

    use super::*;
    use crate::wire::ErrorKind;
    use crate::wire::{self, Encoding, Header};

    const HOUR: Duration = Duration::from_secs(3600);

    /// The header of the next frame the far end reads, or `None` once the link closed.
    async fn next_header(far: &mut Socket) -> Option<String> {
        let payload = far.reader.next().await?.ok()?.freeze();
        let (header, _) = wire::decode_frame(&payload).ok()?;
        Some(format!("{header:?}"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_nobody_answers_ends_with_timeout_at_its_deadline() {
        let tasks = TaskTracker::new();
        let (conn, _far) = memory_link(Arc::default(), &tasks, HOUR, 2 * HOUR);
        let started = Instant::now();
        let deadline = Duration::from_secs(30);
        let call = conn.request("slow", Encoding::Bincode, &(), deadline, false, None);
        let err = call.await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        let took = started.elapsed();
        assert!(
            took >= deadline && took < deadline + Duration::from_millis(50),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_link_sends_a_ping_every_heartbeat() {
        let tasks = TaskTracker::new();
        let heartbeat = Duration::from_secs(1);
        let (_conn, mut far) = memory_link(Arc::default(), &tasks, heartbeat, HOUR);
        let started = Instant::now();
        for beat in 1..=3u32 {
            let header = next_header(&mut far).await;
            assert_eq!(header.as_deref(), Some("Ping"));
            let at = started.elapsed();
            // Within a heartbeat and a bit of each beat: never early, never skipped.
            assert!(
                at >= heartbeat * beat && at < heartbeat * (beat + 1),
                "{at:?}"
            );
            // The far end answers, as a live peer does.
            let pong = wire::frame_bytes(&Header::Pong).unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut far.writer, &pong)
                .await
                .unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_dropped_after_the_silence_and_its_calls_end() {
        let tasks = TaskTracker::new();
        let silence = Duration::from_secs(4);
        let (conn, mut far) = memory_link(Arc::default(), &tasks, HOUR, silence);
        let started = Instant::now();
        let call = conn.request("any", Encoding::Bincode, &(), HOUR, false, None);
        let (reply, closed_at) = tokio::join!(call, async {
            while next_header(&mut far).await.is_some() {}
            started.elapsed()
        });
        // Closed between the silence and 1.25 × the silence (checked four times per period).
        assert!(
            closed_at >= silence && closed_at <= silence.mul_f64(1.25) + Duration::from_millis(10),
            "{closed_at:?}"
        );
        assert!(conn.is_closed());
        let err = reply.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Disconnected, "{err}");
    }
}
