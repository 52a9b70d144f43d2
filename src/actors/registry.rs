//! Routes to CampaignActors, activating them on demand (virtual actors) and passivating the
//! idle ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use sqlx::PgPool;

use super::campaign::{
    ApplyTransitions, CampaignActor, Command, Evict, GetAppliedEpoch, GetCampaign, GetStats,
    Lifecycle, LifecycleResult, Nudge, Passivate, PublishedStats, Retire, SendingContext,
    StatsWatch,
};
use super::checkpoint::Partitions;
use super::fold::Fold;
use crate::domain::{CampaignId, TenantId};
use crate::engine::campaign::{Change, Stats};
use crate::store::cluster::MemberId;

/// Cheap to clone; every clone sees the same actors.
#[derive(Clone)]
pub struct CampaignRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    actors: DashMap<CampaignId, Addr<CampaignActor>>,
    published: PublishedStats,
    pool: PgPool,
    /// This process, as the cluster knows it.
    member: MemberId,
    arbiter: ArbiterHandle,
    /// The last checkpoint committed; an actor whose changes are newer must not passivate.
    committed_epoch: Arc<AtomicU64>,
    /// The partitions this member holds: it runs actors only for the campaigns they own.
    partitions: Partitions,
    /// How far committed message rows are in `campaign_recipients`.
    fold: Fold,
    /// Set once the senders run; actors started before that do not send.
    sending: std::sync::OnceLock<Arc<SendingContext>>,
}

/// A message that found its actor stopped is re-routed to a fresh activation this many times.
const DELIVERY_ATTEMPTS: usize = 5;

impl CampaignRegistry {
    pub fn new(
        (pool, member): (PgPool, MemberId),
        arbiter: ArbiterHandle,
        (committed_epoch, partitions): (Arc<AtomicU64>, Partitions),
        fold: Fold,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                actors: DashMap::new(),
                published: PublishedStats::default(),
                pool,
                member,
                arbiter,
                committed_epoch,
                partitions,
                fold,
                sending: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Enables sending for campaign actors started from now on.
    pub fn enable_sending(&self, context: Arc<SendingContext>) {
        let _ = self.inner.sending.set(context);
    }

    pub fn member(&self) -> MemberId {
        self.inner.member
    }

    pub fn committed_epoch(&self) -> &Arc<AtomicU64> {
        &self.inner.committed_epoch
    }

    /// The campaign's actor, started on the actors' arbiter if it is not running (an actor
    /// that stopped without being forgotten is replaced).
    pub fn get_or_activate(&self, id: CampaignId) -> Addr<CampaignActor> {
        let mut entry = self
            .inner
            .actors
            .entry(id)
            .or_insert_with(|| self.start(id));
        if !entry.connected() {
            *entry = self.start(id);
        }
        entry.clone()
    }

    fn start(&self, id: CampaignId) -> Addr<CampaignActor> {
        let inner = &self.inner;
        let (pool, member) = (inner.pool.clone(), inner.member);
        let partitions = inner.partitions.clone();
        let sending = inner.sending.get().cloned();
        let published = inner.published.clone();
        CampaignActor::start_in_arbiter(&inner.arbiter, move |_| {
            CampaignActor::new(id, (pool, member, partitions), sending, published)
        })
    }

    /// Makes sure each campaign has a live actor and nudges it to take its next step; answers
    /// how many had none.
    pub async fn keep_sending(&self, ids: &[CampaignId]) -> usize {
        let mut started = 0;
        for id in ids.iter().filter(|id| self.owns(**id)) {
            let had = self.inner.actors.get(id).is_some_and(|a| a.connected());
            if !had {
                started += 1;
            }
            self.ask(*id, Nudge).await;
        }
        started
    }

    /// Forgets an actor that stopped, unless a newer one already took its place.
    fn forget(&self, id: CampaignId, stale: &Addr<CampaignActor>) {
        self.inner.actors.remove_if(&id, |_, addr| addr == stale);
    }

    /// The partition whose owner owns the campaign.
    pub fn partition_of(&self, id: CampaignId) -> i32 {
        self.inner.partitions.of_campaign(id)
    }

    /// Whether this member owns the campaign (holds the partition it belongs to).
    pub fn owns(&self, id: CampaignId) -> bool {
        self.inner.partitions.owns_campaign(id)
    }

    /// Sends a message to a campaign's actor; if that actor stopped meanwhile (passivated), a
    /// fresh activation receives it, so nothing is lost to passivation. `None` for a campaign
    /// another member owns: no actor is started for it here.
    async fn ask<M>(&self, id: CampaignId, msg: M) -> Option<M::Result>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        CampaignActor: Handler<M>,
    {
        for _ in 0..DELIVERY_ATTEMPTS {
            // checked at each attempt: an actor stopped because its campaign moved away is
            // not replaced here
            if !self.owns(id) {
                return None;
            }
            let addr = self.get_or_activate(id);
            match addr.send(msg.clone()).await {
                Ok(result) => return Some(result),
                Err(_) => self.forget(id, &addr),
            }
        }
        tracing::error!(campaign_id = %id, "campaign actor kept stopping; message not delivered");
        None
    }

    /// Hands transitions to their campaigns (one message per campaign) and returns when all
    /// were applied. Those of campaigns another member owns are left to the checkpoint: it
    /// adds them to the campaign's snapshot, which that member's actor reads.
    pub async fn deliver(&self, changes: Vec<Change>) {
        let mut by_campaign: HashMap<CampaignId, Vec<Change>> = HashMap::new();
        let owns_all = self.inner.partitions.owns_all();
        for c in changes
            .into_iter()
            .filter(|c| owns_all || self.owns(c.campaign()))
        {
            by_campaign.entry(c.campaign()).or_default().push(c);
        }
        let sends = by_campaign
            .into_iter()
            .map(|(id, ts)| self.ask(id, ApplyTransitions(ts)));
        futures::future::join_all(sends).await;
    }

    /// The campaign's tenant and stats, from its actor's memory: what it last published, or
    /// (not active yet) asked of a fresh activation.
    pub async fn stats(&self, id: CampaignId) -> Option<(TenantId, Stats)> {
        if let Some(published) = self.inner.published.get(id) {
            return Some(published);
        }
        match self.ask(id, GetStats).await {
            Some(answer) => answer,
            // owned elsewhere (or just moving): the snapshot answers
            None => self.snapshot_stats(id).await,
        }
    }

    /// Stats of a campaign another member owns, from its last checkpointed snapshot (every
    /// member's committed transitions; not those of the last fraction of a second).
    async fn snapshot_stats(&self, id: CampaignId) -> Option<(TenantId, Stats)> {
        let (pool, member) = (&self.inner.pool, self.inner.member);
        match crate::store::campaigns::load_for_activation(pool, id, member).await {
            Ok(found) => found.map(|c| (c.tenant, c.stats())),
            Err(e) => {
                tracing::error!(campaign_id = %id, error = %e, "reading a campaign's snapshot failed");
                None
            }
        }
    }

    /// The campaign as its actor holds it, if it has an active actor; `None` otherwise (the
    /// snapshot in Postgres is then the whole truth). Never activates one.
    pub async fn campaign_if_active(
        &self,
        id: CampaignId,
    ) -> Option<Box<crate::engine::campaign::Campaign>> {
        let addr = self.inner.actors.get(&id).map(|a| a.clone())?;
        addr.send(GetCampaign).await.ok().flatten()
    }

    /// A live view of the campaign's stats: its current stats (activating its actor, which
    /// then publishes every change) and a subscription to every later publication. `None`
    /// when the campaign does not exist. A watcher costs the actor one channel send per change.
    pub async fn watch(&self, id: CampaignId) -> Option<((TenantId, Stats), StatsWatch)> {
        let watch = StatsWatch::new(id, &self.inner.published);
        let current = self.stats(id).await?;
        Some((current, watch))
    }

    /// Runs a lifecycle command in the campaign's actor; `None` if it could not be reached.
    pub async fn lifecycle(
        &self,
        id: CampaignId,
        tenant: TenantId,
        command: Command,
    ) -> Option<LifecycleResult> {
        if matches!(command, Command::RetryFailed) {
            self.await_committed(id).await;
        }
        self.ask(id, Lifecycle { tenant, command }).await.flatten()
    }

    /// Waits (bounded) until every transition the campaign applied is committed and folded,
    /// so that rows read in `campaign_recipients` agree with its counters.
    async fn await_committed(&self, id: CampaignId) {
        let Some(applied) = self.ask(id, GetAppliedEpoch).await else {
            return;
        };
        self.inner
            .fold
            .until_folded(applied, Duration::from_secs(30))
            .await;
    }

    /// Activates the campaigns this member owns so their send loops run (at start-up, after a
    /// crash, when their partition moves here).
    pub fn activate(&self, ids: &[CampaignId]) {
        for id in ids.iter().filter(|id| self.owns(**id)) {
            self.get_or_activate(*id);
        }
    }

    /// A partition came to this member: its sending campaigns resume here (once senders run;
    /// until then the start-up does it).
    pub fn resume_partition(&self, partition: i32) {
        if self.inner.sending.get().is_none() {
            return;
        }
        let registry = self.clone();
        self.inner.arbiter.spawn(async move {
            let sending = crate::store::until_ok("finding campaigns to resume", || {
                crate::store::campaigns::sending(&registry.inner.pool)
            })
            .await;
            let ours: Vec<CampaignId> = sending
                .into_iter()
                .filter(|id| registry.inner.partitions.of_campaign(*id) == partition)
                .collect();
            if !ours.is_empty() {
                tracing::info!(
                    partition,
                    campaigns = ours.len(),
                    "resuming campaigns of an assigned partition"
                );
            }
            registry.activate(&ours);
        });
    }

    /// Partitions are being revoked: their campaigns' actors take no new work and stop once
    /// what they sent is answered. `false` if some were still busy after `limit`.
    pub async fn retire_partitions(&self, partitions: &[i32], limit: Duration) -> bool {
        let owned = &self.inner.partitions;
        let actors = self.actors_where(|id| partitions.contains(&owned.of_campaign(id)));
        let retired = futures::future::join_all(actors.iter().map(|(_, a)| a.send(Retire)));
        tokio::time::timeout(limit, retired).await.is_ok()
    }

    /// [`Self::retire_partitions`] for a thread outside the actors' runtime (the consumer's
    /// rebalance hook): runs it on the actors' arbiter and waits.
    pub fn retire_partitions_blocking(&self, partitions: &[i32], limit: Duration) -> bool {
        let (done, retired) = std::sync::mpsc::channel();
        let (registry, partitions) = (self.clone(), partitions.to_vec());
        self.inner.arbiter.spawn(async move {
            let _ = done.send(registry.retire_partitions(&partitions, limit).await);
        });
        retired
            .recv_timeout(limit + Duration::from_secs(1))
            .unwrap_or(false)
    }

    /// A partition left this member: its campaigns' actors stop (see [`Evict`]); the new owner
    /// activates them from their snapshots.
    pub fn evict_partition(&self, partition: i32) {
        let partitions = &self.inner.partitions;
        self.evict_where(|id| partitions.of_campaign(id) == partition);
    }

    /// Stops actors idle for `idle_for` whose changes are all committed.
    pub async fn passivate_idle(&self, idle_for: Duration) -> usize {
        let committed_epoch = self.inner.committed_epoch.load(Ordering::Acquire);
        let actors = self.actors_where(|_| true);
        let mut stopped = 0;
        for (id, addr) in actors {
            let passivate = Passivate {
                idle_for,
                committed_epoch,
            };
            // an actor that already stopped (a campaign that does not exist) is forgotten too
            if addr.send(passivate).await.unwrap_or(true) {
                self.forget(id, &addr);
                stopped += 1;
            }
        }
        stopped
    }

    /// Stops every campaign actor (see [`Evict`]); the next request activates a fresh one
    /// from the snapshot.
    pub fn drop_all(&self) {
        self.evict_where(|_| true);
    }

    /// The running actors of the campaigns `pick` selects.
    fn actors_where(
        &self,
        pick: impl Fn(CampaignId) -> bool,
    ) -> Vec<(CampaignId, Addr<CampaignActor>)> {
        self.inner
            .actors
            .iter()
            .filter(|e| pick(*e.key()))
            .map(|e| (*e.key(), e.value().clone()))
            .collect()
    }

    /// Stops (see [`Evict`]) and forgets the actors of the campaigns `pick` selects.
    fn evict_where(&self, pick: impl Fn(CampaignId) -> bool) {
        for (id, addr) in self.actors_where(pick) {
            addr.do_send(Evict);
            self.forget(id, &addr);
        }
    }

    /// Campaigns watched by live streams, and streams in all.
    pub fn watchers(&self) -> (usize, usize) {
        self.inner.published.watchers()
    }

    pub fn active(&self) -> usize {
        self.inner.actors.len()
    }
}
