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
