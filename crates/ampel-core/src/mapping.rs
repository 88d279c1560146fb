//! Mappings between Ampel's presence vocabulary and the vocabularies of other systems, each
//! tested in both directions.
//!
//! A mapping works on words that are already out of their wire format: a deserialised Graph
//! presence body, the element names a SIP front end found in a PIDF document. Reading and writing
//! JSON on the wire or XML in a SIP message is the front ends' business; what the words mean is
//! part of the model, which is why the mappings live in the pure core. [`graph`] speaks Microsoft
//! Graph presence (Teams), [`pidf`] PIDF basic status with RPID activities (SIP phones).

pub mod graph;
pub mod pidf;
