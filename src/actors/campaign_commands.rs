//! Lifecycle commands of a CampaignActor: each is admitted by the engine's lifecycle table
//! ([`Campaign::admit`]), written to Postgres conditional on the status it was admitted from,
//! and only then applied to memory. The actor is the only writer of its campaign's status.

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::campaign::CampaignActor;
use super::campaign_messages::{Command, Lifecycle, LifecycleReply, LifecycleResult};
use crate::domain::{CampaignStatus, MessageStatus};
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
        let (pool, id) = (self.pool(), self.id());
        let sizes = enqueue::Sizes {
            batch_size: self.sending().map_or(500, |s| s.batch_size),
            max_segments: self.sending().map_or(10, |s| s.max_segments),
        };
        let max_retries = self.sending().map_or(1, |s| s.max_retries) as i32;
        Ok(match msg.command {
            Command::Enqueue { idempotency_key } => {
                let work = async move {
                    let key = idempotency_key.as_deref();
                    enqueue::enqueue(&pool, tenant, id, admitted.map(|_| from), key, sizes).await
                };
                Box::pin(work.into_actor(self).map(move |result, act, _| {
                    let outcome = result?;
                    if let EnqueueOutcome::Done(e) = &outcome {
                        act.send_run().requeued();
                        if e.added >= enqueue::STATISTICS_REFRESH_ROWS {
                            actix::spawn(enqueue::refresh_statistics(act.pool()));
                        }
                        act.moved(to, Counters::default(), e.added);
                    }
                    Ok(LifecycleReply::Enqueued(outcome))
                }))
            }
            Command::Schedule(at) => self.set_status(from, to, Some(at)),
            Command::Unschedule | Command::Pause | Command::Resume => {
                self.set_status(from, to, None)
            }
            Command::Cancel => {
                let work = async move { enqueue::cancel(&pool, tenant, id, from).await };
                Box::pin(work.into_actor(self).map(move |result, act, _| {
                    let n = result?;
                    act.moved(
                        to,
                        Counters::moved(MessageStatus::Queued, MessageStatus::Cancelled, n),
                        0,
                    );
                    Ok(LifecycleReply::Changed {
                        status: to,
                        affected: n,
                    })
                }))
            }
            Command::RetryFailed => {
                let work = async move {
                    enqueue::retry_failed(&pool, tenant, id, from, max_retries).await
                };
                Box::pin(work.into_actor(self).map(move |result, act, _| {
                    let n = result?;
                    act.send_run().requeued();
                    act.moved(
                        to,
                        Counters::moved(MessageStatus::SendFailed, MessageStatus::Queued, n),
                        0,
                    );
                    Ok(LifecycleReply::Changed {
                        status: to,
                        affected: n,
                    })
                }))
            }
            Command::Edit(def) => {
                let work =
                    async move { campaigns::update(&pool, tenant, id, (from, to), &def).await };
                Box::pin(work.into_actor(self).map(move |result, act, _| {
                    let record = result?;
                    if let Some(c) = act.campaign() {
                        c.edited(
                            &record.name,
                            &record.body,
                            &record.sender,
                            record.traffic_account_id,
                        );
                        c.status = to;
                    }
                    Ok(LifecycleReply::Edited(Box::new(record)))
                }))
            }
            Command::Delete => {
                let work = async move { campaigns::delete(&pool, tenant, id, from).await };
                Box::pin(work.into_actor(self).map(|result, _, _| {
                    result?;
                    Ok(LifecycleReply::Deleted)
                }))
            }
        })
    }

    fn set_status(
        &mut self,
        from: CampaignStatus,
        to: CampaignStatus,
        scheduled_at: Option<DateTime<Utc>>,
    ) -> Work {
        let (pool, id) = (self.pool(), self.id());
        let work = async move { campaigns::set_status(&pool, id, (from, to), scheduled_at).await };
        Box::pin(work.into_actor(self).map(move |result, act, _| {
            result?;
            act.moved(to, Counters::default(), 0);
            Ok(LifecycleReply::Changed {
                status: to,
                affected: 0,
            })
        }))
    }

    /// Applies a committed command to memory: the new status, its counter change and the
    /// recipients it queued.
    fn moved(&mut self, to: CampaignStatus, delta: Counters, queued: i64) {
        if let Some(c) = self.campaign() {
            c.status = to;
            c.adjust(&delta);
            c.figures.counters.add(MessageStatus::Queued, queued);
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
