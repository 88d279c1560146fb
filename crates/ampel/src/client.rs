//! The command-line client: reads and sets presence on a running server through the REST
//! interface, and watches it over Server-Sent Events.

use std::process::ExitCode;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

/// How to reach the server.
///
/// The server and the token fall back to the environment here rather than through clap's
/// `env`: clap counts a value from the environment as given on the command line and writes it
/// into the usage line of every error, where it reads as if it were required.
#[derive(Debug, clap::Args)]
pub struct Connection {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        help = format!("The server's base URL [env: {SERVER_ENV}] [default: {DEFAULT_SERVER}]")
    )]
    server: Option<String>,
    /// A bearer token.
    #[arg(
        long,
        global = true,
        help = format!(
            "A bearer token (a user's, or the administrator's from DATA/admin.token) \
             [env: {TOKEN_ENV}]"
        )
    )]
    token: Option<String>,
    /// Print the server's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

/// The environment variable with the server's base URL.
const SERVER_ENV: &str = "AMPEL_SERVER";
/// The environment variable with the bearer token.
const TOKEN_ENV: &str = "AMPEL_TOKEN";
/// The server's base URL when neither `--server` nor the environment names one.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Client commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Shows users' presence.
    Status {
        /// Users, `user@domain`.
        #[arg(required = true)]
        users: Vec<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Sets a manual status.
    Set {
        /// The user.
        user: String,
        /// available, away, be-right-back (brb), busy, do-not-disturb (dnd), or offline (appear
        /// offline).
        #[arg(value_parser = availability)]
        availability: String,
        /// A more specific activity (focusing, out-of-office, ...).
        #[arg(long)]
        activity: Option<String>,
        /// A note for colleagues.
        #[arg(long)]
        note: Option<String>,
        /// The note's language (de, en, ...).
        #[arg(long)]
        lang: Option<String>,
        /// When the status ends: an instant (RFC 3339) or a duration from now ("30m", "2h").
        #[arg(long, allow_hyphen_values = true)]
        until: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Clears the manual status.
    Clear {
        /// The user.
        user: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Prints every change of users' presence as it happens.
    Watch {
        /// Users, `user@domain`.
        #[arg(required = true)]
        users: Vec<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Explains why a user is shown as they are.
    Explain {
        /// The user.
        user: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Asks what happens to a call, and why.
    Route {
        /// The caller: a number, a user address, or `anonymous`.
        #[arg(long)]
        from: String,
        /// The callee, `user@domain`.
        #[arg(long)]
        to: String,
        /// The caller's class when known: internal, external, vip or emergency.
        #[arg(long)]
        class: Option<String>,
        /// The caller's language for the announcement (de, en).
        #[arg(long)]
        lang: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Looks up who a phone number belongs to.
    Lookup {
        /// The number.
        number: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Manages users (administrator).
    #[command(subcommand)]
    User(UserCommand),
}

/// User administration.
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Creates a user.
    Add {
        /// `user@domain`.
        id: String,
        /// The name people know the user by.
        #[arg(long)]
        name: String,
        /// Groups (teams), comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Language (de, en).
        #[arg(long)]
        lang: Option<String>,
        /// Time zone (Europe/Berlin).
        #[arg(long)]
        tz: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Creates a token for a user and prints it.
    Token {
        /// `user@domain`.
        id: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Sets a user's password for the web page, read from the first line of standard input.
    Password {
        /// `user@domain`.
        id: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// Runs a client command.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(dispatch(command))
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Status { users, conn } => {
            let body = Client::new(&conn)?
                .get(&format!("/api/v1/presence?users={}", users.join(",")))
                .await?;
            for p in body["presences"].as_array().into_iter().flatten() {
                conn.print(p, describe);
            }
        }
        Command::Set { user, availability, activity, note, lang, until, conn } => {
            let until = until.map(|u| parse_until(&u)).transpose()?;
            let body = json!({
                "availability": availability, "activity": activity, "note": note,
                "lang": lang, "until": until,
            });
            let path = format!("/api/v1/users/{user}/presence/manual");
            let answer = Client::new(&conn)?
                .send(reqwest::Method::PUT, &path, Some(strip_nulls(body)))
                .await?;
            conn.print(&answer, describe);
        }
        Command::Clear { user, conn } => {
            let path = format!("/api/v1/users/{user}/presence/manual");
            let answer = Client::new(&conn)?.send(reqwest::Method::DELETE, &path, None).await?;
            conn.print(&answer, describe);
        }
        Command::Watch { users, conn } => watch(&conn, &users).await?,
        Command::Explain { user, conn } => {
            let body =
                Client::new(&conn)?.get(&format!("/api/v1/users/{user}/presence/explain")).await?;
            conn.print(&body, describe_explanation);
        }
        Command::Route { from, to, class, lang, conn } => {
            let body = strip_nulls(json!({ "from": from, "to": to, "class": class, "lang": lang }));
            let answer = Client::new(&conn)?
                .send(reqwest::Method::POST, "/api/v1/route", Some(body))
                .await?;
            conn.print(&answer, describe_route);
        }
        Command::Lookup { number, conn } => {
            let encoded: String = number
                .bytes()
                .map(|b| match b {
                    b'0'..=b'9'
                    | b'a'..=b'z'
                    | b'A'..=b'Z'
                    | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b':'
                    | b'@' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            let answer =
                Client::new(&conn)?.get(&format!("/api/v1/lookup?number={encoded}")).await?;
            conn.print(&answer, |f| {
                let number = f["number"].as_str().unwrap_or("-");
                match f["name"].as_str() {
                    Some(name) => {
                        format!("{number}  {name} ({})", f["origin"].as_str().unwrap_or(""))
                    }
                    None => format!("{number}  unknown"),
                }
            });
        }
        Command::User(command) => user(command).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A routing decision in a few lines: what happens, why, and what the caller hears.
fn describe_route(d: &Value) -> String {
    let action = d["action"].as_str().unwrap_or("?");
    let mut text = match d["target"].as_str() {
        Some(target) => format!("{action} -> {target}"),
        None => action.to_owned(),
    };
    text.push_str(&format!("  (rule {})", d["reason"].as_str().unwrap_or("?")));
    if let Some(explanation) = d["explanation"].as_str() {
        text.push_str(&format!("\n{explanation}"));
    }
    if let Some(announcement) = d["announcement"].as_object() {
        let words = announcement["text"].as_str().unwrap_or_default();
        text.push_str(&format!("\nannouncement: {words}"));
        if let Some(url) = announcement.get("audio_url").and_then(Value::as_str) {
            text.push_str(&format!("\naudio: {url}"));
        }
    }
    text
}

async fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add { id, name, groups, lang, tz, conn } => {
            let body = strip_nulls(
                json!({ "id": id, "name": name, "groups": groups, "lang": lang, "tz": tz }),
            );
            let answer = Client::new(&conn)?
                .send(reqwest::Method::POST, "/api/v1/users", Some(body))
                .await?;
            conn.print(&answer, |u| format!("created {}", u["id"].as_str().unwrap_or_default()));
        }
        UserCommand::Token { id, conn } => {
            let path = format!("/api/v1/users/{id}/tokens");
            let answer = Client::new(&conn)?.send(reqwest::Method::POST, &path, None).await?;
            conn.print(&answer, |t| t["token"].as_str().unwrap_or_default().to_owned());
        }
        UserCommand::Password { id, conn } => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("cannot read the password")?;
            let password = line.trim_end_matches(['\n', '\r']);
            let path = format!("/api/v1/users/{id}/password");
            let body = json!({ "password": password });
            Client::new(&conn)?.send(reqwest::Method::PUT, &path, Some(body)).await?;
            conn.print(&Value::Null, |_| format!("password set for {id}"));
        }
    }
    Ok(())
}

impl Connection {
    fn print(&self, value: &Value, text: impl Fn(&Value) -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", text(value));
        }
    }
}

/// An environment variable's value, unless it is unset or empty.
fn from_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(conn: &Connection) -> anyhow::Result<Client> {
        let Some(token) = conn.token.clone().or_else(|| from_env(TOKEN_ENV)) else {
            bail!("no token: pass --token or set {TOKEN_ENV}");
        };
        let server = conn.server.clone().or_else(|| from_env(SERVER_ENV));
        let server = server.as_deref().unwrap_or(DEFAULT_SERVER);
        Ok(Client {
            http: reqwest::Client::new(),
            base: server.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response =
            request.send().await.with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let detail =
                value["detail"].as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
            let field =
                value["field"].as_str().map(|f| format!(" (field {f})")).unwrap_or_default();
            bail!("{status}: {detail}{field}");
        }
        Ok(value)
    }
}

/// Prints every change until interrupted. When the connection is lost (the server restarts),
/// it connects again, waiting longer after each failure up to five seconds and saying so once
/// per outage; a refusal (a bad token, an unknown user) ends it.
async fn watch(conn: &Connection, users: &[String]) -> anyhow::Result<()> {
    let client = Client::new(conn)?;
    let mut printed = Printed::default();
    let mut backoff = Backoff::default();
    loop {
        match stream_once(&client, conn, users, &mut printed).await {
            Ok(Stream::Refused(reason)) => bail!("{reason}"),
            Ok(Stream::Ended) => {
                // It was connected: the server is probably restarting, so try again soon.
                eprintln!("the stream ended; connecting again");
                backoff = Backoff::default();
                backoff.failed();
            }
            Err(e) => {
                if backoff.failed() {
                    eprintln!("cannot connect ({e}); trying again every few seconds");
                }
            }
        }
        tokio::time::sleep(backoff.wait).await;
    }
}

/// The wait between reconnection attempts: doubling from a quarter second up to [`MAX_WAIT`],
/// so that a restarted server is seen again within seconds.
struct Backoff {
    wait: std::time::Duration,
    /// Attempts failed since the last connection.
    failures: u32,
}

/// The longest wait between reconnection attempts.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { wait: std::time::Duration::from_millis(250), failures: 0 }
    }
}

impl Backoff {
    /// Counts a failed attempt and says whether it is the first of this outage (the one to
    /// report); the wait grows for the next attempt.
    fn failed(&mut self) -> bool {
        self.failures += 1;
        if self.failures > 1 {
            self.wait = (self.wait * 2).min(MAX_WAIT);
        }
        self.failures == 1
    }
}

enum Stream {
    /// A stream the server had accepted ended (closed or broken).
    Ended,
    /// The server refused the stream.
    Refused(String),
}

/// What `watch` last printed of each user, kept across reconnections: the snapshot a new
/// connection starts with is printed only when it tells something new.
#[derive(Debug, Default)]
struct Printed {
    last: std::collections::HashMap<String, Value>,
}

impl Printed {
    /// Records a user's presence and says whether to print it. The first message of a user on
    /// a connection (`snapshot`) is the server's snapshot, not a change: it is printed only when
    /// it differs from what was printed last. `since` is left out of the comparison, as a
    /// restarted server may date an unchanged state anew, and `last_active` too, which moves
    /// with every heartbeat and is never a change by itself.
    fn note(&mut self, presence: &Value, snapshot: bool) -> bool {
        let user = presence["user"].as_str().unwrap_or_default().to_owned();
        let mut seen = presence.clone();
        if let Value::Object(fields) = &mut seen {
            fields.remove("since");
            fields.remove("last_active");
        }
        let same = self.last.get(&user) == Some(&seen);
        self.last.insert(user, seen);
        !(snapshot && same)
    }
}

async fn stream_once(
    client: &Client,
    conn: &Connection,
    users: &[String],
    printed: &mut Printed,
) -> anyhow::Result<Stream> {
    let url = format!("{}/api/v1/stream?users={}", client.base, users.join(","));
    let response = client.http.get(url).bearer_auth(&client.token).send().await?;
    if !response.status().is_success() {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        let detail = body["detail"].as_str().unwrap_or_default().to_owned();
        return Ok(Stream::Refused(format!("{status}: {detail}")));
    }
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut snapshots_seen = std::collections::HashSet::new();
    while let Some(Ok(chunk)) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            for data in event.lines().filter_map(|l| l.strip_prefix("data:")) {
                let value: Value = serde_json::from_str(data.trim())?;
                let user = value["user"].as_str().unwrap_or_default().to_owned();
                let snapshot = snapshots_seen.insert(user);
                if !printed.note(&value, snapshot) {
                    continue;
                }
                let now = Timestamp::now().to_zoned(jiff::tz::TimeZone::system());
                conn.print(&value, |p| format!("{}  {}", now.strftime("%H:%M:%S"), describe(p)));
            }
        }
    }
    Ok(Stream::Ended)
}

/// The availabilities a person may set, as the server spells them.
const SETTABLE: &[&str] =
    &["available", "away", "be-right-back", "busy", "do-not-disturb", "offline"];

/// An availability to set, with the short forms people type (`dnd`, `brb`); `unknown` is what
/// Ampel shows when it knows nothing, so it is not offered.
fn availability(text: &str) -> Result<String, String> {
    let word = text.trim().to_ascii_lowercase().replace(['_', ' '], "-");
    let word = match word.as_str() {
        "dnd" | "donotdisturb" => "do-not-disturb",
        "brb" | "berightback" => "be-right-back",
        "appear-offline" | "invisible" => "offline",
        other => other,
    };
    if SETTABLE.contains(&word) {
        return Ok(word.to_owned());
    }
    Err(format!(
        "`{text}` is not an availability; choose one of {} (dnd and brb work too)",
        SETTABLE.join(", ")
    ))
}

/// An instant, or a duration from now; either must lie in the future.
fn parse_until(text: &str) -> anyhow::Result<Timestamp> {
    let now = Timestamp::now();
    let until = match (text.parse::<Timestamp>(), text.parse::<SignedDuration>()) {
        (Ok(t), _) => t,
        (_, Ok(d)) if d.is_negative() || d.is_zero() => {
            bail!("`{text}` is not a time ahead; give a duration from now like 30m or 2h")
        }
        (_, Ok(d)) => now.checked_add(d)?,
        _ => bail!(
            "`{text}` is neither an instant (like {}) nor a duration from now (like 30m or 2h)",
            example_instant()
        ),
    };
    if until <= now {
        bail!("`{text}` has passed; give a later instant, like {}", example_instant());
    }
    Ok(until)
}

/// An instant for examples in messages: the next full hour at least an hour from now, in UTC.
pub fn example_instant() -> String {
    let now = Timestamp::now().as_second();
    let hour = (now / 3600 + 2) * 3600;
    Timestamp::from_second(hour).map(|t| t.to_string()).unwrap_or_else(|_| now.to_string())
}

fn strip_nulls(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    value
}

/// One line for a presence: `alice@example.com  red busy (in-a-call) until 14:30 "note"`.
fn describe(p: &Value) -> String {
    let text = |key: &str| p[key].as_str().unwrap_or_default();
    let mut line = format!("{}  {}", text("user"), text("color"));
    let availability = text("availability");
    if !availability.is_empty() {
        line.push_str(&format!(" {availability}"));
    }
    let activity = text("activity");
    if !activity.is_empty() && activity != availability {
        line.push_str(&format!(" ({activity})"));
    }
    for flag in ["idle", "out_of_office"] {
        if p[flag].as_bool() == Some(true) {
            line.push_str(&format!(" {}", flag.replace('_', "-")));
        }
    }
    if let Some(until) = p["until"].as_str() {
        line.push_str(&format!(" until {}", local_time(until)));
    }
    if let Some(note) = p["note"]["text"].as_str() {
        line.push_str(&format!(" \"{note}\""));
    }
    if let Some(since) = p["since"].as_str() {
        line.push_str(&format!("  since {}", local_time(since)));
    }
    line
}

/// An RFC 3339 instant in this machine's time zone, to the minute; the date only when it is
/// not today.
fn local_time(instant: &str) -> String {
    let Ok(t) = instant.parse::<Timestamp>() else { return instant.to_owned() };
    let zoned = t.to_zoned(jiff::tz::TimeZone::system());
    let today = Timestamp::now().to_zoned(jiff::tz::TimeZone::system()).date();
    if zoned.date() == today {
        zoned.strftime("%H:%M").to_string()
    } else {
        zoned.strftime("%Y-%m-%d %H:%M").to_string()
    }
}

fn describe_explanation(e: &Value) -> String {
    let rule = e["rule"].as_str().unwrap_or("?");
    let mut out = format!("{}\ndecided by: {}\n", describe(&e["presence"]), rule_words(rule));
    let facts: Vec<&Value> = e["facts"].as_array().into_iter().flatten().collect();
    for f in &facts {
        // A device's end is when its session lapses without a heartbeat, not when its state
        // changes (it turns idle and away before that).
        let lapses = f["state"]["kind"] == "device";
        let ends = match f["until"].as_str() {
            Some(u) if lapses => format!(", session open until {}", local_time(u)),
            Some(u) => format!(" until {}", local_time(u)),
            None => String::new(),
        };
        out.push_str(&format!(
            "  {} {}: {}{ends} — {}\n",
            f["source"].as_str().unwrap_or("?"),
            f["key"].as_str().unwrap_or("?"),
            state_words(&f["state"]),
            verdict_words(&f["verdict"]),
        ));
    }
    if let Some(next) = e["next_change"].as_str() {
        out.push_str(&next_change_words(next, &facts));
        out.push('\n');
    }
    out.trim_end().to_owned()
}

/// What happens at the next change: the deciding fact ending changes the presence; anything
/// else is only an instant at which the server looks again and may find nothing to change.
fn next_change_words(next: &str, facts: &[&Value]) -> String {
    let when = local_time(next);
    let ending = facts.iter().find(|f| {
        f["until"].as_str() == Some(next)
            && matches!(f["verdict"]["verdict"].as_str(), Some("decided"))
    });
    match ending {
        Some(f) => format!(
            "changes by itself at {when}: {} {} ({}) ends",
            f["source"].as_str().unwrap_or("?"),
            f["key"].as_str().unwrap_or("?"),
            state_words(&f["state"]),
        ),
        None => format!("next re-evaluation at {when}"),
    }
}

/// A fact's state in words: `active`, `busy (in-a-call)`, `calendar shows busy`.
fn state_words(state: &Value) -> String {
    let text = |key: &str| state[key].as_str().unwrap_or_default().to_owned();
    let with_activity = |availability: String, activity: String| {
        if activity.is_empty() || activity == availability {
            availability
        } else {
            format!("{availability} ({activity})")
        }
    };
    match state["kind"].as_str().unwrap_or_default() {
        "status" => with_activity(text("availability"), text("activity")),
        "device" => text("state"),
        "call" => format!("call {}", text("state")),
        "calendar" => format!("calendar shows {}", text("show_as")),
        "teams" => {
            let mut words = with_activity(text("availability"), text("activity"));
            if state["out_of_office"].as_bool() == Some(true) {
                words.push_str(", out of office");
            }
            words
        }
        "meeting" if state["presenting"].as_bool() == Some(true) => "presenting".to_owned(),
        "meeting" => "in a meeting".to_owned(),
        "location" => match &state["location"] {
            Value::String(place) => format!("at {place}"),
            Value::Object(map) => {
                let words: Vec<String> = map
                    .values()
                    .filter_map(|v| v.as_str().map(str::to_owned).or_else(|| Some(v.to_string())))
                    .collect();
                format!("at {}", words.join(", "))
            }
            other => format!("at {other}"),
        },
        other => other.to_owned(),
    }
}

/// What became of a fact, in words.
fn verdict_words(verdict: &Value) -> String {
    match verdict["verdict"].as_str().unwrap_or("?") {
        "decided" => "decides the presence".to_owned(),
        "contributed" => "contributes".to_owned(),
        "outranked" => {
            format!("outranked by {}", rule_words(verdict["by"].as_str().unwrap_or("?")))
        }
        "not-ranked" => "not ranked by the policy".to_owned(),
        "no-effect" => match verdict["why"].as_str() {
            Some(why) => format!("no effect: {why}"),
            None => "no effect".to_owned(),
        },
        "not-started" => "not started yet".to_owned(),
        "expired" => "expired".to_owned(),
        other => other.to_owned(),
    }
}

/// A precedence rule, named as people speak of it.
fn rule_words(rule: &str) -> String {
    match rule {
        "manual" => "the manual status".to_owned(),
        "appear-offline" => "the status \"appear offline\"".to_owned(),
        "do-not-disturb" => "the status \"do not disturb\"".to_owned(),
        "call" => "a call".to_owned(),
        "presenting" => "presenting".to_owned(),
        "meeting" => "a live meeting".to_owned(),
        "device-status" => "a device's status".to_owned(),
        "calendar-out-of-office" => "an out-of-office calendar entry".to_owned(),
        "calendar-busy" => "a busy calendar entry".to_owned(),
        "teams" => "Teams".to_owned(),
        "devices" => "the devices".to_owned(),
        "no-facts" => "nothing known".to_owned(),
        other => format!("the rule {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[test]
    fn availabilities_take_common_short_forms_and_never_unknown() {
        assert_eq!(availability("dnd").unwrap(), "do-not-disturb");
        assert_eq!(availability("BRB").unwrap(), "be-right-back");
        assert_eq!(availability("busy").unwrap(), "busy");
        let refused = availability("unknown").unwrap_err();
        assert_eq!(
            refused,
            "`unknown` is not an availability; choose one of available, away, be-right-back, \
             busy, do-not-disturb, offline (dnd and brb work too)"
        );
        assert!(availability("lunch").unwrap_err().starts_with("`lunch` is not an availability"));
    }

    #[test]
    fn reconnecting_waits_at_most_five_seconds_and_reports_an_outage_once() {
        let mut backoff = Backoff::default();
        let reports: Vec<bool> = (0..10).map(|_| backoff.failed()).collect();
        assert_eq!(reports.iter().filter(|r| **r).count(), 1);
        assert!(reports[0]);
        assert_eq!(backoff.wait, MAX_WAIT);
        assert_eq!(MAX_WAIT, std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_snapshot_after_reconnecting_is_printed_only_when_it_tells_something_new() {
        let busy = json!({"user": "a@example.com", "color": "red", "availability": "busy",
                          "since": "2026-12-03T09:00:00Z"});
        let mut printed = Printed::default();
        assert!(printed.note(&busy, true), "the first snapshot");

        let mut redated = busy.clone();
        redated["since"] = json!("2026-12-03T10:00:00Z");
        redated["last_active"] = json!("2026-12-03T10:00:00Z");
        assert!(!printed.note(&redated, true), "the same state after a restart");

        let mut away = busy.clone();
        away["availability"] = json!("away");
        assert!(printed.note(&away, true), "a state that changed during the outage");
        assert!(printed.note(&away, false), "a change on the stream is always printed");
        let mut bob = busy.clone();
        bob["user"] = json!("b@example.com");
        assert!(printed.note(&bob, true), "each user is compared with their own last state");
    }

    #[test]
    fn a_negative_looking_until_reaches_the_check_instead_of_clap() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["ampel", "set", "a@example.com", "away", "--until", "-5m"])
            .unwrap();
        let Command::Set { until, .. } = cli.command else { panic!("not set") };
        assert_eq!(until.as_deref(), Some("-5m"));
    }

    #[test]
    fn until_takes_a_duration_or_a_future_instant_and_explains_a_refusal() {
        let soon = parse_until("30m").unwrap();
        let ahead = soon.duration_since(Timestamp::now()).as_secs();
        assert!((1790..=1800).contains(&ahead), "{ahead}");

        let example: Timestamp = example_instant().parse().unwrap();
        let lead = example.duration_since(Timestamp::now()).as_secs();
        assert!((3600..=7200).contains(&lead), "an hour or two ahead: {example}");
        assert_eq!(example.as_second() % 3600, 0, "a full hour: {example}");

        let past = parse_until("-5m").unwrap_err().to_string();
        assert_eq!(past, "`-5m` is not a time ahead; give a duration from now like 30m or 2h");
        let passed = parse_until("2020-01-01T00:00:00Z").unwrap_err().to_string();
        assert!(passed.starts_with("`2020-01-01T00:00:00Z` has passed; give a later instant"));
        let nonsense = parse_until("soon").unwrap_err().to_string();
        assert!(nonsense.starts_with("`soon` is neither an instant (like 20"), "{nonsense}");
    }

    fn explanation() -> Value {
        json!({
            "user": "alice@example.com",
            "presence": {"user": "alice@example.com", "color": "red", "availability": "busy"},
            "rule": "manual",
            "facts": [
                {"source": "manual", "key": "status", "until": "2026-12-03T18:00:00Z",
                 "state": {"kind": "status", "availability": "busy"},
                 "verdict": {"verdict": "decided"}},
                {"source": "session", "key": "laptop", "until": "2026-12-03T17:23:00Z",
                 "state": {"kind": "device", "state": "active"},
                 "verdict": {"verdict": "outranked", "by": "manual"}},
            ],
            "next_change": "2026-12-03T17:23:00Z",
        })
    }

    #[test]
    fn an_explanation_reads_as_words_and_an_invisible_change_is_a_re_evaluation() {
        let text = describe_explanation(&explanation());
        assert!(text.contains("decided by: the manual status"), "{text}");
        assert!(text.contains("  manual status: busy until "), "{text}");
        assert!(text.contains(" — decides the presence"), "{text}");
        assert!(text.contains("  session laptop: active, session open until "), "{text}");
        assert!(text.contains(" — outranked by the manual status"), "{text}");
        assert!(!text.contains('{'), "no JSON fragments: {text}");
        assert!(text.contains("next re-evaluation at "), "{text}");
        assert!(!text.contains("changes by itself"), "{text}");
    }

    #[test]
    fn the_deciding_fact_ending_is_named_as_the_change() {
        let mut e = explanation();
        e["next_change"] = json!("2026-12-03T18:00:00Z");
        let text = describe_explanation(&e);
        let last = text.lines().last().unwrap();
        assert!(last.starts_with("changes by itself at "), "{text}");
        assert!(last.ends_with(": manual status (busy) ends"), "{text}");
    }
}
