//! Crash safety: the service runs as a child process against a `campaignd dev-broker` process
//! and Postgres; it is killed with SIGKILL at random moments while events flow and restarted
//! each time. At the end every counter, every message row and every stored offset is exact.

mod common;

use std::time::{Duration, Instant};

use campaignd::bench::workload::{generate, WorkloadSpec};
use campaignd::kafka::producer::EventProducer;
use campaignd::store::fixtures::claimed_campaign;
use common::{
    assert_ingest_exact, dev_broker, end_offsets, eventually, free_port, stored_offsets, tenant,
    wait_until_offsets_reach, Proc, TestDb,
};
use rand::Rng;

const KILLS: usize = 5;

fn serve(db: &TestDb, bootstrap: &str, port: u16, log: &std::path::Path) -> Proc {
    common::serve(db, port, log, &[("KAFKA_BROKERS", bootstrap)])
}

#[actix_web::test]
async fn kill_9_five_times_while_events_flow_loses_and_doubles_nothing() {
    let db = TestDb::unique();
    let pool = campaignd::store::connect_and_migrate(&db.url)
        .await
        .unwrap();
    let (tenant_id, token) = tenant(&pool, "Shop").await;
    let mut campaigns = Vec::new();
    for _ in 0..2 {
        campaigns.push(claimed_campaign(&pool, tenant_id, 80_000).await.unwrap());
    }
    let workload = generate(
        &campaigns,
        WorkloadSpec {
            dup_ratio: 0.05,
            shuffle_window: 5_000,
            ..WorkloadSpec::default()
        },
    );
    assert!(
        workload.events.len() >= 200_000,
        "{} events",
        workload.events.len()
    );

    let (_broker, bootstrap) = dev_broker();
    let producer = EventProducer::new(
        &campaignd::kafka::Brokers::plain(&bootstrap),
        "message-events",
    )
    .unwrap();
    let port = free_port();
    let log = std::env::temp_dir().join(format!("campaignd-crash-{}.log", db.name));
    eprintln!("service log: {}", log.display());
    let mut service = serve(&db, &bootstrap, port, &log);

    // produce in slices so that events flow across every kill
    let events = workload.events.clone();
    let feeder = actix_web::rt::spawn(async move {
        for slice in events.chunks(8_000) {
            producer.send(slice).await.unwrap();
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
    });
    let mut rng = rand::rng();
    let mut progress = Vec::new();
    for _ in 0..KILLS {
        // once the (re)started service is committing again, strike at a random moment
        let before = stored_offsets(&pool).await.values().sum::<i64>();
        eventually(
            Duration::from_secs(60),
            "the service to make progress",
            || async { (stored_offsets(&pool).await.values().sum::<i64>() > before).then_some(()) },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1_500))).await;
        service.0.kill().unwrap();
        service.0.wait().unwrap();
        progress.push(stored_offsets(&pool).await.values().sum::<i64>());
        service = serve(&db, &bootstrap, port, &log);
    }
    feeder.await.unwrap();
    eprintln!(
        "committed offsets at each kill: {progress:?} of {} events",
        workload.events.len()
    );
    assert!(
        progress.windows(2).all(|w| w[1] > w[0]),
        "events were applied between kills"
    );
    assert!(
        *progress.last().unwrap() < workload.events.len() as i64,
        "the last kill came while events were still flowing"
    );

    let ends = end_offsets(&bootstrap, "message-events");
    let started = Instant::now();
    wait_until_offsets_reach(&pool, &ends, Duration::from_secs(240)).await;
    eprintln!("caught up {:?} after the last restart", started.elapsed());

    assert_ingest_exact(&pool, (port, &token), &workload, &format!("{KILLS} kills")).await;
    drop(service);
    pool.close().await;
    db.drop_database().await;
}
