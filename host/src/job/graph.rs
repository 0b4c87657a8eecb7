//! The job's dataflow graph as its file draws it. Each operator and sink reads the streams its
//! `inputs` name, each spread over its subtasks by a partitioning; one without `inputs` reads
//! what the straight line gives it (the sources feed the first operator, each operator the next,
//! the last operator every sink), so that job files written before graphs mean what they meant.
//! A vertex read by several others feeds each of them the whole stream.
use std::collections::{HashMap, HashSet};

use super::spec::{EdgeSpec, InputSpec, JobSpec, PartitioningSpec};
use crate::runtime::Partitioning;

/// One input of an operator or sink: the vertex it reads, which of its outputs, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Input {
    /// The uid of the source or operator read.
    pub(crate) from: String,
    /// The side output of that operator read (`"uid.name"` in the job file), resolved against
    /// its module's description when the job is built; `None`: its main output.
    pub(crate) output: Option<String>,
    pub(crate) partitioning: Partitioning,
}

impl Input {
    /// What the job file names: `uid`, or `uid.side-output`.
    pub(crate) fn name(&self) -> String {
        match &self.output {
            Some(output) => format!("{}.{output}", self.from),
            None => self.from.clone(),
        }
    }
}

/// What every operator and sink reads, and the order operators can be built in.
#[derive(Debug)]
pub(crate) struct Dataflow {
    /// Per operator of the job file, in its order.
    pub(crate) operators: Vec<Vec<Input>>,
    /// Per sink of the job file, in its order.
    pub(crate) sinks: Vec<Vec<Input>>,
    /// Indices of the operators, each after every operator it reads.
    pub(crate) order: Vec<usize>,
}

/// What a name in `from` is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Source,
    Operator(usize),
    Sink,
}

/// Resolves and checks the graph of a job whose uids are known to be distinct (see
/// [`super::check_shape`]). Refused, naming the vertex: an unknown `from`, a sink read, an
/// input named twice, a cycle, a source or operator nothing reads, an operator with keyed state
/// reading a stream other than by hash, a sink reading by broadcast.
pub(crate) fn resolve(spec: &JobSpec) -> Result<Dataflow, String> {
    let mut kinds: HashMap<&str, Kind> = HashMap::new();
    kinds.extend(spec.sources.iter().map(|s| (s.uid.as_str(), Kind::Source)));
    kinds.extend(spec.operators.iter().enumerate().map(|(i, o)| (o.uid.as_str(), Kind::Operator(i))));
    kinds.extend(spec.sinks.iter().map(|s| (s.uid.as_str(), Kind::Sink)));
    let sources: Vec<&str> = spec.sources.iter().map(|s| s.uid.as_str()).collect();

    let mut operators = Vec::with_capacity(spec.operators.len());
    for (i, op) in spec.operators.iter().enumerate() {
        let what = format!("operator '{}'", op.uid);
        let inputs = match (&op.inputs, op.input) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{what}: set `input` or `inputs`, not both (each of `inputs` names its own partitioning, as \
                     `inputs = [{{ from = \"…\", partitioning = \"hash\" }}]`)"
                ));
            }
            (Some(edges), None) => explicit(&what, edges, &kinds)?,
            (None, input) => {
                let partitioning = match input.unwrap_or_default() {
                    InputSpec::Forward => Partitioning::Forward,
                    InputSpec::Hash => Partitioning::Hash,
                };
                let upstream = match i {
                    0 => sources.clone(),
                    _ => vec![spec.operators[i - 1].uid.as_str()],
                };
                upstream.into_iter().map(|from| Input { from: from.to_string(), output: None, partitioning }).collect()
            }
        };
        check_keyed(&what, &inputs)?;
        operators.push(inputs);
    }
    let mut sinks = Vec::with_capacity(spec.sinks.len());
    for sink in &spec.sinks {
        let what = format!("sink '{}'", sink.uid);
        let inputs = match &sink.inputs {
            Some(edges) => explicit(&what, edges, &kinds)?,
            None => match spec.operators.last() {
                Some(last) => vec![Input { from: last.uid.clone(), output: None, partitioning: Partitioning::Forward }],
                None => sources
                    .iter()
                    .map(|s| Input { from: s.to_string(), output: None, partitioning: Partitioning::Forward })
                    .collect(),
            },
        };
        if let Some(input) = inputs.iter().find(|i| i.partitioning == Partitioning::Broadcast) {
            return Err(format!(
                "{what}: reads '{}' by broadcast, which would write every event once per subtask; use forward, \
                 rebalance or hash",
                input.name()
            ));
        }
        sinks.push(inputs);
    }

    let read: HashSet<&str> = operators.iter().chain(&sinks).flatten().map(|i| i.from.as_str()).collect();
    let unread = spec
        .sources
        .iter()
        .map(|s| ("source", &s.uid))
        .chain(spec.operators.iter().map(|o| ("operator", &o.uid)))
        .find(|(_, uid)| !read.contains(uid.as_str()));
    if let Some((kind, uid)) = unread {
        return Err(format!(
            "{kind} '{uid}' feeds nothing: name it in the `inputs` of an operator or sink (`inputs = [{{ from = \
             \"{uid}\" }}]`), or remove it"
        ));
    }
    let order = topological_order(spec, &operators, &kinds)?;
    Ok(Dataflow { operators, sinks, order })
}

/// The inputs a vertex's `inputs` name, each checked to be a source or an operator, once.
fn explicit(what: &str, edges: &[EdgeSpec], kinds: &HashMap<&str, Kind>) -> Result<Vec<Input>, String> {
    if edges.is_empty() {
        return Err(format!("{what}: `inputs` is empty; it must read at least one source or operator"));
    }
    let mut inputs: Vec<Input> = Vec::with_capacity(edges.len());
    for edge in edges {
        // A uid itself, else `uid.name`: a side output of an operator (the uid wins: uids may
        // have dots).
        let (from, output) = match kinds.get(edge.from.as_str()) {
            Some(_) => (edge.from.as_str(), None),
            None => match edge.from.rsplit_once('.') {
                Some((uid, output)) if kinds.contains_key(uid) => (uid, Some(output)),
                _ => (edge.from.as_str(), None),
            },
        };
        match (kinds.get(from), output) {
            (Some(Kind::Operator(_)), _) | (Some(Kind::Source), None) => {}
            (Some(Kind::Source), Some(output)) => {
                return Err(format!(
                    "{what}: reads side output '{output}' of '{from}', which is a source; only operators have side \
                     outputs"
                ));
            }
            (Some(Kind::Sink), _) => {
                return Err(format!(
                    "{what}: reads '{}', which is a sink; sinks write out of the job and cannot be read",
                    edge.from
                ));
            }
            (None, _) => {
                return Err(format!(
                    "{what}: reads '{}', which is no source or operator of this job (known: {})",
                    edge.from,
                    known(kinds)
                ));
            }
        }
        let output = output.map(str::to_string);
        if inputs.iter().any(|i| i.from == from && i.output == output) {
            return Err(format!("{what}: reads '{}' twice; name each input once", edge.from));
        }
        let partitioning = match edge.partitioning {
            PartitioningSpec::Forward => Partitioning::Forward,
            PartitioningSpec::Hash => Partitioning::Hash,
            PartitioningSpec::Rebalance => Partitioning::Rebalance,
            PartitioningSpec::Broadcast => Partitioning::Broadcast,
        };
        inputs.push(Input { from: from.to_string(), output, partitioning });
    }
    Ok(inputs)
}

/// The sources and operators of the job, for a message.
fn known(kinds: &HashMap<&str, Kind>) -> String {
    let mut names: Vec<&str> = kinds.iter().filter(|(_, k)| **k != Kind::Sink).map(|(uid, _)| *uid).collect();
    names.sort_unstable();
    names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
}

/// An operator reading any stream by hash has keyed state, which every event it processes needs
/// a key of its own subtask for: then it reads every stream by hash, except broadcast streams,
/// which every subtask reads whole into its broadcast state (Flink's broadcast state pattern).
fn check_keyed(what: &str, inputs: &[Input]) -> Result<(), String> {
    let Some(keyed) = inputs.iter().find(|i| i.partitioning == Partitioning::Hash) else { return Ok(()) };
    let other = inputs.iter().find(|i| !matches!(i.partitioning, Partitioning::Hash | Partitioning::Broadcast));
    match other {
        None => Ok(()),
        Some(other) => Err(format!(
            "{what}: reads '{}' by hash and '{}' by {}; an operator with keyed state reads every stream by \
             hash, or by broadcast into its broadcast state: set partitioning = \"hash\" on '{}'",
            keyed.name(),
            other.name(),
            other.partitioning.name(),
            other.name()
        )),
    }
}

/// The operators in an order where each comes after every operator it reads; a cycle is refused
/// with its path.
fn topological_order(
    spec: &JobSpec,
    operators: &[Vec<Input>],
    kinds: &HashMap<&str, Kind>,
) -> Result<Vec<usize>, String> {
    let upstream = |i: usize| {
        operators[i].iter().filter_map(|input| match kinds.get(input.from.as_str()) {
            Some(Kind::Operator(j)) => Some(*j),
            _ => None,
        })
    };
    // Depth-first, in the job file's order: a straight line keeps its order.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    let mut marks = vec![Mark::New; operators.len()];
    let mut order = Vec::with_capacity(operators.len());
    for start in 0..operators.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // (operator, whether its inputs have been pushed)
        let mut stack = vec![(start, false)];
        let mut path: Vec<usize> = Vec::new();
        while let Some((i, expanded)) = stack.pop() {
            if expanded {
                marks[i] = Mark::Done;
                path.pop();
                order.push(i);
                continue;
            }
            match marks[i] {
                Mark::Done => continue,
                Mark::Visiting => {
                    let from = path.iter().position(|&p| p == i).unwrap_or(0);
                    let cycle: Vec<&str> =
                        path[from..].iter().chain([&i]).map(|&p| spec.operators[p].uid.as_str()).collect();
                    return Err(format!(
                        "the job's graph has a cycle: {} (each reads the next); a stream cannot feed itself",
                        cycle.join(" → ")
                    ));
                }
                Mark::New => {}
            }
            marks[i] = Mark::Visiting;
            path.push(i);
            stack.push((i, true));
            stack.extend(upstream(i).filter(|&j| marks[j] != Mark::Done).map(|j| (j, false)));
        }
    }
    Ok(order)
}

/// The operators (indices into `spec.operators`, upstream first) between source `source` and
/// operator `operator`, when each of them, and `operator`, reads exactly one stream and the first
/// reads `source`: the chain whose output `operator` receives (`weir replay --events-from`).
pub(crate) fn chain_from(spec: &JobSpec, source: &str, operator: &str) -> Result<Vec<usize>, String> {
    let dataflow = resolve(spec)?;
    let index = |uid: &str| spec.operators.iter().position(|op| op.uid == uid);
    let mut at = index(operator).ok_or_else(|| format!("the job has no operator '{operator}'"))?;
    let mut chain = Vec::new();
    loop {
        let [input] = &dataflow.operators[at][..] else {
            return Err(format!(
                "operator '{}' reads {} streams: replay follows one line of operators from the source",
                spec.operators[at].uid,
                dataflow.operators[at].len()
            ));
        };
        if input.from == source && input.output.is_none() {
            chain.reverse();
            return Ok(chain);
        }
        match (index(&input.from), &input.output) {
            (Some(upstream), None) if !chain.contains(&upstream) => {
                chain.push(upstream);
                at = upstream;
            }
            _ => {
                return Err(format!(
                    "operator '{operator}' does not read source '{source}' through one line of operators (it reads \
                     '{}')",
                    input.name()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job of generator `src`, the operators `(uid, inputs)` (TOML, or `None` for the straight
    /// line) and one sink reading `sink_reads`.
    fn spec(operators: &[(&str, Option<&str>)], sink_reads: &str) -> JobSpec {
        let mut text = "name = \"g\"\n[[source]]\nuid = \"src\"\ntype = \"generator\"\n".to_string();
        for (uid, inputs) in operators {
            text.push_str(&format!("[[operator]]\nuid = \"{uid}\"\nbuiltin = \"keyed-count\"\n"));
            if let Some(inputs) = inputs {
                text.push_str(&format!("inputs = {inputs}\n"));
            }
        }
        text.push_str(&format!("[[sink]]\nuid = \"out\"\ntype = \"blackhole\"\ninputs = {sink_reads}\n"));
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn operators_come_after_what_they_read_whatever_the_file_order() {
        let job = spec(
            &[
                ("c", Some("[{ from = \"b\" }]")),
                ("b", Some("[{ from = \"a\" }]")),
                ("a", Some("[{ from = \"src\" }]")),
            ],
            "[{ from = \"c\" }]",
        );
        let dataflow = resolve(&job).unwrap();
        assert_eq!(dataflow.order, [2, 1, 0]);
        let line = spec(&[("a", None), ("b", None)], "[{ from = \"b\" }]");
        let dataflow = resolve(&line).unwrap();
        assert_eq!(dataflow.order, [0, 1]);
        assert_eq!(
            dataflow.operators[1],
            [Input { from: "a".into(), output: None, partitioning: Partitioning::Forward }]
        );
    }

    #[test]
    fn a_cycle_is_named_by_its_path() {
        let job = spec(
            &[
                ("a", Some("[{ from = \"src\" }, { from = \"c\" }]")),
                ("b", Some("[{ from = \"a\" }]")),
                ("c", Some("[{ from = \"b\" }]")),
            ],
            "[{ from = \"c\" }]",
        );
        let error = resolve(&job).unwrap_err();
        assert!(error.contains("cycle: a → c → b → a"), "{error}");
    }
}
