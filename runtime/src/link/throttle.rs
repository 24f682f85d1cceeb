//! [`LogLimit`]: one log line a second for events a stranger can cause at will (failed
//! handshakes, refused connections), with a count of the lines held back.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// See the module doc.
#[derive(Default)]
pub(crate) struct LogLimit {
    /// When the last line went out, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimit {
    /// `Some(lines held back since the last one)` when a line may be logged now.
    pub(crate) fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => {
                state.1 += 1;
                None
            }
            _ => {
                state.0 = Some(now);
                Some(std::mem::take(&mut state.1))
            }
        }
    }
}
