//! The `kafka` source's and sink's tables of a job file.
use std::collections::BTreeMap;

use crate::connectors::{
    KafkaClient, KafkaSinkConfig, KafkaSinkFactory, KafkaSourceConfig, KafkaSourceFactory, StartFrom,
};
use crate::job::spec::{SinkSpec, SourceSpec, SourceType, duration};
use crate::runtime::{SinkFactory, SourceFactory};

/// How often a kafka source looks for new partitions unless the job file says.
const DEFAULT_DISCOVERY: &str = "30s";

/// Refuses the kafka settings of a source of another type.
pub(super) fn refuse_kafka_settings(s: &SourceSpec) -> Result<(), String> {
    let kafka_only = [
        ("bootstrap-servers", s.bootstrap_servers.is_some()),
        ("topic", s.topic.is_some()),
        ("topics", s.topics.is_some()),
        ("start-from", s.start_from.is_some()),
        ("stop-at", s.stop_at.is_some()),
        ("offset-reset", s.offset_reset.is_some()),
        ("group-id", s.group_id.is_some()),
        ("partition-discovery", s.partition_discovery.is_some()),
        ("properties", s.properties.is_some()),
        ("password-env", s.password_env.is_some()),
    ];
    super::only_for("source", &s.uid, "kafka sources", s.kind == SourceType::Kafka, &kafka_only)
}

/// The brokers and properties of kafka table `uid` (`kind`: "source" or "sink"), with the SASL
/// password from the variable `password_env` names (never from the job file).
fn client(
    kind: &str,
    uid: &str,
    bootstrap_servers: &Option<String>,
    properties: &Option<BTreeMap<String, toml::Value>>,
    password_env: &Option<String>,
) -> Result<KafkaClient, String> {
    let bootstrap_servers = bootstrap_servers.clone().ok_or_else(|| {
        format!("{kind} '{uid}': `bootstrap-servers` is required for a kafka {kind}, such as \"127.0.0.1:9092\"")
    })?;
    let mut passed = BTreeMap::new();
    for (key, value) in properties.iter().flatten() {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(x) => x.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => return Err(format!("{kind} '{uid}': property \"{key}\" must be a string, a number or a boolean")),
        };
        if ["sasl.password", "ssl.key.password", "ssl.keystore.password"].contains(&key.as_str()) {
            return Err(format!(
                "{kind} '{uid}': property \"{key}\" is a password; never put one in a job file: name the \
                 environment variable that holds the SASL password with `password-env`"
            ));
        }
        if ["bootstrap.servers", "group.id", "enable.auto.commit", "enable.idempotence", "transactional.id"]
            .contains(&key.as_str())
        {
            return Err(format!(
                "{kind} '{uid}': property \"{key}\" is weir's to set (use the table's own settings instead)"
            ));
        }
        passed.insert(key.clone(), text);
    }
    if let Some(password) = super::password(kind, uid, password_env)? {
        passed.insert("sasl.password".to_string(), password);
    }
    Ok(KafkaClient { uid: uid.to_string(), bootstrap_servers, properties: passed })
}

pub(super) fn source(s: &SourceSpec) -> Result<Box<dyn SourceFactory>, String> {
    let uid = &s.uid;
    for (key, set) in [("path", s.path.is_some()), ("count", s.count.is_some()), ("keys", s.keys.is_some())] {
        if set {
            return Err(format!("source '{uid}': `{key}` is not a setting of kafka sources"));
        }
    }
    let client = client("source", uid, &s.bootstrap_servers, &s.properties, &s.password_env)?;
    let topics = match (&s.topic, &s.topics) {
        (Some(topic), None) => vec![topic.clone()],
        (None, Some(topics)) if !topics.is_empty() => topics.clone(),
        (Some(_), Some(_)) => return Err(format!("source '{uid}': set `topic` or `topics`, not both")),
        _ => return Err(format!("source '{uid}': `topic` (or `topics`) is required for a kafka source")),
    };
    let start_from = match s.start_from.as_deref() {
        None | Some("earliest") => StartFrom::Earliest,
        Some("latest") => StartFrom::Latest,
        Some("committed") => StartFrom::Committed,
        Some(time) => match humantime::parse_rfc3339_weak(time) {
            Ok(at) => {
                StartFrom::Timestamp(at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
            }
            Err(_) => {
                return Err(format!(
                    "source '{uid}': start-from \"{time}\" is not earliest, latest, committed or a time such as \
                     \"2026-11-30T12:00:00Z\""
                ));
            }
        },
    };
    let bounded = match s.stop_at.as_deref() {
        None => false,
        Some("latest") => true,
        Some(other) => return Err(format!("source '{uid}': stop-at \"{other}\" is not \"latest\" (the only bound)")),
    };
    let offset_reset = match s.offset_reset.as_deref() {
        None => None,
        Some("earliest") => Some(StartFrom::Earliest),
        Some("latest") => Some(StartFrom::Latest),
        Some(other) => {
            return Err(format!("source '{uid}': offset-reset \"{other}\" is not \"earliest\" or \"latest\""));
        }
    };
    let discovery_text = s.partition_discovery.as_deref().unwrap_or(DEFAULT_DISCOVERY);
    let discovery = duration(discovery_text)
        .ok_or_else(|| format!("source '{uid}': partition-discovery \"{discovery_text}\" is not a duration"))?;
    let config = KafkaSourceConfig {
        client,
        topics,
        start_from,
        offset_reset,
        bounded,
        group_id: s.group_id.clone().unwrap_or_else(|| format!("weir-{uid}")),
        discovery: (!discovery.is_zero()).then_some(discovery),
        rate: s.rate,
    };
    Ok(Box::new(KafkaSourceFactory::new(config)))
}

pub(super) fn sink(s: &SinkSpec) -> Result<Box<dyn SinkFactory>, String> {
    let uid = &s.uid;
    let client = client("sink", uid, &s.bootstrap_servers, &s.properties, &s.password_env)?;
    let topic = s.topic.clone().ok_or_else(|| format!("sink '{uid}': `topic` is required for a kafka sink"))?;
    match s.delivery.as_deref() {
        None | Some("at-least-once") => {}
        Some("exactly-once") => {
            return Err(format!(
                "sink '{uid}': delivery = \"exactly-once\" is not supported: it needs Kafka transactions, which weir \
                 has not been proven against (no broker with transactions can be installed where weir is tested); \
                 use \"at-least-once\", or a postgres sink for exactly-once output"
            ));
        }
        Some(other) => return Err(format!("sink '{uid}': delivery \"{other}\" is not \"at-least-once\"")),
    }
    Ok(Box::new(KafkaSinkFactory::new(KafkaSinkConfig { client, topic })))
}
