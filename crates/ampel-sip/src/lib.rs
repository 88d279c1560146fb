//! Ampel's SIP wire formats: SIP messages, PIDF presence documents, dialog-info documents and
//! digest authentication. Everything here is pure: bytes in, values out, and back. Sockets,
//! transactions, subscriptions and the hub live in the server's SIP front end.

pub mod dialog_info;
pub mod digest;
pub mod message;
pub mod pidf;
pub mod xml;
