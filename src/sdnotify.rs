//! systemd readiness notifications (`sd_notify(3)` protocol), standard library only.
//!
//! When started by systemd with `Type=notify`, `NOTIFY_SOCKET` names a Unix datagram socket
//! (an abstract one when it starts with `@`). We send `READY=1` once the listener is bound and
//! `STOPPING=1` when shutdown begins. Without `NOTIFY_SOCKET` every call is a no-op, and a
//! failed send is only logged: readiness reporting must never stop the relay.

use std::os::unix::net::UnixDatagram;

/// Send one notification message (e.g. `"READY=1"`). Returns whether it was sent.
pub fn notify(msg: &str) -> bool {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        return false;
    };
    let sock = match UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            log::debug!("sd_notify: socket: {e}");
            return false;
        }
    };
    let sent = if let Some(name) = path.strip_prefix('@') {
        send_abstract(&sock, name, msg)
    } else {
        sock.send_to(msg.as_bytes(), &path).map(|_| ())
    };
    match sent {
        Ok(()) => true,
        Err(e) => {
            log::debug!("sd_notify to {path}: {e}");
            false
        }
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &str, msg: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    sock.send_to_addr(msg.as_bytes(), &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_sock: &UnixDatagram, _name: &str, _msg: &str) -> std::io::Result<()> {
    Err(std::io::Error::other("abstract sockets are Linux-only"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("fvtt-sdnotify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        // The variable is process-wide; this is the only test that sets it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1"));
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(!notify("READY=1"), "no socket configured: no-op");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
