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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Rows each committed checkpoint appended, by epoch, until a fold through that epoch
    /// succeeds. Whoever emptied the log (this fold, `verify`, another process's fold), every
    /// row of an epoch up to a successful fold's target is gone then, so the count cannot
    /// drift; rows a fold took beyond its target are counted until the next fold.
    unfolded: Mutex<BTreeMap<u64, u64>>,
    /// The sum of `unfolded`, for readers that must not wait for the lock.
    unfolded_rows: AtomicU64,
}

impl Inner {
    /// Updates the unfolded rows with `change` and publishes their sum.
    fn unfolded(&self, change: impl FnOnce(&mut BTreeMap<u64, u64>)) {
        let mut unfolded = self.unfolded.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut unfolded);
        let rows = unfolded.values().sum();
        self.unfolded_rows.store(rows, Ordering::Relaxed);
        crate::metrics::unfolded_rows(rows);
    }
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
                unfolded: Mutex::default(),
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
        self.inner.unfolded(|unfolded| {
            *unfolded.entry(epoch).or_default() += rows as u64;
        });
        self.inner.requested.send_if_modified(|asked| {
            let newer = epoch > *asked;
            *asked = (*asked).max(epoch);
            newer
        });
    }

    /// The newest epoch whose rows are all in `campaign_recipients`.
    pub fn folded_epoch(&self) -> u64 {
        *self.inner.folded.borrow()
    }

    /// Rows waiting in the log (at least; see [`Inner::unfolded`]).
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
                crate::metrics::fold(started.elapsed(), folded.written);
                inner.unfolded(|unfolded| *unfolded = unfolded.split_off(&(target + 1)));
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
