//! Contacts of the mapped mailboxes (`/users/{id}/contacts`), read by polling and kept in
//! memory for the caller lookup: who is calling, by number.
//!
//! Numbers are compared by their digits, and a number written nationally (`030 1234567`) finds
//! the same number written internationally (`+49 30 1234567`) when its last nine digits match.
//! The book holds names and numbers only; it is not persisted and never logged.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use reqwest::Method;
use serde::Deserialize;

use super::Connector;
use super::client::{GraphError, Kind};
use crate::App;

/// How many trailing digits make two numbers the same.
const SIGNIFICANT_DIGITS: usize = 9;
/// The most pages of one contact folder read in one round.
const MAX_PAGES: usize = 50;

/// One contact as found by the lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The Ampel user whose mailbox holds the contact.
    pub owner: String,
    /// The contact's display name.
    pub name: String,
    /// The number as written in the contact.
    pub number: String,
}

/// Every mailbox's contacts, by owner.
#[derive(Debug, Default)]
pub struct Book {
    by_owner: RwLock<HashMap<String, Vec<Contact>>>,
}

impl Book {
    /// Replaces one owner's contacts.
    pub fn replace(&self, owner: &str, contacts: Vec<Contact>) {
        self.by_owner.write().expect("book lock").insert(owner.to_owned(), contacts);
    }

    /// The contact with this number in `owner`'s own contacts; without an owner (an
    /// administrator asking), in anyone's. A mailbox's contacts are its owner's personal data:
    /// they name callers to their owner, never to colleagues.
    pub fn lookup(&self, owner: Option<&str>, number: &str) -> Option<Contact> {
        let wanted = digits(number);
        if wanted.len() < 3 {
            return None;
        }
        let book = self.by_owner.read().expect("book lock");
        let matches = |c: &&Contact| same_number(&digits(&c.number), &wanted);
        match owner {
            Some(owner) => book.get(owner)?.iter().find(matches).cloned(),
            None => book.values().flatten().find(matches).cloned(),
        }
    }
}

fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

fn same_number(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let tail =
        |s: &str| s.get(s.len().saturating_sub(SIGNIFICANT_DIGITS)..).unwrap_or(s).to_owned();
    a.len() >= SIGNIFICANT_DIGITS && b.len() >= SIGNIFICANT_DIGITS && tail(a) == tail(b)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphContact {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    business_phones: Vec<String>,
    #[serde(default)]
    home_phones: Vec<String>,
    #[serde(default)]
    mobile_phone: Option<String>,
}

/// The contacts task.
pub async fn run(app: Arc<App>, graph: Arc<Connector>) {
    let interval = graph.config.contacts_interval.0.unsigned_abs();
    loop {
        for (user, object_id) in graph.users().iter() {
            if app.hub.user(user).is_none() {
                continue;
            }
            match read(&graph, user, object_id).await {
                Ok(contacts) => graph.contacts.replace(user, contacts),
                Err(e) => tracing::debug!(user = %user, error = %e, "graph contacts not read"),
            }
        }
        tokio::time::sleep(interval).await;
    }
}

async fn read(graph: &Connector, owner: &str, object_id: &str) -> Result<Vec<Contact>, GraphError> {
    let mut next = Some(format!(
        "/users/{object_id}/contacts?$select=displayName,businessPhones,homePhones,mobilePhone&$top=100"
    ));
    let mut contacts = Vec::new();
    for _ in 0..MAX_PAGES {
        let Some(path) = next.take() else { break };
        let page = graph.client.send(Kind::Other, Method::GET, &path, None, &[]).await?;
        for value in page["value"].as_array().into_iter().flatten() {
            let Ok(c) = serde_json::from_value::<GraphContact>(value.clone()) else { continue };
            let Some(name) = c.display_name.filter(|n| !n.trim().is_empty()) else { continue };
            let numbers = c.business_phones.into_iter().chain(c.home_phones).chain(c.mobile_phone);
            for number in numbers.filter(|n| !n.trim().is_empty()) {
                contacts.push(Contact { owner: owner.to_owned(), name: name.clone(), number });
            }
        }
        next = page["@odata.nextLink"].as_str().map(str::to_owned);
    }
    Ok(contacts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_national_number_finds_the_international_one_and_own_contacts_come_first() {
        let book = Book::default();
        let contact = |owner: &str, name: &str, number: &str| Contact {
            owner: owner.into(),
            name: name.into(),
            number: number.into(),
        };
        book.replace("a@x", vec![contact("a@x", "Carol", "+49 30 1234567")]);
        book.replace("b@x", vec![contact("b@x", "Dave", "+49 (30) 123-4567")]);
        assert_eq!(book.lookup(Some("a@x"), "030 1234567").unwrap().name, "Carol");
        assert_eq!(book.lookup(Some("b@x"), "0049301234567").unwrap().name, "Dave");
        assert_eq!(book.lookup(None, "+1 555 0100"), None);
        assert_eq!(book.lookup(None, "12"), None);
    }
}
