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
    ApplyTransitions, CampaignActor, Command, GetAppliedEpoch, GetCampaign, GetStats, Lifecycle,
    LifecycleResult, Nudge, Passivate, PublishedStats, SendingContext, StatsWatch,
};
use super::fold::Fold;
use crate::domain::{CampaignId, TenantId};
use crate::engine::campaign::{Change, Stats};

/// Cheap to clone; every clone sees the same actors.
#[derive(Clone)]
pub struct CampaignRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    actors: DashMap<CampaignId, Addr<CampaignActor>>,
    published: PublishedStats,
    pool: PgPool,
    arbiter: ArbiterHandle,
    /// The last checkpoint committed; an actor whose changes are newer must not passivate.
    committed_epoch: Arc<AtomicU64>,
    /// How far committed message rows are in `campaign_recipients`.
    fold: Fold,
    /// Set once the senders run; actors started before that do not send.
    sending: std::sync::OnceLock<Arc<SendingContext>>,
}

/// A message that found its actor stopped is re-routed to a fresh activation this many times.
const DELIVERY_ATTEMPTS: usize = 5;

impl CampaignRegistry {
    pub fn new(
        pool: PgPool,
        arbiter: ArbiterHandle,
        committed_epoch: Arc<AtomicU64>,
        fold: Fold,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                actors: DashMap::new(),
                published: PublishedStats::default(),
                pool,
                arbiter,
                committed_epoch,
                fold,
                sending: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Enables sending for campaign actors started from now on.
    pub fn enable_sending(&self, context: Arc<SendingContext>) {
        let _ = self.inner.sending.set(context);
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
        let pool = inner.pool.clone();
        let sending = inner.sending.get().cloned();
        let published = inner.published.clone();
        CampaignActor::start_in_arbiter(&inner.arbiter, move |_| {
            CampaignActor::new(id, pool, sending, published)
        })
    }

    /// Makes sure each campaign has a live actor and nudges it to take its next step; answers
    /// how many had none.
    pub async fn keep_sending(&self, ids: &[CampaignId]) -> usize {
        let mut started = 0;
        for id in ids {
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

    /// Sends a message to a campaign's actor; if that actor stopped meanwhile (passivated), a
    /// fresh activation receives it, so nothing is lost to passivation.
    async fn ask<M>(&self, id: CampaignId, msg: M) -> Option<M::Result>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        CampaignActor: Handler<M>,
    {
        for _ in 0..DELIVERY_ATTEMPTS {
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
    /// were applied.
    pub async fn deliver(&self, changes: Vec<Change>) {
        let mut by_campaign: HashMap<CampaignId, Vec<Change>> = HashMap::new();
        for c in changes {
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
        self.ask(id, GetStats).await.flatten()
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

    /// Activates campaigns so their send loops run (at start-up, after a crash).
    pub fn activate(&self, ids: &[CampaignId]) {
        for id in ids {
            self.get_or_activate(*id);
        }
    }

    /// Stops actors idle for `idle_for` whose changes are all committed.
    pub async fn passivate_idle(&self, idle_for: Duration) -> usize {
        let committed_epoch = self.inner.committed_epoch.load(Ordering::Acquire);
        let actors: Vec<_> = self
            .inner
            .actors
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
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

    /// Campaigns watched by live streams, and streams in all.
    pub fn watchers(&self) -> (usize, usize) {
        self.inner.published.watchers()
    }

    pub fn active(&self) -> usize {
        self.inner.actors.len()
    }
}
