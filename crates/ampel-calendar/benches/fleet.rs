//! The calendars of a whole company: 10,000 users with 200 events each, a quarter of them
//! recurring, read, expanded over the window the server places as facts, laid out as
//! timelines, and then asked "what does each calendar say now".
//!
//! `cargo bench -p ampel-calendar --bench fleet` (set `AMPEL_BENCH_USERS` for another size).
//! One thread; each user's feed is generated, then timed through each step in turn.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use ampel_calendar::{ReadOptions, Timeline, expand, read};
use jiff::{SignedDuration, Timestamp};

const EVENTS: usize = 200;
const RECURRING: usize = EVENTS / 4;

/// A deterministic pseudo-random sequence (xorshift), so that every run reads the same feeds.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// One user's feed: single meetings over two months around `now`, and recurring series of
/// several kinds, in IANA and Windows zones.
fn feed(user: usize, rng: &mut Rng) -> String {
    let mut text = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Ampel bench//EN\r\n");
    let zones = ["Europe/Berlin", "W. Europe Standard Time", "America/New_York", "UTC"];
    let rules = [
        "FREQ=WEEKLY;BYDAY=MO,WE",
        "FREQ=DAILY;COUNT=40",
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU;UNTIL=20270101T000000Z",
        "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
        "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR",
    ];
    for i in 0..EVENTS {
        let zone = zones[rng.next(zones.len() as u64) as usize];
        let recurring = i < RECURRING;
        // Series started up to a year back; single meetings within a month of now.
        let day = 1 + rng.next(28);
        let month = if recurring { 1 + rng.next(12) } else { 12 };
        let year = if recurring { 2025 } else { 2026 };
        let hour = 7 + rng.next(10);
        let minutes = [0, 15, 30, 45][rng.next(4) as usize];
        let _ = write!(
            text,
            "BEGIN:VEVENT\r\nUID:{user}-{i}@example.com\r\nDTSTAMP:20260101T000000Z\r\n\
             DTSTART;TZID={zone}:{year}{month:02}{day:02}T{hour:02}{minutes:02}00\r\n\
             DURATION:PT{}M\r\nSUMMARY:Meeting {i}\r\n",
            [30, 45, 60, 90][rng.next(4) as usize]
        );
        if recurring {
            let _ = write!(text, "RRULE:{}\r\n", rules[rng.next(rules.len() as u64) as usize]);
        }
        match rng.next(10) {
            0 => text.push_str("X-MICROSOFT-CDO-BUSYSTATUS:TENTATIVE\r\n"),
            1 => text.push_str("CLASS:PRIVATE\r\n"),
            2 => text.push_str("TRANSP:TRANSPARENT\r\n"),
            _ => {}
        }
        text.push_str("END:VEVENT\r\n");
    }
    text.push_str("END:VCALENDAR\r\n");
    text
}

/// This process's CPU time (user + system) from `/proc/self/stat`, in seconds; zero elsewhere.
/// The machine may be shared: wall time then overstates the work, CPU time does not.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let users: usize =
        std::env::var("AMPEL_BENCH_USERS").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let now: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
    let from = now.checked_sub(SignedDuration::from_hours(24)).unwrap();
    let to = now.checked_add(SignedDuration::from_hours(36)).unwrap();
    let options = ReadOptions::new(jiff::tz::db().get("Europe/Berlin").unwrap());

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (cpu_start, wall_start) = (cpu_seconds(), Instant::now());
    let mut t_generate = Duration::ZERO;
    let (mut t_read, mut t_expand, mut t_index) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut bytes, mut occurrences, mut segments) = (0usize, 0usize, 0usize);
    let mut timelines = Vec::with_capacity(users);
    // With AMPEL_BENCH_HOLD set every read calendar is kept, as the server keeps the last good
    // one of each source, and the resident memory is printed at the end.
    let hold = std::env::var_os("AMPEL_BENCH_HOLD").is_some();
    let mut held = Vec::new();
    for user in 0..users {
        let t = Instant::now();
        let text = feed(user, &mut rng);
        t_generate += t.elapsed();
        bytes += text.len();

        let t = Instant::now();
        let calendar = read(text.as_bytes(), &options).expect("the generated feed reads");
        t_read += t.elapsed();

        let t = Instant::now();
        let expansion = expand(&calendar, from, to, 5_000);
        t_expand += t.elapsed();
        occurrences += expansion.occurrences.len();

        let t = Instant::now();
        let timeline = Timeline::new(&expansion.occurrences);
        t_index += t.elapsed();
        segments += timeline.segments().len();
        timelines.push(timeline);
        if hold {
            held.push(calendar);
        }
    }

    let t = Instant::now();
    let mut busy = 0;
    for timeline in &timelines {
        let state = black_box(timeline.at(black_box(now)));
        busy += usize::from(state.show_as != ampel_core::fact::ShowAs::Free);
    }
    let t_now = t.elapsed();

    let per_user = |d: Duration| d.as_secs_f64() * 1e6 / users as f64;
    println!("users {users}, events {}, feed bytes {bytes}", users * EVENTS);
    println!("read:    {:>8.2} s  {:>8.1} µs/user", t_read.as_secs_f64(), per_user(t_read));
    println!(
        "expand:  {:>8.2} s  {:>8.1} µs/user  ({occurrences} occurrences)",
        t_expand.as_secs_f64(),
        per_user(t_expand)
    );
    println!(
        "index:   {:>8.3} s  {:>8.1} µs/user  ({segments} segments)",
        t_index.as_secs_f64(),
        per_user(t_index)
    );
    println!(
        "now:     {:>8.3} ms {:>8.3} µs/user  ({busy} users not free)",
        t_now.as_secs_f64() * 1e3,
        per_user(t_now)
    );
    let (cpu, wall) = (cpu_seconds() - cpu_start, wall_start.elapsed().as_secs_f64());
    println!(
        "cpu:     {cpu:>8.2} s of {wall:.2} s wall ({:.0} %), feed generation {:.2} s wall",
        100.0 * cpu / wall,
        t_generate.as_secs_f64()
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss = status.lines().find(|l| l.starts_with("VmRSS")).unwrap_or("VmRSS: unknown");
    println!("memory:  {rss} with {} calendars held", held.len());
}
