/// The shape of a declared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// One value per key.
    Value,
    /// A map per key.
    Map,
    /// A list per key.
    List,
    /// A map that is not keyed, the same in every subtask: written only while processing a
    /// broadcast input, read from any (Flink's broadcast state).
    Broadcast,
}

/// What an operator says about itself: name, version, declared states, inputs and side outputs,
/// each in order.
#[derive(Debug, Clone)]
pub struct Description {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) states: Vec<DeclaredState>,
    pub(crate) inputs: Vec<String>,
    pub(crate) side_outputs: Vec<String>,
}

/// One declared state.
#[derive(Debug, Clone)]
pub(crate) struct DeclaredState {
    pub(crate) name: String,
    pub(crate) kind: StateKind,
    pub(crate) schema_version: u32,
    pub(crate) migrates_from: Vec<u32>,
    pub(crate) time_to_live: Option<u64>,
}

impl Description {
    /// A description with no state.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Description {
            name: name.into(),
            version: version.into(),
            states: Vec::new(),
            inputs: Vec::new(),
            side_outputs: Vec::new(),
        }
    }

    /// Names its next input: the job file gives the operator one input per declared input, in
    /// this order, and [`crate::Context::input`] tells which one an event came from. An operator
    /// declaring none reads all its inputs as one stream.
    pub fn input(mut self, name: &str) -> Self {
        self.inputs.push(name.to_string());
        self
    }

    /// Declares a side output (Flink's `OutputTag`): a stream of its own that
    /// [`crate::Context::emit_to`] writes and job files read as `"uid.name"`.
    pub fn side_output(mut self, name: &str) -> Self {
        self.side_outputs.push(name.to_string());
        self
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

    /// Declares a broadcast state (see [`StateKind::Broadcast`]).
    pub fn broadcast_state(self, name: &str, schema_version: u32) -> Self {
        self.state(name, StateKind::Broadcast, schema_version)
    }

    /// Says that the state declared last can be read when it was saved under one of the older
    /// schema `versions`: [`crate::Operator::migrate`] rewrites each stored item when it is
    /// restored. Panics when no state is declared yet (a bug in `describe`).
    pub fn migrates_from(mut self, versions: impl IntoIterator<Item = u32>) -> Self {
        let Some(state) = self.states.last_mut() else {
            panic!("migrates_from must follow the declaration of the state it migrates")
        };
        state.migrates_from.extend(versions);
        self
    }

    /// Gives the state declared last a time-to-live of `millis` milliseconds of processing time:
    /// an entry not written for that long expires, is never read again and is deleted by the host
    /// (Flink's state TTL). Panics when no state is declared yet (a bug in `describe`).
    pub fn time_to_live(mut self, millis: u64) -> Self {
        let Some(state) = self.states.last_mut() else {
            panic!("time_to_live must follow the declaration of the state it applies to")
        };
        state.time_to_live = Some(millis);
        self
    }

    fn state(mut self, name: &str, kind: StateKind, schema_version: u32) -> Self {
        let migrates_from = Vec::new();
        self.states.push(DeclaredState {
            name: name.to_string(),
            kind,
            schema_version,
            migrates_from,
            time_to_live: None,
        });
        self
    }
}
