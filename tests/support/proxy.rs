//! A TCP proxy in front of a test server, that a test can take down to simulate an outage.
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A TCP proxy to a local port that can be taken down: while down it drops new connections at
/// once and cuts the open ones, as a storage outage would.
pub struct OutageProxy {
    /// The port weir connects to.
    pub port: u16,
    up: Arc<AtomicBool>,
}

impl OutageProxy {
    pub fn start(target: u16) -> OutageProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listens");
        let port = listener.local_addr().expect("address").port();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                // Small requests and answers pass at once, as they would without the proxy.
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (from, to, flag) = (from.try_clone(), to.try_clone(), flag.clone());
                    if let (Ok(from), Ok(to)) = (from, to) {
                        std::thread::spawn(move || pipe(from, to, &flag));
                    }
                }
            }
        });
        OutageProxy { port, up }
    }

    /// Starts or ends an outage.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

/// Copies bytes from `from` to `to` until either side closes or the proxy goes down.
fn pipe(mut from: TcpStream, mut to: TcpStream, up: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buffer = [0u8; 16 * 1024];
    while up.load(Ordering::SeqCst) {
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
