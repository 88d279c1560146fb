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
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};

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

/// The most UDP messages handled at once. Beyond it a message is dropped unread, as the kernel
/// drops what overflows the socket's buffer: its sender retransmits (RFC 3261 §17.1.2), and a
/// flood of well-formed requests cannot pile up tasks and memory without bound.
const MAX_UDP_HANDLERS: usize = 1024;

async fn serve_udp(sip: Arc<Sip>, socket: Arc<UdpSocket>) {
    let mut inbox = Inbox::default();
    let handlers = Arc::new(Semaphore::new(MAX_UDP_HANDLERS));
    loop {
        if let Err(e) = inbox.receive(&socket).await {
            tracing::debug!(error = %e, "udp receive failed");
            continue;
        }
        for (bytes, addr) in inbox.datagrams() {
            datagram(&sip, &socket, &handlers, bytes, addr).await;
        }
    }
}

async fn datagram(
    sip: &Arc<Sip>,
    socket: &Arc<UdpSocket>,
    handlers: &Arc<Semaphore>,
    bytes: &[u8],
    addr: SocketAddr,
) {
    if bytes.len() > MAX_MESSAGE {
        // Silence: a datagram that large is not from a SIP peer Ampel can answer sensibly.
        return;
    }
    let peer = Peer::Udp { socket: Arc::clone(socket), addr };
    match message::parse(bytes, true) {
        Ok((Message::Response(response), _)) if answers_notify(&response) => {
            // Every NOTIFY of a fan-out brings one back: handled here, without a task each.
            sip.subscriptions.answered(&response);
        }
        Ok((msg, _)) => {
            let Ok(permit) = Arc::clone(handlers).try_acquire_owned() else {
                sip.app.hub.metrics.sip_shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(%addr, "sip message dropped: too many in hand");
                return;
            };
            let sip = Arc::clone(sip);
            tokio::spawn(async move {
                sip.receive(msg, peer).await;
                drop(permit);
            });
        }
        Err(e) => reject(bytes, &e, &peer).await,
    }
}

/// How many datagrams one system call receives or sends at most.
const BATCH: usize = 32;

/// Datagrams received together: a fan-out brings back a 200 for every NOTIFY, and where the
/// platform has `recvmmsg` one system call takes all that have arrived, up to [`BATCH`].
struct Inbox {
    /// [`BATCH`] slots of `MAX_MESSAGE + 1` bytes, so that an oversized datagram shows.
    buf: Vec<u8>,
    /// The length and sender of each datagram received, slot by slot.
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl Default for Inbox {
    fn default() -> Inbox {
        // Pages of the slots a burst never reaches are never touched, so cost no memory.
        Inbox { buf: vec![0; BATCH * SLOT], got: Vec::with_capacity(BATCH) }
    }
}

const SLOT: usize = MAX_MESSAGE + 1;

impl Inbox {
    /// Waits for datagrams and takes what has arrived.
    async fn receive(&mut self, socket: &UdpSocket) -> std::io::Result<()> {
        self.got.clear();
        loop {
            socket.readable().await?;
            match socket.try_io(tokio::io::Interest::READABLE, || {
                mmsg::receive(socket, &mut self.buf, SLOT, &mut self.got)
            }) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// The datagrams of the last [`receive`](Self::receive), in the order they arrived.
    fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.buf
            .chunks(SLOT)
            .zip(&self.got)
            .filter_map(|(slot, &(n, addr))| Some((&slot[..n], addr?)))
    }
}

/// Datagrams to send on the UDP socket together: where the platform has `sendmmsg`, the NOTIFYs
/// of a fan-out leave in one system call per [`BATCH`] instead of one each.
#[derive(Default)]
pub(super) struct Outbox {
    socket: Option<Arc<UdpSocket>>,
    queued: Vec<(Bytes, SocketAddr)>,
}

impl Outbox {
    /// Queues a datagram, sending what is queued first when the batch is full or the socket
    /// differs.
    pub(super) async fn push(&mut self, socket: &Arc<UdpSocket>, addr: SocketAddr, bytes: Bytes) {
        if self.queued.len() >= BATCH
            || self.socket.as_ref().is_some_and(|s| !Arc::ptr_eq(s, socket))
        {
            self.flush().await;
        }
        self.socket.get_or_insert_with(|| Arc::clone(socket));
        self.queued.push((bytes, addr));
    }

    /// Sends everything queued. A datagram the kernel refuses (the peer's address is not
    /// reachable, say) is dropped and logged; its missing answer shows the rest.
    pub(super) async fn flush(&mut self) {
        let Some(socket) = self.socket.take() else { return };
        let mut done = 0;
        while done < self.queued.len() {
            let rest = &self.queued[done..];
            match socket.try_io(tokio::io::Interest::WRITABLE, || mmsg::send(&socket, rest)) {
                Ok(sent) => done += sent,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(e) = socket.writable().await {
                        tracing::debug!(error = %e, "udp socket unusable");
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(addr = %rest[0].1, error = %e, "udp send failed");
                    done += 1;
                }
            }
        }
        self.queued.clear();
    }
}

/// Sending and receiving several datagrams per system call.
#[cfg(target_os = "linux")]
mod mmsg {
    use std::io::{IoSlice, IoSliceMut};
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    use bytes::Bytes;
    use nix::sys::socket::{
        ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
    };
    use tokio::net::UdpSocket;

    /// Sends from the front of `queued` as many as the socket takes; an error means the first
    /// was not sent.
    pub(super) fn send(
        socket: &UdpSocket,
        queued: &[(Bytes, SocketAddr)],
    ) -> std::io::Result<usize> {
        let slices: Vec<[IoSlice<'_>; 1]> = queued.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> =
            queued.iter().map(|&(_, a)| Some(SockaddrStorage::from(a))).collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(queued.len(), None);
        let none: [ControlMessage<'_>; 0] = [];
        let sent =
            sendmmsg(socket.as_raw_fd(), &mut headers, &slices, &addrs, none, MsgFlags::empty())?;
        Ok(sent.count())
    }

    /// Receives what has arrived into the slots of `buf`, up to one per slot, and records each
    /// datagram's length and sender in `got`.
    pub(super) fn receive(
        socket: &UdpSocket,
        buf: &mut [u8],
        slot: usize,
        got: &mut Vec<(usize, Option<SocketAddr>)>,
    ) -> std::io::Result<()> {
        let mut slices: Vec<[IoSliceMut<'_>; 1]> =
            buf.chunks_mut(slot).map(|s| [IoSliceMut::new(s)]).collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slices.len(), None);
        let received = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        got.clear();
        got.extend(received.map(|m| (m.bytes, m.address.as_ref().and_then(address))));
        Ok(())
    }

    fn address(a: &SockaddrStorage) -> Option<SocketAddr> {
        a.as_sockaddr_in()
            .map(|v4| SocketAddr::from(*v4))
            .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6)))
    }
}

/// One datagram per system call where `sendmmsg` and `recvmmsg` are missing.
#[cfg(not(target_os = "linux"))]
mod mmsg {
    use std::net::SocketAddr;

    use bytes::Bytes;
    use tokio::net::UdpSocket;

    pub(super) fn send(
        socket: &UdpSocket,
        queued: &[(Bytes, SocketAddr)],
    ) -> std::io::Result<usize> {
        let (bytes, addr) = &queued[0];
        socket.try_send_to(bytes, *addr).map(|_| 1)
    }

    pub(super) fn receive(
        socket: &UdpSocket,
        buf: &mut [u8],
        slot: usize,
        got: &mut Vec<(usize, Option<SocketAddr>)>,
    ) -> std::io::Result<()> {
        got.clear();
        let (n, addr) = socket.try_recv_from(&mut buf[..slot])?;
        got.push((n, Some(addr)));
        Ok(())
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

    async fn loopback() -> Arc<UdpSocket> {
        Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap())
    }

    #[tokio::test]
    async fn an_outbox_delivers_every_datagram_in_order_past_one_the_kernel_refuses() {
        let sender = loopback().await;
        let (a, b) = (loopback().await, loopback().await);
        let mut outbox = Outbox::default();
        // More than a batch, to two receivers, and one address an IPv4 socket cannot send to.
        let refused: SocketAddr = "[::1]:5060".parse().unwrap();
        for i in 0..(BATCH * 2 + 5) {
            let to = if i % 2 == 0 { a.local_addr().unwrap() } else { b.local_addr().unwrap() };
            outbox.push(&sender, to, Bytes::from(format!("n{i}"))).await;
            if i == 3 {
                outbox.push(&sender, refused, Bytes::from_static(b"lost")).await;
            }
        }
        outbox.flush().await;
        let mut buf = [0u8; 64];
        for i in 0..(BATCH * 2 + 5) {
            let at = if i % 2 == 0 { &a } else { &b };
            let (n, from) = at.recv_from(&mut buf).await.unwrap();
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), format!("n{i}"));
            assert_eq!(from, sender.local_addr().unwrap());
        }
        assert!(outbox.queued.is_empty());
    }

    #[tokio::test]
    async fn an_inbox_takes_several_datagrams_and_the_largest_whole() {
        let socket = loopback().await;
        let local = socket.local_addr().unwrap();
        let (a, b) = (loopback().await, loopback().await);
        for i in 0..(BATCH + 8) {
            let from = if i % 2 == 0 { &a } else { &b };
            from.send_to(format!("d{i}").as_bytes(), local).await.unwrap();
        }
        // The largest payload of an IPv4 datagram; it lands whole in its slot.
        b.send_to(&vec![b'x'; 65_507], local).await.unwrap();
        let mut inbox = Inbox::default();
        let mut seen = Vec::new();
        while seen.len() < BATCH + 9 {
            inbox.receive(&socket).await.unwrap();
            let got: Vec<_> = inbox.datagrams().map(|(d, f)| (d.to_vec(), f)).collect();
            assert!(!got.is_empty() && got.len() <= BATCH, "{} in one receive", got.len());
            seen.extend(got);
        }
        for (i, (data, from)) in seen.iter().take(BATCH + 8).enumerate() {
            assert_eq!(data, format!("d{i}").as_bytes());
            let sent_by = if i % 2 == 0 { &a } else { &b };
            assert_eq!(*from, sent_by.local_addr().unwrap());
        }
        let (last, from) = &seen[BATCH + 8];
        assert_eq!(last.len(), 65_507);
        assert_eq!(*from, b.local_addr().unwrap());
    }
}
