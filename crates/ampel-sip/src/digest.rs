//! HTTP digest authentication for SIP (RFC 3261 §22.4) with SHA-256 (RFC 8760) and MD5.
//!
//! Ampel stores no password, only `HA1 = H(username:realm:password)` for each algorithm, so a
//! leaked settings table does not hand out the passwords. A nonce carries its issue time, a
//! random salt and a keyed hash of both, so any nonce Ampel made within [`NONCE_LIFETIME_S`] is
//! recognised without a table of issued nonces, and an older one is answered with `stale=true`.
//! What is kept is the nonce count last used with each nonce, by the caller, for as long as
//! the nonce lives: that is what refuses a replayed request.

use md5::Md5;
use sha2::{Digest, Sha256};

/// How long a nonce is good for, in seconds.
pub const NONCE_LIFETIME_S: i64 = 300;

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5, what most phones still send.
    Md5,
    /// SHA-256 (RFC 8760), offered first.
    Sha256,
}

impl Algorithm {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// The lowercase hex hash of `text`.
    pub fn hash(self, text: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(text.as_bytes())),
            Algorithm::Sha256 => hex(&Sha256::digest(text.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `HA1` for a user, realm and password.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hash(&format!("{username}:{realm}:{password}"))
}

/// A fresh nonce issued at `now_s` (seconds) under the server's `secret`. `salt` is random, so
/// that two challenges in the same second get different nonces and their counts stay apart.
pub fn nonce(secret: &[u8], now_s: i64, salt: u64) -> String {
    format!("{now_s:x}.{salt:x}.{}", mac(secret, now_s, salt))
}

fn mac(secret: &[u8], at: i64, salt: u64) -> String {
    let mut h = Sha256::new();
    h.update(secret);
    h.update(at.to_be_bytes());
    h.update(salt.to_be_bytes());
    hex(&h.finalize()[..12])
}

/// When Ampel issued `nonce`, in seconds; `None` when Ampel did not make it.
pub fn nonce_issued(secret: &[u8], nonce: &str) -> Option<i64> {
    let mut parts = nonce.splitn(3, '.');
    let at = i64::from_str_radix(parts.next()?, 16).ok()?;
    let salt = u64::from_str_radix(parts.next()?, 16).ok()?;
    (mac(secret, at, salt) == parts.next()?).then_some(at)
}

/// Whether a nonce is one Ampel made: `Some(true)` when fresh, `Some(false)` when stale,
/// `None` when forged.
pub fn nonce_fresh(secret: &[u8], nonce: &str, now_s: i64) -> Option<bool> {
    let at = nonce_issued(secret, nonce)?;
    Some((0..=NONCE_LIFETIME_S).contains(&(now_s - at)))
}

/// The WWW-Authenticate value for a challenge.
pub fn challenge(realm: &str, nonce: &str, algorithm: Algorithm, stale: bool) -> String {
    let stale = if stale { ", stale=true" } else { "" };
    format!(
        "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}",
        algorithm.as_str()
    )
}

/// The fields of an Authorization header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The realm.
    pub realm: String,
    /// The nonce answered.
    pub nonce: String,
    /// The digest URI.
    pub uri: String,
    /// The response hash.
    pub response: String,
    /// The algorithm; MD5 when left out.
    pub algorithm: Option<String>,
    /// `auth` or none.
    pub qop: Option<String>,
    /// The nonce count.
    pub nc: Option<String>,
    /// The client nonce.
    pub cnonce: Option<String>,
}

impl Credentials {
    /// Reads an Authorization value; `None` unless it is a digest with the required fields.
    pub fn parse(value: &str) -> Option<Credentials> {
        let rest =
            value.trim().strip_prefix("Digest").or_else(|| value.trim().strip_prefix("digest"))?;
        let mut c = Credentials::default();
        for (k, v) in params(rest) {
            let slot = match k.to_ascii_lowercase().as_str() {
                "username" => &mut c.username,
                "realm" => &mut c.realm,
                "nonce" => &mut c.nonce,
                "uri" => &mut c.uri,
                "response" => &mut c.response,
                "algorithm" => {
                    c.algorithm = Some(v);
                    continue;
                }
                "qop" => {
                    c.qop = Some(v);
                    continue;
                }
                "nc" => {
                    c.nc = Some(v);
                    continue;
                }
                "cnonce" => {
                    c.cnonce = Some(v);
                    continue;
                }
                _ => continue,
            };
            *slot = v;
        }
        let complete = !c.username.is_empty() && !c.nonce.is_empty() && !c.response.is_empty();
        complete.then_some(c)
    }

    /// The algorithm named, `None` for one Ampel does not know.
    pub fn algorithm(&self) -> Option<Algorithm> {
        match self.algorithm.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("MD5") => Some(Algorithm::Md5),
            Some("SHA-256") => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    /// The nonce count (`nc`, eight hex digits); a request without one uses its nonce once,
    /// and counts as 1. `None` when `nc` is not a number.
    pub fn count(&self) -> Option<u32> {
        match &self.nc {
            None => Some(1),
            Some(nc) => u32::from_str_radix(nc.trim(), 16).ok(),
        }
    }

    /// Whether the response proves knowledge of the password behind `ha1` (RFC 2617 §3.2.2.1).
    pub fn verify(&self, method: &str, ha1: &str) -> bool {
        let Some(alg) = self.algorithm() else { return false };
        let ha2 = alg.hash(&format!("{method}:{}", self.uri));
        let expected = match (&self.qop, &self.nc, &self.cnonce) {
            (Some(qop), Some(nc), Some(cnonce)) => {
                alg.hash(&format!("{ha1}:{}:{nc}:{cnonce}:{qop}:{ha2}", self.nonce))
            }
            (None, _, _) => alg.hash(&format!("{ha1}:{}:{ha2}", self.nonce)),
            _ => return false,
        };
        // Both are lowercase hex of equal length when genuine; compare without early exit.
        let given = self.response.to_ascii_lowercase();
        given.len() == expected.len()
            && given.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// `name=value` pairs separated by commas, values optionally quoted.
fn params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() && out.len() < 32 {
        let Some((name, after)) = rest.split_once('=') else { break };
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        out.push((name.trim().trim_start_matches(',').trim().to_owned(), value.to_owned()));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5's example, which SIP digest shares.
    #[test]
    fn the_rfc_2617_example_verifies() {
        let header = r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let c = Credentials::parse(header).unwrap();
        let ha1 = ha1(Algorithm::Md5, "Mufasa", "testrealm@host.com", "Circle Of Life");
        assert!(c.verify("GET", &ha1));
        assert!(!c.verify("POST", &ha1));
    }

    #[test]
    fn sha256_round_trip_and_nonces() {
        let secret = b"k";
        let n = nonce(secret, 1000, 7);
        assert_ne!(n, nonce(secret, 1000, 8), "nonces of one second differ");
        assert_eq!(nonce_fresh(secret, &n, 1100), Some(true));
        assert_eq!(nonce_fresh(secret, &n, 1000 + NONCE_LIFETIME_S + 1), Some(false));
        assert_eq!(nonce_fresh(secret, "3e8.7.00", 1000), None);
        assert_eq!(nonce_fresh(secret, &n.replacen(".7.", ".8.", 1), 1000), None);
        assert_eq!(nonce_issued(secret, &n), Some(1000));
        let ha1 = ha1(Algorithm::Sha256, "alice", "ampel", "pw");
        let ha2 = Algorithm::Sha256.hash("PUBLISH:sip:alice@ampel");
        let response = Algorithm::Sha256.hash(&format!("{ha1}:{n}:00000001:c:auth:{ha2}"));
        let header = format!(
            "Digest username=\"alice\", realm=\"ampel\", nonce=\"{n}\", uri=\"sip:alice@ampel\", algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"c\", response=\"{response}\""
        );
        let c = Credentials::parse(&header).unwrap();
        assert!(c.verify("PUBLISH", &ha1));
        assert_eq!(c.count(), Some(1));
        let c = Credentials { nc: Some("0000001a".into()), ..c };
        assert_eq!(c.count(), Some(26));
        assert_eq!(Credentials { nc: Some("x".into()), ..c }.count(), None);
    }
}
