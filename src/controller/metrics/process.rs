//! The standard process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, `process_start_time_seconds`),
//! read from `/proc/self` at scrape time: prometheus-client has no process collector.
//! Off Linux (no `/proc`) they are simply absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// /proc reports CPU times and the start time in clock ticks of USER_HZ, which the
/// kernel fixes at 100 for userspace on every Linux architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of the process's resources.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Sample {
    pub cpu_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub resident_memory_bytes: Option<i64>,
    pub open_fds: Option<i64>,
}

/// CPU seconds (user + system) and start time (ticks after boot) from `/proc/self/stat`;
/// `boot_time` is `btime` of `/proc/stat`, in seconds since the epoch.
pub(super) fn parse_stat(stat: &str, boot_time: Option<f64>) -> (Option<f64>, Option<f64>) {
    // The command name (field 2) may hold spaces and parentheses: fields count from
    // after its closing parenthesis, where field 3 (state) has index 0.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |field: usize| fields.get(field - 3)?.parse::<f64>().ok();
    let cpu = ticks(14)
        .zip(ticks(15))
        .map(|(u, s)| (u + s) / TICKS_PER_SECOND);
    let start = ticks(22)
        .zip(boot_time)
        .map(|(t, boot)| boot + t / TICKS_PER_SECOND);
    (cpu, start)
}

/// `btime` (boot time, seconds since the epoch) from `/proc/stat`.
pub(super) fn parse_boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS` of `/proc/self/status`, in bytes.
pub(super) fn parse_resident_bytes(status: &str) -> Option<i64> {
    let kb: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn read() -> Sample {
    let text = |path: &str| std::fs::read_to_string(path).ok();
    let boot_time = text("/proc/stat").as_deref().and_then(parse_boot_time);
    let (cpu_seconds, start_time_seconds) = text("/proc/self/stat")
        .map(|s| parse_stat(&s, boot_time))
        .unwrap_or_default();
    Sample {
        cpu_seconds,
        start_time_seconds,
        resident_memory_bytes: text("/proc/self/status")
            .as_deref()
            .and_then(parse_resident_bytes),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as i64),
    }
}

/// Reads `/proc/self` on every scrape.
#[derive(Debug, Default)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = read();
        if let Some(v) = s.cpu_seconds {
            let m = ConstCounter::new(v);
            let help = "Total user and system CPU time spent in seconds";
            m.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                help,
                None,
                m.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                s.start_time_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                s.resident_memory_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                s.open_fds.map(|v| v as f64),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let m = ConstGauge::new(v);
                m.encode(encoder.encode_descriptor(name, help, None, m.metric_type())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_and_start_time_past_a_command_name_with_spaces() {
        // Fields 14/15 (utime/stime) = 250/50 ticks, field 22 (starttime) = 1000 ticks.
        let stat = "4242 (catalog sync (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 8 0 1000 123456 789 18446744073709551615";
        let (cpu, start) = parse_stat(stat, Some(1_700_000_000.0));
        assert_eq!(cpu, Some(3.0));
        assert_eq!(start, Some(1_700_000_010.0));
        assert_eq!(parse_stat("garbage", Some(1.0)), (None, None));
    }

    #[test]
    fn reads_boot_time_and_resident_memory() {
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000.0)
        );
        assert_eq!(
            parse_resident_bytes("Name:\tcatalogsync\nVmRSS:\t   2048 kB\nThreads: 8\n"),
            Some(2048 * 1024)
        );
        assert_eq!(parse_resident_bytes("Name: x\n"), None);
    }

    #[test]
    fn this_process_has_plausible_readings() {
        let s = read();
        assert!(s.cpu_seconds.is_some_and(|c| c >= 0.0), "{s:?}");
        assert!(s.resident_memory_bytes.is_some_and(|r| r > 0), "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n >= 3), "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Started before now, and not before 2020.
        assert!(
            s.start_time_seconds
                .is_some_and(|t| t <= now + 1.0 && t > 1_577_836_800.0),
            "{s:?}"
        );
    }
}
