//! The SIP SIMPLE front end: presence publication (RFC 3903), presence and dialog subscriptions
//! (RFC 3856, RFC 6665, RFC 4235) and PBX call state, over UDP and TCP.
//!
//! The layers follow the protocol: [`transport`] frames messages on sockets and hands each
//! request to [`Sip::handle`] with the peer to answer; [`transaction`] absorbs retransmitted
//! requests by answering them with the response already sent; the method modules ([`publish`],
//! [`subscribe`], [`pbx`]) turn requests into facts for the hub or into watchers of it, and
//! [`notify`] sends the NOTIFYs of every subscription, paced. The wire
//! formats themselves live in the `ampel-sip` crate. Calls (INVITE) are handed to an
//! [`InviteHandler`], which answers 501 until a routing service is plugged in.

pub mod auth;
pub mod notify;
pub mod pbx;
pub mod publish;
pub mod subscribe;
pub mod transaction;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;

use ampel_sip::message::{Message, Request, Response};
use serde::Deserialize;

use crate::App;
use transport::Peer;

/// The `[sip]` section of the server configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipSettings {
    /// Where to listen on UDP and TCP; `ampel serve --sip` sets it.
    pub listen: Option<SocketAddr>,
    /// The digest realm.
    pub realm: String,
    /// Whether every PUBLISH and SUBSCRIBE must authenticate. When false, only users with SIP
    /// credentials must, and others are taken by their From address (for trusted networks).
    pub authenticate: bool,
    /// The shortest publication or subscription accepted, in seconds (423 below it).
    pub min_expires: u32,
    /// The longest, in seconds; longer requests are shortened to it.
    pub max_expires: u32,
    /// The digest algorithms offered in a challenge, in order: SHA-256 first as RFC 8760
    /// §2.4 asks, MD5 for phones that know nothing else. Clients that read only the first
    /// challenge and know only MD5 need `["MD5"]`.
    pub algorithms: Vec<DigestAlgorithm>,
    /// The PBX whose dialog events Ampel subscribes to, if any.
    pub pbx: Option<pbx::PbxSettings>,
}

/// A digest algorithm as the configuration names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DigestAlgorithm {
    /// SHA-256 (RFC 8760).
    #[serde(rename = "SHA-256")]
    Sha256,
    /// MD5 (RFC 2617).
    #[serde(rename = "MD5")]
    Md5,
}

impl DigestAlgorithm {
    /// The digest module's value.
    pub fn algorithm(self) -> ampel_sip::digest::Algorithm {
        match self {
            DigestAlgorithm::Sha256 => ampel_sip::digest::Algorithm::Sha256,
            DigestAlgorithm::Md5 => ampel_sip::digest::Algorithm::Md5,
        }
    }
}

impl Default for SipSettings {
    fn default() -> SipSettings {
        SipSettings {
            listen: None,
            realm: "ampel".to_owned(),
            authenticate: true,
            min_expires: 60,
            max_expires: 3600,
            algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            pbx: None,
        }
    }
}

/// Answers calls. The default answers 501; a routing service replaces it.
pub trait InviteHandler: Send + Sync {
    /// The response to an INVITE.
    fn invite(&self, sip: &Sip, request: &Request, peer: &Peer) -> Response;
}

/// The handler used while Ampel routes no calls.
#[derive(Debug, Default)]
pub struct NoCalls;

impl InviteHandler for NoCalls {
    fn invite(&self, _sip: &Sip, request: &Request, _peer: &Peer) -> Response {
        request.response(501, "Not Implemented", None)
    }
}

/// The SIP front end's state.
pub struct Sip {
    /// The application.
    pub app: Arc<App>,
    /// The settings.
    pub settings: SipSettings,
    /// The address the sockets are bound to.
    pub local: SocketAddr,
    /// Signs nonces.
    secret: [u8; 32],
    /// The UDP socket, for requests Ampel sends on its own.
    udp: Arc<tokio::net::UdpSocket>,
    invite: Box<dyn InviteHandler>,
    transactions: transaction::Cache,
    publications: publish::Publications,
    subscriptions: subscribe::Subscriptions,
    pbx: pbx::Pbx,
}

/// The methods Ampel answers.
pub const ALLOW: &str = "PUBLISH, SUBSCRIBE, NOTIFY, OPTIONS, INVITE, ACK, CANCEL, BYE";

/// Spawns a long-lived task of the SIP front end (a socket's loop, a connection, a
/// subscription) that ends, at the latest, when the server stops: each holds the `App`, and a
/// stopped server must let go of its data directory and its ports.
pub(crate) fn spawn_until_stopped(
    sip: &Sip,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Arc::clone(&sip.app);
    tokio::spawn(async move {
        tokio::select! {
            () = task => {}
            () = app.stopped() => {}
        }
    });
}

impl Sip {
    /// Binds the sockets and starts serving SIP.
    pub async fn start(
        app: Arc<App>,
        settings: SipSettings,
        addr: SocketAddr,
    ) -> std::io::Result<Arc<Sip>> {
        Sip::start_with(app, settings, addr, Box::new(NoCalls)).await
    }

    /// Like [`Sip::start`] with a handler for calls.
    pub async fn start_with(
        app: Arc<App>,
        settings: SipSettings,
        addr: SocketAddr,
        invite: Box<dyn InviteHandler>,
    ) -> std::io::Result<Arc<Sip>> {
        let (udp, tcp, local) = transport::bind(addr).await?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the operating system provides randomness");
        let sip = Arc::new(Sip {
            app,
            settings,
            local,
            secret,
            udp: Arc::clone(&udp),
            invite,
            transactions: transaction::Cache::default(),
            publications: publish::Publications::default(),
            subscriptions: subscribe::Subscriptions::default(),
            pbx: pbx::Pbx::default(),
        });
        transport::spawn(Arc::clone(&sip), udp, tcp);
        notify::spawn(&sip);
        pbx::spawn(Arc::clone(&sip));
        tracing::info!(sip = %local, "sip is serving");
        Ok(sip)
    }

    /// Handles one message from a peer.
    pub async fn receive(self: &Arc<Self>, message: Message, peer: Peer) {
        match message {
            Message::Request(request) => {
                if request.method == "ACK" {
                    return;
                }
                if let Some(cached) = self.transactions.retransmitted(&request) {
                    peer.send(cached).await;
                    return;
                }
                let response = self.handle(&request, &peer).await;
                let bytes = response.to_bytes();
                self.transactions.remember(&request, &bytes);
                peer.send(bytes).await;
                if request.method == "SUBSCRIBE" {
                    subscribe::after_response(self, &response);
                }
            }
            Message::Response(response) => self.response(&response).await,
        }
    }

    /// The response to a request.
    async fn handle(self: &Arc<Self>, request: &Request, peer: &Peer) -> Response {
        if !request.uri.starts_with("sip:")
            && !request.uri.starts_with("sips:")
            && !request.uri.starts_with("pres:")
        {
            return request.response(416, "Unsupported URI Scheme", None);
        }
        match request.method.as_str() {
            "PUBLISH" => publish::handle(self, request).await,
            "SUBSCRIBE" => subscribe::handle(self, request, peer).await,
            "NOTIFY" => pbx::notify(self, request).await,
            "INVITE" => self.invite.invite(self, request, peer),
            "OPTIONS" => request
                .response(200, "OK", None)
                .with("allow", ALLOW)
                .with("accept", publish::ACCEPT),
            "CANCEL" | "BYE" => request.response(481, "Call/Transaction Does Not Exist", None),
            _ => request.response(405, "Method Not Allowed", None).with("allow", ALLOW),
        }
    }

    /// A response to a request Ampel sent (a NOTIFY or a SUBSCRIBE to the PBX).
    async fn response(self: &Arc<Self>, response: &Response) {
        let Some(call_id) = response.header("call-id") else { return };
        let method =
            response.header("cseq").and_then(|c| c.split_whitespace().nth(1)).unwrap_or("");
        match method {
            "NOTIFY" => self.subscriptions.answered(response),
            "SUBSCRIBE" => self.pbx.answered(self, call_id, response).await,
            _ => {}
        }
    }

    /// The user `aor` names, when Ampel has one. Phones configured with Ampel's address as
    /// their domain (`sip:alice@127.0.0.1`) name a user by the user part alone; that is
    /// accepted when exactly one user has that name.
    pub fn user(&self, aor: &str) -> Option<Arc<crate::hub::Slot>> {
        if let Some(slot) = self.app.hub.user(aor) {
            return Some(slot);
        }
        let (name, host) = aor.split_once('@')?;
        if host != self.local.ip().to_string() && host != "localhost" {
            return None;
        }
        let prefix = format!("{name}@");
        let mut named = self.app.hub.records().into_iter().filter(|r| r.id.starts_with(&prefix));
        match (named.next(), named.next()) {
            (Some(only), None) => self.app.hub.user(&only.id),
            _ => None,
        }
    }

    /// The secret nonces are signed with.
    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }
}

/// A random token for tags, branches and entity tags.
pub(crate) fn random_token() -> String {
    let mut raw = [0u8; 10];
    getrandom::fill(&mut raw).expect("the operating system provides randomness");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}
