//! Ampel's calendar reading: iCalendar feeds to busy intervals and the state at an instant.
//!
//! The crate is pure like the core: no I/O, no clock. It reads a feed's bytes leniently
//! ([`read`]), resolves its time zones (IANA, Windows, `VTIMEZONE`), expands recurrences over a
//! window ([`expand`]) and lays the occurrences out as a [`Timeline`] that answers "what does
//! the calendar say now, and until when". Fetching feeds and turning timelines into facts is the
//! server's business.

mod expand;
mod feed;
mod show_as;
mod text;
mod timeline;
mod value;
mod windows_zones;
mod zone;

pub use expand::{Expansion, Occurrence, expand};
pub use feed::{Calendar, Event, ReadError, ReadOptions, Warning, read};
pub use show_as::{parse_busy_status, strength};
pub use timeline::{Segment, State, Timeline};
pub use windows_zones::iana_for as iana_for_windows_zone;
