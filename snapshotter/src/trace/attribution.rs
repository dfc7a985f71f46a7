//! Which container a reading process belongs to, from `/proc/<pid>/cgroup`.
//!
//! A lazy layer's FUSE mount is shared by every container on its image, so a read is attributed
//! by the process that made it: FUSE gives the request's pid, the pid's cgroup names its
//! container, and the container id is the snapshot key (its last component, as containerd sends
//! keys) for `ctr run` and CRI. The parsing is
//! pure (tested on real-looking lines); [`PidCache`] keeps the answers for a bounded number of
//! pids, since reading `/proc` for every read would cost more than the read.

use std::collections::HashMap;

/// The container ids a `/proc/<pid>/cgroup` text may name, most likely first: the cgroup v2
/// line (`0::/…`) before v1 controller lines, each path's last component, and for
/// systemd-style scopes (`cri-containerd-<id>.scope`, `docker-<id>.scope`) the id inside.
/// Root and empty paths name nothing.
pub fn container_ids(cgroup: &str) -> Vec<String> {
    let mut lines: Vec<(bool, &str)> = cgroup
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (hierarchy, _controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some((hierarchy != "0", path.trim()))
        })
        .collect();
    // v2 first (false sorts before true); the sort is stable, so v1 lines keep their order.
    lines.sort_by_key(|&(v1, _)| v1);
    let mut out = Vec::new();
    for (_, path) in lines {
        for id in ids_of_path(path) {
            if !out.contains(&id) {
                out.push(id);
            }
        }
    }
    out
}

/// The candidate ids one cgroup path names (see [`container_ids`]).
pub fn ids_of_path(path: &str) -> Vec<String> {
    let Some(last) = path.rsplit('/').find(|c| !c.is_empty()) else {
        return Vec::new();
    };
    let mut ids = Vec::with_capacity(2);
    // `kubepods-…slice:cri-containerd:<id>` (a cgroupsPath as runc takes it).
    if let Some((_, id)) = last.rsplit_once(':') {
        push_nonempty(&mut ids, id);
        return ids;
    }
    if let Some(scope) = last.strip_suffix(".scope") {
        if let Some((_, id)) = scope.rsplit_once('-') {
            push_nonempty(&mut ids, id);
        }
        push_nonempty(&mut ids, scope);
        return ids;
    }
    push_nonempty(&mut ids, last);
    ids
}

fn push_nonempty(ids: &mut Vec<String>, id: &str) {
    if !id.is_empty() {
        ids.push(id.to_owned());
    }
}

/// The container ids of process `pid` (empty if it is gone or names none).
pub fn container_ids_of_pid(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|text| container_ids(&text))
        .unwrap_or_default()
}

/// pid → the run key it was attributed to (`None`: no run matched its cgroup), for at most
/// `capacity` pids. Full, it forgets everything (pids die and are reused; a stale entry is
/// worse than a second `/proc` read).
#[derive(Debug)]
pub struct PidCache {
    map: HashMap<u32, Option<String>>,
    capacity: usize,
}

impl PidCache {
    /// An empty cache of at most `capacity` pids.
    pub fn new(capacity: usize) -> PidCache {
        PidCache {
            map: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// What is known of `pid`: `None` if unknown, `Some(None)` if it matched no run.
    pub fn get(&self, pid: u32) -> Option<Option<&str>> {
        self.map.get(&pid).map(Option::as_deref)
    }

    /// Remembers `pid`'s run key (or that it has none).
    pub fn insert(&mut self, pid: u32, key: Option<String>) {
        if self.map.len() >= self.capacity && !self.map.contains_key(&pid) {
            self.map.clear();
        }
        self.map.insert(pid, key);
    }

    /// Forgets the pids of run `key` (it ended; its pids may be reused).
    pub fn forget_run(&mut self, key: &str) {
        self.map.retain(|_, k| k.as_deref() != Some(key));
    }

    /// Forgets the pids that matched no run (a new run may be theirs now).
    pub fn forget_unmatched(&mut self) {
        self.map.retain(|_, k| k.is_some());
    }

    /// How many pids are cached.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
