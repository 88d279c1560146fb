//! Preparing a run through the public REST interface: the users, a token for each watching
//! connection, an open device session for each user that is updated by heartbeats, and the plan
//! of who watches whom.
//!
//! Nothing here is measured; it only has to be quick, so requests go out with a bounded number
//! in flight.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::json;

/// The shape of a run.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Users in the directory.
    pub users: usize,
    /// Watching WebSocket connections.
    pub connections: usize,
    /// Subscriptions over all connections.
    pub subscriptions: usize,
}

/// The most subscriptions Ampel accepts on one connection.
const MAX_PER_CONNECTION: usize = 10_000;
/// The most ids one subscribe command may carry.
pub const CHUNK: usize = 1000;

/// How a user's presence is changed during the run.
#[derive(Clone, Debug)]
pub enum Kind {
    /// `PUT .../presence/manual`; the note carries the send time.
    Manual,
    /// `PUT .../sessions/{sid}` on this session.
    Session(String),
}

/// One user as the load sees it.
#[derive(Clone, Debug)]
pub struct User {
    /// `uNNNNN@example.com`.
    pub id: String,
    /// How it is updated.
    pub kind: Kind,
    /// How many connections watch it.
    pub watchers: u32,
}

/// One watching connection: whose token it uses and whom it watches.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The owner's token.
    pub token: String,
    /// The watched users, by index.
    pub watches: Vec<usize>,
}

/// Everything the run needs after set-up.
#[derive(Debug)]
pub struct Prepared {
    /// The users, by index.
    pub users: Vec<User>,
    /// The connections.
    pub connections: Vec<Connection>,
}

/// The id of user `i`.
pub fn user_id(i: usize) -> String {
    format!("u{i:06}@example.com")
}

impl Sizes {
    /// Checks that the shape can be served: no connection watches a user twice or more users
    /// than Ampel allows.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.users == 0 || self.connections == 0 || self.subscriptions == 0 {
            bail!("users, connections and subscriptions must all be at least 1");
        }
        let most = self.subscriptions.div_ceil(self.connections);
        if most > self.users {
            bail!("{most} subscriptions per connection but only {} users", self.users);
        }
        if most > MAX_PER_CONNECTION {
            bail!("{most} subscriptions per connection, Ampel accepts {MAX_PER_CONNECTION}");
        }
        Ok(())
    }

    /// Whom connection `c` watches: a window of consecutive users that starts where the
    /// previous connection's ended, so that every user gets the same number of watchers
    /// (`subscriptions / users`, give or take one).
    fn watches(&self, c: usize) -> Vec<usize> {
        let base = self.subscriptions / self.connections;
        let extra = self.subscriptions % self.connections;
        let count = base + usize::from(c < extra);
        let start = c * base + c.min(extra);
        (start..start + count).map(|i| i % self.users).collect()
    }
}

/// Creates the users, the tokens and the sessions, and plans the subscriptions.
pub async fn prepare(
    client: &reqwest::Client,
    addr: SocketAddr,
    admin: &str,
    sizes: Sizes,
    in_flight: usize,
) -> anyhow::Result<Prepared> {
    let api = Api { client, base: format!("http://{addr}/api/v1"), admin };

    let started = Instant::now();
    futures_util::stream::iter(0..sizes.users)
        .map(|i| api.create_user(i))
        .buffer_unordered(in_flight)
        .try_collect::<()>()
        .await?;
    eprintln!("  {} users created in {:.1} s", sizes.users, started.elapsed().as_secs_f64());

    let owners = sizes.connections.min(sizes.users);
    let tokens: Vec<String> = futures_util::stream::iter(0..owners)
        .map(|i| api.create_token(i))
        .buffered(in_flight)
        .try_collect()
        .await?;

    // Odd users are changed by session heartbeats, even ones by manual statuses. A user is
    // only ever changed one way, so that each change flips what its watchers see: a manual
    // status would outrank a device's state and swallow its changes.
    let started = Instant::now();
    let session_users: Vec<usize> = (1..sizes.users).step_by(2).collect();
    let sessions: Vec<String> = futures_util::stream::iter(session_users.iter().copied())
        .map(|i| api.open_session(i))
        .buffered(in_flight)
        .try_collect()
        .await?;
    eprintln!("  {} sessions opened in {:.1} s", sessions.len(), started.elapsed().as_secs_f64());

    Ok(plan(sizes, &tokens, sessions))
}

fn plan(sizes: Sizes, tokens: &[String], sessions: Vec<String>) -> Prepared {
    let mut sessions = sessions.into_iter();
    let mut users: Vec<User> = (0..sizes.users)
        .map(|i| User {
            id: user_id(i),
            kind: if i % 2 == 1 {
                Kind::Session(sessions.next().expect("one session per odd user"))
            } else {
                Kind::Manual
            },
            watchers: 0,
        })
        .collect();
    let connections: Vec<Connection> = (0..sizes.connections)
        .map(|c| Connection { token: tokens[c % tokens.len()].clone(), watches: sizes.watches(c) })
        .collect();
    for u in connections.iter().flat_map(|c| &c.watches) {
        users[*u].watchers += 1;
    }
    Prepared { users, connections }
}

struct Api<'a> {
    client: &'a reqwest::Client,
    base: String,
    admin: &'a str,
}

#[derive(Deserialize)]
struct TokenView {
    token: String,
}

#[derive(Deserialize)]
struct SessionView {
    session_id: String,
}

impl Api<'_> {
    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let response = self
            .client
            .post(&url)
            .bearer_auth(self.admin)
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            bail!("POST {path} answered {status}: {text}");
        }
        Ok(response)
    }

    async fn create_user(&self, i: usize) -> anyhow::Result<()> {
        self.post("/users", json!({ "id": user_id(i), "name": format!("User {i}") })).await?;
        Ok(())
    }

    async fn create_token(&self, i: usize) -> anyhow::Result<String> {
        let response = self.post(&format!("/users/{}/tokens", user_id(i)), json!({})).await?;
        Ok(response.json::<TokenView>().await?.token)
    }

    async fn open_session(&self, i: usize) -> anyhow::Result<String> {
        let path = format!("/users/{}/sessions", user_id(i));
        let response = self.post(&path, json!({ "device": "bench" })).await?;
        Ok(response.json::<SessionView>().await?.session_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_gets_the_same_number_of_watchers() {
        let sizes = Sizes { users: 10_000, connections: 1000, subscriptions: 100_000 };
        let prepared = plan(sizes, &["t".to_owned()], vec![String::new(); 5000]);
        assert!(prepared.users.iter().all(|u| u.watchers == 10));
        assert!(prepared.connections.iter().all(|c| c.watches.len() == 100));
    }

    #[test]
    fn uneven_sizes_spread_within_one() {
        let sizes = Sizes { users: 7, connections: 3, subscriptions: 10 };
        let prepared = plan(sizes, &["t".to_owned()], vec![String::new(); 3]);
        let counts: Vec<usize> = prepared.connections.iter().map(|c| c.watches.len()).collect();
        assert_eq!(counts, [4, 3, 3]);
        let watchers: Vec<u32> = prepared.users.iter().map(|u| u.watchers).collect();
        assert_eq!(watchers, [2, 2, 2, 1, 1, 1, 1]);
    }
}
