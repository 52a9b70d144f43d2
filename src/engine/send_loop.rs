//! The send loop's decisions for one activation of a campaign's actor.
//!
//! While the campaign is `sending`: settle the claims an earlier run left (a crash) before the
//! first claim, then claim a batch (`queued → processing`, committed before anything leaves),
//! keep at most `max_in_flight` batches out, and finish when nothing is queued, claimed or
//! out. The actor shell performs each [`Step`] and reports back what happened.

use std::collections::HashSet;

use uuid::Uuid;

use super::campaign::Campaign;
use crate::domain::CampaignStatus;

/// What the shell should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing now; a later event (a batch done, a transition, a command) asks again.
    Wait,
    /// No traffic account for the campaign and none configured: say so once; it waits.
    ReportNoAccount,
    /// Settle claims of an earlier run (look them up at Mitto, never resend blindly).
    SettleEarlierClaims,
    /// Claim the next batch after [`SendRun::claim_after`].
    Claim,
    /// Everything is out and answered: the campaign ends in this status.
    Finish(CampaignStatus),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Settling {
    #[default]
    NotYet,
    Running,
    Done,
}

/// The send loop's bookkeeping for this activation.
#[derive(Debug, Default)]
pub struct SendRun {
    batches_out: usize,
    claiming: bool,
    finishing: bool,
    /// Releases of claims under way (the counts are about to change).
    releasing: usize,
    settling: Settling,
    /// Every claim token this activation issued: claims outside it belong to an earlier run.
    claims: HashSet<Uuid>,
    /// The last phone claimed: the next claim continues after it. Reset whenever recipients
    /// return to the queue (released claims, retry-failed, another enqueue).
    claim_after: String,
    told_no_account: bool,
    /// Marketing messages wait out the tenant's quiet hours: no claims until resumed.
    held: bool,
    /// Held since the last claim that went through (one log line per quiet spell).
    quiet: bool,
}

impl SendRun {
    /// The next step for `campaign`; `paused_for_command` while a lifecycle command runs, so
    /// no batch is claimed under a pause or cancel being written.
    pub fn next(
        &mut self,
        campaign: &Campaign,
        has_account: bool,
        max_in_flight: usize,
        paused_for_command: bool,
    ) -> Step {
        if campaign.status != CampaignStatus::Sending
            || paused_for_command
            || self.finishing
            || self.releasing > 0
        {
            return Step::Wait;
        }
        if !has_account {
            return if std::mem::replace(&mut self.told_no_account, true) {
                Step::Wait
            } else {
                Step::ReportNoAccount
            };
        }
        match self.settling {
            Settling::NotYet if campaign.counters().processing > 0 || !self.claims.is_empty() => {
                self.settling = Settling::Running;
                return Step::SettleEarlierClaims;
            }
            Settling::NotYet => self.settling = Settling::Done,
            Settling::Running => return Step::Wait,
            Settling::Done => {}
        }
        if self.claiming || self.held {
            return Step::Wait;
        }
        if let Some(end) = campaign.finished(self.batches_out) {
            self.finishing = true;
            return Step::Finish(end);
        }
        if self.batches_out < max_in_flight && campaign.counters().queued > 0 {
            self.claiming = true;
            return Step::Claim;
        }
        Step::Wait
    }

    /// A claim was not made: quiet hours hold the campaign until [`SendRun::resume`]. `true`
    /// when a quiet spell starts (the first hold since a claim went through).
    pub fn hold(&mut self) -> bool {
        self.claiming = false;
        self.held = true;
        !std::mem::replace(&mut self.quiet, true)
    }

    pub fn resume(&mut self) {
        self.held = false;
    }

    /// Where the next claim starts.
    pub fn claim_after(&self) -> &str {
        &self.claim_after
    }

    /// A claim came back with `phones` claimed under `token` (none: the queue looked empty
    /// after the cursor, so the next claim starts over from the first phone).
    pub fn claimed<'a>(&mut self, token: Uuid, phones: impl Iterator<Item = &'a str>) {
        self.claiming = false;
        self.quiet = false;
        match phones.max() {
            Some(last) => {
                self.claims.insert(token);
                self.claim_after = last.to_owned();
            }
            None => self.claim_after.clear(),
        }
    }

    /// A claimed batch left for a sender.
    pub fn batch_out(&mut self) {
        self.batches_out += 1;
    }

    pub fn batch_done(&mut self) {
        self.batches_out = self.batches_out.saturating_sub(1);
    }

    /// Claims are being released.
    pub fn releasing(&mut self) {
        self.releasing += 1;
    }

    /// Released claims are back in the queue (behind the cursor).
    pub fn released(&mut self) {
        self.releasing = self.releasing.saturating_sub(1);
        self.requeued();
    }

    /// Recipients went back to the queue behind the cursor: start claiming from the first phone.
    pub fn requeued(&mut self) {
        self.claim_after.clear();
    }

    /// The earlier run's claims are settled.
    pub fn settled(&mut self) {
        self.settling = Settling::Done;
    }

    /// The finish was written (or abandoned): the loop may run again (after retry-failed).
    pub fn finished(&mut self) {
        self.finishing = false;
    }

    /// Claims issued by this activation.
    pub fn own_claims(&self) -> Vec<Uuid> {
        self.claims.iter().copied().collect()
    }

    /// A claim or the finish is being written: a lifecycle command waits for it, so a pause
    /// or cancel is never answered while a batch it should stop is still being claimed.
    pub fn writing(&self) -> bool {
        self.claiming || self.finishing || self.releasing > 0
    }

    /// Batches are out or being claimed: the actor must not stop.
    pub fn busy(&self) -> bool {
        self.batches_out > 0 || self.writing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MessageStatus;
    use crate::engine::campaign::Counters;

    fn campaign(status: CampaignStatus, queued: i64, processing: i64, pending: i64) -> Campaign {
        let mut counters = Counters::of(MessageStatus::Queued, queued);
        counters.add(MessageStatus::Processing, processing);
        counters.add(MessageStatus::Sent, pending);
        Campaign::sample(status, counters)
    }

    #[test]
    fn a_campaign_that_is_not_sending_waits() {
        let mut run = SendRun::default();
        for status in [CampaignStatus::Paused, CampaignStatus::Draft] {
            assert_eq!(
                run.next(&campaign(status, 5, 0, 0), true, 2, false),
                Step::Wait
            );
        }
    }

    #[test]
    fn a_missing_traffic_account_is_reported_once() {
        let mut run = SendRun::default();
        let c = campaign(CampaignStatus::Sending, 5, 0, 0);
        assert_eq!(run.next(&c, false, 2, false), Step::ReportNoAccount);
        assert_eq!(run.next(&c, false, 2, false), Step::Wait);
    }

    #[test]
    fn claims_of_an_earlier_run_are_settled_before_the_first_claim() {
        let mut run = SendRun::default();
        let c = campaign(CampaignStatus::Sending, 5, 3, 0);
        assert_eq!(run.next(&c, true, 2, false), Step::SettleEarlierClaims);
        assert_eq!(run.next(&c, true, 2, false), Step::Wait);
        run.settled();
        assert_eq!(run.next(&c, true, 2, false), Step::Claim);
    }

    #[test]
    fn at_most_max_in_flight_batches_are_out_and_one_claim_runs_at_a_time() {
        let mut run = SendRun::default();
        let c = campaign(CampaignStatus::Sending, 100, 0, 0);
        assert_eq!(run.next(&c, true, 2, false), Step::Claim);
        assert_eq!(
            run.next(&c, true, 2, false),
            Step::Wait,
            "a claim is running"
        );
        run.claimed(Uuid::nil(), ["+1", "+3", "+2"].into_iter());
        assert_eq!(run.claim_after(), "+3");
        run.batch_out();
        assert_eq!(run.next(&c, true, 2, false), Step::Claim);
        run.claimed(Uuid::max(), ["+4"].into_iter());
        run.batch_out();
        assert_eq!(run.next(&c, true, 2, false), Step::Wait, "two batches out");
        run.batch_done();
        assert_eq!(run.next(&c, true, 2, true), Step::Wait, "a command runs");
        assert_eq!(run.next(&c, true, 2, false), Step::Claim);
        assert_eq!(run.own_claims().len(), 2);
    }

    #[test]
    fn nothing_is_claimed_or_finished_while_claims_are_released() {
        let mut run = SendRun::default();
        let c = campaign(CampaignStatus::Sending, 5, 0, 0);
        run.releasing();
        assert_eq!(run.next(&c, true, 2, false), Step::Wait);
        assert!(run.busy() && run.writing());
        run.released();
        assert_eq!(run.next(&c, true, 2, false), Step::Claim);
    }

    #[test]
    fn an_empty_claim_restarts_the_cursor() {
        let mut run = SendRun::default();
        let c = campaign(CampaignStatus::Sending, 1, 0, 0);
        run.next(&c, true, 2, false);
        run.claimed(Uuid::nil(), ["+9"].into_iter());
        run.next(&c, true, 2, false);
        run.claimed(Uuid::nil(), std::iter::empty());
        assert_eq!(run.claim_after(), "");
    }

    #[test]
    fn a_campaign_finishes_once_nothing_is_queued_claimed_or_out() {
        let mut run = SendRun::default();
        let c = campaign(CampaignStatus::Sending, 0, 0, 4);
        run.batch_out();
        assert_eq!(run.next(&c, true, 2, false), Step::Wait);
        run.batch_done();
        assert_eq!(
            run.next(&c, true, 2, false),
            Step::Finish(CampaignStatus::Completed)
        );
        assert_eq!(run.next(&c, true, 2, false), Step::Wait, "finishing once");
        let nothing_accepted = campaign(CampaignStatus::Sending, 0, 0, 0);
        let mut run = SendRun::default();
        assert_eq!(
            run.next(&nothing_accepted, true, 2, false),
            Step::Finish(CampaignStatus::Failed)
        );
    }
}
