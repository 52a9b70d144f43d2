//! The fold: moves checkpointed message rows from `message_log` into `campaign_recipients` on
//! a connection of its own, so that a checkpoint's transaction appends (about 1 µs a row)
//! instead of updating rows in place (about 19 µs a row, with every index of the recipients
//! table taking a new entry). The checkpoint stays the unit of durability and exactness: its
//! rows, campaign deltas and offsets commit together; the fold only changes where the rows
//! can be read.
//!
//! Readers of `campaign_recipients` that must agree with the actors' memory wait for
//! [`Fold::until_folded`] (retry-failed, the replay before claims are judged, the reconciler),
//! DlrActors forget a final row only once it is folded (a later lookup must find it), and
//! start-up folds whatever a crash left in the log before anything reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::store::messages;

/// A handle on the fold task: what it was asked to fold, and how far it got.
#[derive(Clone)]
pub struct Fold {
    inner: Arc<Inner>,
}

struct Inner {
    /// The newest committed epoch; the task folds up to it.
    requested: watch::Sender<u64>,
    /// The newest epoch whose rows are all in `campaign_recipients`.
    folded: watch::Sender<u64>,
    /// Rows appended by committed checkpoints and not yet folded (approximate: a fold may
    /// take rows before their checkpoint's count arrives).
    unfolded_rows: AtomicU64,
}

/// Waits between attempts while Postgres refuses a fold.
const RETRY_AFTER: Duration = Duration::from_millis(500);

impl Fold {
    /// A fold whose rows up to `folded` (the committed epoch after the start-up fold) are in
    /// place. The task runs on the current Tokio runtime until every handle is dropped.
    pub fn start(pool: PgPool, folded: u64) -> Self {
        let (requested, mut asked) = watch::channel(folded);
        let fold = Self {
            inner: Arc::new(Inner {
                requested,
                folded: watch::channel(folded).0,
                unfolded_rows: AtomicU64::new(0),
            }),
        };
        let weak = Arc::downgrade(&fold.inner);
        tokio::spawn(async move {
            while asked.changed().await.is_ok() {
                let target = *asked.borrow_and_update();
                let Some(inner) = weak.upgrade() else { return };
                if target > *inner.folded.borrow() {
                    fold_through(&pool, &inner, target).await;
                }
            }
        });
        fold
    }

    /// Checkpoint `epoch` committed, with `rows` message rows in the log.
    pub fn committed(&self, epoch: u64, rows: usize) {
        self.inner
            .unfolded_rows
            .fetch_add(rows as u64, Ordering::Relaxed);
        self.inner.requested.send_if_modified(|asked| {
            let newer = epoch > *asked;
            *asked = (*asked).max(epoch);
            newer
        });
        crate::metrics::unfolded_rows(self.unfolded_rows());
    }

    /// The newest epoch whose rows are all in `campaign_recipients`.
    pub fn folded_epoch(&self) -> u64 {
        *self.inner.folded.borrow()
    }

    /// Rows waiting in the log (approximate, see [`Inner::unfolded_rows`]).
    pub fn unfolded_rows(&self) -> u64 {
        self.inner.unfolded_rows.load(Ordering::Relaxed)
    }

    /// `true` once checkpoint `epoch`'s rows are in `campaign_recipients`; `false` if that
    /// took longer than `limit`.
    pub async fn until_folded(&self, epoch: u64, limit: Duration) -> bool {
        let mut folded = self.inner.folded.subscribe();
        let reached = tokio::time::timeout(limit, folded.wait_for(|f| *f >= epoch)).await;
        matches!(reached, Ok(Ok(_)))
    }
}

/// Folds until it succeeds: the rows are committed in the log, so waiting out an outage loses
/// nothing (readers wait meanwhile).
async fn fold_through(pool: &PgPool, inner: &Inner, target: u64) {
    loop {
        let started = std::time::Instant::now();
        match messages::fold(pool).await {
            Ok(folded) => {
                let left = inner
                    .unfolded_rows
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_sub(folded.logged))
                    })
                    .map_or(0, |before| before.saturating_sub(folded.logged));
                crate::metrics::fold(started.elapsed(), folded.written);
                crate::metrics::unfolded_rows(left);
                inner.folded.send_modify(|f| *f = (*f).max(target));
                return;
            }
            Err(e) => {
                crate::metrics::fold_failed();
                tracing::warn!(error = %e, target, "folding the message log failed; retrying");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}
