/// The shape of a declared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// One value per key.
    Value,
    /// A map per key.
    Map,
    /// A list per key.
    List,
}

/// What an operator says about itself: name, version and declared states, in order.
#[derive(Debug, Clone)]
pub struct Description {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) states: Vec<(String, StateKind, u32)>,
}

impl Description {
    /// A description with no state.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Description { name: name.into(), version: version.into(), states: Vec::new() }
    }

    /// Declares a value state. Bump `schema_version` whenever its stored layout changes.
    pub fn value_state(self, name: &str, schema_version: u32) -> Self {
        self.state(name, StateKind::Value, schema_version)
    }

    /// Declares a map state.
    pub fn map_state(self, name: &str, schema_version: u32) -> Self {
        self.state(name, StateKind::Map, schema_version)
    }

    /// Declares a list state.
    pub fn list_state(self, name: &str, schema_version: u32) -> Self {
        self.state(name, StateKind::List, schema_version)
    }

    fn state(mut self, name: &str, kind: StateKind, schema_version: u32) -> Self {
        self.states.push((name.to_string(), kind, schema_version));
        self
    }
}
