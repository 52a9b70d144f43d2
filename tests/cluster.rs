//! Several instances (processes) against one `dev-broker` process, one `mitto-sim` process and
//! one Postgres: they split the partitions and the campaigns, any of them answers for any
//! campaign, one is killed with SIGKILL and its share moves; a stale owner (paused past its
//! session) can no longer write. Every counter and row ends exact, every phone messaged once.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use campaignd::bench::workload::{generate, Workload, WorkloadSpec};
use campaignd::domain::{CampaignId, MessageStatus, RecipientId};
use campaignd::kafka::producer::EventProducer;
use campaignd::store::fixtures::claimed_campaign;
use common::{
    dev_broker, end_offsets, eventually, free_port, mitto_sim, sim_stats, wait_until_offsets_reach,
    Proc, TestDb,
};
use serde_json::{json, Value};

const SECRET: &str = "cluster-test-secret";

/// One instance of the cluster: its process and port.
struct Instance {
    process: Proc,
    port: u16,
}

impl Instance {
    fn start(
        db: &TestDb,
        (bootstrap, sim): (&str, &str),
        log: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_on(free_port(), db, (bootstrap, sim), log, env)
    }

    /// Tests run with 2 s consumer sessions; `CLUSTER_SESSION_TIMEOUT_MS=6000` measures
    /// failover with the default.
    fn start_on(
        port: u16,
        db: &TestDb,
        (bootstrap, sim): (&str, &str),
        log: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Self {
        let session = std::env::var("CLUSTER_SESSION_TIMEOUT_MS").ok();
        let mut all = vec![("CAMPAIGND_RATE_LIMITS__TENANT_PER_SECOND", "2000")];
        if let Some(session) = &session {
            all.push(("CAMPAIGND_KAFKA__SESSION_TIMEOUT_MS", session));
            all.push(("CAMPAIGND_KAFKA__HEARTBEAT_INTERVAL_MS", "1500"));
        }
        all.extend_from_slice(env);
        let process = common::serve_against(db, (bootstrap, sim, SECRET), port, log, &all);
        Self { process, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn pid(&self) -> String {
        self.process.0.id().to_string()
    }

    /// The member this process registered as (by the address it advertised).
    async fn member(&self, pool: &sqlx::PgPool) -> Option<uuid::Uuid> {
        sqlx::query_scalar("SELECT member FROM cluster_members WHERE address = $1")
            .bind(self.url(""))
            .fetch_optional(pool)
            .await
            .unwrap()
    }
}

/// The partitions each member owns now.
async fn owners(pool: &sqlx::PgPool) -> HashMap<i32, (uuid::Uuid, i64)> {
    let rows: Vec<(i32, uuid::Uuid, i64)> =
        sqlx::query_as("SELECT partition, member, generation FROM partition_owners")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter().map(|(p, m, g)| (p, (m, g))).collect()
}

/// How far each partition is applied, as committed.
async fn applied(pool: &sqlx::PgPool) -> HashMap<i32, i64> {
    let rows: Vec<(i32, Option<i64>)> =
        sqlx::query_as("SELECT partition, applied_offset FROM kafka_offsets")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(p, a)| (p, a.unwrap_or_default()))
        .collect()
}

async fn stats(http: &reqwest::Client, instance: &Instance, token: &str, id: i64) -> Option<Value> {
    let url = instance.url(&format!("/api/v1/campaigns/{id}/stats"));
    let response = http.get(url).bearer_auth(token).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Two campaigns of claimed recipients and a stream of their events, as the crash test uses.
async fn ingest_workload(
    pool: &sqlx::PgPool,
    tenant: campaignd::domain::TenantId,
    per: i64,
) -> (Vec<(CampaignId, Vec<RecipientId>)>, Workload) {
    let mut campaigns = Vec::new();
    for _ in 0..2 {
        campaigns.push(claimed_campaign(pool, tenant, per).await.unwrap());
    }
    let workload = generate(
        &campaigns,
        WorkloadSpec {
            dup_ratio: 0.05,
            shuffle_window: 5_000,
            ..WorkloadSpec::default()
        },
    );
    (campaigns, workload)
}

/// Feeds the events in slices, so that they flow while instances come and go.
fn feed(
    bootstrap: &str,
    workload: &Workload,
    slice: usize,
    pause: Duration,
) -> actix_web::rt::task::JoinHandle<()> {
    let producer = EventProducer::new(
        &campaignd::kafka::Brokers::plain(bootstrap),
        "message-events",
    )
    .unwrap();
    let events = workload.events.clone();
    let slice = slice.max(1);
    actix_web::rt::spawn(async move {
        for chunk in events.chunks(slice) {
            producer.send(chunk).await.unwrap();
            tokio::time::sleep(pause).await;
        }
    })
}

/// Every message row as the workload's ground truth says, and every campaign's figures, as
/// each instance serves them, equal to it.
async fn assert_ingest_exact(
    pool: &sqlx::PgPool,
    http: &reqwest::Client,
    (instances, token): (&[&Instance], &str),
    campaigns: &[(CampaignId, Vec<RecipientId>)],
    workload: &Workload,
) {
    let rows: Vec<(i64, String, bool)> =
        sqlx::query_as("SELECT id, status, sent_at IS NOT NULL FROM campaign_recipients")
            .fetch_all(pool)
            .await
            .unwrap();
    let rows: HashMap<RecipientId, MessageStatus> = rows
        .into_iter()
        .map(|(id, s, sent)| {
            (
                RecipientId::new(id).unwrap(),
                MessageStatus::from_db(&s, sent).unwrap(),
            )
        })
        .collect();
    let wrong: Vec<_> = workload
        .expected_status
        .iter()
        .filter(|(r, s)| rows.get(r) != Some(s))
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "message rows differ from the truth, e.g. {wrong:?}"
    );
    for (campaign, _) in campaigns {
        let expected = &workload.expected[campaign];
        let want = (
            Some(expected.sent()),
            Some(expected.delivered),
            Some(expected.failed()),
            Some(expected.pending),
        );
        let mut seen = Vec::new();
        for instance in instances {
            // an owner's actor takes the other members' last checkpoints within a second
            let body = eventually(Duration::from_secs(30), "exact stats", || async {
                let body = stats(http, instance, token, campaign.get()).await?;
                let got = (
                    body["sent"].as_i64(),
                    body["delivered"].as_i64(),
                    body["failed"].as_i64(),
                    body["pending"].as_i64(),
                );
                (got == want).then_some(body)
            })
            .await;
            seen.push(body);
        }
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "campaign {campaign}: instances answer differently: {seen:?}"
        );
    }
}

#[actix_web::test]
async fn three_instances_split_the_work_and_one_killed_mid_way_loses_and_doubles_nothing() {
    const RECIPIENTS: usize = 20_000;
    let db = TestDb::unique();
    let pool = campaignd::store::connect_and_migrate(&db.url)
        .await
        .unwrap();
    let (tenant, token) = common::funded_tenant(&pool, "Shop", 1_000_000).await;
    let (campaigns, workload) = ingest_workload(&pool, tenant, 120_000).await;
    assert!(
        workload.events.len() >= 300_000,
        "{} events",
        workload.events.len()
    );

    let (_broker, bootstrap) = dev_broker();
    let log = std::env::temp_dir().join(format!("campaignd-cluster-{}.log", db.name));
    eprintln!("service log: {}", log.display());
    // reports go to the first instance, which stays up
    let first_port = free_port();
    let callback = format!("http://127.0.0.1:{first_port}/webhooks/mitto/dlr");
    let (_sim, sim) = mitto_sim(&callback, SECRET, &["--latency-ms", "5..40"]);
    let first = Instance::start_on(first_port, &db, (&bootstrap, &sim), &log, &[]);
    let second = Instance::start(&db, (&bootstrap, &sim), &log, &[]);
    let third = Instance::start(&db, (&bootstrap, &sim), &log, &[]);
    let http = reqwest::Client::new();

    // every instance joined and the eight partitions are split between all three
    let members = eventually(
        Duration::from_secs(60),
        "three members to own partitions",
        || async {
            let owners = owners(&pool).await;
            let mut members = Vec::new();
            for instance in [&first, &second, &third] {
                members.push(instance.member(&pool).await?);
            }
            let all_own = members
                .iter()
                .all(|m| owners.values().any(|(owner, _)| owner == m));
            (owners.len() == 8 && all_own).then_some(members)
        },
    )
    .await;

    // a campaign created and started through one instance, whoever owns it
    let phones: Vec<String> = (0..RECIPIENTS)
        .map(|i| format!("+3069{:08}", 30_000_000 + i))
        .collect();
    let campaign: Value = http
        .post(second.url("/api/v1/campaigns"))
        .bearer_auth(&token)
        .json(
            &json!({ "name": "Cluster", "body": "Sale today", "sender": "Shop",
                       "audience": { "phones": phones } }),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = campaign["id"].as_i64().expect("campaign created");
    // asked of an instance that does not own it, the campaign's routes reach its owner
    let owner = owners(&pool).await[&((id % 8) as i32)].0;
    let instances = [&first, &second, &third];
    let elsewhere = instances[members.iter().position(|m| *m != owner).unwrap()];
    // while the group still settles, a campaign can be moving: 503, and the client retries
    let enqueued: Value = eventually(
        Duration::from_secs(60),
        "the enqueue to be answered",
        || async {
            let r = http
                .post(elsewhere.url(&format!("/api/campaigns/{id}/enqueue")))
                .bearer_auth(&token)
                .send()
                .await
                .ok()?;
            if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                return None;
            }
            r.json().await.ok()
        },
    )
    .await;
    assert_eq!(enqueued["queued"], RECIPIENTS, "{enqueued}");
    let mut stream = eventually(Duration::from_secs(60), "the stream to open", || async {
        let r = http
            .get(elsewhere.url(&format!("/api/v1/campaigns/{id}/stats/stream")))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?;
        (r.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE).then_some(r)
    })
    .await;
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let first_event = String::from_utf8(stream.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(
        first_event.contains("event: stats")
            && first_event.contains(&format!("\"campaignId\":{id}")),
        "{first_event}"
    );
    drop(stream);
    let feeder = feed(&bootstrap, &workload, 8_000, Duration::from_millis(400));

    // mid-way through both, the third instance dies
    eventually(
        Duration::from_secs(90),
        "sending and ingest under way",
        || async {
            let accepted = sim_stats(&http, &sim).await["accepted"].as_u64()?;
            let applied: i64 = applied(&pool).await.values().sum();
            (accepted > 3_000 && applied > 60_000).then_some(())
        },
    )
    .await;
    let victim = members[2];
    let before = owners(&pool).await;
    let moved: Vec<i32> = before
        .iter()
        .filter(|(_, (m, _))| *m == victim)
        .map(|(p, _)| *p)
        .collect();
    let applied_at_kill = applied(&pool).await;
    let Instance { mut process, .. } = third;
    process.0.kill().unwrap();
    process.0.wait().unwrap();
    let killed = Instant::now();
    let accepted_at_kill = sim_stats(&http, &sim).await["accepted"].as_u64().unwrap();
    eprintln!("killed an instance owning partitions {moved:?}; Mitto had accepted {accepted_at_kill} of {RECIPIENTS}");
    assert!(
        (accepted_at_kill as usize) < RECIPIENTS,
        "the kill came while the campaign was sending"
    );

    // its partitions move, and apply again under their new owners
    eventually(
        Duration::from_secs(60),
        "the moved partitions to have new owners",
        || async {
            let now = owners(&pool).await;
            moved
                .iter()
                .all(|p| {
                    now.get(p)
                        .is_some_and(|(m, g)| *m != victim && *g > before[p].1)
                })
                .then_some(())
        },
    )
    .await;
    let taken = killed.elapsed();
    eventually(
        Duration::from_secs(60),
        "the moved partitions to apply again",
        || async {
            let applied = applied(&pool).await;
            moved
                .iter()
                .all(|p| {
                    applied.get(p).copied().unwrap_or(0)
                        > applied_at_kill.get(p).copied().unwrap_or(0)
                })
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "failover (kill -> moved partitions applying again): {:?} (taken over after {taken:?})",
        killed.elapsed()
    );

    feeder.await.unwrap();
    let ends = end_offsets(&bootstrap, "message-events");
    wait_until_offsets_reach(&pool, &ends, Duration::from_secs(240)).await;

    let done: Value = eventually(
        Duration::from_secs(180),
        "the campaign to complete",
        || async {
            let body = stats(&http, &first, &token, id).await?;
            (body["status"] == "completed").then_some(body)
        },
    )
    .await;
    let sim_now = sim_stats(&http, &sim).await;
    assert_eq!(
        sim_now["maxSendsPerMessage"], 1,
        "a phone was messaged twice"
    );
    assert_eq!(sim_now["accepted"], RECIPIENTS, "every phone was messaged");
    assert_eq!(done["sent"], RECIPIENTS);
    assert_eq!(
        (
            done["queued"].as_i64(),
            done["processing"].as_i64(),
            done["sendFailed"].as_i64()
        ),
        (Some(0), Some(0), Some(0))
    );
    // both survivors answer alike for the sent campaign, once its reports settle
    eventually(
        Duration::from_secs(60),
        "the survivors to agree with the rows",
        || async {
            let (delivered, failed): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE status = 'delivered'),
                    count(*) FILTER (WHERE status = 'failed')
             FROM campaign_recipients WHERE campaign_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .ok()?;
            let a = stats(&http, &first, &token, id).await?;
            let b = stats(&http, &second, &token, id).await?;
            let exact = a["delivered"].as_i64() == Some(delivered)
                && a["deliveryFailed"].as_i64() == Some(failed)
                && a["sent"].as_i64() == Some(RECIPIENTS as i64);
            (exact && a == b).then_some(())
        },
    )
    .await;
    assert_ingest_exact(
        &pool,
        &http,
        (&[&first, &second], &token),
        &campaigns,
        &workload,
    )
    .await;
    drop((first, second));
    pool.close().await;
    db.drop_database().await;
}

#[actix_web::test]
async fn a_stale_owner_resumed_after_its_session_expired_cannot_write_and_nothing_counts_twice() {
    let db = TestDb::unique();
    let pool = campaignd::store::connect_and_migrate(&db.url)
        .await
        .unwrap();
    let (tenant, token) = common::funded_tenant(&pool, "Shop", 1_000).await;
    let (campaigns, workload) = ingest_workload(&pool, tenant, 40_000).await;

    let (_broker, bootstrap) = dev_broker();
    let log = std::env::temp_dir().join(format!("campaignd-stale-{}.log", db.name));
    eprintln!("service log: {}", log.display());
    let (_sim, sim) = mitto_sim("http://127.0.0.1:9/unused", SECRET, &[]);
    // long checkpoints: paused a second after one, the stale owner holds applied, unwritten
    // events (a member with nothing to write has nothing to be refused)
    let slow = [
        ("CAMPAIGND_CHECKPOINT_INTERVAL_MS", "5000"),
        ("CAMPAIGND_CHECKPOINT_MAX_RECORDS", "10000000"),
    ];
    let stale = Instance::start(&db, (&bootstrap, &sim), &log, &slow);
    let other = Instance::start(&db, (&bootstrap, &sim), &log, &[]);
    let http = reqwest::Client::new();
    let stale_member = eventually(
        Duration::from_secs(60),
        "both members to own partitions",
        || async {
            let owners = owners(&pool).await;
            let (a, b) = (stale.member(&pool).await?, other.member(&pool).await?);
            let both = [a, b].iter().all(|m| owners.values().any(|(o, _)| o == m));
            (owners.len() == 8 && both).then_some(a)
        },
    )
    .await;

    let feeder = feed(&bootstrap, &workload, 4_000, Duration::from_millis(200));
    let stale_partitions = || async {
        let owners = owners(&pool).await;
        let applied = applied(&pool).await;
        owners
            .iter()
            .filter(|(_, (m, _))| *m == stale_member)
            .map(|(p, _)| applied.get(p).copied().unwrap_or(0))
            .sum::<i64>()
    };
    // one of its checkpoints just committed; events keep reaching it for a second more
    let first = stale_partitions().await;
    eventually(
        Duration::from_secs(60),
        "the stale owner to checkpoint",
        || async { (stale_partitions().await > first).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!feeder.is_finished(), "events still flow when it is paused");
    // paused past its session: the group gives its partitions to the other instance
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &stale.pid()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name}");
    };
    signal("-STOP");
    eventually(
        Duration::from_secs(60),
        "the other instance to own every partition",
        || async {
            let owners = owners(&pool).await;
            (owners.len() == 8 && owners.values().all(|(m, _)| *m != stale_member)).then_some(())
        },
    )
    .await;
    signal("-CONT");

    // its first write after resuming is refused, and it drops what it held
    let metrics = stale.url("/metrics");
    eventually(
        Duration::from_secs(60),
        "the stale owner's checkpoint to be refused",
        || async {
            let text = http.get(&metrics).send().await.ok()?.text().await.ok()?;
            let fenced = text
                .lines()
                .find(|l| l.starts_with("campaignd_partitions_fenced_total"))?
                .rsplit(' ')
                .next()?
                .parse::<f64>()
                .ok()?;
            (fenced >= 1.0).then_some(())
        },
    )
    .await;

    feeder.await.unwrap();
    let ends = end_offsets(&bootstrap, "message-events");
    wait_until_offsets_reach(&pool, &ends, Duration::from_secs(180)).await;
    assert_ingest_exact(
        &pool,
        &http,
        (&[&stale, &other], &token),
        &campaigns,
        &workload,
    )
    .await;
    drop((stale, other));
    pool.close().await;
    db.drop_database().await;
}
