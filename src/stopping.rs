//! The service's stop signal: set once when it begins to stop. Long-lived responses (live
//! streams) end on it, and background loops (revocation listener, refresher, sweep,
//! scheduler) stop with it, so that nothing outlives the connections and broker it uses.

use std::future::Future;
use std::sync::Arc;

/// The service is stopping; cheap to clone, every clone sees the same signal.
#[derive(Clone)]
pub struct Stopping(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Stopping {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl Stopping {
    pub fn begin(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once the service begins to stop.
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    /// Runs `work` until it ends or the service begins to stop, whichever comes first.
    pub fn until_stopped<F: Future<Output = ()>>(&self, work: F) -> impl Future<Output = ()> {
        let stopping = self.clone();
        async move {
            tokio::select! {
                () = work => {}
                () = stopping.wait() => {}
            }
        }
    }
}
