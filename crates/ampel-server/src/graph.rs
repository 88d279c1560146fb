//! Microsoft 365 through Microsoft Graph: Teams presence in, PBX call state out, calendars and
//! contacts in, and a presence facade shaped like Graph's own.
//!
//! The connector ([`Connector`]) runs when the server configuration file has a `[graph]`
//! section. It turns what Graph says into facts (`teams` and `calendar`) and hands them to the
//! hub like any other source; it never decides presence itself. Graph being slow, throttling or
//! down only delays those facts: the other sources go on, and Teams facts expire by the policy's
//! lifetime. The facade ([`facade`]) needs no connector: it is Ampel's own presence in Graph's
//! shapes, for tools written for Teams.
//!
//! - `client`: tokens, throttling, backoff;
//! - `presence_in`: subscriptions, notifications and polling of Teams presence;
//! - `presence_out`: the presence session Ampel sets in Teams while a PBX call runs;
//! - `calendar`: mailboxes read by delta rounds, at once when Graph notifies a change;
//! - `contacts`: mailboxes read by polling;
//! - `webhook`: the endpoints Graph posts notifications to.

pub mod calendar;
pub mod client;
pub mod config;
pub mod contacts;
pub mod facade;
pub mod mapping;
pub mod presence_in;
pub mod presence_out;
pub mod timezone;
mod webhook;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use tokio::sync::mpsc;

use crate::App;
pub use config::{GraphConfig, Secret};

/// The running connector to one tenant.
pub struct Connector {
    /// The configuration.
    pub config: GraphConfig,
    client: client::Client,
    /// The secret Graph repeats in every notification, so that forged ones are told apart.
    client_state: Secret,
    commands: mpsc::Sender<presence_in::Command>,
    receiver: Mutex<Option<mpsc::Receiver<presence_in::Command>>>,
    calendar_commands: mpsc::Sender<calendar::Command>,
    calendar_receiver: Mutex<Option<mpsc::Receiver<calendar::Command>>>,
    /// Ampel user id to Azure AD object id, as it stands now (see [`Connector::users`]).
    users: RwLock<Arc<BTreeMap<String, String>>>,
    outbound: presence_out::Outbound,
    /// Contacts of every mapped mailbox, for the caller lookup.
    pub contacts: contacts::Book,
    /// The running tasks, ended by [`Connector::stop`].
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// How many notification commands may wait for the presence task.
const COMMAND_QUEUE: usize = 1024;

impl Connector {
    /// A connector for a validated configuration; nothing runs until [`spawn`].
    pub fn new(mut config: GraphConfig, metrics: Arc<crate::metrics::Metrics>) -> Connector {
        // Ampel ids are kept in lower case; the file may spell them otherwise.
        config.users = config.users.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let (calendar_commands, calendar_receiver) = mpsc::channel(COMMAND_QUEUE);
        Connector {
            users: RwLock::new(Arc::new(config.users.clone())),
            calendar_commands,
            calendar_receiver: Mutex::new(Some(calendar_receiver)),
            client: client::Client::new(&config, metrics),
            client_state: Secret::new(crate::auth::new_token()),
            config,
            commands,
            receiver: Mutex::new(Some(receiver)),
            outbound: presence_out::Outbound::default(),
            contacts: contacts::Book::default(),
            tasks: Mutex::default(),
        }
    }

    /// Ampel user id to Azure AD object id, as it stands now; every round of every task reads
    /// it anew, so that a changed map takes effect without a restart.
    pub fn users(&self) -> Arc<BTreeMap<String, String>> {
        Arc::clone(&self.users.read().expect("users lock"))
    }

    /// The Ampel user of an Azure AD object id.
    pub fn ampel_user(&self, object_id: &str) -> Option<String> {
        let users = self.users();
        users.iter().find(|(_, id)| id.eq_ignore_ascii_case(object_id)).map(|(u, _)| u.clone())
    }

    /// The Azure AD object id of an Ampel user.
    pub fn object_id(&self, user: &str) -> Option<String> {
        self.users().get(user).cloned()
    }

    /// Ends the connector's tasks; they hold the server's state, which must go when it stops.
    pub fn stop(&self) {
        for task in self.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
    }
}

/// Starts the connector's tasks: presence in, presence out, calendars and contacts.
pub fn spawn(app: &Arc<App>) {
    let Some(graph) = app.graph.clone() else { return };
    // What administrators mapped through the API goes over the file's map from the start.
    let users = mapping::current(app, &graph);
    *graph.users.write().expect("users lock") = Arc::new(users);
    let Some(receiver) = graph.receiver.lock().expect("receiver lock").take() else { return };
    let Some(calendar) = graph.calendar_receiver.lock().expect("receiver lock").take() else {
        return;
    };
    tracing::info!(users = graph.users().len(), "graph connector starts");
    let mut tasks = vec![
        tokio::spawn(presence_in::run(Arc::clone(app), Arc::clone(&graph), receiver)),
        tokio::spawn(calendar::run(Arc::clone(app), Arc::clone(&graph), calendar)),
        tokio::spawn(contacts::run(Arc::clone(app), Arc::clone(&graph))),
    ];
    if graph.config.presence_out {
        tasks.push(tokio::spawn(presence_out::run(Arc::clone(app), Arc::clone(&graph))));
    }
    let mut held = graph.tasks.lock().expect("tasks lock");
    held.extend(tasks.iter().map(tokio::task::JoinHandle::abort_handle));
}

/// A user was created: when the account map names them already, their Teams presence and
/// calendar are read now rather than at the next interval.
pub fn user_created(app: &App, user: &str) {
    let Some(graph) = app.graph.as_deref() else { return };
    let Some(object_id) = graph.object_id(user) else { return };
    let _ = graph.commands.try_send(presence_in::Command::Fetch(vec![object_id.clone()]));
    let _ = graph.calendar_commands.try_send(calendar::Command::Changed(object_id));
}

/// The contact a caller's number belongs to, in the callee's own contacts first and then in
/// every mapped mailbox's; `None` without a connector or a match.
pub fn lookup_caller(app: &App, callee: Option<&str>, number: &str) -> Option<contacts::Contact> {
    app.graph.as_ref()?.contacts.lookup(callee, number)
}

/// The routes: the notification endpoints and the facade.
pub fn routes() -> Router<Arc<App>> {
    Router::new().merge(webhook::routes()).merge(facade::routes())
}
