//! The event core against a real Kafka-protocol broker (embedded) and real Postgres: exact
//! counters from shuffled, duplicated streams; poison records; tenant-scoped stats.

mod common;

use std::time::Duration;

use campaignd::app::{Application, RunningApplication};
use campaignd::bench::workload::{generate, WorkloadSpec};
use campaignd::domain::{CampaignId, DeliveryStatus, Event, MessageId, RecipientId, TenantId};
use campaignd::engine::campaign::Counters;
use campaignd::store::fixtures::claimed_campaign;
use common::{end_offsets, event_settings, eventually, tenant, wait_until_offsets_reach, TestDb};

async fn start(db: &TestDb) -> RunningApplication {
    Application::build(event_settings(db))
        .await
        .unwrap()
        .spawn()
}

async fn stats(app: &RunningApplication, token: &str, campaign: CampaignId) -> reqwest::Response {
    reqwest::Client::new()
        .get(app.url(&format!("/api/v1/campaigns/{campaign}/stats")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The figures the stats endpoint must show for these counters.
fn expected_json(c: &Counters) -> serde_json::Value {
    serde_json::json!({
        "total": c.total(), "sent": c.sent(), "delivered": c.delivered, "failed": c.failed(),
        "pending": c.pending, "sendFailed": c.send_failed, "deliveryFailed": c.delivery_failed,
        "processing": c.processing, "queued": c.queued,
    })
}

fn figures(body: &serde_json::Value) -> serde_json::Value {
    let keys = [
        "total",
        "sent",
        "delivered",
        "failed",
        "pending",
        "sendFailed",
        "deliveryFailed",
        "processing",
        "queued",
    ];
    keys.iter()
        .map(|k| (k.to_string(), body[k].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Waits until the stats endpoint shows exactly `expected`, then checks it stays there.
async fn assert_stats_settle(
    app: &RunningApplication,
    token: &str,
    campaign: CampaignId,
    expected: &Counters,
) {
    let want = expected_json(expected);
    let seen = eventually(
        Duration::from_secs(60),
        "stats to reach the ground truth",
        || async {
            let body: serde_json::Value = stats(app, token, campaign).await.json().await.ok()?;
            (figures(&body) == want).then_some(body)
        },
    )
    .await;
    assert_eq!(seen["campaignId"], campaign.get());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later: serde_json::Value = stats(app, token, campaign).await.json().await.unwrap();
    assert_eq!(figures(&later), want, "nothing is counted twice later");
}

/// Status counts of the stored rows, as (status, was_sent) → n.
async fn stored_counts(pool: &sqlx::PgPool, campaign: CampaignId) -> Counters {
    let rows: Vec<(String, bool, i64)> = sqlx::query_as(
        "SELECT status, sent_at IS NOT NULL, count(*) FROM campaign_recipients WHERE campaign_id = $1 GROUP BY 1, 2",
    )
    .bind(campaign.get())
    .fetch_all(pool)
    .await
    .unwrap();
    let mut c = Counters::default();
    for (status, sent, n) in rows {
        c.add(
            campaignd::domain::MessageStatus::from_db(&status, sent).unwrap(),
            n,
        );
    }
    c
}

#[actix_web::test]
async fn ten_thousand_shuffled_duplicated_messages_match_the_ground_truth() {
    let db = TestDb::unique();
    let app = start(&db).await;
    let pool = app.state.pool.clone();
    let (tenant_id, token) = tenant(&pool, "Shop").await;
    let mut campaigns = Vec::new();
    for n in [3334, 3333, 3333] {
        campaigns.push(claimed_campaign(&pool, tenant_id, n).await.unwrap());
    }
    let spec = WorkloadSpec {
        dup_ratio: 0.3,
        ..WorkloadSpec::default()
    };
    let workload = generate(&campaigns, spec);
    app.pipeline
        .handles
        .producer
        .send(&workload.events)
        .await
        .unwrap();

    for (campaign, _) in &campaigns {
        assert_stats_settle(&app, &token, *campaign, &workload.expected[campaign]).await;
    }
    // the checkpoint holds the same truth: rows per message, and offsets at the end of the topic
    let ends = end_offsets(&app.pipeline.broker.brokers.bootstrap, "message-events");
    wait_until_offsets_reach(&pool, &ends, Duration::from_secs(10)).await;
    for (campaign, _) in &campaigns {
        assert_eq!(
            stored_counts(&pool, *campaign).await,
            workload.expected[campaign]
        );
    }
    let statuses: Vec<(i64, String, bool)> =
        sqlx::query_as("SELECT id, status, sent_at IS NOT NULL FROM campaign_recipients")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (id, status, sent) in statuses {
        let expected = workload.expected_status[&RecipientId::new(id).unwrap()];
        assert_eq!(
            campaignd::domain::MessageStatus::from_db(&status, sent).unwrap(),
            expected,
            "recipient {id}"
        );
    }
    app.stop().await;
    db.drop_database().await;
}

fn dlr(message_id: &MessageId, status: &str) -> Event {
    Event::Dlr {
        message_id: message_id.clone(),
        status: DeliveryStatus::from_raw(status),
        description: Some(format!("{status} by the network")),
        at: chrono::Utc::now(),
        event_id: None,
        source: None,
    }
}

fn sent(campaign: CampaignId, recipient: RecipientId, message_id: &MessageId) -> Event {
    Event::Sent {
        message_id: message_id.clone(),
        campaign_id: campaign,
        recipient_id: recipient,
        bulk_id: None,
        attempt: 0,
        at: chrono::Utc::now(),
    }
}

#[actix_web::test]
async fn undelivered_expired_and_rejected_are_failures_and_a_late_sent_changes_nothing() {
    let db = TestDb::unique();
    let app = start(&db).await;
    let pool = app.state.pool.clone();
    let (tenant_id, token) = tenant(&pool, "Shop").await;
    let (campaign, recipients) = claimed_campaign(&pool, tenant_id, 4).await.unwrap();
    let ids: Vec<MessageId> = (0..4).map(|_| MessageId::generate()).collect();
    let mut events: Vec<Event> = recipients
        .iter()
        .zip(&ids)
        .map(|(r, m)| sent(campaign, *r, m))
        .collect();
    events.extend([
        dlr(&ids[0], "Undelivered"),
        dlr(&ids[1], "Expired"),
        dlr(&ids[2], "Rejected"),
        dlr(&ids[3], "Delivered"),
        dlr(&ids[3], "Sent"),
    ]);
    app.pipeline.handles.producer.send(&events).await.unwrap();
    let expected = Counters {
        delivered: 1,
        delivery_failed: 3,
        ..Counters::default()
    };
    assert_stats_settle(&app, &token, campaign, &expected).await;
    let body: serde_json::Value = stats(&app, &token, campaign).await.json().await.unwrap();
    assert_eq!(body["deliveredRate"], 0.25);
    assert!(body["firstSentAt"].is_string());
    let raw: String = sqlx::query_scalar(
        "SELECT delivery_status FROM campaign_recipients WHERE provider_message_id = $1",
    )
    .bind(ids[3].as_str())
    .fetch_one(&pool)
    .await
    .unwrap_or_default();
    assert!(
        raw.is_empty() || raw == "Delivered",
        "a late Sent never overwrites a final status: {raw}"
    );
    app.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn poison_records_land_in_dead_letters_and_do_not_stop_their_partition() {
    let db = TestDb::unique();
    let app = start(&db).await;
    let pool = app.state.pool.clone();
    let (tenant_id, token) = tenant(&pool, "Shop").await;
    let (campaign, recipients) = claimed_campaign(&pool, tenant_id, 50).await.unwrap();
    let producer = &app.pipeline.handles.producer;
    // the same key as the good events that follow, so they share a partition
    let id = MessageId::generate();
    let poison = vec![
        (id.to_string(), b"{ not json".to_vec()),
        (id.to_string(), br#"{"v":9,"type":"dlr","messageId":"X","deliveryStatus":"Delivered","at":"2026-01-01T00:00:00Z"}"#.to_vec()),
    ];
    producer.send_raw(&poison).await.unwrap();
    let unknown = CampaignId::new(999_999).unwrap();
    producer
        .send(&[sent(
            unknown,
            RecipientId::new(999_999).unwrap(),
            &MessageId::generate(),
        )])
        .await
        .unwrap();
    let good: Vec<Event> = recipients
        .iter()
        .enumerate()
        .map(|(i, r)| {
            sent(
                campaign,
                *r,
                &if i == 0 {
                    id.clone()
                } else {
                    MessageId::generate()
                },
            )
        })
        .collect();
    producer.send(&good).await.unwrap();
    let expected = Counters {
        pending: 50,
        ..Counters::default()
    };
    assert_stats_settle(&app, &token, campaign, &expected).await;
    let letters: Vec<(String, Vec<u8>)> =
        eventually(Duration::from_secs(10), "three dead letters", || async {
            let rows: Vec<(String, Vec<u8>)> =
                sqlx::query_as("SELECT error, payload FROM dead_letters ORDER BY id")
                    .fetch_all(&pool)
                    .await
                    .ok()?;
            (rows.len() == 3).then_some(rows)
        })
        .await;
    let errors: Vec<&str> = letters.iter().map(|(e, _)| e.as_str()).collect();
    assert!(
        errors.iter().any(|e| e.contains("not valid event JSON")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("unsupported event version 9")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("does not exist")),
        "{errors:?}"
    );
    assert!(
        letters.iter().any(|(_, p)| p == b"{ not json"),
        "the payload is kept verbatim"
    );
    app.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn stats_are_tenant_scoped() {
    let db = TestDb::unique();
    let app = start(&db).await;
    let pool = app.state.pool.clone();
    let (owner, owner_token) = tenant(&pool, "Owner").await;
    let (_, other_token) = tenant(&pool, "Other").await;
    let (campaign, _) = claimed_campaign(&pool, owner, 3).await.unwrap();
    let http = reqwest::Client::new();
    let get = |path: String, token: &str| {
        http.get(app.url(&path))
            .bearer_auth(token.to_owned())
            .send()
    };

    assert_eq!(stats(&app, &owner_token, campaign).await.status(), 200);
    let status: serde_json::Value = get(format!("/api/campaigns/{campaign}/status"), &owner_token)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            status["total"].as_i64(),
            status["breakdown"]["processing"].as_i64()
        ),
        (Some(3), Some(3))
    );

    for path in [
        format!("/api/v1/campaigns/{campaign}/stats"),
        format!("/api/campaigns/{campaign}/status"),
    ] {
        let response = get(path.clone(), &other_token).await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }
    let missing = get("/api/v1/campaigns/424242/stats".into(), &owner_token)
        .await
        .unwrap();
    assert_eq!(
        missing.status(),
        404,
        "a missing campaign looks the same as another tenant's"
    );

    let batch = format!("/api/v1/campaigns/stats?ids={campaign},424242");
    let mine: Vec<serde_json::Value> = get(batch.clone(), &owner_token)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["campaignId"], campaign.get());
    let theirs: Vec<serde_json::Value> = get(batch, &other_token)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(theirs.is_empty());
    let bad = get("/api/v1/campaigns/stats?ids=1,x".into(), &owner_token)
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let anonymous = http
        .get(app.url(&format!("/api/v1/campaigns/{campaign}/stats")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let _: TenantId = owner;
    app.stop().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn idle_campaign_actors_passivate_and_reactivate_with_exact_counters() {
    let db = TestDb::unique();
    let mut settings = event_settings(&db);
    settings.campaign_idle_secs = 1;
    let app = Application::build(settings).await.unwrap().spawn();
    let pool = app.state.pool.clone();
    let (tenant_id, token) = tenant(&pool, "Shop").await;
    let (campaign, recipients) = claimed_campaign(&pool, tenant_id, 20).await.unwrap();
    let ids: Vec<MessageId> = (0..20).map(|_| MessageId::generate()).collect();
    let mut events: Vec<Event> = recipients
        .iter()
        .zip(&ids)
        .map(|(r, m)| sent(campaign, *r, m))
        .collect();
    events.extend(ids[..10].iter().map(|m| dlr(m, "Delivered")));
    let producer = &app.pipeline.handles.producer;
    producer.send(&events).await.unwrap();
    let mut expected = Counters {
        pending: 10,
        delivered: 10,
        ..Counters::default()
    };
    assert_stats_settle(&app, &token, campaign, &expected).await;

    let registry = &app.pipeline.handles.registry;
    eventually(
        Duration::from_secs(15),
        "the idle actor to passivate",
        || async { (registry.active() == 0).then_some(()) },
    )
    .await;
    // re-activated from the checkpointed rows: the same figures
    assert_stats_settle(&app, &token, campaign, &expected).await;
    // and later events still count exactly once
    producer
        .send(
            &ids[10..15]
                .iter()
                .map(|m| dlr(m, "Expired"))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    expected.pending = 5;
    expected.delivery_failed = 5;
    assert_stats_settle(&app, &token, campaign, &expected).await;
    app.stop().await;
    db.drop_database().await;
}

/// A message row as a checkpoint hands it over.
fn logged_row(
    campaign: CampaignId,
    recipient: RecipientId,
    status: campaignd::domain::MessageStatus,
    attempt: u32,
    at_secs: i64,
) -> campaignd::store::messages::MessageRow {
    use campaignd::domain::MessageStatus::*;
    let at = chrono::DateTime::from_timestamp(1_800_000_000 + at_secs, 0).unwrap();
    campaignd::store::messages::MessageRow {
        recipient,
        campaign,
        status,
        message_id: (status != SendFailed).then(MessageId::generate),
        bulk_id: None,
        delivery_status: (status == Delivered).then(|| "Delivered".to_owned()),
        error: (status == SendFailed).then(|| "Invalid receiver".to_owned()),
        error_retryable: (status == SendFailed).then_some(true),
        sent_at: (status != SendFailed).then_some(at),
        delivered_at: (status == Delivered).then_some(at),
        failed_at: (status == SendFailed).then_some(at),
        attempt,
        segments: 1,
    }
}

/// A member of the cluster owning partition 0: what the message log's tests commit as.
struct LogWriter {
    scope: campaignd::store::checkpoints::OffsetScope,
    member: campaignd::store::cluster::MemberId,
    generation: u64,
}

impl LogWriter {
    async fn join(pool: &sqlx::PgPool) -> Self {
        use campaignd::store::cluster;
        let scope = campaignd::store::checkpoints::OffsetScope {
            cluster_id: "c".into(),
            consumer_group: "g".into(),
            topic: "t".into(),
        };
        let member = cluster::MemberId::generate();
        cluster::join(pool, member).await.unwrap();
        let generation = cluster::take_over(pool, &scope, member, &[0])
            .await
            .unwrap()[&0];
        Self {
            scope,
            member,
            generation,
        }
    }

    /// A checkpoint of partition 0 holding these rows.
    fn write(
        &self,
        epoch: u64,
        rows: Vec<campaignd::engine::ledger::MessageRow>,
    ) -> campaignd::store::checkpoints::CheckpointWrite {
        campaignd::store::checkpoints::CheckpointWrite {
            epoch,
            parts: vec![campaignd::engine::ledger::PartitionCheckpoint {
                partition: 0,
                generation: self.generation,
                rows,
                commit_offset: Some(epoch as i64),
                applied_offset: Some(epoch as i64),
                ..Default::default()
            }],
        }
    }

    async fn commit(
        &self,
        pool: &sqlx::PgPool,
        writes: &[campaignd::store::checkpoints::CheckpointWrite],
    ) -> Result<(), campaignd::store::StoreError> {
        campaignd::store::checkpoints::commit(pool, &self.scope, self.member, writes).await
    }
}

/// A fresh database with a tenant "Shop" and a campaign of `n` claimed recipients, and the
/// member its checkpoints are committed as (the message log's tests).
async fn logged_campaign(
    n: i64,
) -> (
    TestDb,
    sqlx::PgPool,
    CampaignId,
    Vec<RecipientId>,
    LogWriter,
) {
    let db = TestDb::unique();
    let pool = campaignd::store::connect_and_migrate(&db.url)
        .await
        .unwrap();
    let (tenant, _) = tenant(&pool, "Shop").await;
    let (campaign, r) = claimed_campaign(&pool, tenant, n).await.unwrap();
    let writer = LogWriter::join(&pool).await;
    (db, pool, campaign, r, writer)
}

#[actix_web::test]
async fn checkpointed_rows_reach_recipients_only_through_the_fold_newest_attempt_and_epoch_first() {
    use campaignd::domain::MessageStatus::*;
    use campaignd::store::messages::{fold, unfolded, Folded};
    let (db, pool, campaign, r, writer) = logged_campaign(3).await;
    let write = |epoch, rows| writer.write(epoch, rows);
    writer
        .commit(
            &pool,
            &[
                // r0: sent, then delivered a checkpoint later; r1: failed (retried since)
                write(1, vec![logged_row(campaign, r[0], Sent, 0, 1)]),
                write(
                    2,
                    vec![
                        logged_row(campaign, r[0], Delivered, 0, 2),
                        logged_row(campaign, r[1], SendFailed, 0, 2),
                    ],
                ),
            ],
        )
        .await
        .unwrap();
    let status = |id: RecipientId| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM campaign_recipients WHERE id = $1")
                .bind(id.get())
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(unfolded(&pool).await.unwrap(), 3);
    assert_eq!(
        status(r[0]).await,
        "processing",
        "not folded: still as claimed"
    );
    // retry-failed has reset r1 for attempt 1, which then failed in checkpoint 3; a late
    // state of attempt 0 (checkpoint 4) must not overwrite it
    sqlx::query("UPDATE campaign_recipients SET retry_count = 1 WHERE id = $1")
        .bind(r[1].get())
        .execute(&pool)
        .await
        .unwrap();
    let mut retried = logged_row(campaign, r[1], SendFailed, 1, 3);
    retried.error = Some("attempt 1".into());
    writer
        .commit(
            &pool,
            &[
                write(3, vec![retried]),
                write(4, vec![logged_row(campaign, r[1], Sent, 0, 4)]),
            ],
        )
        .await
        .unwrap();
    let folded = fold(&pool).await.unwrap();
    assert_eq!(
        folded,
        Folded {
            logged: 5,
            written: 2
        }
    );
    assert_eq!(unfolded(&pool).await.unwrap(), 0);
    assert_eq!(status(r[0]).await, "delivered");
    assert_eq!(status(r[1]).await, "failed");
    let error: Option<String> =
        sqlx::query_scalar("SELECT error FROM campaign_recipients WHERE id = $1")
            .bind(r[1].get())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        error.as_deref(),
        Some("attempt 1"),
        "the newest attempt wins"
    );
    assert_eq!(
        status(r[2]).await,
        "processing",
        "never logged, never touched"
    );
    assert_eq!(
        fold(&pool).await.unwrap(),
        Folded::default(),
        "nothing left"
    );
    pool.close().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_member_that_lost_a_partition_can_never_write_for_it_again() {
    use campaignd::domain::MessageStatus::*;
    use campaignd::store::messages::unfolded;
    use campaignd::store::StoreError;
    let (db, pool, campaign, r, first) = logged_campaign(2).await;
    let offset = || async {
        let stored = common::stored_offsets(&pool).await;
        stored.get(&0).copied()
    };
    // the first owner is far ahead in its own epochs
    let sent = logged_row(campaign, r[0], Sent, 0, 50);
    first
        .commit(&pool, &[first.write(50, vec![sent])])
        .await
        .unwrap();
    assert_eq!(offset().await, Some(50));
    // another member takes partition 0 over; its epochs start again at 1, and its writes are
    // not mistaken for retries of the first member's
    let second = LogWriter::join(&pool).await;
    assert_eq!(second.generation, first.generation + 1);
    let other = logged_row(campaign, r[1], Sent, 0, 1);
    second
        .commit(&pool, &[second.write(1, vec![other])])
        .await
        .unwrap();
    assert_eq!(unfolded(&pool).await.unwrap(), 2);
    assert_eq!(offset().await, Some(1));
    // the first owner's next checkpoint is refused whole: no row, no offset
    let late = logged_row(campaign, r[0], Delivered, 0, 51);
    let refused = first.commit(&pool, &[first.write(51, vec![late])]).await;
    assert!(
        matches!(&refused, Err(StoreError::Fenced(lost)) if lost == &[(0, first.generation)]),
        "{refused:?}"
    );
    assert_eq!(
        unfolded(&pool).await.unwrap(),
        2,
        "nothing of the refused write"
    );
    assert_eq!(offset().await, Some(1), "the new owner's offset stands");
    // and so is the second's, once the first takes the partition back
    let back = campaignd::store::cluster::take_over(&pool, &first.scope, first.member, &[0])
        .await
        .unwrap();
    assert_eq!(back[&0], second.generation + 1);
    let refused = second.commit(&pool, &[second.write(2, Vec::new())]).await;
    assert!(matches!(refused, Err(StoreError::Fenced(_))), "{refused:?}");
    pool.close().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_start_folds_what_a_crash_left_in_the_message_log_before_anything_reads() {
    use campaignd::domain::MessageStatus::*;
    let (db, pool, campaign, r, writer) = logged_campaign(1).await;
    // a checkpoint committed, and the process died before its fold
    let write = writer.write(1, vec![logged_row(campaign, r[0], Delivered, 0, 1)]);
    writer.commit(&pool, &[write]).await.unwrap();
    assert_eq!(
        campaignd::store::messages::unfolded(&pool).await.unwrap(),
        1
    );
    let app = start(&db).await;
    assert_eq!(
        campaignd::store::messages::unfolded(&pool).await.unwrap(),
        0
    );
    let status: String = sqlx::query_scalar("SELECT status FROM campaign_recipients")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "delivered");
    app.stop().await;
    pool.close().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn rows_another_fold_took_leave_no_count_behind_that_could_hold_checkpoints_back() {
    use campaignd::actors::fold::Fold;
    use campaignd::domain::MessageStatus::*;
    use campaignd::store::messages::{fold, unfolded};
    let (db, pool, campaign, r, writer) = logged_campaign(3).await;
    let rows: Vec<_> = r
        .iter()
        .map(|id| logged_row(campaign, *id, Delivered, 0, 1))
        .collect();
    writer
        .commit(&pool, &[writer.write(1, rows)])
        .await
        .unwrap();
    let handle = Fold::start(campaignd::store::fold_pool(&pool), 0);
    // `campaignd verify` (or another process) folds the log before this process's fold runs
    fold(&pool).await.unwrap();
    handle.committed(1, 3);
    assert!(handle.until_folded(1, Duration::from_secs(10)).await);
    assert_eq!(unfolded(&pool).await.unwrap(), 0);
    assert_eq!(handle.unfolded_rows(), 0, "nothing is left to fold");
    drop(handle);
    pool.close().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_fold_that_falls_behind_holds_the_consumer_back_until_it_catches_up() {
    use campaignd::store::messages::{unfolded, FOLD_LOCK};
    use sqlx::Connection;
    let db = TestDb::unique();
    let mut settings = event_settings(&db);
    settings.checkpoint_max_unfolded_rows = 5;
    let app = Application::build(settings).await.unwrap().spawn();
    let pool = app.state.pool.clone();
    let (tenant_id, _) = tenant(&pool, "Shop").await;
    let (campaign, r) = claimed_campaign(&pool, tenant_id, 20).await.unwrap();
    let ids: Vec<MessageId> = (0..20).map(|_| MessageId::generate()).collect();
    let sends = |range: std::ops::Range<usize>| -> Vec<Event> {
        range.map(|i| sent(campaign, r[i], &ids[i])).collect()
    };
    let sent_count = || async {
        let (_, stats) = app.pipeline.handles.registry.stats(campaign).await.unwrap();
        stats.sent
    };
    // the fold is held back: checkpointed rows stay in the log
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(FOLD_LOCK)
        .execute(&mut blocker)
        .await
        .unwrap();
    let producer = &app.pipeline.handles.producer;
    producer.send(&sends(0..10)).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the first sends in the log",
        || async { (unfolded(&pool).await.unwrap() == 10).then_some(()) },
    )
    .await;
    // a poll under way when the backlog filled (at most about 100 ms) may still hand records
    // over; after it, the consumer takes none
    tokio::time::sleep(Duration::from_millis(300)).await;
    producer.send(&sends(10..20)).await.unwrap();
    for _ in 0..15 {
        assert_eq!(sent_count().await, 10, "nothing taken past the backlog");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `campaignd verify` counts the rows as of the log, with no fold and no lock to wait for
    let recount = tokio::time::timeout(
        Duration::from_secs(5),
        campaignd::store::campaigns::recount(&pool, Some(campaign)),
    )
    .await
    .expect("verify does not wait for the fold")
    .unwrap();
    let found = campaignd::engine::campaign::differences(&recount[0].snapshot, &recount[0].rows);
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(recount[0].rows.counters.sent(), 10);

    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(FOLD_LOCK)
        .execute(&mut blocker)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the rest applied", || async {
        (sent_count().await == 20).then_some(())
    })
    .await;
    let ends = end_offsets(&app.pipeline.broker.brokers.bootstrap, "message-events");
    wait_until_offsets_reach(&pool, &ends, Duration::from_secs(10)).await;
    blocker.close().await.unwrap();
    app.stop().await;
    db.drop_database().await;
}
