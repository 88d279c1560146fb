//! Ampel's pure core: the presence model, facts, the policy, aggregation and visibility.
//!
//! Everything here is a plain function of its inputs: facts, the policy and the current time go
//! in; a presence, an explanation and a projection for one viewer come out. The core does no
//! I/O, reads no clock, spawns nothing and is not async, so that every decision Ampel makes can
//! be replayed from a recorded timeline ([`timeline`]) and explained.
//!
//! Wire formats of the front ends (HTTP, SIP) are not the core's business; the mappings to
//! other presence vocabularies are, because they are part of the model ([`mapping`]).

pub mod aggregate;
pub mod fact;
pub mod mapping;
pub mod model;
pub mod policy;
pub mod routing;
pub mod timeline;
pub mod visibility;

pub use aggregate::{Aggregate, Explanation, aggregate};
pub use fact::{Fact, FactState, Source};
pub use model::{Activity, Availability, Color, Location, Note, Presence};
pub use policy::Policy;
