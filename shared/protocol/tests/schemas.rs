//! The committed JSON Schemas match the types. Run with `UPDATE_SCHEMAS=1` to rewrite them
//! after changing a wire type.

use std::path::PathBuf;

#[test]
fn committed_schemas_match_the_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut drifted = Vec::new();
    for (name, generated) in flowsync_protocol::schema::all() {
        let path = dir.join(name);
        if update {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != generated {
            drifted.push(name);
        }
    }
    assert!(
        drifted.is_empty(),
        "schemas out of date: {drifted:?}; run `UPDATE_SCHEMAS=1 cargo test -p flowsync-protocol --test schemas` and commit"
    );
}

/// `EventType` and the serde tags of `EventBody` spell the same names in the same order.
#[test]
fn event_types_match_the_event_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &flowsync_protocol::schema::all()
            .into_iter()
            .find(|(name, _)| *name == "event.schema.json")
            .expect("the event schema")
            .1,
    )
    .unwrap();
    let tags: Vec<&str> = schema["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["properties"]["type"]["const"].as_str().unwrap())
        .collect();
    let types: Vec<&str> = flowsync_protocol::EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    assert_eq!(tags, types);
    for t in flowsync_protocol::EventType::ALL {
        assert_eq!(t.as_str().parse(), Ok(t));
        assert_eq!(
            usize::from(t.index()),
            types.iter().position(|n| *n == t.as_str()).unwrap()
        );
    }
    assert!("SYNC".parse::<flowsync_protocol::EventType>().is_err());
}
