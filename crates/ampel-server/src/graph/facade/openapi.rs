//! The OpenAPI description of the facade, served inside `/api/v1/openapi.json` beside the REST
//! interface (tag `graph-facade`).
//!
//! The facade routes every presence action through one handler, so its paths are built here,
//! one per action and form (`/users/{id}` and `/me`), with the request and answer shapes of
//! [`super::shapes`]. Every failure is a Graph error body, never a problem document.

use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::ObjectBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, Ref,
    Required, ResponseBuilder, Type,
};

use super::shapes;

const TAG: &str = "graph-facade";
const BASE: &str = "/graph/v1.0";

/// The presence actions: name, body schema (none for an empty body), and what each does.
const ACTIONS: &[(&str, Option<&str>, &str)] = &[
    ("setPresence", Some("SetPresence"), "Sets a presence session of the calling application."),
    ("clearPresence", Some("ClearPresence"), "Ends a presence session."),
    (
        "setUserPreferredPresence",
        Some("SetPreferred"),
        "Sets the user's own status, which beats every session.",
    ),
    ("clearUserPreferredPresence", None, "Clears the user's own status."),
    (
        "setStatusMessage",
        Some("SetStatusMessage"),
        "Sets the user's status message, which ends at its expiry; an empty one clears it.",
    ),
];

/// The facade's description.
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new()
        .path(
            format!("{BASE}/users/{{id}}/presence"),
            PathItem::new(
                HttpMethod::Get,
                read("A user's presence, as the caller may see it.", true),
            ),
        )
        .path(
            format!("{BASE}/me/presence"),
            PathItem::new(HttpMethod::Get, read("The calling user's own presence.", false)),
        )
        .path(
            format!("{BASE}/communications/getPresencesByUserId"),
            PathItem::new(HttpMethod::Post, batch()),
        );
    for (action, body, summary) in ACTIONS {
        let users = act(action, *body, summary, true);
        let me = act(action, *body, summary, false);
        paths = paths
            .path(
                format!("{BASE}/users/{{id}}/presence/{action}"),
                PathItem::new(HttpMethod::Post, users),
            )
            .path(format!("{BASE}/me/presence/{action}"), PathItem::new(HttpMethod::Post, me));
    }
    let components = ComponentsBuilder::new()
        .schema_from::<shapes::Ids>()
        .schema_from::<shapes::SetPresence>()
        .schema_from::<shapes::ClearPresence>()
        .schema_from::<shapes::SetPreferred>()
        .schema_from::<shapes::SetStatusMessage>()
        .schema_from::<shapes::StatusMessage>()
        .schema_from::<shapes::DateTimeTimeZone>()
        .schema_from::<shapes::ItemBody>()
        .schema_from::<shapes::PresenceBody>()
        .schema_from::<shapes::OutOfOfficeSettings>()
        .schema_from::<shapes::PresenceCollection>()
        .schema_from::<shapes::ErrorBody>()
        .schema_from::<shapes::ErrorDetail>()
        .build();
    OpenApiBuilder::new().paths(paths.build()).components(Some(components)).build()
}

fn json(schema: &str) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build()
}

/// The operation with the failures every facade request may meet, and `more`.
fn operation(id: String, summary: &str, by_id: bool, more: &[(&str, &str)]) -> OperationBuilder {
    let mut op = OperationBuilder::new().tag(TAG).operation_id(Some(id)).summary(Some(summary));
    if by_id {
        let string = ObjectBuilder::new().schema_type(Type::String);
        let id = ParameterBuilder::new()
            .name("id")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some("An Ampel user id, or the Azure AD object id mapped to one"))
            .schema(Some(string));
        op = op.parameter(id);
    }
    let failures = [
        ("401", "No or no valid Ampel bearer token (`InvalidAuthenticationToken`)"),
        ("404", "No such user (`NotFound`)"),
    ];
    for (status, description) in failures.iter().chain(more) {
        let response = ResponseBuilder::new()
            .description(*description)
            .content("application/json", json("ErrorBody"));
        op = op.response(*status, response.build());
    }
    op
}

fn read(summary: &str, by_id: bool) -> Operation {
    let id = if by_id { "graphGetPresence" } else { "graphGetMyPresence" };
    let more: &[(&str, &str)] =
        if by_id { &[] } else { &[("400", "An administrator token names no user (`BadRequest`)")] };
    let ok = ResponseBuilder::new()
        .description("The presence in Graph's shape")
        .content("application/json", json("PresenceBody"));
    operation(id.to_owned(), summary, by_id, more).response("200", ok.build()).build()
}

fn batch() -> Operation {
    let body = RequestBodyBuilder::new()
        .content("application/json", json("Ids"))
        .required(Some(Required::True));
    let ok = ResponseBuilder::new()
        .description("The presences of the ids Ampel knows")
        .content("application/json", json("PresenceCollection"));
    let bad = [("400", "The body is not `{\"ids\": [...]}` with 1 to 650 ids (`BadRequest`)")];
    operation("graphGetPresencesByUserId".to_owned(), "Several presences at once.", false, &bad)
        .request_body(Some(body.build()))
        .response("200", ok.build())
        .build()
}

fn act(action: &str, body: Option<&str>, summary: &str, by_id: bool) -> Operation {
    let form = if by_id { "users" } else { "me" };
    let more = [
        ("400", "The body or a value is not what Graph accepts (`BadRequest`)"),
        ("403", "The caller may not change this user's presence (`Forbidden`)"),
        ("429", "Too many changes; `Retry-After` says when to try again (`TooManyRequests`)"),
        ("503", "The change could not be stored (`ServiceNotAvailable`)"),
    ];
    let mut op = operation(format!("graph_{form}_{action}"), summary, by_id, &more).response(
        "200",
        ResponseBuilder::new().description("Done; the answer has no body").build(),
    );
    if let Some(schema) = body {
        let body = RequestBodyBuilder::new()
            .content("application/json", json(schema))
            .required(Some(Required::True));
        op = op.request_body(Some(body.build()));
    }
    op.build()
}
