//! Regression tests for faults found by throwing hostile input at the SIP front end of a running
//! server, over raw TCP: each is named after the fault it pins.

mod support;

use std::time::Duration;

use ampel_server::server_file::ServerFile;
use ampel_server::sip::SipSettings;
use support::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server() -> (Server, std::net::SocketAddr) {
    let sip =
        SipSettings { listen: Some("127.0.0.1:0".parse().unwrap()), ..SipSettings::default() };
    let s = Server::start_with_file(ServerFile { sip, ..Default::default() }).await;
    let addr = s.running.sip.as_ref().unwrap().local;
    (s, addr)
}

/// Reads until the server closes the connection; what it sent on the way.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let guard = Duration::from_secs(120);
    tokio::time::timeout(guard, stream.read_to_end(&mut all))
        .await
        .expect("the server closes the connection")
        .expect("the connection closes cleanly");
    all
}

#[tokio::test]
async fn a_tcp_peer_that_sends_nothing_or_half_a_message_is_closed() {
    let (_s, addr) = server().await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"OPTIONS sip:ampel@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9")
        .await
        .unwrap();
    let (silent, half) = tokio::join!(until_closed(&mut silent), until_closed(&mut half));
    assert_eq!((silent.len(), half.len()), (0, 0));
}

#[tokio::test]
async fn a_tcp_content_length_past_the_message_limit_is_refused() {
    let (_s, addr) = server().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = "OPTIONS sip:ampel@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKx\r\n\
         From: <sip:a@b>;tag=1\r\nTo: <sip:ampel@127.0.0.1>\r\nCall-ID: big\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 99999999\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = String::from_utf8(until_closed(&mut stream).await).unwrap();
    assert!(answer.starts_with("SIP/2.0 400 "), "{answer}");
}

/// Sends OPTIONS on a connection and reads the answer's status line.
async fn options(stream: &mut TcpStream, n: u32) -> String {
    let request = format!(
        "OPTIONS sip:ampel@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKo{n}\r\n\
         From: <sip:a@b>;tag=1\r\nTo: <sip:ampel@127.0.0.1>\r\nCall-ID: o{n}\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn one_address_cannot_hold_more_tcp_connections_than_its_share() {
    let sip = SipSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        max_tcp_per_address: 2,
        ..SipSettings::default()
    };
    let s = Server::start_with_file(ServerFile { sip, ..Default::default() }).await;
    let addr = s.running.sip.as_ref().unwrap().local;
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert_eq!(options(&mut first, 1).await, "SIP/2.0 200 OK");
    assert_eq!(options(&mut second, 2).await, "SIP/2.0 200 OK");
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert_eq!(until_closed(&mut third).await.len(), 0, "closed without a word");

    // A connection that ends gives its share back.
    drop(first);
    let mut answer = String::new();
    for n in 0..50 {
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        let _ = fourth.write_all(b"").await;
        let mut probe = [0u8; 1];
        let closed =
            tokio::time::timeout(Duration::from_millis(100), fourth.read(&mut probe)).await;
        if matches!(closed, Ok(Ok(0))) {
            continue;
        }
        answer = options(&mut fourth, 10 + n).await;
        break;
    }
    assert_eq!(answer, "SIP/2.0 200 OK");
    assert_eq!(options(&mut second, 3).await, "SIP/2.0 200 OK");
}
