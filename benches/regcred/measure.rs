//! Measurements: audit-log request counts, the operator's process figures (RSS, CPU), its sync
//! passes, and the statistics the figures are made of.

use super::*;

pub(crate) fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len().is_multiple_of(2) {
        f64::midpoint(xs[mid - 1], xs[mid])
    } else {
        xs[mid]
    }
}

/// A wall-clock window, for picking requests out of the audit log.
#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub(crate) from: SystemTime,
    pub(crate) to: SystemTime,
}

impl Window {
    pub(crate) fn start() -> Self {
        Window {
            from: SystemTime::now(),
            to: SystemTime::now(),
        }
    }
    pub(crate) fn end(mut self) -> Self {
        self.to = SystemTime::now();
        self
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Requests {
    pub(crate) reads: usize,
    pub(crate) writes: usize,
    pub(crate) lease_writes: usize,
    /// When the first and the last write of a Secret or ServiceAccount arrived, after the
    /// window's start.
    pub(crate) first_write: Option<Duration>,
    pub(crate) last_write: Option<Duration>,
}

impl Requests {
    pub(crate) fn write_ms(at: Option<Duration>) -> serde_json::Value {
        json!(at.map(|d| d.as_secs_f64() * 1000.0))
    }
}

pub(crate) fn audit_requests(path: &str, user: &str, window: Window) -> Requests {
    let text = std::fs::read_to_string(path).expect("audit log");
    let (from, to) = (
        Timestamp::try_from(window.from).unwrap(),
        Timestamp::try_from(window.to).unwrap(),
    );
    let mut r = Requests::default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["user"]["username"] != user {
            continue;
        }
        let Some(at) = event["requestReceivedTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
        else {
            continue;
        };
        if at < from || at > to {
            continue;
        }
        match event["verb"].as_str().unwrap_or_default() {
            "get" | "list" | "watch" => r.reads += 1,
            "create" | "update" | "patch" | "delete" | "deletecollection" => {
                if event["objectRef"]["resource"] == "leases" {
                    r.lease_writes += 1;
                } else {
                    r.writes += 1;
                }
                if ["secrets", "serviceaccounts"]
                    .contains(&event["objectRef"]["resource"].as_str().unwrap_or_default())
                {
                    let after = Duration::try_from(at.duration_since(from)).unwrap_or_default();
                    r.first_write = Some(r.first_write.map_or(after, |f| f.min(after)));
                    r.last_write = Some(r.last_write.map_or(after, |l| l.max(after)));
                }
            }
            _ => {}
        }
    }
    r
}

pub(crate) fn proc_status(pid: &str, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("operator process");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

pub(crate) fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("operator process");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) async fn settle(seconds: u64) {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}

/// The operator's sync passes so far, summed over credentials: (full, over some namespaces).
pub(crate) fn sync_passes(url: &str) -> (f64, f64) {
    let out = std::process::Command::new("curl")
        .args(["-fsS", "--max-time", "2", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut passes = (0.0, 0.0);
    for line in text
        .lines()
        .filter(|l| l.starts_with("regcred_sync_passes_total{"))
    {
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if line.contains("scope=\"full\"") {
            passes.0 += value;
        } else {
            passes.1 += value;
        }
    }
    passes
}

/// Waits until the operator is idle (under 2% of a CPU for two seconds in a row, at most a
/// minute), so that a CPU measurement that follows counts only its own work, not the tail of the
/// events before it.
pub(crate) async fn settle_until_idle(pid: &str) {
    let started = Instant::now();
    let mut quiet = 0;
    while quiet < 2 && started.elapsed() < Duration::from_secs(60) {
        let before = cpu_seconds(pid);
        settle(1).await;
        quiet = if cpu_seconds(pid) - before < 0.02 {
            quiet + 1
        } else {
            0
        };
    }
}
