//! The subtasks of an operator whose key groups two modules serve, or whose restored state two
//! modules saved: a canary (`docs/upgrades.md`, *Canaries*). Each subtask opens one instance per
//! part of its key groups ([`crate::job`] decides the parts), each restoring the state of its
//! part only, so that each part's state is read with the schema versions its module saved.
use std::ops::Range;
use std::sync::Arc;

use super::WasmOperatorFactory;
use crate::key_group::key_group_range;
use crate::runtime::key_ranges::{CanaryAbortIf, KeyRangeOperator, ModuleVersion, ModuleVersions, Part, VersionRole};
use crate::runtime::{Operator, OperatorFactory, SnapshotPart, SubtaskInfo};

/// The parts of a subtask's key groups, and whether the canary serves each.
pub type Parts = Box<dyn Fn(Range<u32>) -> Vec<(Range<u32>, bool)> + Send + Sync>;

/// Creates the subtasks of an operator with a canary.
pub struct CanaryFactory {
    /// The operator's own module.
    stable: WasmOperatorFactory,
    /// The canary's module, if one runs now.
    canary: Option<WasmOperatorFactory>,
    parts: Parts,
    versions: Arc<ModuleVersions>,
    /// Conditions that abort the canary by themselves.
    abort_if: Arc<Vec<CanaryAbortIf>>,
}

impl CanaryFactory {
    /// An operator running `stable`, and `canary` over some of its key groups; each subtask's
    /// key groups split into `parts`. `versions` is where the work of each is counted (given, so
    /// that the counts go on across restarts), `abort_if` what aborts the canary.
    pub fn new(
        (stable, canary): (WasmOperatorFactory, Option<WasmOperatorFactory>),
        parts: Parts,
        versions: Arc<ModuleVersions>,
        abort_if: Arc<Vec<CanaryAbortIf>>,
    ) -> Self {
        CanaryFactory { stable, canary, parts, versions, abort_if }
    }

    /// The module versions of an operator running `stable`, with `canary` over its first
    /// `canary_key_groups` key groups out of `max_parallelism`.
    pub fn versions(
        stable: &WasmOperatorFactory,
        canary: Option<&WasmOperatorFactory>,
        canary_key_groups: u32,
        max_parallelism: u32,
    ) -> ModuleVersions {
        let mut versions =
            vec![ModuleVersion::new(VersionRole::Stable, stable.code(), canary_key_groups..max_parallelism)];
        if let Some(canary) = canary {
            versions.push(ModuleVersion::new(VersionRole::Canary, canary.code(), 0..canary_key_groups));
        }
        versions
    }
}

impl OperatorFactory for CanaryFactory {
    fn create(&self, info: &SubtaskInfo) -> Result<Box<dyn Operator>, String> {
        let range = key_group_range(info.max_parallelism, info.parallelism, info.index);
        let parts = (self.parts)(range);
        let single = parts.len() == 1;
        let mut opened = Vec::with_capacity(parts.len());
        for (key_groups, canary) in parts {
            let (factory, version) = match (&self.canary, canary) {
                (Some(factory), true) => (factory, 1),
                _ => (&self.stable, 0),
            };
            // A part's snapshot is stored apart, and says which canary module wrote it.
            let tag = canary.then(|| factory.sha256().to_string());
            let part = (!single || tag.is_some()).then_some(SnapshotPart { canary: tag });
            let operator: Box<dyn Operator> = Box::new(factory.open(info, key_groups.clone(), part)?);
            opened.push(Part { key_groups, operator, version });
        }
        let (versions, abort_if) = (self.versions.clone(), self.abort_if.clone());
        Ok(Box::new(KeyRangeOperator::new(opened, info.max_parallelism, versions, abort_if)))
    }

    fn versions(&self) -> Option<Arc<ModuleVersions>> {
        Some(self.versions.clone())
    }
}
