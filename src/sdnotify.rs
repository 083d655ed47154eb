//! systemd service notifications (`sd_notify(3)` protocol), standard library only.
//!
//! When started by systemd with `Type=notify`, `NOTIFY_SOCKET` names a Unix datagram socket
//! (an abstract one when it starts with `@`). The loop sends `READY=1` once the listener is
//! bound and the state loaded, `STATUS=` lines for `systemctl status` when the number of
//! worlds or clients changes, `WATCHDOG=1` from its own timers when the unit sets
//! `WatchdogSec=` (`WATCHDOG_USEC`, `WATCHDOG_PID`), and `STOPPING=1` when shutdown begins.
//! Without `NOTIFY_SOCKET` every call is a no-op, and a failed send is only logged:
//! notifications must never stop or block the relay (the socket is non-blocking).

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go, and how often the watchdog must hear from us.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the process environment, as systemd sets it.
    pub fn from_env() -> Notifier {
        Notifier::from_vars(|k| std::env::var(k).ok(), std::process::id())
    }

    /// From variables looked up by `get`, for a process whose id is `pid`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>, pid: u32) -> Notifier {
        let target = get("NOTIFY_SOCKET")
            .filter(|p| !p.is_empty())
            .and_then(|p| match open(&p) {
                Ok(t) => Some(t),
                Err(e) => {
                    log::warn!("NOTIFY_SOCKET={p}: {e}; no systemd notifications");
                    None
                }
            });
        Notifier {
            watchdog: target.as_ref().and_then(|_| watchdog_interval(&get, pid)),
            target,
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC` (the margin sd_watchdog_enabled(3)
    /// recommends), or None when no watchdog is set for this process.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Send one notification (newline-separated assignments, e.g. `"READY=1\nSTATUS=..."`).
    /// Returns whether it was sent.
    pub fn send(&self, msg: &str) -> bool {
        let Some((sock, addr)) = &self.target else {
            return false;
        };
        match sock.send_to_addr(msg.as_bytes(), addr) {
            Ok(_) => true,
            Err(e) => {
                log::debug!("sd_notify: {e}");
                false
            }
        }
    }
}

/// A non-blocking unbound socket and the address from `NOTIFY_SOCKET`.
fn open(path: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    let addr = match path.strip_prefix('@') {
        Some(name) => abstract_addr(name)?,
        None if path.starts_with('/') => SocketAddr::from_pathname(path)?,
        None => {
            return Err(std::io::Error::other(
                "not an absolute path or @abstract name",
            ))
        }
    };
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    Ok((sock, addr))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &str) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name.as_bytes())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &str) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::other("abstract sockets are Linux-only"))
}

/// `WATCHDOG_USEC` halved, when set, positive, and meant for us (`WATCHDOG_PID` unset or
/// our pid: a watchdog set up for a parent must not be fed by a child).
fn watchdog_interval(get: &impl Fn(&str) -> Option<String>, pid: u32) -> Option<Duration> {
    let usec = get("WATCHDOG_USEC")?;
    if let Some(p) = get("WATCHDOG_PID").filter(|p| !p.is_empty()) {
        if p.trim().parse::<u32>().ok() != Some(pid) {
            log::debug!("WATCHDOG_PID={p} is not us ({pid}): watchdog not ours");
            return None;
        }
    }
    match usec.trim().parse::<u64>() {
        Ok(us) if us > 0 => Some(Duration::from_micros(us / 2)),
        _ => {
            log::warn!("WATCHDOG_USEC={usec}: not a positive integer; watchdog ignored");
            None
        }
    }
}

/// The `STATUS=` text for `systemctl status`.
pub fn status_line(worlds: usize, clients: usize) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "{} online, {}",
        plural(worlds, "world", "worlds"),
        plural(clients, "client", "clients")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn temp_socket(tag: &str) -> (std::path::PathBuf, UnixDatagram) {
        let dir = std::env::temp_dir().join(format!("fvtt-sdnotify-{}-{tag}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        (path, rx)
    }

    #[test]
    fn sends_to_a_path_socket() {
        let (path, rx) = temp_socket("path");
        let n = Notifier::from_vars(vars(&[("NOTIFY_SOCKET", path.to_str().unwrap())]), 1);
        assert!(n.enabled());
        assert!(n.send("READY=1"));
        let mut buf = [0u8; 64];
        let got = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"READY=1");
        assert_eq!(n.watchdog(), None, "no WATCHDOG_USEC");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn no_socket_is_a_no_op() {
        let n = Notifier::from_vars(vars(&[("WATCHDOG_USEC", "1000000")]), 1);
        assert!(!n.enabled());
        assert!(!n.send("READY=1"));
        assert_eq!(n.watchdog(), None, "no watchdog without a socket");
        let n = Notifier::from_vars(vars(&[("NOTIFY_SOCKET", "relative/path")]), 1);
        assert!(!n.enabled());
    }

    #[test]
    fn watchdog_interval_is_half_and_honours_the_pid() {
        let (path, _rx) = temp_socket("wd");
        let p = path.to_str().unwrap();
        let wd = |extra: &[(&str, &str)], pid: u32| {
            let mut all = vec![("NOTIFY_SOCKET", p)];
            all.extend_from_slice(extra);
            Notifier::from_vars(vars(&all), pid).watchdog()
        };
        let half = Some(Duration::from_millis(200));
        assert_eq!(wd(&[("WATCHDOG_USEC", "400000")], 7), half);
        assert_eq!(
            wd(&[("WATCHDOG_USEC", "400000"), ("WATCHDOG_PID", "7")], 7),
            half
        );
        assert_eq!(
            wd(&[("WATCHDOG_USEC", "400000"), ("WATCHDOG_PID", "8")], 7),
            None
        );
        assert_eq!(wd(&[("WATCHDOG_USEC", "0")], 7), None);
        assert_eq!(wd(&[("WATCHDOG_USEC", "soon")], 7), None);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn status_lines_read_naturally() {
        assert_eq!(status_line(0, 0), "0 worlds online, 0 clients");
        assert_eq!(status_line(1, 1), "1 world online, 1 client");
        assert_eq!(status_line(2, 14), "2 worlds online, 14 clients");
    }
}
