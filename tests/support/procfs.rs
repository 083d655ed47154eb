//! What Linux /proc says about the relay process (proc(5)): CPU time and status fields,
//! for the tests that bound idle CPU, wake-ups and memory.

use std::fs;

/// A field of /proc/<pid>/status, e.g. `VmRSS` (kB) or `voluntary_ctxt_switches`. Panics
/// when the field is missing (the bound it feeds would be meaningless).
pub fn status_field(pid: u32, name: &str) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}

/// utime + stime of a process in clock ticks (/proc/<pid>/stat fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the comm field (which may hold spaces): state is field 3, so utime (14) is
    // index 11 here.
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}
