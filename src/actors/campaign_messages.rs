//! What a CampaignActor is asked, and what it shares with the other campaign actors.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::actors::sender::SenderPool;
use crate::domain::{CampaignId, CampaignStatus, TenantId, TrafficAccountId};
use crate::engine::campaign::{Change, Stats};
use crate::pipeline::Replay;
use crate::store::campaigns::{CampaignRecord, Definition};
use crate::store::enqueue::{EnqueueOutcome, StartError};

/// The stats each active campaign's actor last published: what stats requests read, without
/// a round trip through the actor's mailbox (which may be behind a batch of transitions), and
/// what live streams watch. An actor publishes after every change it makes and withdraws its
/// entry when it stops; a watched campaign's channel outlives its actors, so a stream keeps
/// its subscription across passivation and reactivation.
#[derive(Clone, Default)]
pub struct PublishedStats {
    latest: Arc<dashmap::DashMap<CampaignId, (TenantId, Stats)>>,
    watched: Arc<dashmap::DashMap<CampaignId, watch::Sender<Latest>>>,
}

/// A campaign's tenant and stats as last published (`None` before its first publication).
type Latest = Option<(TenantId, Stats)>;

impl PublishedStats {
    /// Makes `stats` what requests read and what watchers see next. Costs one map lookup
    /// more when nobody watches; watchers are woken, never waited for.
    pub fn publish(&self, id: CampaignId, tenant: TenantId, stats: Stats) {
        if let Some(tx) = self.watched.get(&id) {
            tx.send_replace(Some((tenant, stats.clone())));
        }
        self.latest.insert(id, (tenant, stats));
    }

    pub fn withdraw(&self, id: CampaignId) {
        self.latest.remove(&id);
    }

    pub fn get(&self, id: CampaignId) -> Option<(TenantId, Stats)> {
        self.latest.get(&id).map(|e| e.value().clone())
    }

    /// A receiver of the campaign's every publication from now on (its current value: the
    /// last published, if its actor is active).
    pub fn watch(&self, id: CampaignId) -> watch::Receiver<Latest> {
        self.watched
            .entry(id)
            .or_insert_with(|| watch::channel(self.get(id)).0)
            .subscribe()
    }

    /// Drops the campaign's channel once nobody watches it.
    pub fn unwatch(&self, id: CampaignId) {
        self.watched
            .remove_if(&id, |_, tx| tx.receiver_count() == 0);
    }

    /// Campaigns with at least one watcher, and watchers in all.
    pub fn watchers(&self) -> (usize, usize) {
        let campaigns = self.watched.len();
        let watchers = self.watched.iter().map(|e| e.receiver_count()).sum();
        (campaigns, watchers)
    }
}

/// A subscription to one campaign's published stats; dropping it unsubscribes.
pub struct StatsWatch {
    id: CampaignId,
    rx: Option<watch::Receiver<Latest>>,
    published: PublishedStats,
}

impl StatsWatch {
    pub fn new(id: CampaignId, published: &PublishedStats) -> Self {
        Self {
            id,
            rx: Some(published.watch(id)),
            published: published.clone(),
        }
    }

    /// Waits for the next publication, then answers the newest stats (publications made
    /// meanwhile are coalesced into it).
    pub async fn changed(&mut self) -> Option<(TenantId, Stats)> {
        let rx = self.rx.as_mut()?;
        rx.changed().await.ok()?;
        rx.borrow_and_update().clone()
    }
}

impl Drop for StatsWatch {
    fn drop(&mut self) {
        drop(self.rx.take());
        self.published.unwatch(self.id);
    }
}

/// What campaign actors share for sending.
pub struct SendingContext {
    pub senders: SenderPool,
    pub replay: Replay,
    pub batch_size: usize,
    pub max_in_flight: usize,
    pub max_retries: u32,
    /// SMS parts one recipient's text may take.
    pub max_segments: u32,
    /// For campaigns created without one.
    pub default_traffic_account: Option<TrafficAccountId>,
    /// Where marketing links point and how they are worded.
    pub links: crate::domain::LinkWording,
    /// "Now" for quiet hours and caps.
    pub clock: Arc<dyn crate::engine::clock::Clock>,
    /// Where claimed rows wait for the partition that receives their `sent`.
    pub claimed: super::claimed::ClaimedRows,
}

/// Applies transitions in the order given.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct ApplyTransitions(pub Vec<Change>);

/// Asks the actor to take its next step (the stuck-campaign sweep): a sending campaign with
/// nothing queued or out completes, one with queued messages claims its next batch.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Nudge;

/// The campaign's tenant and stats, or `None` when the campaign does not exist.
#[derive(Message, Clone)]
#[rtype(result = "Option<(TenantId, Stats)>")]
pub struct GetStats;

/// The campaign as the actor holds it (figures with their series, status, tenant), for
/// reports; `None` when the campaign does not exist.
#[derive(Message, Clone)]
#[rtype(result = "Option<Box<crate::engine::campaign::Campaign>>")]
pub struct GetCampaign;

/// Stops the actor if it has been idle this long, is not sending, and everything it applied
/// is committed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Passivate {
    pub idle_for: Duration,
    pub committed_epoch: u64,
}

/// The campaign's partition is being revoked: the actor takes no new work and stops once
/// nothing it started is out (batches answered, writes done); answered then.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// Stops the actor now, whatever it is doing: its figures can no longer be trusted (they may
/// count transitions this member will never commit), or the campaign moved to another member.
/// Claims it left in flight are judged by the next activation, as after a crash.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evict;

/// The newest checkpoint epoch whose transitions this campaign applied.
#[derive(Message, Clone)]
#[rtype(result = "u64")]
pub struct GetAppliedEpoch;

/// A lifecycle command on behalf of a tenant; another tenant's campaign is `NotFound`.
/// `None` when the actor stopped before answering.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Option<LifecycleResult>")]
pub struct Lifecycle {
    pub tenant: TenantId,
    pub command: Command,
}

#[derive(Clone, Debug)]
pub enum Command {
    Enqueue {
        idempotency_key: Option<String>,
    },
    Schedule(DateTime<Utc>),
    Unschedule,
    Pause,
    Resume,
    Cancel,
    RetryFailed,
    /// Replace the definition (draft or scheduled campaigns).
    Edit(Box<Definition>),
    /// Delete a draft.
    Delete,
}

#[derive(Debug, Clone)]
pub enum LifecycleReply {
    Enqueued(EnqueueOutcome),
    /// The campaign's new status and how many recipients the change touched.
    Changed {
        status: CampaignStatus,
        affected: i64,
    },
    Edited(Box<CampaignRecord>),
    Deleted,
}

pub type LifecycleResult = Result<LifecycleReply, StartError>;
