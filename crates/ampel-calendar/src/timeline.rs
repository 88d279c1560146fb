//! A user's calendar as a sequence of non-overlapping segments, and what it says at an instant.
//!
//! Where occurrences overlap the strongest shows (out of office, busy, tentative, working
//! elsewhere); free time has no segment. A segment changes where the showing occurrence
//! changes, so each segment has one entry behind it (its subject, its privacy). "Until" is the
//! end of the run of back-to-back segments that show the same.

use ampel_core::fact::ShowAs;
use jiff::Timestamp;

use crate::expand::Occurrence;
use crate::show_as::strength;

/// A stretch of time with one entry showing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Start, inclusive.
    pub start: Timestamp,
    /// End, exclusive.
    pub end: Timestamp,
    /// What shows.
    pub show_as: ShowAs,
    /// The event behind it, an index into [`Calendar::events`](crate::Calendar::events).
    pub event: usize,
}

/// What the calendar says at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    /// What shows; `Free` when nothing does.
    pub show_as: ShowAs,
    /// When that ends: the end of back-to-back entries showing the same, or for free time the
    /// start of the next entry.
    pub until: Option<Timestamp>,
    /// The event that shows, if any.
    pub event: Option<usize>,
}

/// The segments of a set of occurrences.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    segments: Vec<Segment>,
}

impl Timeline {
    /// Builds the timeline; free and zero-length occurrences leave no trace.
    pub fn new(occurrences: &[Occurrence]) -> Timeline {
        let mut occ: Vec<&Occurrence> =
            occurrences.iter().filter(|o| o.end > o.start && o.show_as != ShowAs::Free).collect();
        occ.sort_by_key(|o| o.start);
        let mut bounds: Vec<Timestamp> = occ.iter().flat_map(|o| [o.start, o.end]).collect();
        bounds.sort();
        bounds.dedup();

        let mut segments: Vec<Segment> = Vec::new();
        let mut active: Vec<&Occurrence> = Vec::new();
        let mut next = 0;
        for pair in bounds.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            active.retain(|o| o.end > a);
            while next < occ.len() && occ[next].start <= a {
                active.push(occ[next]);
                next += 1;
            }
            let Some(top) =
                active.iter().max_by_key(|o| (strength(o.show_as), std::cmp::Reverse(o.start)))
            else {
                continue;
            };
            match segments.last_mut() {
                Some(last)
                    if last.end == a && last.show_as == top.show_as && last.event == top.event =>
                {
                    last.end = b;
                }
                _ => segments.push(Segment {
                    start: a,
                    end: b,
                    show_as: top.show_as,
                    event: top.event,
                }),
            }
        }
        Timeline { segments }
    }

    /// The segments, in time order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// What the calendar says at `at`.
    pub fn at(&self, at: Timestamp) -> State {
        let i = self.segments.partition_point(|s| s.end <= at);
        match self.segments.get(i) {
            Some(s) if s.start <= at => {
                State { show_as: s.show_as, until: Some(self.run_end(i)), event: Some(s.event) }
            }
            next => State { show_as: ShowAs::Free, until: next.map(|s| s.start), event: None },
        }
    }

    /// The end of the run of back-to-back segments that show what segment `i` shows.
    pub fn run_end(&self, i: usize) -> Timestamp {
        let show_as = self.segments[i].show_as;
        let mut end = self.segments[i].end;
        for s in &self.segments[i + 1..] {
            if s.start != end || s.show_as != show_as {
                break;
            }
            end = s.end;
        }
        end
    }
}
