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
