// Ampel's page: the presence board, my status, the explanation and the policy page.
// Plain JavaScript without a build step. Everything a colleague typed (names, notes) reaches
// the page only through textContent, never as HTML.
"use strict";

const TEXT = {
  en: {
    skip: "Skip to content", lang: "Language", "lang.auto": "Browser language", signout: "Sign out",
    close: "Close", "nav.board": "Colleagues", "nav.me": "My status", "nav.policy": "Policy",
    "filter.search": "Search by name or address", "filter.group": "Team", "filter.allGroups": "All teams",
    "filter.color": "Colour", "filter.allColors": "All colours",
    "color.green": "Green: available", "color.yellow": "Yellow: away", "color.red": "Red: busy",
    "color.grey": "Grey: offline",
    count: (shown, total) => `Showing ${shown} of ${total} colleagues`,
    more: (n) => `Show ${n} more`,
    favourite: (name) => `Favourite: ${name}`, why: "Why?", whyOf: (name) => `Why is ${name} shown like this?`,
    oof: "Out of office", backAt: (t) => `back at ${t}`, until: (t) => `until ${t}`,
    activeNow: "active now", lastActive: (rel) => `last active ${rel}`,
    "conn.live": "● Live", "conn.connecting": "○ Connecting…",
    "conn.lost": "○ Connection lost; reconnecting…",
    "signin.title": "Sign in", "signin.how": "Sign in with", "signin.withPassword": "address and password",
    "signin.withToken": "a token", "signin.user": "Address (user@domain)", "signin.password": "Password",
    "signin.token": "Token", "signin.submit": "Sign in",
    "signin.hint": "Your administrator gives you a password or a token.",
    "err.user": "Enter your address, such as alice@example.com.", "err.password": "Enter your password.",
    "err.token": "Enter your token.", "err.wrong": "The address or the password is wrong.",
    "err.tokenWrong": "This token is not valid.", "err.network": "The server cannot be reached. Try again.",
    "me.why": "Why am I shown like this?", "me.availability": "Availability",
    "me.note": "Note for colleagues (optional)", "me.until": "Until", "me.untilCustomLabel": "Date and time",
    "me.set": "Set status", "me.appearOffline": "Appear offline", "me.reset": "Reset to automatic",
    "me.now": "Ampel shows you as", "me.sources": "Sources behind it", "me.noSources": "none",
    "me.done": "Saved.",
    "until.none": "No end", "until.30m": "30 minutes", "until.1h": "1 hour", "until.today": "End of today",
    "until.week": "End of this week", "until.custom": "Chosen date and time",
    "err.noteLong": (n) => `The note may have at most ${n} characters.`,
    "err.untilMissing": "Choose a date and time.", "err.untilPast": "Choose a time in the future.",
    "err.availability": "Choose an availability.",
    "policy.effective": "Effective policy file", "policy.candidate": "Check another policy file",
    "policy.check": "Check", "policy.valid": "The policy is valid.",
    "policy.invalid": (where, msg) => `Not valid${where}: ${msg}`,
    "policy.at": (l, c) => ` (line ${l}, column ${c})`, "policy.empty": "Paste a policy file first.",
    "why.shown": (name, state) => `${name} is shown as ${state}.`, "why.rule": "What decided",
    "why.facts": "What Ampel considered", "why.change": "What would change it",
    "why.next": (t) => `Without anything new, it changes by itself at ${t}.`,
    "why.forbidden": "The policy does not let you see why this colleague is shown like this.",
    "why.noFacts": "No source reports anything.",
    yes: "yes",
    availability: {
      available: "Available", away: "Away", "be-right-back": "Be right back", busy: "Busy",
      "do-not-disturb": "Do not disturb", offline: "Offline", unknown: "Unknown",
    },
    activity: {
      available: "Available", away: "Away", "be-right-back": "Be right back", busy: "Busy",
      "do-not-disturb": "Do not disturb", "in-a-call": "In a call", "in-a-conference-call": "In a conference call",
      "in-a-meeting": "In a meeting", presenting: "Presenting", focusing: "Focusing",
      "out-of-office": "Out of office", "off-work": "Off work", inactive: "Inactive", offline: "Offline",
      unknown: "Unknown",
    },
    colorWord: { green: "Green", yellow: "Yellow", red: "Red", grey: "Grey" },
    source: {
      manual: "Set by hand", session: "Device", telephony: "Phone system", calendar: "Calendar",
      teams: "Microsoft Teams", meeting: "Online meeting", location: "Location",
    },
    rule: {
      "appear-offline": "A status “appear offline” is set by hand; it beats everything.",
      "do-not-disturb": "Do not disturb is set by hand; it beats calls and meetings.",
      call: "A call is in progress; a live call beats meetings and statuses set by hand.",
      presenting: "Presenting in an online meeting.",
      manual: "A status is set by hand; it beats the calendar and Teams.",
      meeting: "Taking part in an online meeting.",
      "device-status": "A status is set on a signed-in device.",
      "calendar-out-of-office": "The calendar shows an absence now.",
      "calendar-busy": "The calendar shows a meeting now.",
      teams: "Microsoft Teams reports this status.",
      devices: "The signed-in devices say how active the person is.",
      "no-facts": "No source reports anything, so Ampel shows offline.",
    },
    change: {
      "appear-offline": "Resetting the status to automatic.",
      "do-not-disturb": "The status ending or being reset.",
      call: "The call ending.", presenting: "The presentation ending.",
      manual: "The status ending or being reset to automatic; a call or do not disturb.",
      meeting: "The meeting ending; a call.",
      "device-status": "The device changing its status or signing out.",
      "calendar-out-of-office": "The absence ending; a status set by hand.",
      "calendar-busy": "The meeting's planned end; a call or a status set by hand.",
      teams: "Teams reporting another status; a status set by hand.",
      devices: "Using a device again, or leaving it idle; any other source.",
      "no-facts": "A device signing in or any other source reporting.",
    },
    verdict: {
      decided: "decided", contributed: "contributed", outranked: (r) => `outranked by: ${r}`,
      "not-ranked": "not used by the policy", "no-effect": "no effect", "not-started": "not started yet",
      expired: "ended",
    },
    ruleName: {
      "appear-offline": "appear offline", "do-not-disturb": "do not disturb", call: "call",
      presenting: "presenting", manual: "status set by hand", meeting: "online meeting",
      "device-status": "device status", "calendar-out-of-office": "calendar absence",
      "calendar-busy": "calendar meeting", teams: "Teams", devices: "devices", "no-facts": "no facts",
    },
  },
  de: {
    skip: "Zum Inhalt springen", lang: "Sprache", "lang.auto": "Sprache des Browsers", signout: "Abmelden",
    close: "Schließen", "nav.board": "Kolleginnen und Kollegen", "nav.me": "Mein Status", "nav.policy": "Richtlinie",
    "filter.search": "Nach Name oder Adresse suchen", "filter.group": "Team", "filter.allGroups": "Alle Teams",
    "filter.color": "Farbe", "filter.allColors": "Alle Farben",
    "color.green": "Grün: verfügbar", "color.yellow": "Gelb: abwesend", "color.red": "Rot: beschäftigt",
    "color.grey": "Grau: offline",
    count: (shown, total) => `${shown} von ${total} Personen angezeigt`,
    more: (n) => `${n} weitere anzeigen`,
    favourite: (name) => `Favorit: ${name}`, why: "Warum?", whyOf: (name) => `Warum wird ${name} so angezeigt?`,
    oof: "Außer Haus", backAt: (t) => `zurück um ${t}`, until: (t) => `bis ${t}`,
    activeNow: "gerade aktiv", lastActive: (rel) => `zuletzt aktiv ${rel}`,
    "conn.live": "● Live", "conn.connecting": "○ Verbinde …",
    "conn.lost": "○ Verbindung unterbrochen; verbinde neu …",
    "signin.title": "Anmelden", "signin.how": "Anmelden mit", "signin.withPassword": "Adresse und Passwort",
    "signin.withToken": "einem Token", "signin.user": "Adresse (name@domain)", "signin.password": "Passwort",
    "signin.token": "Token", "signin.submit": "Anmelden",
    "signin.hint": "Passwort oder Token erhalten Sie von Ihrer Administration.",
    "err.user": "Geben Sie Ihre Adresse ein, z. B. alice@example.com.", "err.password": "Geben Sie Ihr Passwort ein.",
    "err.token": "Geben Sie Ihr Token ein.", "err.wrong": "Adresse oder Passwort ist falsch.",
    "err.tokenWrong": "Dieses Token ist nicht gültig.", "err.network": "Der Server ist nicht erreichbar. Versuchen Sie es erneut.",
    "me.why": "Warum werde ich so angezeigt?", "me.availability": "Verfügbarkeit",
    "me.note": "Notiz für Kollegen (optional)", "me.until": "Bis", "me.untilCustomLabel": "Datum und Uhrzeit",
    "me.set": "Status setzen", "me.appearOffline": "Offline erscheinen", "me.reset": "Automatisch",
    "me.now": "Ampel zeigt Sie als", "me.sources": "Quellen dahinter", "me.noSources": "keine",
    "me.done": "Gespeichert.",
    "until.none": "Ohne Ende", "until.30m": "30 Minuten", "until.1h": "1 Stunde", "until.today": "Ende des Tages",
    "until.week": "Ende dieser Woche", "until.custom": "Gewähltes Datum und Uhrzeit",
    "err.noteLong": (n) => `Die Notiz darf höchstens ${n} Zeichen haben.`,
    "err.untilMissing": "Wählen Sie Datum und Uhrzeit.", "err.untilPast": "Wählen Sie einen Zeitpunkt in der Zukunft.",
    "err.availability": "Wählen Sie eine Verfügbarkeit.",
    "policy.effective": "Wirksame Richtliniendatei", "policy.candidate": "Eine andere Richtliniendatei prüfen",
    "policy.check": "Prüfen", "policy.valid": "Die Richtlinie ist gültig.",
    "policy.invalid": (where, msg) => `Ungültig${where}: ${msg}`,
    "policy.at": (l, c) => ` (Zeile ${l}, Spalte ${c})`, "policy.empty": "Fügen Sie zuerst eine Richtliniendatei ein.",
    "why.shown": (name, state) => `${name} wird als ${state} angezeigt.`, "why.rule": "Was entschieden hat",
    "why.facts": "Was Ampel berücksichtigt hat", "why.change": "Was es ändern würde",
    "why.next": (t) => `Ohne neue Meldung ändert es sich von selbst um ${t}.`,
    "why.forbidden": "Die Richtlinie erlaubt Ihnen nicht zu sehen, warum diese Person so angezeigt wird.",
    "why.noFacts": "Keine Quelle meldet etwas.",
    yes: "ja",
    availability: {
      available: "Verfügbar", away: "Abwesend", "be-right-back": "Gleich zurück", busy: "Beschäftigt",
      "do-not-disturb": "Nicht stören", offline: "Offline", unknown: "Unbekannt",
    },
    activity: {
      available: "Verfügbar", away: "Abwesend", "be-right-back": "Gleich zurück", busy: "Beschäftigt",
      "do-not-disturb": "Nicht stören", "in-a-call": "Im Gespräch", "in-a-conference-call": "In einer Telefonkonferenz",
      "in-a-meeting": "In einer Besprechung", presenting: "Präsentiert", focusing: "Konzentriert",
      "out-of-office": "Außer Haus", "off-work": "Feierabend", inactive: "Inaktiv", offline: "Offline",
      unknown: "Unbekannt",
    },
    colorWord: { green: "Grün", yellow: "Gelb", red: "Rot", grey: "Grau" },
    source: {
      manual: "Von Hand gesetzt", session: "Gerät", telephony: "Telefonanlage", calendar: "Kalender",
      teams: "Microsoft Teams", meeting: "Online-Besprechung", location: "Ort",
    },
    rule: {
      "appear-offline": "„Offline erscheinen“ ist von Hand gesetzt; das geht allem vor.",
      "do-not-disturb": "„Nicht stören“ ist von Hand gesetzt; das geht Gesprächen und Besprechungen vor.",
      call: "Ein Gespräch läuft; es geht Besprechungen und von Hand gesetzten Status vor.",
      presenting: "Präsentiert in einer Online-Besprechung.",
      manual: "Ein Status ist von Hand gesetzt; er geht Kalender und Teams vor.",
      meeting: "Nimmt an einer Online-Besprechung teil.",
      "device-status": "Auf einem angemeldeten Gerät ist ein Status gesetzt.",
      "calendar-out-of-office": "Der Kalender zeigt gerade eine Abwesenheit.",
      "calendar-busy": "Der Kalender zeigt gerade eine Besprechung.",
      teams: "Microsoft Teams meldet diesen Status.",
      devices: "Die angemeldeten Geräte zeigen, wie aktiv die Person ist.",
      "no-facts": "Keine Quelle meldet etwas, daher zeigt Ampel offline.",
    },
    change: {
      "appear-offline": "Den Status auf automatisch zurücksetzen.",
      "do-not-disturb": "Das Ende oder Zurücksetzen des Status.",
      call: "Das Ende des Gesprächs.", presenting: "Das Ende der Präsentation.",
      manual: "Das Ende oder Zurücksetzen des Status; ein Gespräch oder „Nicht stören“.",
      meeting: "Das Ende der Besprechung; ein Gespräch.",
      "device-status": "Das Gerät ändert seinen Status oder meldet sich ab.",
      "calendar-out-of-office": "Das Ende der Abwesenheit; ein von Hand gesetzter Status.",
      "calendar-busy": "Das geplante Ende der Besprechung; ein Gespräch oder ein von Hand gesetzter Status.",
      teams: "Teams meldet einen anderen Status; ein von Hand gesetzter Status.",
      devices: "Wieder ein Gerät benutzen oder es ruhen lassen; jede andere Quelle.",
      "no-facts": "Ein Gerät meldet sich an oder eine andere Quelle meldet etwas.",
    },
    verdict: {
      decided: "hat entschieden", contributed: "hat beigetragen", outranked: (r) => `übertroffen von: ${r}`,
      "not-ranked": "von der Richtlinie nicht verwendet", "no-effect": "ohne Wirkung",
      "not-started": "noch nicht begonnen", expired: "beendet",
    },
    ruleName: {
      "appear-offline": "Offline erscheinen", "do-not-disturb": "Nicht stören", call: "Gespräch",
      presenting: "Präsentieren", manual: "von Hand gesetzter Status", meeting: "Online-Besprechung",
      "device-status": "Gerätestatus", "calendar-out-of-office": "Abwesenheit im Kalender",
      "calendar-busy": "Besprechung im Kalender", teams: "Teams", devices: "Geräte", "no-facts": "keine Meldungen",
    },
  },
};

const ICONS = { green: "✓", yellow: "◷", red: "✕", grey: "○" };
const PAGE = 100;
const MAX_NOTE = 500;
const CHUNK = 1000;

const state = {
  lang: "en", me: null, users: [], byId: new Map(), presence: new Map(), favourites: new Set(),
  shown: PAGE, socket: null, retry: 0, renderQueued: false,
};

// ---------------------------------------------------------------- language and time

function chooseLang() {
  const chosen = localStorage.getItem("ampel.lang");
  if (chosen === "de" || chosen === "en") return chosen;
  const langs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
  for (const tag of langs) {
    const primary = String(tag).toLowerCase().split("-")[0];
    if (primary === "de" || primary === "en") return primary;
  }
  return "en";
}

function t(key, ...args) {
  const value = TEXT[state.lang][key] ?? TEXT.en[key] ?? key;
  return typeof value === "function" ? value(...args) : value;
}

function word(table, key) {
  return (TEXT[state.lang][table] || {})[key] ?? key;
}

function translatePage() {
  document.documentElement.lang = state.lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
}

/// The locale times are written in: the page's language, refined by the browser's own locale
/// when that is a variant of the same language (en-GB writes 24-hour times, en-US 12-hour ones).
function timeLocale() {
  const browser = navigator.language || "";
  return browser.split("-")[0] === state.lang ? browser : state.lang;
}

function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const now = new Date();
  const sameDay = date.toDateString() === now.toDateString();
  const options = sameDay ? { hour: "2-digit", minute: "2-digit" }
    : { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" };
  return new Intl.DateTimeFormat(timeLocale(), options).format(date);
}

function relative(iso) {
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const format = new Intl.RelativeTimeFormat(state.lang, { numeric: "auto" });
  const abs = Math.abs(seconds);
  if (abs < 3600) return format.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return format.format(Math.round(seconds / 3600), "hour");
  return format.format(Math.round(seconds / 86400), "day");
}

// ---------------------------------------------------------------- talking to the server

async function api(method, path, body) {
  const headers = {};
  if (state.me) headers["X-CSRF-Token"] = state.me.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    return { status: 0, body: { detail: t("err.network") } };
  }
  if (response.status === 401 && document.body.dataset.page !== "signin") {
    location.assign("/signin");
  }
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = { detail: text }; }
  return { status: response.status, body: parsed };
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) {
    if (child !== undefined && child !== null) node.append(child);
  }
  return node;
}

function showError(id, message) {
  const target = document.getElementById(id + "-error");
  const field = document.getElementById(id);
  if (target) target.textContent = message || "";
  if (field) field.setAttribute("aria-invalid", message ? "true" : "false");
}

// ---------------------------------------------------------------- sign-in page

function startSignin() {
  translatePage();
  const form = document.getElementById("signin-form");
  const sync = () => {
    const byToken = form.method.value === "token";
    document.getElementById("by-password").hidden = byToken;
    document.getElementById("by-token").hidden = !byToken;
  };
  for (const radio of form.querySelectorAll("input[name=method]")) radio.addEventListener("change", sync);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const id of ["user", "password", "token", "form"]) showError(id, "");
    const byToken = form.method.value === "token";
    let body;
    if (byToken) {
      const token = form.token.value.trim();
      if (!token) return showError("token", t("err.token"));
      body = { token };
    } else {
      const user = form.user.value.trim();
      if (!/^[^@\s]+@[^@\s]+$/.test(user)) return showError("user", t("err.user"));
      if (!form.password.value) return showError("password", t("err.password"));
      body = { user, password: form.password.value };
    }
    const answer = await api("POST", "/web/signin", body);
    if (answer.status === 200) return location.assign("/");
    const field = answer.body && answer.body.field;
    let message = answer.body && answer.body.detail;
    if (answer.status === 401) message = t(field === "token" ? "err.tokenWrong" : "err.wrong");
    showError(["user", "password", "token"].includes(field) ? field : "form", message);
  });
}

// ---------------------------------------------------------------- the board

function matches(user, query, group, color) {
  if (group && !user.groups.includes(group)) return false;
  const presence = state.presence.get(user.id);
  if (color && (!presence || presence.color !== color)) return false;
  if (!query) return true;
  return user.search.includes(query);
}

function visibleUsers() {
  const query = document.getElementById("q").value.trim().toLowerCase();
  const group = document.getElementById("group").value;
  const color = document.getElementById("color").value;
  return state.users.filter((u) => matches(u, query, group, color));
}

function render() {
  state.renderQueued = false;
  const list = document.getElementById("board");
  const focused = document.activeElement;
  const focusKey = focused && focused.closest && focused.closest(".row")
    ? [focused.closest(".row").dataset.id, focused.className] : null;
  const users = visibleUsers();
  const page = users.slice(0, state.shown);
  list.replaceChildren(...page.map(row));
  document.getElementById("count").textContent = t("count", page.length, users.length);
  const more = document.getElementById("more");
  const rest = users.length - page.length;
  more.hidden = rest <= 0;
  more.textContent = t("more", Math.min(rest, PAGE));
  if (focusKey) {
    const again = list.querySelector(`.row[data-id="${CSS.escape(focusKey[0])}"] .${CSS.escape(focusKey[1].split(" ")[0])}`);
    if (again) again.focus();
  }
}

function queueRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(render);
}

function row(user) {
  const li = el("li", { class: "row", "data-id": user.id });
  fillRow(li, user);
  return li;
}

function fillRow(li, user) {
  const presence = state.presence.get(user.id) || { color: "grey" };
  const color = presence.color || "grey";
  const favourite = state.favourites.has(user.id);
  li.className = `row c-${color}${favourite ? " favourite" : ""}`;
  li.dataset.color = color;
  const label = presence.availability ? word("availability", presence.availability) : word("colorWord", color);
  const activity = presence.activity && presence.activity !== presence.availability
    ? word("activity", presence.activity) : null;

  const details = el("div", { class: "who" },
    el("span", { class: "name", text: user.name }), " ",
    el("span", { class: "meta", text: [user.groups.join(", "), user.id].filter(Boolean).join(" · ") }),
    el("div", {},
      el("span", { class: "state", text: label }),
      activity ? el("span", { class: "activity", text: ` – ${activity}` }) : null,
      presence.out_of_office ? el("span", { class: "oof", text: t("oof") }) : null,
      presence.until ? el("span", { class: "back", text: ` · ${t("backAt", formatTime(presence.until))}` }) : null),
    presence.note ? el("div", { class: "note", text: presence.note.text, lang: presence.note.lang }) : null,
    lastActive(presence));

  const actions = el("div", { class: "row-actions" },
    el("button", {
      type: "button", class: "fav", "aria-pressed": String(favourite), "aria-label": t("favourite", user.name),
      text: favourite ? "★" : "☆", onclick: () => toggleFavourite(user.id),
    }),
    el("button", {
      type: "button", class: "why", text: t("why"), "aria-label": t("whyOf", user.name),
      onclick: () => explain(user),
    }));
  const mark = el("div", { class: "status-mark" },
    el("span", { class: "dot", "aria-hidden": "true" }),
    el("span", { class: "icon", "aria-hidden": "true", text: ICONS[color] || "?" }));
  li.replaceChildren(mark, details, actions);
}

function lastActive(presence) {
  if (!presence.last_active) return null;
  const recent = Date.now() - new Date(presence.last_active).getTime() < 60000;
  const online = presence.color !== "grey" && !presence.idle;
  const text = online && recent ? t("activeNow") : t("lastActive", relative(presence.last_active));
  return el("div", { class: "seen", text });
}

function updateRow(id) {
  if (document.getElementById("color").value) return queueRender();
  const li = document.querySelector(`#board .row[data-id="${CSS.escape(id)}"]`);
  const user = state.byId.get(id);
  if (!li || !user) return;
  const focused = document.activeElement && li.contains(document.activeElement)
    ? document.activeElement.className.split(" ")[0] : null;
  fillRow(li, user);
  if (focused) li.querySelector("." + focused)?.focus();
}

function sortUsers() {
  state.users.sort((a, b) => {
    const fa = state.favourites.has(a.id) ? 0 : 1;
    const fb = state.favourites.has(b.id) ? 0 : 1;
    return fa - fb || a.name.localeCompare(b.name, state.lang) || a.id.localeCompare(b.id);
  });
}

function favouritesKey() {
  return `ampel.favourites.${state.me.user || "admin"}`;
}

function toggleFavourite(id) {
  if (state.favourites.has(id)) state.favourites.delete(id); else state.favourites.add(id);
  localStorage.setItem(favouritesKey(), JSON.stringify([...state.favourites]));
  sortUsers();
  render();
}

// ---------------------------------------------------------------- live updates

function connect() {
  const status = document.getElementById("conn");
  status.textContent = t("conn.connecting");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/v1/ws`);
  state.socket = socket;
  socket.onopen = () => {
    state.retry = 0;
    status.textContent = t("conn.live");
    status.classList.remove("lost");
    const ids = state.users.map((u) => u.id);
    for (let i = 0; i < ids.length; i += CHUNK) {
      socket.send(JSON.stringify({ subscribe: ids.slice(i, i + CHUNK) }));
    }
  };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.error) {
      // A colleague named in a subscription is gone: read the directory again and resubscribe.
      socket.close();
      return;
    }
    if (!message.user) return;
    state.presence.set(message.user, message);
    updateRow(message.user);
    if (state.me.user === message.user) showMine();
  };
  socket.onclose = () => {
    if (state.socket !== socket) return;
    status.textContent = t("conn.lost");
    status.classList.add("lost");
    const delay = Math.min(5000, 250 * 2 ** state.retry++);
    setTimeout(reconnect, delay);
  };
}

async function reconnect() {
  // After a restart the session may have ended; the answer 401 leads to the sign-in page.
  const answer = await api("GET", "/web/session");
  if (answer.status !== 200) {
    const delay = Math.min(5000, 250 * 2 ** state.retry++);
    return setTimeout(reconnect, delay);
  }
  state.me = answer.body;
  await loadUsers();
  connect();
}

/// Picks up colleagues added since the page loaded, and watches them too.
async function refreshDirectory() {
  const known = new Set(state.users.map((u) => u.id));
  await loadUsers();
  const added = state.users.map((u) => u.id).filter((id) => !known.has(id));
  const socket = state.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  for (let i = 0; i < added.length; i += CHUNK) {
    socket.send(JSON.stringify({ subscribe: added.slice(i, i + CHUNK) }));
  }
}

async function loadUsers() {
  const answer = await api("GET", "/api/v1/users");
  if (answer.status !== 200) return;
  state.users = answer.body.map((u) => ({
    id: u.id, name: u.name, groups: u.groups || [],
    search: `${u.name} ${u.id} ${(u.groups || []).join(" ")}`.toLowerCase(),
  }));
  state.byId = new Map(state.users.map((u) => [u.id, u]));
  sortUsers();
  const groups = [...new Set(state.users.flatMap((u) => u.groups))].sort();
  const select = document.getElementById("group");
  const current = select.value;
  select.replaceChildren(select.options[0], ...groups.map((g) => el("option", { value: g, text: g })));
  select.value = current;
  render();
}

// ---------------------------------------------------------------- why

async function explain(user) {
  const dialog = document.getElementById("why");
  const title = document.getElementById("why-title");
  const body = document.getElementById("why-body");
  title.textContent = user.id === state.me.user ? t("me.why") : t("whyOf", user.name);
  body.replaceChildren();
  if (!dialog.open) dialog.showModal();
  const answer = await api("GET", `/api/v1/users/${encodeURIComponent(user.id)}/presence/explain`);
  if (answer.status === 403) {
    body.replaceChildren(el("p", { text: t("why.forbidden") }));
    return;
  }
  if (answer.status !== 200) {
    body.replaceChildren(el("p", { class: "error", text: answer.body && answer.body.detail }));
    return;
  }
  body.replaceChildren(...explanation(user, answer.body));
}

function stateWords(presence) {
  const availability = word("availability", presence.availability || "unknown");
  const activity = presence.activity && presence.activity !== presence.availability
    ? ` (${word("activity", presence.activity)})` : "";
  return availability + activity;
}

function explanation(user, data) {
  const parts = [
    el("p", { class: "why-summary", text: t("why.shown", user.name, stateWords(data.presence)) }),
    el("h3", { text: t("why.rule") }),
    el("p", { class: "why-rule", text: word("rule", data.rule) }),
    el("h3", { text: t("why.facts") }),
  ];
  const facts = data.facts.length
    ? el("ul", { class: "facts" }, ...data.facts.map(factItem))
    : el("p", { text: t("why.noFacts") });
  parts.push(facts, el("h3", { text: t("why.change") }), el("p", { text: word("change", data.rule) }));
  if (data.next_change) parts.push(el("p", { text: t("why.next", formatTime(data.next_change)) }));
  return parts;
}

function factItem(fact) {
  const verdict = fact.verdict.verdict;
  const how = verdict === "outranked"
    ? t("verdict").outranked(word("ruleName", fact.verdict.by))
    : word("verdict", verdict) + (fact.verdict.why ? ` (${fact.verdict.why})` : "");
  const until = fact.until ? ` · ${t("until", formatTime(fact.until))}` : "";
  return el("li", { "data-verdict": verdict },
    el("strong", { text: word("source", fact.source) }), `: ${factState(fact.state)} — ${how}${until}`);
}

function factState(s) {
  switch (s.kind) {
    case "status": return stateWords(s);
    case "device": return word("activity", s.state) || s.state;
    case "call": return `${word("activity", "in-a-call")} (${s.state})`;
    case "calendar": return s.show_as;
    case "meeting": return s.presenting ? word("activity", "presenting") : word("activity", "in-a-meeting");
    case "location": return s.location;
    default: return s.availability ? word("availability", String(s.availability).toLowerCase()) : s.kind;
  }
}

// ---------------------------------------------------------------- my status

const CHOICES = ["available", "busy", "do-not-disturb", "be-right-back", "away"];
const UNTIL = ["none", "30m", "1h", "today", "week", "custom"];

function buildStatusForm() {
  const availability = document.getElementById("availability-choices");
  availability.replaceChildren(...CHOICES.map((a, i) => el("label", { class: "choice" },
    el("input", { type: "radio", name: "availability", value: a, checked: i === 0 }),
    el("span", { text: word("availability", a) }))));
  const until = document.getElementById("until-choices");
  until.replaceChildren(...UNTIL.map((u, i) => el("label", { class: "choice" },
    el("input", { type: "radio", name: "until", value: u, checked: i === 0, id: `until-choice-${u}` }),
    el("span", { text: t(`until.${u}`) }))));
  const custom = document.getElementById("until-custom");
  // The date and time picker shows only while "a chosen date and time" is selected.
  const showPicker = () => { custom.hidden = !document.getElementById("until-choice-custom").checked; };
  until.addEventListener("change", showPicker);
  showPicker();
}

function untilOf(choice) {
  const now = new Date();
  switch (choice) {
    case "none": return { value: null };
    case "30m": return { value: new Date(now.getTime() + 30 * 60000) };
    case "1h": return { value: new Date(now.getTime() + 3600000) };
    case "today": {
      const end = new Date(now); end.setHours(24, 0, 0, 0); return { value: end };
    }
    case "week": {
      const end = new Date(now); const toMonday = (8 - end.getDay()) % 7 || 7;
      end.setDate(end.getDate() + toMonday); end.setHours(0, 0, 0, 0); return { value: end };
    }
    default: {
      const raw = document.getElementById("until-custom").value;
      if (!raw) return { error: t("err.untilMissing") };
      const date = new Date(raw);
      if (isNaN(date.getTime())) return { error: t("err.untilMissing") };
      if (date <= now) return { error: t("err.untilPast") };
      return { value: date };
    }
  }
}

async function setStatus(event) {
  event.preventDefault();
  const form = document.getElementById("status-form");
  for (const id of ["availability", "note", "until-custom", "status"]) showError(id, "");
  document.getElementById("until-error").textContent = "";
  const availability = form.availability.value;
  const note = document.getElementById("note").value;
  const until = untilOf(form.until.value);
  let ok = true;
  if (!availability) { showError("availability", t("err.availability")); ok = false; }
  if ([...note.trim()].length > MAX_NOTE) { showError("note", t("err.noteLong", MAX_NOTE)); ok = false; }
  if (until.error) { untilError(until.error); ok = false; }
  if (!ok) {
    form.querySelector('[aria-invalid="true"]')?.focus();
    return;
  }
  const body = { availability, note: { text: note, lang: state.lang } };
  if (until.value) body.until = until.value.toISOString();
  await sendStatus("PUT", body);
}

function untilError(message) {
  document.getElementById("until-error").textContent = message;
  document.getElementById("until-custom").setAttribute("aria-invalid", message ? "true" : "false");
}

async function sendStatus(method, body) {
  const path = `/api/v1/users/${encodeURIComponent(state.me.user)}/presence/manual`;
  const answer = await api(method, path, body);
  if (answer.status === 200) {
    state.presence.set(answer.body.user, answer.body);
    document.getElementById("status-error").textContent = t("me.done");
    document.getElementById("status-error").className = "ok";
    showMine();
    return;
  }
  document.getElementById("status-error").className = "error";
  const field = answer.body && answer.body.field;
  const detail = (answer.body && answer.body.detail) || String(answer.status);
  if (field === "until") untilError(detail);
  else if (field === "note" || field === "note.text") showError("note", detail);
  else if (field === "availability") showError("availability", detail);
  else showError("status", detail);
}

async function showMine() {
  if (!state.me.user) return;
  const box = document.getElementById("me-now");
  const presence = state.presence.get(state.me.user);
  if (!presence) return;
  const answer = await api("GET", `/api/v1/users/${encodeURIComponent(state.me.user)}/presence/explain`);
  const sources = answer.status === 200 && answer.body.presence.sources ? answer.body.presence.sources : [];
  if (answer.status === 200) prefill(answer.body.facts);
  const color = presence.color || "grey";
  box.className = `card c-${color}`;
  box.dataset.color = color;
  // The DOM writes a null child as the text "null"; absent parts are left out instead.
  box.replaceChildren(...[
    el("p", {},
      el("span", { class: "dot", "aria-hidden": "true" }), " ",
      el("span", { class: "icon", "aria-hidden": "true", text: ICONS[color] }), " ",
      `${t("me.now")} `, el("strong", { class: "state", text: stateWords(presence) }),
      presence.out_of_office ? el("span", { class: "oof", text: t("oof") }) : null,
      presence.until ? ` · ${t("until", formatTime(presence.until))}` : ""),
    presence.note ? el("p", { class: "note", text: presence.note.text }) : null,
    el("p", { class: "sources", text: `${t("me.sources")}: ${sources.length ? sources.map((s) => word("source", s)).join(", ") : t("me.noSources")}` }),
  ].filter((part) => part !== null));
}

/// Shows the manual status that is set in the form, so that changing it starts from it.
function prefill(facts) {
  const manual = facts.find((f) => f.source === "manual" && f.verdict.verdict !== "expired");
  const form = document.getElementById("status-form");
  if (!manual || form.contains(document.activeElement)) return;
  const radio = form.querySelector(`input[name=availability][value="${manual.state.availability}"]`);
  if (radio) radio.checked = true;
  const presence = state.presence.get(state.me.user);
  if (presence && presence.note) document.getElementById("note").value = presence.note.text;
}

// ---------------------------------------------------------------- policy page

async function showPolicy() {
  const answer = await api("GET", `/web/policy?lang=${state.lang}`);
  if (answer.status !== 200) return;
  document.getElementById("policy-page").replaceChildren(...markdown(answer.body.page));
  const admin = document.getElementById("policy-admin");
  admin.hidden = !answer.body.toml;
  if (answer.body.toml) {
    document.getElementById("policy-toml").textContent = answer.body.toml;
    showCheck(document.getElementById("policy-check"), answer.body.check);
  }
}

function showCheck(target, check) {
  const where = check.line ? t("policy.at", check.line, check.column) : "";
  target.textContent = check.ok ? t("policy.valid") : t("policy.invalid", where, check.message);
  target.className = check.ok ? "ok" : "error";
}

async function checkPolicy(event) {
  event.preventDefault();
  const text = document.getElementById("policy-text").value;
  document.getElementById("policy-text-error").className = "error";
  if (!text.trim()) return showError("policy-text", t("policy.empty"));
  const answer = await api("POST", "/web/policy/check", { text });
  if (answer.status !== 200) return showError("policy-text", answer.body && answer.body.detail);
  const where = answer.body.line ? t("policy.at", answer.body.line, answer.body.column) : "";
  showError("policy-text", answer.body.ok ? "" : t("policy.invalid", where, answer.body.message));
  const result = document.getElementById("policy-text-error");
  result.className = answer.body.ok ? "ok" : "error";
  if (answer.body.ok) result.textContent = t("policy.valid");
}

/// The policy page's Markdown (headings, paragraphs, lists) as elements, by text only.
function markdown(text) {
  const out = [];
  let list = null;
  for (const line of text.split("\n")) {
    const heading = /^(#{1,3}) (.*)$/.exec(line);
    const bullet = /^- (.*)$/.exec(line);
    const numbered = /^\d+\. (.*)$/.exec(line);
    const plain = (s) => s.replace(/\*\*|`/g, "");
    if (heading) { list = null; out.push(el(`h${heading[1].length + 2}`, { text: plain(heading[2]) })); }
    else if (bullet || numbered) {
      const kind = bullet ? "ul" : "ol";
      if (!list || list.tagName.toLowerCase() !== kind) { list = el(kind, {}); out.push(list); }
      list.append(el("li", { text: plain((bullet || numbered)[1]) }));
    } else if (line.trim()) { list = null; out.push(el("p", { text: plain(line) })); }
    else list = null;
  }
  return out;
}

// ---------------------------------------------------------------- views and start

function showView(name) {
  for (const view of ["board", "me", "policy"]) {
    document.getElementById(`view-${view}`).hidden = view !== name;
  }
  for (const button of document.querySelectorAll("#nav button")) {
    if (button.dataset.view === name) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  if (name === "me") showMine();
  if (name === "policy") showPolicy();
  document.getElementById(`h-${name}`).focus?.();
}

async function startBoard() {
  translatePage();
  const session = await api("GET", "/web/session");
  if (session.status !== 200) return;
  state.me = session.body;
  document.getElementById("who").textContent = state.me.name;
  document.getElementById("nav-me").hidden = !state.me.user;
  try { state.favourites = new Set(JSON.parse(localStorage.getItem(favouritesKey()) || "[]")); } catch (e) { }
  document.getElementById("lang").value = localStorage.getItem("ampel.lang") || "";
  buildStatusForm();
  wire();
  await loadUsers();
  performance.mark("ampel-board-rendered");
  connect();
  setInterval(() => { if (!document.getElementById("view-board").hidden) render(); }, 30000);
  setInterval(refreshDirectory, 120000);
}

function wire() {
  for (const button of document.querySelectorAll("#nav button")) {
    button.addEventListener("click", () => showView(button.dataset.view));
  }
  for (const id of ["h-board", "h-me", "h-policy"]) document.getElementById(id).tabIndex = -1;
  const refilter = () => { state.shown = PAGE; render(); };
  document.getElementById("q").addEventListener("input", refilter);
  document.getElementById("group").addEventListener("change", refilter);
  document.getElementById("color").addEventListener("change", refilter);
  document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
  document.getElementById("more").addEventListener("click", () => { state.shown += PAGE; render(); });
  document.getElementById("status-form").addEventListener("submit", setStatus);
  document.getElementById("appear-offline").addEventListener("click", () => sendStatus("PUT", { availability: "offline" }));
  document.getElementById("reset").addEventListener("click", () => sendStatus("DELETE"));
  document.getElementById("me-why").addEventListener("click", () => explain(state.byId.get(state.me.user) || { id: state.me.user, name: state.me.name }));
  document.getElementById("policy-form").addEventListener("submit", checkPolicy);
  document.getElementById("signout").addEventListener("click", async () => {
    const answer = await api("POST", "/web/signout");
    if (answer.status === 204) { state.socket = null; location.assign("/signin"); }
  });
  document.getElementById("lang").addEventListener("change", (e) => {
    if (e.target.value) localStorage.setItem("ampel.lang", e.target.value); else localStorage.removeItem("ampel.lang");
    state.lang = chooseLang();
    translatePage();
    buildStatusForm();
    render();
    if (!document.getElementById("view-policy").hidden) showPolicy();
    if (!document.getElementById("view-me").hidden) showMine();
  });
  document.getElementById("board").addEventListener("keydown", (e) => {
    if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
    const current = e.target.closest(".row");
    const next = e.key === "ArrowDown" ? current?.nextElementSibling : current?.previousElementSibling;
    const target = next?.querySelector("." + e.target.className.split(" ")[0]);
    if (target) { e.preventDefault(); target.focus(); }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && !["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) {
      e.preventDefault();
      showView("board");
      document.getElementById("q").focus();
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  state.lang = chooseLang();
  if (document.body.dataset.page === "signin") startSignin(); else startBoard();
});
