//! `campaignd demo` end to end as a user runs it: a child process on the embedded defaults
//! with only Postgres given.

mod common;

use std::process::Command;

use common::{admin_url, BIN};

#[test]
fn the_demo_sends_a_campaign_to_completion_and_reports_it() {
    let output = Command::new(BIN)
        .args([
            "demo",
            "--recipients",
            "2000",
            "--rate",
            "0",
            "--report-wait-secs",
            "20",
        ])
        .env("DATABASE_URL", admin_url())
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("(completed)"), "{stdout}");
    let result = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .expect("a RESULT line");
    let field = |name: &str| -> u64 {
        result
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {result}"))
    };
    assert_eq!(field("recipients"), 2000);
    assert!(field("sent") > 1900, "{result}");
    assert!(field("delivered") <= field("sent"), "{result}");
    assert!(field("delivered") > 1700, "{result}");
    // recipients used their links; the demo fails unless the stats counted exactly that
    let engaged = stdout
        .lines()
        .find(|l| l.starts_with("RESULT visits="))
        .expect("an engagement RESULT line");
    let count = |name: &str| -> u64 {
        engaged
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {engaged}"))
    };
    assert!(
        count("visits") >= 90 && count("clicks") > count("visits"),
        "{engaged}"
    );
    assert!(
        count("redemptions") >= 18 && count("unsubscribes") >= 9,
        "{engaged}"
    );
}
