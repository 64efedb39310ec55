//! What the benchmark process itself costs, read from `/proc` (Linux): CPU seconds, resident
//! memory and the machine's load. Elsewhere the figures are absent (`None`), not invented.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Clock ticks per second of `/proc/self/stat` (USER_HZ, 100 on every Linux Herald targets).
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds of every thread of this process so far.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// A `/proc/self/status` figure in kB (`VmRSS`, `VmHWM`), as MiB.
fn status_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resident memory now, MiB.
pub fn rss_mib() -> Option<f64> {
    status_mib("VmRSS:")
}

/// The most resident memory this process ever had, MiB.
pub fn peak_rss_mib() -> Option<f64> {
    status_mib("VmHWM:")
}

/// The 1-, 5- and 15-minute load averages: how busy the machine was besides the benchmark.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Samples resident memory every 50 ms while it lives, keeping the highest value, so a phase's
/// own peak is known even when an earlier phase set the process's all-time peak.
pub struct RssSampler {
    peak_kib: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start() -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let peak_kib = peak_kib.clone();
            async move {
                loop {
                    if let Some(mib) = rss_mib() {
                        peak_kib.fetch_max((mib * 1024.0) as u64, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Self { peak_kib, task }
    }

    /// The highest resident memory seen, MiB.
    pub fn peak_mib(&self) -> Option<f64> {
        let kib = self.peak_kib.load(Ordering::Relaxed);
        (kib > 0).then(|| kib as f64 / 1024.0)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
        assert!(rss_mib().is_some_and(|m| m > 0.0));
        assert!(peak_rss_mib().unwrap() >= rss_mib().unwrap() - 1.0);
    }
}
