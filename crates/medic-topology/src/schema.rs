//! JSON Schemas of the topology and AMI files, generated from the model the loader reads, so
//! an editor's completion and checks cannot drift from what medic accepts (`medic schema`
//! prints them; docs/schema/ holds them, checked against this output by a test). Every object
//! refuses fields it does not name, as the loader does.

/// The topology file's schema.
pub fn topology() -> serde_json::Value {
    titled(
        schemars::schema_for!(crate::Topology),
        "medic topology",
        "One deployment: machines, shards, services, proxies, DNS, checks and policy (docs/topology.md).",
    )
}

/// An AMI definition file's schema (`amis/*.yaml`).
pub fn ami() -> serde_json::Value {
    titled(
        schemars::schema_for!(crate::AmiDefinition),
        "medic AMI definition",
        "How an image is made and what it holds (amis/*.yaml).",
    )
}

/// The schema with a title and description of its own.
pub fn titled(schema: schemars::Schema, title: &str, description: &str) -> serde_json::Value {
    let mut v = schema.to_value();
    v["title"] = title.into();
    v["description"] = description.into();
    v
}
