//! CampaignActor: the shell around one campaign's [`Campaign`] and [`SendRun`] (src/engine).
//! It loads the campaign from its snapshot, applies transitions, answers stats from memory,
//! runs lifecycle commands one at a time (`campaign_commands.rs`), and performs the send
//! loop's steps (`campaign_sending.rs`).
//!
//! Lifecycle commands do their Postgres work in spawned futures, never holding the mailbox:
//! transitions and stats requests are answered while a large enqueue runs. Commands queue
//! behind each other, and no batch is claimed while one runs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

pub use super::campaign_messages::*;
use super::checkpoint::Partitions;
use crate::domain::{CampaignId, CampaignStatus};
use crate::engine::campaign::Campaign;
use crate::engine::send_loop::SendRun;
use crate::store::cluster::MemberId;
use crate::store::enqueue;
use crate::store::{self, until_ok};

/// In a cluster, how often a campaign's actor takes its snapshot again (see `refresh`).
const REFRESH_EVERY: Duration = Duration::from_millis(500);

/// Until its load completes the actor holds its mailbox (`ctx.wait`), so nothing is applied
/// to figures that are not loaded yet. A campaign that does not exist answers `None` and
/// stops: absence is never cached.
pub struct CampaignActor {
    pub(super) id: CampaignId,
    pub(super) pool: sqlx::PgPool,
    /// This process: its committed epoch tells which transitions the snapshot holds.
    member: MemberId,
    /// Whether other members hold partitions too: then transitions of this campaign are also
    /// applied elsewhere, and reach this actor through its snapshot (see `refresh`).
    pub(super) partitions: Partitions,
    pub(super) state: Load,
    last_touched: Instant,
    pub(super) sending: Option<Arc<SendingContext>>,
    pub(super) run: SendRun,
    commands: VecDeque<(Lifecycle, oneshot::Sender<LifecycleResult>)>,
    /// Revocations waiting for this actor to stop (answered as it is dropped).
    retirements: Vec<oneshot::Sender<()>>,
    pub(super) command_running: bool,
    /// A refresh from the snapshot is being read.
    refreshing: bool,
    published: PublishedStats,
}

pub(super) enum Load {
    Loading,
    Ready(Box<Campaign>),
    Missing,
}

impl CampaignActor {
    pub fn new(
        id: CampaignId,
        (pool, member, partitions): (sqlx::PgPool, MemberId, Partitions),
        sending: Option<Arc<SendingContext>>,
        published: PublishedStats,
    ) -> Self {
        Self {
            id,
            pool,
            member,
            partitions,
            state: Load::Loading,
            last_touched: Instant::now(),
            sending,
            run: SendRun::default(),
            commands: VecDeque::new(),
            retirements: Vec::new(),
            command_running: false,
            refreshing: false,
            published,
        }
    }

    pub(super) fn has_commands(&self) -> bool {
        !self.commands.is_empty()
    }

    /// Makes the current stats what stats requests read.
    pub(super) fn publish(&self) {
        if let Load::Ready(c) = &self.state {
            self.published.publish(self.id, c.tenant, c.stats());
        }
    }

    /// Stops the actor, withdrawing its published stats first.
    fn stop(&mut self, ctx: &mut Context<Self>) {
        self.published.withdraw(self.id);
        ctx.stop();
    }

    pub(super) fn campaign(&mut self) -> Option<&mut Campaign> {
        self.last_touched = Instant::now();
        match &mut self.state {
            Load::Ready(c) => Some(c),
            _ => None,
        }
    }

    /// Another member owns the campaign now (or is about to): no new work starts here, and
    /// the actor stops once nothing it started is out. `true` while it must not go on.
    pub(super) fn retiring(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.partitions.owns_campaign(self.id) {
            return false;
        }
        if !self.run.busy() && !self.command_running {
            self.stop(ctx);
        }
        true
    }

    /// Starts the next queued lifecycle command unless one is running.
    pub(super) fn next_command(&mut self, ctx: &mut Context<Self>) {
        if self.command_running || self.run.writing() {
            return;
        }
        let Some((msg, reply)) = self.commands.pop_front() else {
            return self.pump(ctx);
        };
        match self.command(msg) {
            Err(refused) => {
                let _ = reply.send(Err(refused));
                self.next_command(ctx);
            }
            Ok(work) => {
                self.command_running = true;
                ctx.spawn(work.map(move |result, act, ctx| {
                    act.command_running = false;
                    act.publish();
                    let deleted = matches!(result, Ok(LifecycleReply::Deleted));
                    let _ = reply.send(result);
                    if deleted {
                        act.state = Load::Missing;
                        for (_, waiting) in act.commands.drain(..) {
                            let _ = waiting.send(Err(enqueue::StartError::NotFound));
                        }
                        return act.stop(ctx);
                    }
                    act.next_command(ctx);
                }));
            }
        }
    }
}

impl Actor for CampaignActor {
    type Context = Context<Self>;

    #[tracing::instrument(skip_all, fields(campaign_id = %self.id))]
    fn started(&mut self, ctx: &mut Self::Context) {
        let (pool, id, member) = (self.pool.clone(), self.id, self.member);
        let load = async move {
            until_ok("activating a campaign", || {
                store::campaigns::load_for_activation(&pool, id, member)
            })
            .await
        };
        ctx.run_interval(REFRESH_EVERY, |act, ctx| act.refresh(ctx));
        ctx.wait(load.into_actor(self).map(|found, act, ctx| match found {
            Some(c) => {
                act.state = Load::Ready(Box::new(c));
                act.pump(ctx);
            }
            None => {
                // messages already in the mailbox are answered first (the mailbox runs
                // before timers); later ones reach a fresh activation, which looks again
                act.state = Load::Missing;
                ctx.run_later(Duration::ZERO, |act, ctx| act.stop(ctx));
            }
        }));
    }
}

impl CampaignActor {
    /// While other members hold partitions too, they apply some of this campaign's
    /// transitions and add them to its snapshot: the actor takes the snapshot again, with its
    /// own uncommitted transitions on top, and takes its next step (a send may be complete).
    /// The mailbox keeps running meanwhile; the snapshot is taken only if none of the
    /// campaign's own writes was in flight or landed while it was read (it might hold it).
    fn refresh(&mut self, ctx: &mut Context<Self>) {
        let alone = self.partitions.owns_all();
        let Load::Ready(c) = &mut self.state else {
            return;
        };
        c.keep_uncommitted(!alone);
        if alone || self.refreshing || self.run.writing() || self.command_running {
            return;
        }
        let adjustments = c.adjustments;
        self.refreshing = true;
        let (pool, id, member) = (self.pool.clone(), self.id, self.member);
        let load = async move { store::campaigns::load_for_activation(&pool, id, member).await };
        ctx.spawn(load.into_actor(self).map(move |loaded, act, ctx| {
            act.refreshing = false;
            let quiet = !act.run.writing() && !act.command_running;
            match (loaded, &mut act.state) {
                (Ok(Some(snapshot)), Load::Ready(c)) if quiet && c.adjustments == adjustments => {
                    c.refresh(snapshot)
                }
                (Ok(_), _) => return,
                (Err(e), _) => {
                    tracing::warn!(campaign_id = %act.id, error = %e, "refreshing from the snapshot failed");
                    return;
                }
            }
            act.pump(ctx);
        }));
    }
}

impl Handler<ApplyTransitions> for CampaignActor {
    type Result = ();

    fn handle(&mut self, msg: ApplyTransitions, ctx: &mut Self::Context) {
        let id = self.id;
        let alone = self.partitions.owns_all();
        match self.campaign() {
            Some(c) => {
                c.keep_uncommitted(!alone);
                msg.0.iter().for_each(|change| {
                    c.apply_change(change);
                })
            }
            None => {
                tracing::error!(campaign_id = %id, "transitions for a campaign that does not exist")
            }
        }
        self.pump(ctx);
    }
}

impl Handler<Nudge> for CampaignActor {
    type Result = ();

    fn handle(&mut self, _: Nudge, ctx: &mut Self::Context) {
        self.pump(ctx);
    }
}

impl Handler<GetStats> for CampaignActor {
    type Result = Option<(crate::domain::TenantId, crate::engine::campaign::Stats)>;

    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        self.campaign().map(|c| (c.tenant, c.stats()))
    }
}

impl Handler<GetCampaign> for CampaignActor {
    type Result = Option<Box<crate::engine::campaign::Campaign>>;

    fn handle(&mut self, _: GetCampaign, _: &mut Self::Context) -> Self::Result {
        self.campaign().map(|c| Box::new(c.clone()))
    }
}

impl Handler<Passivate> for CampaignActor {
    type Result = bool;

    fn handle(&mut self, msg: Passivate, ctx: &mut Self::Context) -> bool {
        let idle = self.last_touched.elapsed() >= msg.idle_for
            && !self.run.busy()
            && !self.command_running
            && self.commands.is_empty();
        let settled = match &self.state {
            Load::Ready(c) => {
                c.applied_epoch <= msg.committed_epoch && c.status != CampaignStatus::Sending
            }
            Load::Missing => true,
            Load::Loading => false,
        };
        if idle && settled {
            self.stop(ctx);
        }
        idle && settled
    }
}

impl Handler<Retire> for CampaignActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) -> Self::Result {
        let (done, stopped) = oneshot::channel();
        self.retirements.push(done);
        self.pump(ctx);
        Box::pin(async move {
            let _ = stopped.await;
        })
    }
}

impl Handler<Evict> for CampaignActor {
    type Result = ();

    fn handle(&mut self, _: Evict, ctx: &mut Self::Context) {
        self.stop(ctx);
    }
}

impl Handler<GetAppliedEpoch> for CampaignActor {
    type Result = u64;

    fn handle(&mut self, _: GetAppliedEpoch, _: &mut Self::Context) -> u64 {
        match &self.state {
            Load::Ready(c) => c.applied_epoch,
            _ => 0,
        }
    }
}

impl Handler<Lifecycle> for CampaignActor {
    type Result = ResponseFuture<Option<LifecycleResult>>;

    fn handle(&mut self, msg: Lifecycle, ctx: &mut Self::Context) -> Self::Result {
        if matches!(self.state, Load::Missing) {
            return Box::pin(async { Some(Err(enqueue::StartError::NotFound)) });
        }
        let (reply, answer) = oneshot::channel();
        self.commands.push_back((msg, reply));
        self.next_command(ctx);
        Box::pin(async move { answer.await.ok() })
    }
}
