//! HTTP load from `wrk` (Debian's package): keep-alive connections from a C client, so the
//! load generator takes as little as possible of the cores the service runs on.
//!
//! Two ways to run it: for a fixed time or until stopped ([`Wrk::start`] then
//! [`Wrk::finish`]), and through a Lua script that sends a prepared list of requests once
//! ([`REPLAY_SCRIPT`]).

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

/// What wrk reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WrkFigures {
    pub requests: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Answers outside 2xx/3xx.
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors.
    pub errors: u64,
}

/// A running wrk.
pub struct Wrk(Child);

/// Connections per wrk thread is `connections / threads`; two threads use both cores.
const THREADS: usize = 2;

impl Wrk {
    /// Starts wrk against `url` for at most `seconds`, with `headers` on every request and an
    /// optional Lua `script` (with its arguments after `--`).
    pub fn start(
        url: &str,
        connections: usize,
        seconds: u64,
        headers: &[String],
        script: Option<(&Path, &[String])>,
    ) -> anyhow::Result<Wrk> {
        let mut command = Command::new("wrk");
        command
            .arg(format!("-t{}", THREADS.min(connections.max(1))))
            .arg(format!("-c{}", connections.max(1)))
            .arg(format!("-d{seconds}s"))
            .arg("--latency")
            .arg("--timeout")
            .arg("10s");
        for header in headers {
            command.arg("-H").arg(header);
        }
        if let Some((path, _)) = script {
            command.arg("-s").arg(path);
        }
        command.arg(url);
        if let Some((_, args)) = script {
            command.arg("--").args(args);
        }
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting wrk (apt-get install -y wrk)")?;
        Ok(Wrk(child))
    }

    /// Stops wrk now (SIGINT makes it print its figures) and reads them.
    pub fn stop(self) -> anyhow::Result<WrkFigures> {
        let status = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status()
            .context("signalling wrk")?;
        anyhow::ensure!(status.success(), "could not signal wrk");
        self.finish()
    }

    /// Waits until wrk ends by itself and reads its figures.
    pub fn finish(self) -> anyhow::Result<WrkFigures> {
        let output = self.0.wait_with_output().context("waiting for wrk")?;
        let text = String::from_utf8_lossy(&output.stdout);
        parse(&text).with_context(|| format!("reading wrk's output:\n{text}"))
    }
}

/// Sends each line of a prepared file once, spread over the threads. Arguments: the file,
/// the thread count, a folder. A line is `timestamp<TAB>signature<TAB>body`. Once a thread
/// has an answer for each of its requests it stops and writes `done-<thread>` in the folder:
/// one `status count` line per answer status. Connections that find the list used up send
/// `GET /healthz` until then, and every thread's first request is one too (its 200 answers
/// are not counted; the posts never answer 200).
pub const REPLAY_SCRIPT: &str = r#"
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  local threads = tonumber(args[2])
  folder = args[3]
  requests = {}
  local i = 0
  for line in io.lines(args[1]) do
    if i % threads == id then
      local ts, sig, body = line:match("([^\t]*)\t([^\t]*)\t(.*)")
      requests[#requests + 1] = wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["X-Webhook-Timestamp"] = ts,
        ["X-Webhook-Signature"] = sig,
      }, body)
    end
    i = i + 1
  end
  filler = wrk.format("GET", "/healthz")
  calls = 0
  sent = 0
  answered = 0
  statuses = {}
  finished = false
end
function request()
  calls = calls + 1
  -- wrk calls request() once on the first thread to inspect it without sending it: the
  -- first call of every thread is a filler, so no report is lost to that inspection
  if calls == 1 or sent >= #requests then
    return filler
  end
  sent = sent + 1
  return requests[sent]
end
function response(status, headers, body)
  if status == 200 then
    return
  end
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
  if answered >= #requests and not finished then
    finished = true
    local f = io.open(folder .. "/done-" .. id, "w")
    for s, n in pairs(statuses) do
      f:write(s .. " " .. n .. "\n")
    end
    f:close()
    wrk.thread:stop()
  end
end
"#;

/// Paces each connection: after an answer it waits the given milliseconds (argument 1)
/// before its next request, so `connections` connections ask about
/// `connections * 1000 / ms` times a second in all (fewer when answers are slow).
pub const PACED_SCRIPT: &str = r#"
function init(args)
  pause = tonumber(args[1])
end
function delay()
  return pause
end
"#;

/// wrk's thread count for scripts that split work by thread.
pub fn threads(connections: usize) -> usize {
    THREADS.min(connections.max(1))
}

fn parse(text: &str) -> anyhow::Result<WrkFigures> {
    let mut f = WrkFigures::default();
    let mut seen_rate = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => f.p50_ms = millis(value)?,
            ["99%", value] => f.p99_ms = millis(value)?,
            [n, "requests", "in", ..] => f.requests = n.parse()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => f.non_2xx = n.parse()?,
            ["Requests/sec:", n] => {
                f.requests_per_s = n.parse()?;
                seen_rate = true;
            }
            ["Socket", "errors:", rest @ ..] => {
                f.errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    if !seen_rate {
        bail!("no Requests/sec line");
    }
    Ok(f)
}

/// `850.00us`, `1.23ms`, `2.00s` in milliseconds.
fn millis(value: &str) -> anyhow::Result<f64> {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .context("a latency without a unit")?;
    let (n, unit) = value.split_at(split);
    let n: f64 = n.parse()?;
    Ok(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        other => bail!("unknown latency unit {other:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 10s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.00ms  30.00ms   90.00%
    Req/Sec    15.00k     1.00k   17.00k    70.00%
  Latency Distribution
     50%  850.00us
     75%    1.20ms
     90%    2.00ms
     99%    1.05s
  300000 requests in 10.00s, 40.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  29999.50
Transfer/sec:      4.00MB
";

    #[test]
    fn wrk_figures_are_read_with_their_units() {
        let f = parse(OUTPUT).unwrap();
        assert_eq!(
            f,
            WrkFigures {
                requests: 300_000,
                requests_per_s: 29_999.5,
                p50_ms: 0.85,
                p99_ms: 1050.0,
                non_2xx: 12,
                errors: 3,
            }
        );
    }

    #[test]
    fn output_without_a_rate_is_an_error() {
        assert!(parse("Running 10s test").is_err());
    }
}
