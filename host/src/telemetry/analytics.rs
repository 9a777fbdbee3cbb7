//! The analytics sink behind the `analytics` capability: every event is appended as a JSON
//! line (when a file is configured) and folded into an in-memory aggregate by route,
//! consumer and status, readable through the `analytics` responder.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use super::AccessLog;

/// Counters of one (route, consumer, status) group.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Aggregate {
    /// Events.
    pub count: u64,
    /// Sum of `latency_us` fields.
    pub latency_us_sum: u64,
    /// Sum of `response_bytes` fields (as emitted by the `analytics` policy).
    pub bytes_sum: u64,
}

/// Where analytics events go.
pub struct AnalyticsSink {
    file: AccessLog,
    aggregate: Mutex<BTreeMap<(String, String, String), Aggregate>>,
}

/// Most fields kept per event.
const MAX_FIELDS: usize = 32;
/// Longest field name or value kept.
const MAX_FIELD_BYTES: usize = 1024;

impl AnalyticsSink {
    /// A sink writing JSON lines to `path` (`None`: aggregate only).
    pub fn new(path: Option<&str>) -> std::io::Result<Self> {
        Ok(Self {
            file: match path {
                Some(p) => AccessLog::start(p)?,
                None => AccessLog::disabled(),
            },
            aggregate: Mutex::new(BTreeMap::new()),
        })
    }

    /// Records one event from `plugin`.
    pub fn record(&self, plugin: &str, fields: Vec<(String, String)>) {
        let mut obj = serde_json::Map::new();
        obj.insert("plugin".into(), plugin.into());
        for (k, v) in fields.into_iter().take(MAX_FIELDS) {
            if k.len() <= MAX_FIELD_BYTES && v.len() <= MAX_FIELD_BYTES {
                obj.insert(k, serde_json::Value::String(v));
            }
        }
        let field = |k: &str| {
            obj.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let num = |k: &str| {
            obj.get(k)
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let key = (field("route"), field("consumer"), field("status"));
        {
            let mut agg = self.aggregate.lock().unwrap_or_else(|p| p.into_inner());
            let a = agg.entry(key).or_default();
            a.count += 1;
            a.latency_us_sum += num("latency_us");
            a.bytes_sum += num("response_bytes");
        }
        self.file.write_value(&serde_json::Value::Object(obj));
    }

    /// The aggregate as JSON: a list of `{route, consumer, status, count, …}`.
    pub fn snapshot(&self) -> serde_json::Value {
        let agg = self.aggregate.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::Value::Array(
            agg.iter()
                .map(|((route, consumer, status), a)| {
                    serde_json::json!({
                        "route": route, "consumer": consumer, "status": status,
                        "count": a.count, "latency_us_sum": a.latency_us_sum, "bytes_sum": a.bytes_sum,
                    })
                })
                .collect(),
        )
    }
}
