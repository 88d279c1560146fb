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

use std::net::{IpAddr, SocketAddr};
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
    /// credentials must, and requests from [`trusted_networks`](Self::trusted_networks) are
    /// taken by their From address; requests from anywhere else must still authenticate, so
    /// that a forged UDP source cannot make Ampel send NOTIFYs to a stranger.
    pub authenticate: bool,
    /// The networks whose requests are taken by their From address when `authenticate` is
    /// false, as addresses or CIDR blocks. Default: loopback and the private ranges
    /// (`127.0.0.0/8`, `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, `::1/128`,
    /// `fc00::/7`).
    pub trusted_networks: Vec<Network>,
    /// The most subscriptions one subscriber (the authenticated user, or the From address)
    /// may hold at once; more are refused with 403. Default 1000, above the busiest
    /// attendant console's busy lamp field.
    pub max_subscriptions_per_subscriber: usize,
    /// The most subscriptions held for one source IP address at once; more are refused with
    /// 503 and Retry-After. Default 20000, which leaves room for a proxy or SBC in front of a
    /// site's phones.
    pub max_subscriptions_per_address: usize,
    /// The most TCP connections one IP address may hold at once; further connections from it
    /// are closed at once. Default 64.
    pub max_tcp_per_address: usize,
    /// The shortest publication or subscription accepted, in seconds (423 below it).
    pub min_expires: u32,
    /// The longest, in seconds; longer requests are shortened to it.
    pub max_expires: u32,
    /// The digest algorithms offered in a challenge, in order: SHA-256 first as RFC 8760
    /// §2.4 asks, MD5 for phones that know nothing else. Clients that read only the first
    /// challenge and know only MD5 need `["MD5"]`.
    pub algorithms: Vec<DigestAlgorithm>,
    /// The PBX whose dialog events Ampel subscribes to, if any, and the account it publishes
    /// its users' calls with ([`PbxSettings::publisher`](pbx::PbxSettings::publisher)).
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
            trusted_networks: [
                "127.0.0.0/8",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "::1/128",
                "fc00::/7",
            ]
            .iter()
            .map(|n| n.parse().expect("the default networks are valid"))
            .collect(),
            max_subscriptions_per_subscriber: 1000,
            max_subscriptions_per_address: 20_000,
            max_tcp_per_address: 64,
        }
    }
}

impl SipSettings {
    /// Refuses settings that contradict each other or lock everyone out, naming the key.
    pub fn check(&self) -> Result<(), String> {
        let at_least_one = [
            ("min_expires", self.min_expires as usize),
            ("max_subscriptions_per_subscriber", self.max_subscriptions_per_subscriber),
            ("max_subscriptions_per_address", self.max_subscriptions_per_address),
            ("max_tcp_per_address", self.max_tcp_per_address),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return Err(format!("[sip] {key} must be at least 1"));
        }
        if self.min_expires > self.max_expires {
            return Err(format!(
                "[sip] min_expires ({}) is above max_expires ({}): every request would get 423",
                self.min_expires, self.max_expires
            ));
        }
        Ok(())
    }

    /// Whether requests from `ip` are taken by their From address when authentication is off.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_networks.iter().any(|n| n.contains(ip))
    }
}

/// An IP network, written as an address (`192.0.2.7`) or a CIDR block (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

/// A network that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or a CIDR block such as 10.0.0.0/8")]
pub struct BadNetwork(String);

impl std::str::FromStr for Network {
    type Err = BadNetwork;

    fn from_str(s: &str) -> Result<Network, BadNetwork> {
        let bad = || BadNetwork(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let bits = if addr.to_canonical().is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(bits);
        if prefix > bits {
            return Err(bad());
        }
        Ok(Network { addr, prefix })
    }
}

impl Network {
    /// Whether `ip` lies in the network; an IPv4 address mapped into IPv6 counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        // Both as 128 bits with the address at the top, so one mask serves IPv4 and IPv6.
        let bits = |ip: IpAddr| match ip.to_canonical() {
            IpAddr::V4(v4) => (u128::from(v4.to_bits()) << 96, true),
            IpAddr::V6(v6) => (v6.to_bits(), false),
        };
        let ((net, net_v4), (given, given_v4)) = (bits(self.addr), bits(ip));
        let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
        net_v4 == given_v4 && net & mask == given & mask
    }
}

impl TryFrom<String> for Network {
    type Error = BadNetwork;

    fn try_from(s: String) -> Result<Network, BadNetwork> {
        s.parse()
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
    nonces: auth::NonceCounts,
    publications: publish::Publications,
    subscriptions: subscribe::Subscriptions,
    pbx: pbx::Pbx,
}

impl Sip {
    /// Ends every subscription with a NOTIFY saying Ampel stops, so that subscribers come back
    /// at once after a restart; used by a graceful stop, before the sockets close.
    pub async fn farewell(&self) {
        notify::farewell(self, std::time::Duration::from_secs(2)).await;
    }
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
            nonces: auth::NonceCounts::default(),
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
                match self.transactions.begin(&request) {
                    transaction::Seen::New => {}
                    transaction::Seen::InHand => return,
                    transaction::Seen::Answered(cached) => {
                        peer.send(cached).await;
                        return;
                    }
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
            "PUBLISH" => publish::handle(self, request, peer).await,
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
