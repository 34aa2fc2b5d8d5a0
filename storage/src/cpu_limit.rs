//! Whether this process is at its CPU limit: the idle seal lane's signal to wait.
//!
//! A low nice value keeps sealing off a saturated core, but not off a CPU *limit*: a cgroup's
//! bandwidth quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`: a Kubernetes CPU limit) is
//! spent by every thread of the group, whatever its priority, so each millisecond the idle lane
//! seals is one the proxy's workers lose once the quota runs out — and a request that arrives
//! while the group is throttled waits for the next period.
//!
//! [`CpuLimit`] finds the `cpu.stat` of every cgroup on this process's path that has a quota
//! (its own and its ancestors'), and tells the idle lane to wait when, since the last look, the
//! group was throttled (`nr_throttled` grew) while the rest of the process used at least as
//! much CPU as the lane itself. The second half keeps a lane that throttles a quiet process on
//! its own sealing; the first keeps it from running while the proxy needs the quota. With no
//! quota anywhere there is nothing to watch and the lane never waits.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often the lane looks (reading a few small files).
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// The CPU-limit watch of one seal thread. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct CpuLimit {
    /// `cpu.stat` of each cgroup with a quota on this process's path.
    stats: Vec<PathBuf>,
    last: Option<Sample>,
    /// The answer of the last look, repeated until the next.
    waiting: bool,
    /// Whether a wait was reported (see [`CpuLimit::reported`]).
    reported: bool,
}

/// One look: throttled periods (summed over `stats`), the process's and this thread's CPU time.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    throttled: u64,
    process_ticks: u64,
    thread_ticks: u64,
}

impl Sample {
    /// Whether, between this look and `now`, the group was throttled while the rest of the
    /// process used at least as much CPU as this thread.
    fn wait_until(&self, now: &Sample) -> bool {
        let throttled = now.throttled > self.throttled;
        let own = now.thread_ticks.saturating_sub(self.thread_ticks);
        let rest = now
            .process_ticks
            .saturating_sub(self.process_ticks)
            .saturating_sub(own);
        throttled && rest >= own
    }
}

impl CpuLimit {
    /// The watch for this process, or `None` when no cgroup on its path has a CPU quota (or
    /// cgroups cannot be read).
    pub(crate) fn discover() -> Option<CpuLimit> {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let stats: Vec<PathBuf> =
            limited_cgroups(&cgroups, &mountinfo, &|p| std::fs::read_to_string(p).ok())
                .into_iter()
                .map(|d| d.join("cpu.stat"))
                .collect();
        (!stats.is_empty()).then_some(CpuLimit {
            stats,
            last: None,
            waiting: false,
            reported: false,
        })
    }

    /// Whether the calling seal thread should wait (see the [module docs](self)). Looks at most
    /// every 100 ms; in between, repeats the last answer. The thread's own CPU time is part of
    /// the answer, so it must be the thread that calls.
    pub(crate) fn should_wait(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l.at) < LOOK_EVERY)
        {
            return self.waiting;
        }
        let Some(s) = self.sample(now) else {
            // Unreadable now (the cgroup went away): do not hold sealing back.
            self.waiting = false;
            return false;
        };
        self.waiting = self.last.is_some_and(|l| l.wait_until(&s));
        self.last = Some(s);
        self.waiting
    }

    /// False the first time it is called, true afterwards: for logging the first wait once.
    pub(crate) fn reported(&mut self) -> bool {
        std::mem::replace(&mut self.reported, true)
    }

    fn sample(&self, at: Instant) -> Option<Sample> {
        let mut throttled = 0;
        for p in &self.stats {
            throttled += nr_throttled(&std::fs::read_to_string(p).ok()?)?;
        }
        Some(Sample {
            at,
            throttled,
            process_ticks: cpu_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?,
            thread_ticks: cpu_ticks(&std::fs::read_to_string("/proc/thread-self/stat").ok()?)?,
        })
    }
}

/// The directories of the cgroups on this process's CPU-controller path (its own first, then
/// its ancestors) that have a bandwidth quota, given `/proc/self/cgroup`, `/proc/self/mountinfo`
/// and a way to read a file.
fn limited_cgroups(
    cgroups: &str,
    mountinfo: &str,
    read: &dyn Fn(&Path) -> Option<String>,
) -> Vec<PathBuf> {
    let Some((dir, root, v2)) = cpu_cgroup_dir(cgroups, mountinfo) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut d = dir.as_path();
    loop {
        let limited = if v2 {
            read(&d.join("cpu.max"))
                .is_some_and(|m| m.split_whitespace().next().is_some_and(|q| q != "max"))
        } else {
            read(&d.join("cpu.cfs_quota_us"))
                .and_then(|q| q.trim().parse::<i64>().ok())
                .is_some_and(|q| q > 0)
        };
        if limited {
            out.push(d.to_path_buf());
        }
        if d == root {
            break;
        }
        match d.parent() {
            Some(p) if p.starts_with(&root) => d = p,
            _ => break,
        }
    }
    out
}

/// This process's cgroup directory for the CPU controller, the mount point it lies under, and
/// whether that is cgroup v2: the v1 hierarchy with the `cpu` controller if one is mounted
/// (hybrid systems keep the controllers on v1), else the unified one.
fn cpu_cgroup_dir(cgroups: &str, mountinfo: &str) -> Option<(PathBuf, PathBuf, bool)> {
    // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
    let mounts = mountinfo.lines().filter_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut f = left.split_whitespace();
        let root = f.nth(3)?;
        let point = f.next()?;
        let mut r = right.split_whitespace();
        let fstype = r.next()?;
        let superopts = r.nth(1).unwrap_or("");
        Some((root, point, fstype, superopts))
    });
    let mut v2_mount = None;
    for (root, point, fstype, superopts) in mounts {
        if fstype == "cgroup" && superopts.split(',').any(|o| o == "cpu") {
            // The v1 hierarchy with `cpu`: find this process's path in it.
            let path = cgroups.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
                controllers.split(',').any(|c| c == "cpu").then_some(path)
            })?;
            return Some((join_cgroup(point, root, path)?, PathBuf::from(point), false));
        }
        if fstype == "cgroup2" && v2_mount.is_none() {
            v2_mount = Some((root, point));
        }
    }
    let (root, point) = v2_mount?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some((join_cgroup(point, root, path)?, PathBuf::from(point), true))
}

/// `point` + (`path` relative to the mount's `root`).
fn join_cgroup(point: &str, root: &str, path: &str) -> Option<PathBuf> {
    let rel = if root == "/" {
        path
    } else {
        path.strip_prefix(root)?
    };
    let rel = rel.trim_start_matches('/');
    Some(if rel.is_empty() {
        PathBuf::from(point)
    } else {
        Path::new(point).join(rel)
    })
}

/// `nr_throttled` of a `cpu.stat`.
fn nr_throttled(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|v| v.trim().parse().ok())
}

/// utime + stime (clock ticks) of a `/proc/…/stat` line.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const V1_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V1_CGROUPS: &str = "\
4:memory:/kubepods/pod1/abc
2:cpu,cpuacct:/kubepods/pod1/abc
0::/
";
    const V2_MOUNTS: &str = "\
28 22 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
";

    fn files(pairs: &[(&str, &str)]) -> HashMap<PathBuf, String> {
        pairs
            .iter()
            .map(|(p, c)| (PathBuf::from(p), c.to_string()))
            .collect()
    }

    #[test]
    fn v1_finds_the_limited_cgroups_up_the_path() {
        let fs = files(&[
            (
                "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/abc/cpu.cfs_quota_us",
                "50000\n",
            ),
            (
                "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us",
                "-1\n",
            ),
            (
                "/sys/fs/cgroup/cpu,cpuacct/kubepods/cpu.cfs_quota_us",
                "200000\n",
            ),
            ("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n"),
        ]);
        let got = limited_cgroups(V1_CGROUPS, V1_MOUNTS, &|p| fs.get(p).cloned());
        assert_eq!(
            got,
            [
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/abc"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/kubepods"),
            ]
        );
    }

    #[test]
    fn v2_reads_cpu_max_and_no_quota_means_nothing_to_watch() {
        let cg = "0::/system.slice/sidecar.service\n";
        let limited = files(&[(
            "/sys/fs/cgroup/system.slice/sidecar.service/cpu.max",
            "50000 100000\n",
        )]);
        assert_eq!(
            limited_cgroups(cg, V2_MOUNTS, &|p| limited.get(p).cloned()),
            [PathBuf::from("/sys/fs/cgroup/system.slice/sidecar.service")]
        );
        let unlimited = files(&[(
            "/sys/fs/cgroup/system.slice/sidecar.service/cpu.max",
            "max 100000\n",
        )]);
        assert!(limited_cgroups(cg, V2_MOUNTS, &|p| unlimited.get(p).cloned()).is_empty());
        // No cgroup file system at all.
        assert!(limited_cgroups(cg, "", &|_| None).is_empty());
    }

    #[test]
    fn a_namespaced_mount_root_is_stripped() {
        let mounts = "40 30 0:40 /kubepods/pod1 /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        let cg = "3:cpu:/kubepods/pod1/abc\n";
        let (dir, root, v2) = cpu_cgroup_dir(cg, mounts).expect("dir");
        assert_eq!(dir, PathBuf::from("/sys/fs/cgroup/cpu/abc"));
        assert_eq!(root, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert!(!v2);
    }

    #[test]
    fn waits_only_when_throttled_while_the_rest_of_the_process_is_busy() {
        let at = Instant::now();
        let s = |throttled, process_ticks, thread_ticks| Sample {
            at,
            throttled,
            process_ticks,
            thread_ticks,
        };
        let before = s(10, 1000, 100);
        // Throttled; the workers used 40 ticks, the lane 10: leave them the quota.
        assert!(before.wait_until(&s(12, 1050, 110)));
        // Throttled by the lane's own sealing on a quiet process: go on.
        assert!(!before.wait_until(&s(12, 1045, 140)));
        // Busy but under the quota: go on.
        assert!(!before.wait_until(&s(10, 1050, 110)));
        // While the lane waits, the workers alone still hit the limit: keep waiting.
        assert!(before.wait_until(&s(11, 1030, 100)));
    }

    #[test]
    fn stat_parsing() {
        assert_eq!(
            nr_throttled("nr_periods 57\nnr_throttled 50\nthrottled_time 2470716601\n"),
            Some(50)
        );
        assert_eq!(nr_throttled("usage_usec 5\n"), None);
        let stat = "1234 (tape seal) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 17 4 0 0 20 0 9 0";
        assert_eq!(cpu_ticks(stat), Some(21));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_can_be_looked_at() {
        // Whatever the machine: discovery must not fail loudly, and a watch (if any) answers.
        if let Some(mut w) = CpuLimit::discover() {
            let _ = w.should_wait();
        }
        assert!(
            cpu_ticks(&std::fs::read_to_string("/proc/thread-self/stat").expect("stat")).is_some()
        );
    }
}
