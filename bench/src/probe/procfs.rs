//! Server (and generator) resource use from `/proc`: CPU time from `/proc/PID/stat`,
//! memory from `/proc/PID/status`. The parsers are pure functions over the file's text.

use std::time::Instant;

/// CPU time and thread count from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// User and system CPU time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    pub threads: u64,
}

/// Parses `/proc/PID/stat`. The second field (the command name) is in parentheses and
/// may itself contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); utime is field 14, stime 15, num_threads 20.
    Some(Stat {
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
        threads: f.get(17)?.parse().ok()?,
    })
}

/// Memory from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mem {
    /// Resident set size now.
    pub rss_kib: u64,
    /// Peak resident set size (since start, or since the last reset).
    pub hwm_kib: u64,
}

/// Parses the `VmRSS:` and `VmHWM:` lines of `/proc/PID/status`.
pub fn parse_status(text: &str) -> Option<Mem> {
    let mut rss = None;
    let mut hwm = None;
    for line in text.lines() {
        let kib = |rest: &str| -> Option<u64> {
            let mut it = rest.split_whitespace();
            let n: u64 = it.next()?.parse().ok()?;
            match it.next() {
                Some("kB") | None => Some(n),
                _ => None,
            }
        };
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            rss = kib(rest);
        } else if let Some(rest) = line.strip_prefix("VmHWM:") {
            hwm = kib(rest);
        }
    }
    Some(Mem {
        rss_kib: rss?,
        hwm_kib: hwm?,
    })
}

pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

pub fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub fn read_mem(pid: u32) -> Option<Mem> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS (Linux >= 4.0; needs
/// permission to write `/proc/PID/clear_refs`). Returns whether it worked.
pub fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// A CPU reading at one moment.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    pub at: Instant,
    pub ticks: u64,
}

impl CpuMark {
    pub fn take(pid: u32) -> Option<Self> {
        let s = read_stat(pid)?;
        Some(Self {
            at: Instant::now(),
            ticks: s.utime + s.stime,
        })
    }

    /// CPU seconds used and wall seconds passed since `self`.
    pub fn since(&self, later: &CpuMark) -> (f64, f64) {
        let hz = clock_ticks_per_sec() as f64;
        (
            later.ticks.saturating_sub(self.ticks) as f64 / hz,
            later.at.duration_since(self.at).as_secs_f64(),
        )
    }
}

/// `(user+sys seconds) / wall seconds` as a percentage of one core.
pub fn cpu_percent(cpu_secs: f64, wall_secs: f64) -> f64 {
    if wall_secs <= 0.0 {
        0.0
    } else {
        100.0 * cpu_secs / wall_secs
    }
}

/// Machine load, for the report (other work on a shared machine skews numbers).
pub fn loadavg() -> Option<String> {
    let t = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line from a tern-server, with a command name made awkward on purpose.
    const STAT: &str = "12345 (tern server) (x)) S 1 12345 12345 0 -1 4194560 2603 0 0 0 \
                        731 142 0 0 20 0 7 0 4418273 1093562368 4021 18446744073709551615 1 1 0 0 \
                        0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn stat_fields_are_counted_from_the_last_paren() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(
            s,
            Stat {
                utime: 731,
                stime: 142,
                threads: 7
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_gives_rss_and_hwm() {
        let text = "Name:\ttern-server\nUmask:\t0022\nState:\tS (sleeping)\n\
                    VmPeak:\t 1067932 kB\nVmSize:\t 1067932 kB\nVmLck:\t       0 kB\n\
                    VmHWM:\t   48812 kB\nVmRSS:\t   40116 kB\nRssAnon:\t   30000 kB\n\
                    Threads:\t7\n";
        assert_eq!(
            parse_status(text),
            Some(Mem {
                rss_kib: 40116,
                hwm_kib: 48812
            })
        );
        // A kernel thread has no VmRSS line.
        assert_eq!(parse_status("Name:\tkthreadd\nThreads:\t1\n"), None);
    }

    #[test]
    fn cpu_percent_is_of_one_core() {
        assert_eq!(cpu_percent(1.5, 3.0), 50.0);
        assert_eq!(cpu_percent(4.0, 2.0), 200.0);
        assert_eq!(cpu_percent(1.0, 0.0), 0.0);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(read_stat(pid).is_some());
        let m = read_mem(pid).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
    }
}
