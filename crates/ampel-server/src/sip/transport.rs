//! SIP over UDP and TCP (RFC 3261 §18): one UDP socket and one TCP listener on the same
//! address, framing of stream connections, and the peer a response or request goes to.
//!
//! Bytes that are not a SIP message get a 400 with the reason when they can be answered (a
//! request whose head could be read far enough) and silence on UDP otherwise; a TCP connection
//! that sends garbage or more than the message limit is closed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use ampel_sip::message::{self, MAX_MESSAGE, Message, ParseError, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::Sip;

/// The most TCP connections held at once; each address has its own smaller share
/// (`max_tcp_per_address`), so that one peer cannot lock the others out.
const MAX_TCP: usize = 4096;

/// How long a TCP peer may take to send a whole message, from its connection or from the first
/// byte of the message (64·T1, RFC 3261 §17.1.1.2). A peer that opens a connection and sends
/// nothing, or a byte now and then, is closed instead of holding a connection for ever.
const MESSAGE_TIME: std::time::Duration = std::time::Duration::from_secs(32);

/// Where a message goes back to.
#[derive(Clone, Debug)]
pub enum Peer {
    /// A UDP peer.
    Udp {
        /// The shared socket.
        socket: Arc<UdpSocket>,
        /// The peer's address.
        addr: SocketAddr,
    },
    /// A TCP connection's writer.
    Tcp {
        /// Bytes to write on the connection.
        tx: mpsc::Sender<Vec<u8>>,
        /// The peer's address.
        addr: SocketAddr,
    },
}

impl Peer {
    /// Sends bytes; a failure means the peer is gone and is only logged.
    pub async fn send(&self, bytes: Vec<u8>) {
        match self {
            Peer::Udp { socket, addr } => {
                if let Err(e) = socket.send_to(&bytes, addr).await {
                    tracing::debug!(%addr, error = %e, "udp send failed");
                }
            }
            Peer::Tcp { tx, addr } => {
                if tx.send(bytes).await.is_err() {
                    tracing::debug!(%addr, "tcp peer is gone");
                }
            }
        }
    }

    /// `UDP` or `TCP`, for Via headers.
    pub fn transport(&self) -> &'static str {
        match self {
            Peer::Udp { .. } => "UDP",
            Peer::Tcp { .. } => "TCP",
        }
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Peer::Udp { addr, .. } | Peer::Tcp { addr, .. } => *addr,
        }
    }

    /// True while the peer can still be written to.
    pub fn is_open(&self) -> bool {
        match self {
            Peer::Udp { .. } => true,
            Peer::Tcp { tx, .. } => !tx.is_closed(),
        }
    }
}

/// Binds UDP and TCP on one address (the TCP port follows UDP's when the port was 0).
pub(super) async fn bind(
    addr: SocketAddr,
) -> std::io::Result<(Arc<UdpSocket>, TcpListener, SocketAddr)> {
    // With port 0 the port UDP got may be taken for TCP; another free port is tried then.
    let mut tries = if addr.port() == 0 { 20 } else { 1 };
    loop {
        let udp = UdpSocket::from_std(udp_socket(addr)?)?;
        let local = udp.local_addr()?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((Arc::new(udp), tcp, local)),
            Err(e) if tries <= 1 => return Err(e),
            Err(_) => tries -= 1,
        }
    }
}

/// The kernel's buffer for datagrams not yet read. A start of the working day brings bursts of
/// SUBSCRIBEs, and every NOTIFY fanned out brings back a 200; the default of a few hundred
/// kilobytes overflows under such bursts and drops requests silently.
const UDP_BUFFER: usize = 8 * 1024 * 1024;

fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // The kernel caps these at its own maximum (net.core.rmem_max); a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

pub(super) fn spawn(sip: Arc<Sip>, udp: Arc<UdpSocket>, tcp: TcpListener) {
    super::spawn_until_stopped(&sip, serve_udp(Arc::clone(&sip), udp));
    super::spawn_until_stopped(&sip, serve_tcp(Arc::clone(&sip), tcp));
}

async fn serve_udp(sip: Arc<Sip>, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    loop {
        let (n, addr) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "udp receive failed");
                continue;
            }
        };
        let peer = Peer::Udp { socket: Arc::clone(&socket), addr };
        if n > MAX_MESSAGE {
            // Silence: a datagram that large is not from a SIP peer Ampel can answer sensibly.
            continue;
        }
        match message::parse(&buf[..n], true) {
            Ok((Message::Response(response), _)) if answers_notify(&response) => {
                // Every NOTIFY of a fan-out brings one back: handled here, without a task each.
                sip.subscriptions.answered(&response);
            }
            Ok((msg, _)) => {
                let sip = Arc::clone(&sip);
                tokio::spawn(async move { sip.receive(msg, peer).await });
            }
            Err(e) => reject(&buf[..n], &e, &peer).await,
        }
    }
}

fn answers_notify(response: &Response) -> bool {
    response.header("cseq").is_some_and(|c| c.split_whitespace().nth(1) == Some("NOTIFY"))
}

/// Answers an unreadable request with 400 and the reason, when its Via, From, To, Call-ID and
/// CSeq can be found to address the answer; otherwise drops it (RFC 3261 §18.3).
async fn reject(bytes: &[u8], error: &ParseError, peer: &Peer) {
    tracing::debug!(peer = %peer.addr(), error = %error, "unreadable sip message");
    let Some(answer) = bad_request(bytes, error) else { return };
    peer.send(answer).await;
}

fn bad_request(bytes: &[u8], error: &ParseError) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(&bytes[..bytes.len().min(8192)]).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.lines();
    let start = lines.next()?;
    if start.starts_with("SIP/2.0") || !start.ends_with("SIP/2.0") {
        return None;
    }
    let mut out = String::from("SIP/2.0 400 Bad Request\r\n");
    let mut found = 0;
    for line in lines {
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "via" | "v" | "from" | "f" | "to" | "t" | "call-id" | "i" | "cseq"
        ) {
            out.push_str(line);
            out.push_str("\r\n");
            found += 1;
        }
    }
    if found < 5 {
        return None;
    }
    let reason = error.to_string().replace(['\r', '\n', '"'], " ");
    out.push_str(&format!("Warning: 399 ampel \"{reason}\"\r\nContent-Length: 0\r\n\r\n"));
    Some(out.into_bytes())
}

async fn serve_tcp(sip: Arc<Sip>, listener: TcpListener) {
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    let per_address = Arc::new(Mutex::new(HashMap::new()));
    loop {
        let Ok((stream, addr)) = listener.accept().await else { continue };
        let Some(share) =
            AddressShare::take(&per_address, addr.ip(), sip.settings.max_tcp_per_address)
        else {
            tracing::debug!(%addr, "too many sip tcp connections from one address");
            continue;
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            tracing::warn!(%addr, "too many sip tcp connections");
            continue;
        };
        let connection = Arc::clone(&sip);
        super::spawn_until_stopped(&sip, async move {
            serve_connection(connection, stream, addr).await;
            drop((permit, share));
        });
    }
}

/// One TCP connection counted against its peer's address, given back when dropped.
struct AddressShare {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl AddressShare {
    /// Counts a connection from `ip`, unless the address already holds `cap` of them.
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, cap: usize) -> Option<Self> {
        let ip = ip.to_canonical();
        let mut map = counts.lock().expect("tcp count lock");
        if map.get(&ip).copied().unwrap_or(0) >= cap {
            return None;
        }
        *map.entry(ip).or_default() += 1;
        Some(AddressShare { counts: Arc::clone(counts), ip })
    }
}

impl Drop for AddressShare {
    fn drop(&mut self) {
        let mut map = self.counts.lock().expect("tcp count lock");
        if let Some(held) = map.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

async fn serve_connection(sip: Arc<Sip>, stream: TcpStream, addr: SocketAddr) {
    let (mut read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let peer = Peer::Tcp { tx, addr };
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut deadline = Some(tokio::time::Instant::now() + MESSAGE_TIME);
    'read: loop {
        let reading = read.read(&mut chunk);
        let read_now = match deadline {
            None => reading.await,
            Some(at) => match tokio::time::timeout_at(at, reading).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!(%addr, "sip tcp peer too slow to send a message");
                    break;
                }
            },
        };
        let n = match read_now {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let fresh = buf.is_empty();
        buf.extend_from_slice(&chunk[..n]);
        let mut served = false;
        loop {
            match message::parse(&buf, false) {
                Ok((msg, used)) => {
                    buf.drain(..used);
                    served = true;
                    // In order on one connection: a refresh must not overtake its subscription.
                    sip.receive(msg, peer.clone()).await;
                }
                Err(ParseError::Incomplete) => break,
                Err(e) => {
                    reject(&buf, &e, &peer).await;
                    break 'read;
                }
            }
        }
        if buf.len() > MAX_MESSAGE {
            break;
        }
        deadline = match (buf.is_empty(), fresh || served) {
            (true, _) => None,
            (false, true) => Some(tokio::time::Instant::now() + MESSAGE_TIME),
            (false, false) => deadline,
        };
    }
    drop(peer);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_request_with_its_headers_gets_400_with_the_reason() {
        let req = b"PUBLISH sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 PUBLISH\r\nContent-Length: x\r\n\r\n";
        let answer = bad_request(req, &ParseError::ContentLength).unwrap();
        let text = String::from_utf8(answer).unwrap();
        assert!(text.starts_with("SIP/2.0 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("Warning: 399 ampel \"Content-Length is malformed\""), "{text}");
        assert!(bad_request(b"\x00\x01garbage", &ParseError::StartLine).is_none());
    }
}
