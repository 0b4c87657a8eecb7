//! The contract versions a module may be built against, behind one type: the rest of the host
//! calls a [`Guest`] and never asks which version it is, except where 0.3.0 adds something
//! (time in the frames, `on-timers`) and where 0.4.0 does (inputs and side outputs in the frames,
//! broadcast state).
use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::{v2, v3, v4};
use super::contract::Contract;
use super::host::HostState;
use crate::runtime::SubtaskInfo;
use crate::state::{StateDescriptor, StateKind};

/// A module linked and ready to instantiate, in its contract version.
pub(crate) enum GuestPre {
    V2(v2::OperatorWorldPre<HostState>),
    V3(v3::OperatorWorldPre<HostState>),
    V4(v4::OperatorWorldPre<HostState>),
}

/// An instance of a module.
pub(crate) enum Guest {
    V2(v2::OperatorWorld),
    V3(v3::OperatorWorld),
    V4(v4::OperatorWorld),
}

/// What `describe` returned, in either version.
pub(crate) struct Described {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) states: Vec<StateDescriptor>,
    /// 0.4.0: the names of its inputs (empty: not told apart) and of its side outputs.
    pub(crate) inputs: Vec<String>,
    pub(crate) side_outputs: Vec<String>,
}

impl GuestPre {
    pub(crate) fn new(contract: Contract, pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        Ok(match contract {
            Contract::V2 => GuestPre::V2(v2::OperatorWorldPre::new(pre)?),
            Contract::V3 => GuestPre::V3(v3::OperatorWorldPre::new(pre)?),
            Contract::V4 => GuestPre::V4(v4::OperatorWorldPre::new(pre)?),
        })
    }

    pub(crate) fn contract(&self) -> Contract {
        match self {
            GuestPre::V2(_) => Contract::V2,
            GuestPre::V3(_) => Contract::V3,
            GuestPre::V4(_) => Contract::V4,
        }
    }

    pub(crate) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Guest> {
        Ok(match self {
            GuestPre::V2(pre) => Guest::V2(pre.instantiate(store)?),
            GuestPre::V3(pre) => Guest::V3(pre.instantiate(store)?),
            GuestPre::V4(pre) => Guest::V4(pre.instantiate(store)?),
        })
    }
}

/// A state kind of a version's `types`, with the kinds only that version has.
macro_rules! kind {
    ($kind:expr, $v:ident $(, $more:ident)*) => {
        match $kind {
            $v::weir::operator::types::StateKind::Value => StateKind::Value,
            $v::weir::operator::types::StateKind::Map => StateKind::Map,
            $v::weir::operator::types::StateKind::List => StateKind::List,
            $($v::weir::operator::types::StateKind::$more => StateKind::$more,)*
        }
    };
}

/// The context record `open` takes, of either version.
macro_rules! context {
    ($info:expr, $v:ident) => {
        $v::weir::operator::types::Context {
            uid: $info.uid.to_string(),
            subtask_index: $info.index,
            parallelism: $info.parallelism,
            max_parallelism: $info.max_parallelism,
            attempt: $info.attempt,
        }
    };
}

impl Guest {
    pub(crate) fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<Described> {
        let descriptor = |name, kind, schema_version, migrates_from, time_to_live| StateDescriptor {
            name,
            kind,
            schema_version,
            migrates_from,
            time_to_live,
        };
        Ok(match self {
            Guest::V2(guest) => {
                let d = guest.weir_operator_operator().call_describe(store)?;
                let states: Vec<StateDescriptor> = d
                    .states
                    .into_iter()
                    .map(|s| descriptor(s.name, kind!(s.kind, v2), s.schema_version, s.migrates_from, None))
                    .collect();
                Described { name: d.name, version: d.version, states, inputs: Vec::new(), side_outputs: Vec::new() }
            }
            Guest::V3(guest) => {
                let d = guest.weir_operator_operator().call_describe(store)?;
                let states = d
                    .states
                    .into_iter()
                    .map(|s| descriptor(s.name, kind!(s.kind, v3), s.schema_version, s.migrates_from, s.time_to_live))
                    .collect();
                Described { name: d.name, version: d.version, states, inputs: Vec::new(), side_outputs: Vec::new() }
            }
            Guest::V4(guest) => {
                let d = guest.weir_operator_operator().call_describe(store)?;
                let states = d
                    .states
                    .into_iter()
                    .map(|s| {
                        let kind = kind!(s.kind, v4, Broadcast);
                        descriptor(s.name, kind, s.schema_version, s.migrates_from, s.time_to_live)
                    })
                    .collect();
                let (inputs, side_outputs) = (d.inputs, d.side_outputs);
                Described { name: d.name, version: d.version, states, inputs, side_outputs }
            }
        })
    }

    pub(crate) fn open(
        &self,
        store: &mut Store<HostState>,
        config: &str,
        info: &SubtaskInfo,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Guest::V2(guest) => guest.weir_operator_operator().call_open(store, config, &context!(info, v2)),
            Guest::V3(guest) => guest.weir_operator_operator().call_open(store, config, &context!(info, v3)),
            Guest::V4(guest) => guest.weir_operator_operator().call_open(store, config, &context!(info, v4)),
        }
    }

    pub(crate) fn migrate(
        &self,
        store: &mut Store<HostState>,
        state: u32,
        from_version: u32,
        items: &[Vec<u8>],
    ) -> wasmtime::Result<Result<Vec<Vec<u8>>, String>> {
        match self {
            Guest::V2(guest) => guest.weir_operator_operator().call_migrate(store, state, from_version, items),
            Guest::V3(guest) => guest.weir_operator_operator().call_migrate(store, state, from_version, items),
            Guest::V4(guest) => guest.weir_operator_operator().call_migrate(store, state, from_version, items),
        }
    }

    pub(crate) fn process_batch(
        &self,
        store: &mut Store<HostState>,
        frame: &[u8],
    ) -> wasmtime::Result<Result<Vec<u8>, String>> {
        match self {
            Guest::V2(guest) => guest.weir_operator_operator().call_process_batch(store, frame),
            Guest::V3(guest) => guest.weir_operator_operator().call_process_batch(store, frame),
            Guest::V4(guest) => guest.weir_operator_operator().call_process_batch(store, frame),
        }
    }

    /// Fires a timer frame's timers. A 0.2.0 guest never has any.
    pub(crate) fn on_timers(
        &self,
        store: &mut Store<HostState>,
        frame: &[u8],
    ) -> wasmtime::Result<Result<Vec<u8>, String>> {
        match self {
            Guest::V2(_) => Ok(Err("a weir:operator@0.2.0 operator has no timers (a weir bug)".to_string())),
            Guest::V3(guest) => guest.weir_operator_operator().call_on_timers(store, frame),
            Guest::V4(guest) => guest.weir_operator_operator().call_on_timers(store, frame),
        }
    }
}
