//! A fault-injecting proxy on loopback, for partition tests: TCP (links) and UDP
//! (membership datagrams) on one port. It forwards (optionally late), black-holes (accepts
//! bytes, delivers none) or cuts (closes every connection, refuses new ones, drops
//! datagrams). Plain threads, stopped when the proxy is dropped.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Mode {
    Pass = 0,
    BlackHole = 1,
    Cut = 2,
}

pub struct Proxy {
    pub addr: String,
    mode: Arc<AtomicU8>,
    /// Extra latency added to every chunk forwarded in `Pass` mode, in milliseconds.
    delay_ms: Arc<AtomicU64>,
    target: Arc<Mutex<Option<String>>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    /// Every datagram relayed (the last 10 000), as an eavesdropper would record them.
    recorded: Arc<Mutex<VecDeque<Vec<u8>>>>,
}

impl Proxy {
    /// Listens on a free loopback port (TCP and UDP); forwards nowhere until
    /// [`Proxy::forward_to`].
    pub fn bind() -> Proxy {
        let (listener, udp) = (0..64)
            .find_map(|_| {
                let tcp = TcpListener::bind("127.0.0.1:0").ok()?;
                let udp = UdpSocket::bind(tcp.local_addr().ok()?).ok()?;
                Some((tcp, udp))
            })
            .expect("a free TCP and UDP port pair");
        listener.set_nonblocking(true).expect("nonblocking");
        let proxy = Proxy {
            addr: listener.local_addr().expect("addr").to_string(),
            mode: Arc::new(AtomicU8::new(Mode::Pass as u8)),
            delay_ms: Arc::default(),
            target: Arc::default(),
            conns: Arc::default(),
            stop: Arc::default(),
            recorded: Arc::default(),
        };
        let (mode, target, conns, stop) = (
            proxy.mode.clone(),
            proxy.target.clone(),
            proxy.conns.clone(),
            proxy.stop.clone(),
        );
        let delay = proxy.delay_ms.clone();
        let datagrams = (
            proxy.mode.clone(),
            proxy.target.clone(),
            proxy.stop.clone(),
            delay.clone(),
            proxy.recorded.clone(),
        );
        std::thread::spawn(move || {
            let (mode, target, stop, delay, recorded) = datagrams;
            relay_datagrams(udp, mode, target, stop, delay, recorded)
        });
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => continue,
                };
                let to = target.lock().unwrap().clone();
                let server = match (mode.load(Ordering::Relaxed), to) {
                    (m, Some(to)) if m != Mode::Cut as u8 => TcpStream::connect(to),
                    _ => continue, // dropped: refused
                };
                let Ok(server) = server else { continue };
                let _ = client.set_nonblocking(false);
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    let (mode, stop, delay) = (mode.clone(), stop.clone(), delay.clone());
                    std::thread::spawn(move || pump(from, to, mode, stop, delay));
                }
                conns.lock().unwrap().extend([client, server]);
            }
        });
        proxy
    }

    /// The datagrams relayed so far.
    pub fn datagrams(&self) -> Vec<Vec<u8>> {
        self.recorded.lock().unwrap().iter().cloned().collect()
    }

    pub fn forward_to(&self, target: &str) {
        *self.target.lock().unwrap() = Some(target.to_owned());
    }

    /// Adds `delay` to every chunk forwarded from now on (both ways).
    pub fn delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
        if mode == Mode::Cut {
            for conn in self.conns.lock().unwrap().drain(..) {
                let _ = conn.shutdown(Shutdown::Both);
            }
        }
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    delay: Arc<AtomicU64>,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::Relaxed) {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        match mode.load(Ordering::Relaxed) {
            m if m == Mode::Pass as u8 => {
                std::thread::sleep(Duration::from_millis(delay.load(Ordering::Relaxed)));
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            m if m == Mode::BlackHole as u8 => {} // swallowed
            _ => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Forwards every datagram to the target in `Pass` mode (after the delay, in order), and
/// drops it otherwise.
fn relay_datagrams(
    socket: UdpSocket,
    mode: Arc<AtomicU8>,
    target: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    delay: Arc<AtomicU64>,
    recorded: Arc<Mutex<VecDeque<Vec<u8>>>>,
) {
    let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
    let out = socket.try_clone().expect("clone the datagram socket");
    let (late, queue) = std::sync::mpsc::channel::<(Instant, Vec<u8>, String)>();
    std::thread::spawn(move || {
        for (at, bytes, to) in queue {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let _ = out.send_to(&bytes, to);
        }
    });
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::Relaxed) {
        let n = match socket.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(_) => continue,
        };
        let to = target.lock().unwrap().clone();
        if let (true, Some(to)) = (mode.load(Ordering::Relaxed) == Mode::Pass as u8, to) {
            let mut recorded = recorded.lock().unwrap();
            if recorded.len() == 10_000 {
                recorded.pop_front();
            }
            recorded.push_back(buf[..n].to_vec());
            drop(recorded);
            let at = Instant::now() + Duration::from_millis(delay.load(Ordering::Relaxed));
            if late.send((at, buf[..n].to_vec(), to)).is_err() {
                break;
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.set(Mode::Cut);
    }
}
