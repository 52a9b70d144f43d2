//! The send loop of a CampaignActor: it performs the steps [`SendRun`] decides — settle an
//! earlier run's claims, claim a batch (committed before anything leaves), hand it to a
//! sender, release what provably never left, finish.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use actix::prelude::*;

use super::campaign::{CampaignActor, Load};
use super::campaign_messages::SendingContext;
use crate::actors::sender::{events_for, Batch, BatchDone, BatchItem};
use crate::domain::{CampaignStatus, LinkCode, LinkPlan, MessageStatus, RecipientId};
use crate::engine::campaign::Counters;
use crate::engine::send_loop::Step;
use crate::store::enqueue::{self, Claimed};
use crate::store::{self, until_ok};

impl CampaignActor {
    /// Takes the send loop's next step, if there is one to take.
    pub(super) fn pump(&mut self, ctx: &mut Context<Self>) {
        // every change the actor makes ends here: publish it for stats requests
        self.publish();
        if self.retiring(ctx) {
            return;
        }
        if self.has_commands() && !self.command_running && !self.run.writing() {
            return self.next_command(ctx);
        }
        let (Some(sending), Load::Ready(c)) = (self.sending.clone(), &self.state) else {
            return;
        };
        let has_account = c
            .plan
            .traffic_account
            .or(sending.default_traffic_account)
            .is_some();
        let step = self
            .run
            .next(c, has_account, sending.max_in_flight, self.command_running);
        match step {
            Step::Wait => {}
            Step::ReportNoAccount => {
                tracing::error!(campaign_id = %self.id, "no traffic account for this campaign and none configured (mitto.traffic_account_id); it waits")
            }
            Step::SettleEarlierClaims => self.settle_earlier_claims(ctx, sending),
            Step::Claim => self.claim(ctx, sending),
            Step::Finish(end) => self.finish(ctx, end),
        }
    }

    fn claim(&mut self, ctx: &mut Context<Self>, sending: Arc<SendingContext>) {
        let now = sending.clock.now();
        let Some(c) = self.campaign() else {
            return;
        };
        let rules = enqueue::ClaimRules {
            tenant: c.tenant,
            marketing: c.plan.carried != crate::domain::Carried::None,
            now,
        };
        let limits = &sending.senders.config.limits;
        let size = limits
            .batch_cap()
            .map_or(sending.batch_size, |cap| cap.min(sending.batch_size));
        let (pool, id, after) = (
            self.pool.clone(),
            self.id,
            self.run.claim_after().to_owned(),
        );
        let claim = async move {
            let started = std::time::Instant::now();
            let claim = until_ok("claiming a batch", || {
                enqueue::claim_batch(&pool, id, &after, size.max(1) as i64, rules)
            })
            .await;
            crate::metrics::claim(started.elapsed());
            claim
        };
        ctx.spawn(claim.into_actor(self).map(move |claim, act, ctx| {
            let enqueue::Claim {
                token,
                rows,
                skipped,
                last_phone,
                held_until,
            } = claim;
            if let Some(until) = held_until {
                return act.hold(ctx, until, now, sending.clock.recheck());
            }
            act.run
                .claimed(token, last_phone.iter().map(String::as_str));
            if skipped > 0 {
                if let Some(c) = act.campaign() {
                    c.adjust(&Counters::moved(
                        MessageStatus::Queued,
                        MessageStatus::Skipped,
                        skipped,
                    ));
                }
            }
            if rows.is_empty() && skipped > 0 {
                return act.pump(ctx); // all of this batch opted out: on to the next
            }
            if rows.is_empty() {
                // counted as queued but none found after the cursor: look again shortly
                ctx.run_later(Duration::from_millis(200), |act, ctx| act.pump(ctx));
                return;
            }
            let claimed = rows.len() as i64;
            let Some(batch) = act.batch_of(&sending, rows) else {
                return;
            };
            sending.claimed.hold(batch.campaign, &batch.items);
            if let Some(c) = act.campaign() {
                c.adjust(&claimed_counts(claimed));
            }
            act.run.batch_out();
            let senders = sending.senders.clone();
            ctx.spawn(
                async move { senders.send(batch).await }
                    .into_actor(act)
                    .map(|done, act, ctx| act.batch_done(done, ctx)),
            );
            act.pump(ctx);
        }));
    }

    /// Quiet hours: no claim until `until`. The clock and the tenant's rules are read again at
    /// least every `recheck` (a change of quiet hours, a corrected or set clock is followed),
    /// and never sooner than 100 ms, so a disagreement at the window's edge cannot spin.
    fn hold(
        &mut self,
        ctx: &mut Context<Self>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        recheck: Duration,
    ) {
        if self.run.hold() {
            tracing::info!(campaign_id = %self.id, %until, "quiet hours: marketing messages wait");
        }
        let wait = (until - now)
            .to_std()
            .unwrap_or_default()
            .clamp(QUIET_MIN_WAIT, recheck.max(QUIET_MIN_WAIT));
        ctx.run_later(wait, |act, ctx| {
            act.run.resume();
            act.pump(ctx);
        });
    }

    fn batch_of(&self, sending: &SendingContext, rows: Vec<Claimed>) -> Option<Batch> {
        let Load::Ready(c) = &self.state else {
            return None;
        };
        let links = sending.links.plan(c.plan.carried);
        Some(Batch {
            campaign: c.id,
            tenant: c.tenant,
            traffic_account: c.plan.traffic_account.or(sending.default_traffic_account)?,
            sender: c.plan.sender.clone(),
            owner: self.partitions.held(self.partitions.of_campaign(c.id)),
            items: rows
                .into_iter()
                .filter_map(|r| item(r, &c.plan.body, &links))
                .collect(),
        })
    }

    fn batch_done(&mut self, done: Option<BatchDone>, ctx: &mut Context<Self>) {
        self.run.batch_done();
        match done.map(|d| d.requeue).unwrap_or_default() {
            requeue if requeue.is_empty() => self.pump(ctx),
            requeue => self.release(ctx, requeue),
        }
    }

    /// Puts claims that provably never reached Mitto back in the queue. No claim, finish or
    /// command starts until the rows and the figures agree again; transitions and stats
    /// requests are answered meanwhile.
    fn release(&mut self, ctx: &mut Context<Self>, ids: Vec<RecipientId>) {
        if let Some(sending) = &self.sending {
            sending.claimed.forget(&ids);
        }
        let (pool, id) = (self.pool.clone(), self.id);
        let release = async move {
            until_ok("re-queueing unsent claims", || {
                enqueue::release_claims(&pool, id, &ids)
            })
            .await
        };
        self.run.releasing();
        ctx.spawn(release.into_actor(self).map(|released, act, ctx| {
            act.run.released();
            if let Some(c) = act.campaign() {
                let moved = Counters::moved(MessageStatus::Processing, released.to, released.count);
                c.adjust(&moved);
            }
            act.pump(ctx);
        }));
    }

    fn finish(&mut self, ctx: &mut Context<Self>, end: CampaignStatus) {
        let (pool, id) = (self.pool.clone(), self.id);
        let write = async move {
            until_ok("finishing a campaign", || async {
                match store::campaigns::set_status(&pool, id, (CampaignStatus::Sending, end), None)
                    .await
                {
                    Err(enqueue::StartError::Store(e)) => Err(e),
                    other => Ok(other),
                }
            })
            .await
        };
        ctx.spawn(write.into_actor(self).map(move |written, act, ctx| {
            act.run.finished();
            let Some(c) = act.campaign() else { return };
            match written {
                Ok(()) => {
                    c.status = end;
                    tracing::info!(campaign_id = %c.id, status = %end, sent = c.counters().sent(), "campaign finished");
                }
                Err(enqueue::StartError::Refused(stored)) => {
                    // nothing else writes the status; if something did, follow what is stored
                    tracing::error!(campaign_id = %c.id, %stored, "finishing refused: the stored status is not sending");
                    c.status = stored;
                }
                Err(e) => tracing::error!(campaign_id = %c.id, error = %e, "finishing refused"),
            }
            act.pump(ctx);
        }));
    }

    /// Claims of an earlier run: once the topic is replayed, each is looked up at Mitto (or
    /// failed as `outcome_unknown`, by configuration) — never resent blindly.
    fn settle_earlier_claims(&mut self, ctx: &mut Context<Self>, sending: Arc<SendingContext>) {
        let (pool, id, own) = (self.pool.clone(), self.id, self.run.own_claims());
        let Some(template) = self.batch_of(&sending, Vec::new()) else {
            return;
        };
        // only identities matter to a lookup: the text is not sent again
        let links = sending.links.plan(crate::domain::Carried::None);
        let settle = async move {
            sending.replay.caught_up().await;
            let orphans = until_ok("reading earlier claims", || {
                enqueue::orphaned_claims(&pool, id, &own)
            })
            .await;
            if orphans.is_empty() {
                return Vec::new();
            }
            tracing::warn!(campaign_id = %id, claims = orphans.len(), "settling claims left by an earlier run");
            let batch = Batch {
                items: orphans
                    .into_iter()
                    .filter_map(|r| item(r, "", &links))
                    .collect(),
                ..template
            };
            let config = &sending.senders.config;
            let (events, done) = events_for(&batch, config.resolve_unanswered(&batch.items).await);
            config.publish(&events).await;
            done.requeue
        };
        ctx.spawn(settle.into_actor(self).map(|requeue, act, ctx| {
            act.run.settled();
            if requeue.is_empty() {
                act.pump(ctx);
            } else {
                act.release(ctx, requeue);
            }
        }));
    }
}

/// The shortest wait of a campaign held by quiet hours.
const QUIET_MIN_WAIT: Duration = Duration::from_millis(100);

/// `n` queued recipients claimed.
fn claimed_counts(n: i64) -> Counters {
    Counters::moved(MessageStatus::Queued, MessageStatus::Processing, n)
}

/// A claimed row as a sender's item; the text is the rendered one or the campaign body, with
/// the recipient's links.
fn item(row: Claimed, body: &str, links: &LinkPlan) -> Option<BatchItem> {
    let recipient = RecipientId::new(row.id).ok()?;
    let code = row
        .link_secret
        .as_deref()
        .and_then(|s| s.try_into().ok())
        .map(|secret| LinkCode::new(recipient, secret));
    let text = links.text(row.body.as_deref().unwrap_or(body), code.as_ref());
    Some(BatchItem {
        recipient,
        phone: row.phone,
        text,
        attempt: u32::try_from(row.attempt).ok()?,
        segments: u32::try_from(row.segments).ok()?,
    })
}
