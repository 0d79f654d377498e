//! `/openapi.json`: OpenAPI 3.1 generated from [`ROUTES`](crate::routes::ROUTES) and the
//! wire types' JSON Schemas (OpenAPI 3.1 schemas are JSON Schema 2020-12, what schemars
//! emits), so the document cannot drift from what is served.

use actix_web::HttpResponse;
use flowsync_protocol::{ErrorBody, Event, Execution, Flow, HistoryEntry, OpsRequest};
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::routes::{CreateFlow, PresenceList, PresenceUpdate, ROUTES};

/// The OpenAPI document.
pub fn document() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "#/components/schemas/".into();
    let mut generator = settings.into_generator();
    // Register every schema a route names, and the event types SSE clients receive.
    generator.subschema_for::<OpsRequest>();
    generator.subschema_for::<Flow>();
    generator.subschema_for::<HistoryEntry>();
    generator.subschema_for::<ErrorBody>();
    generator.subschema_for::<Event>();
    generator.subschema_for::<Execution>();
    generator.subschema_for::<CreateFlow>();
    generator.subschema_for::<PresenceUpdate>();
    generator.subschema_for::<PresenceList>();
    let schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();

    let mut paths = Map::new();
    for route in ROUTES {
        let mut op = Map::new();
        op.insert("summary".into(), route.summary.into());
        op.insert(
            "operationId".into(),
            format!(
                "{}{}",
                route.method,
                route.path.replace(['/', '{', '}', '.'], "_")
            )
            .into(),
        );
        let parameters: Vec<Value> = [("flow_id", "FlowId"), ("execution_id", "ExecutionId")]
            .iter()
            .filter(|(name, _)| route.path.contains(&format!("{{{name}}}")))
            .map(|(name, schema)| {
                json!({"name": name, "in": "path", "required": true,
                       "schema": {"$ref": format!("#/components/schemas/{schema}")}})
            })
            .collect();
        if !parameters.is_empty() {
            op.insert("parameters".into(), parameters.into());
        }
        if let Some(body) = route.body {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}}),
            );
        }
        let (status, schema) = route.ok;
        let mut ok = json!({"description": "Success"});
        if let Some(schema) = schema {
            ok["content"] = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}});
        }
        let error = json!({"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}});
        op.insert(
            "responses".into(),
            json!({status.to_string(): ok, "4XX": error, "5XX": error}),
        );
        if route.auth {
            op.insert("security".into(), json!([{"bearer": []}]));
        }
        paths
            .entry(route.path)
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("a path item is an object")
            .insert(route.method.into(), Value::Object(op));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "flowsync API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Intents in, results out over SSE (`GET /v1/flows/{id}/events` on the gateway).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    })
}

/// Serves the document.
pub(crate) async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(document())
}
