//! Lifecycle commands of a CampaignActor: each is admitted by the engine's lifecycle table
//! ([`Campaign::admit`]), written to Postgres conditional on the status it was admitted from,
//! and only then applied to memory. The actor is the only writer of its campaign's status.

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::campaign::CampaignActor;
use super::campaign_messages::{Command, Lifecycle, LifecycleReply, LifecycleResult};
use crate::domain::{CampaignStatus, LinkWording, MessageStatus};
use crate::engine::campaign::{Action, Counters};
use crate::store::campaigns;
use crate::store::enqueue::{self, EnqueueOutcome, StartError};

type Work = ResponseActFuture<CampaignActor, LifecycleResult>;

impl CampaignActor {
    /// The work of a command, or its refusal (another tenant's campaign is `NotFound`).
    pub(super) fn command(&mut self, msg: Lifecycle) -> Result<Work, StartError> {
        let tenant = msg.tenant;
        let c = self.campaign().filter(|c| c.tenant == tenant);
        let from = c.ok_or(StartError::NotFound)?.status;
        let admitted = crate::engine::campaign::admit(from, action_of(&msg.command));
        let to = match (&msg.command, admitted) {
            // a repeated Idempotency-Key replays its first answer whatever the status now is
            (
                Command::Enqueue {
                    idempotency_key: Some(_),
                },
                Err(_),
            ) => from,
            (_, admitted) => admitted?,
        };
        let (pool, id) = (self.pool.clone(), self.id);
        let sizes = enqueue::Sizes {
            batch_size: self.sending.as_deref().map_or(500, |s| s.batch_size),
            max_segments: self.sending.as_deref().map_or(10, |s| s.max_segments),
            links: self
                .sending
                .as_deref()
                .map_or_else(LinkWording::unconfigured, |s| s.links.clone()),
        };
        let max_retries = self.sending.as_deref().map_or(1, |s| s.max_retries) as i32;
        Ok(match msg.command {
            Command::Enqueue { idempotency_key } => {
                let admitted = admitted.map(|_| from);
                let work = async move {
                    let key = idempotency_key.as_deref();
                    enqueue::enqueue(&pool, tenant, id, admitted, key, sizes).await
                };
                Box::pin(work.into_actor(self).map(move |result, act, _| {
                    let outcome = result?;
                    if let EnqueueOutcome::Done(e) = &outcome {
                        if e.added >= enqueue::STATISTICS_REFRESH_ROWS {
                            actix::spawn(enqueue::refresh_statistics(act.pool.clone()));
                        }
                        act.moved(to, Counters::of(MessageStatus::Queued, e.added));
                    }
                    Ok(LifecycleReply::Enqueued(outcome))
                }))
            }
            Command::Schedule(at) => self.set_status(from, to, Some(at)),
            Command::Unschedule | Command::Pause | Command::Resume => {
                self.set_status(from, to, None)
            }
            Command::Cancel => self.counted(to, MessageStatus::Cancelled, async move {
                enqueue::cancel(&pool, tenant, id, from).await
            }),
            Command::RetryFailed => self.counted(to, MessageStatus::Queued, async move {
                enqueue::retry_failed(&pool, tenant, id, from, max_retries).await
            }),
            Command::Edit(def) => self.edit(from, to, tenant, def),
            Command::Delete => {
                let work = async move { campaigns::delete(&pool, tenant, id, from).await };
                Box::pin(work.into_actor(self).map(|result, _, _| {
                    result?;
                    Ok(LifecycleReply::Deleted)
                }))
            }
        })
    }

    /// A command that moves recipients (`work` answers the counter change it committed);
    /// the reply counts those that reached `landed`.
    fn counted(
        &mut self,
        to: CampaignStatus,
        landed: MessageStatus,
        work: impl std::future::Future<Output = Result<Counters, StartError>> + 'static,
    ) -> Work {
        Box::pin(work.into_actor(self).map(move |result, act, _| {
            let delta = result?;
            act.moved(to, delta);
            Ok(LifecycleReply::Changed {
                status: to,
                affected: delta.get(landed),
            })
        }))
    }

    fn edit(
        &mut self,
        from: CampaignStatus,
        to: CampaignStatus,
        tenant: crate::domain::TenantId,
        def: Box<crate::store::campaigns::Definition>,
    ) -> Work {
        let (pool, id) = (self.pool.clone(), self.id);
        let work = async move { campaigns::update(&pool, tenant, id, (from, to), &def).await };
        Box::pin(work.into_actor(self).map(move |result, act, _| {
            let record = result?;
            if let Some(c) = act.campaign() {
                let account = record.traffic_account_id;
                c.edited(
                    &record.name,
                    &record.body,
                    &record.sender,
                    account,
                    record.carried(),
                );
                c.status = to;
            }
            Ok(LifecycleReply::Edited(Box::new(record)))
        }))
    }

    fn set_status(
        &mut self,
        from: CampaignStatus,
        to: CampaignStatus,
        scheduled_at: Option<DateTime<Utc>>,
    ) -> Work {
        let (pool, id) = (self.pool.clone(), self.id);
        let work = async move { campaigns::set_status(&pool, id, (from, to), scheduled_at).await };
        Box::pin(work.into_actor(self).map(move |result, act, _| {
            result?;
            act.moved(to, Counters::default());
            Ok(LifecycleReply::Changed {
                status: to,
                affected: 0,
            })
        }))
    }

    /// Applies a committed command to memory: the new status and its counter change. Queued
    /// recipients may now sit behind the claim cursor, so claiming starts over.
    fn moved(&mut self, to: CampaignStatus, delta: Counters) {
        if delta.queued > 0 {
            self.run.requeued();
        }
        if let Some(c) = self.campaign() {
            c.status = to;
            c.adjust(&delta);
        }
    }
}

fn action_of(command: &Command) -> Action {
    match command {
        Command::Enqueue { .. } => Action::Enqueue,
        Command::Schedule(_) => Action::Schedule,
        Command::Unschedule => Action::Unschedule,
        Command::Pause => Action::Pause,
        Command::Resume => Action::Resume,
        Command::Cancel => Action::Cancel,
        Command::RetryFailed => Action::RetryFailed,
        Command::Edit(def) => Action::Edit {
            scheduled: def.scheduled_at.is_some(),
        },
        Command::Delete => Action::Delete,
    }
}
