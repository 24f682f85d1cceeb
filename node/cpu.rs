//! CPU time from /proc (Linux): this process's, and that of the process listening on a
//! local TCP port (the node `meshrpc bench` loads, when it runs on this machine). Elsewhere,
//! or without permission to read another process, the figures are simply absent.

use std::path::Path;

/// User + system CPU seconds `pid` (this process: `None`) has used so far.
pub fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command (which may hold spaces) in parentheses: utime is the 12th
    // and stime the 13th of those (fields 14 and 15 of the whole line).
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let total = ticks(11)? + ticks(12)?;
    Some(total as f64 / clock_ticks() as f64)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`): 100 on every Linux port in use.
fn clock_ticks() -> u64 {
    100
}

/// The process listening on TCP `port` on this machine, if one is and this process may see
/// it.
pub fn listener_pid(port: u16) -> Option<u32> {
    let inode = listening_inode(port)?;
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|link| link == Path::new(&target)) {
                return Some(pid);
            }
        }
    }
    None
}

/// The inode of the listening socket on `port`, from /proc/net/tcp and tcp6.
fn listening_inode(port: u16) -> Option<u64> {
    const LISTEN: &str = "0A";
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if *state == LISTEN && local_port == Some(port) {
                return inode.parse().ok().filter(|&i| i != 0);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_and_its_own_listener_are_found() {
        let before = cpu_secs(None).expect("this process's CPU time");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(cpu_secs(None).expect("again") >= before);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(listener_pid(port), Some(std::process::id()));
        drop(listener);
        assert_eq!(listener_pid(port), None, "nobody listens there now");
    }
}
