//! Bounded fuzzing of the SIP, PIDF and dialog-info parsers, run with every `cargo test`.
//!
//! Real messages and documents are mutated (bytes flipped, cut, repeated, spliced with hostile
//! fragments) by a seeded generator, so a failure names its seed and replays exactly. The
//! parsers must never panic and must stay within their bounds: an accepted message is never
//! larger than the limit, and every refusal is an error value. `AMPEL_FUZZ_CASES` raises the
//! number of cases per target (the default keeps the suite fast).

use ampel_sip::message::{self, MAX_MESSAGE};
use ampel_sip::{dialog_info, pidf};

/// xorshift64*: small, seedable, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const FRAGMENTS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b":",
    b";tag=",
    b"Content-Length: 999999999\r\n",
    b"Content-Length: -1\r\n",
    b"l: 0\r\n",
    b"<!DOCTYPE x [<!ENTITY a \"&a;&a;\">]>",
    b"<!ENTITY e SYSTEM \"file:///etc/passwd\">",
    b"&e;",
    b"&#0;",
    b"&#x110000;",
    b"<![CDATA[",
    b"]]>",
    b"</",
    b"<a xmlns:p=\"urn:ietf:params:xml:ns:pidf\">",
    b"\xff\xfe",
    b"\0",
    b" \t",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 => data.truncate(at),
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            2 => {
                let fragment = FRAGMENTS[rng.below(FRAGMENTS.len())];
                data.splice(at..at, fragment.iter().copied());
            }
            3 if !data.is_empty() => {
                let end = (at + rng.below(64)).min(data.len());
                let piece = data[at.min(end)..end].to_vec();
                for _ in 0..rng.below(50) {
                    data.splice(at..at, piece.iter().copied());
                }
            }
            4 => {
                let end = (at + rng.below(32)).min(data.len());
                data.drain(at.min(end)..end);
            }
            _ => data.insert(at.min(data.len()), rng.next() as u8),
        }
    }
    data
}

fn cases() -> usize {
    std::env::var("AMPEL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

const PUBLISH: &[u8] = b"PUBLISH sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\nCall-ID: a\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nContent-Type: application/pidf+xml\r\nContent-Length: 4\r\n\r\nbody";
const NOTIFY_OK: &[u8] = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: a\r\nCSeq: 2 NOTIFY\r\nl: 0\r\n\r\n";

#[test]
fn the_sip_parser_survives_mutated_messages() {
    let mut rng = Rng(0x5eed_0001);
    for case in 0..cases() {
        let seed = if case % 2 == 0 { PUBLISH } else { NOTIFY_OK };
        let input = mutate(&mut rng, seed);
        for datagram in [true, false] {
            if let Ok((_, used)) = message::parse(&input, datagram) {
                assert!(used <= input.len() && used <= MAX_MESSAGE + 4, "case {case}");
            }
        }
    }
}

#[test]
fn the_pidf_reader_survives_mutated_documents() {
    let seeds: Vec<Vec<u8>> = ["C14a-pidf.xml", "C14c-pidf.xml", "C14e-pidf.xml"]
        .iter()
        .map(|f| std::fs::read(format!("{}/tests/cases/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap())
        .collect();
    let mut rng = Rng(0x5eed_0002);
    for case in 0..cases() {
        let input = mutate(&mut rng, &seeds[case % seeds.len()]);
        if let Ok(doc) = pidf::parse(&input) {
            assert!(doc.notes.len() <= 8, "case {case}");
            assert!(doc.notes.iter().all(|n| n.text.chars().count() <= 500), "case {case}");
        }
    }
}

#[test]
fn the_dialog_info_reader_survives_mutated_documents() {
    let text = std::fs::read_to_string(format!(
        "{}/tests/cases/C16-dialog-info.txt",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let seeds: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split_once(' ').unwrap().1)
        .collect();
    let mut rng = Rng(0x5eed_0003);
    let mut tracker = dialog_info::Tracker::default();
    for case in 0..cases() {
        let input = mutate(&mut rng, seeds[case % seeds.len()].as_bytes());
        if let Ok(info) = dialog_info::parse(&input) {
            assert!(info.dialogs.len() <= 64, "case {case}");
            let _ = tracker.apply("fuzz", &info, jiff::Timestamp::UNIX_EPOCH);
        }
    }
}

/// The billion laughs and its external-entity cousin, spelled out, are refused fast.
#[test]
fn entity_expansion_is_never_attempted() {
    let mut doc = String::from("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol0 \"lol\">");
    for i in 1..10 {
        let refs = format!("&lol{};", i - 1).repeat(10);
        doc.push_str(&format!("<!ENTITY lol{i} \"{refs}\">"));
    }
    doc.push_str("]><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:a@b\"><tuple id=\"t\"><note>&lol9;</note></tuple></presence>");
    assert!(pidf::parse(doc.as_bytes()).is_err());
    assert!(dialog_info::parse(doc.as_bytes()).is_err());
}
