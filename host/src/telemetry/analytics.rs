//! The analytics sink behind the `analytics` capability: every event is appended as a JSON
//! line (when a file is configured) and folded into an in-memory aggregate by route,
//! consumer and status, readable through the `analytics` responder.

use std::hash::BuildHasher;
use std::sync::Mutex;

use hashbrown::HashTable;
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

/// A (route, consumer, status) group and its counters.
type Group = (Box<str>, Box<str>, Box<str>, Aggregate);

/// The aggregate: groups found by the hash of their (route, consumer, status), so that an
/// event of an existing group is counted without allocating its key.
#[derive(Default)]
struct Groups {
    hasher: foldhash::fast::RandomState,
    table: HashTable<Group>,
}

impl Groups {
    fn add(&mut self, route: &str, consumer: &str, status: &str, latency_us: u64, bytes: u64) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one((route, consumer, status));
        let (_, _, _, a) = self
            .table
            .entry(
                hash,
                |(r, c, s, _)| (&**r, &**c, &**s) == (route, consumer, status),
                |(r, c, s, _)| hasher.hash_one((&**r, &**c, &**s)),
            )
            .or_insert_with(|| {
                (
                    route.into(),
                    consumer.into(),
                    status.into(),
                    Aggregate::default(),
                )
            })
            .into_mut();
        a.count += 1;
        a.latency_us_sum += latency_us;
        a.bytes_sum += bytes;
    }
}

/// Where analytics events go.
pub struct AnalyticsSink {
    file: AccessLog,
    aggregate: Mutex<Groups>,
}

/// Most fields kept per event.
pub const MAX_FIELDS: usize = 32;
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
            aggregate: Mutex::new(Groups::default()),
        })
    }

    /// Records one event from `plugin`. Only the first [`MAX_FIELDS`] fields count, and
    /// only those whose name and value fit [`MAX_FIELD_BYTES`]; of a name given twice, the
    /// last value counts.
    /// The fields are borrowed (the host reads them in place from the guest's memory).
    pub fn record<S: AsRef<str>>(&self, plugin: &str, fields: &[(S, S)]) {
        let fits = |(k, v): &&(S, S)| {
            k.as_ref().len() <= MAX_FIELD_BYTES && v.as_ref().len() <= MAX_FIELD_BYTES
        };
        let kept = || fields.iter().take(MAX_FIELDS).filter(fits);
        let field = |name: &str| {
            kept()
                .rfind(|(k, _)| k.as_ref() == name)
                .map_or("", |(_, v)| v.as_ref())
        };
        let num = |name: &str| field(name).parse::<u64>().unwrap_or(0);
        // Read the fields before taking the lock: other workers wait on it.
        let (route, consumer, status) = (field("route"), field("consumer"), field("status"));
        let (latency_us, bytes) = (num("latency_us"), num("response_bytes"));
        self.aggregate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(route, consumer, status, latency_us, bytes);
        if self.file.enabled() {
            let mut obj = serde_json::Map::new();
            obj.insert("plugin".into(), plugin.into());
            for (k, v) in kept() {
                obj.insert(k.as_ref().into(), v.as_ref().into());
            }
            self.file.write_value(&serde_json::Value::Object(obj));
        }
    }

    /// Waits up to `limit` for the events queued for the file to be written (see
    /// [`AccessLog::flush`]).
    pub fn flush(&self, limit: std::time::Duration) -> bool {
        self.file.flush(limit)
    }

    /// Reopens the events file after log rotation (see [`AccessLog::reopen`]).
    pub fn reopen(&self) {
        self.file.reopen();
    }

    /// The aggregate as JSON: a list of `{route, consumer, status, count, …}`, ordered by
    /// route, consumer and status.
    pub fn snapshot(&self) -> serde_json::Value {
        let agg = self.aggregate.lock().unwrap_or_else(|p| p.into_inner());
        let mut groups: Vec<&Group> = agg.table.iter().collect();
        groups.sort_unstable_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
        serde_json::Value::Array(
            groups
                .into_iter()
                .map(|(route, consumer, status, a)| {
                    serde_json::json!({
                        "route": route, "consumer": consumer, "status": status,
                        "count": a.count, "latency_us_sum": a.latency_us_sum, "bytes_sum": a.bytes_sum,
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn events_of_one_group_are_summed_and_groups_are_listed_in_order() {
        let sink = AnalyticsSink::new(None).unwrap();
        let ev = |route, consumer, status, latency| {
            event(&[
                ("route", route),
                ("consumer", consumer),
                ("status", status),
                ("latency_us", latency),
                ("response_bytes", "10"),
            ])
        };
        sink.record("analytics", &ev("b", "alice", "200", "5"));
        sink.record("analytics", &ev("a", "bob", "429", "1"));
        sink.record("analytics", &ev("b", "alice", "200", "7"));
        sink.record("analytics", &ev("a", "alice", "200", "x"));
        let rows = sink.snapshot();
        let rows = rows.as_array().unwrap();
        let keys: Vec<_> = rows
            .iter()
            .map(|r| format!("{}/{}/{}", r["route"], r["consumer"], r["status"]))
            .collect();
        assert_eq!(
            keys,
            [
                r#""a"/"alice"/"200""#,
                r#""a"/"bob"/"429""#,
                r#""b"/"alice"/"200""#
            ]
        );
        assert_eq!(rows[2]["count"], 2);
        assert_eq!(rows[2]["latency_us_sum"], 12);
        assert_eq!(rows[2]["bytes_sum"], 20);
        // A latency that is not a number counts as 0.
        assert_eq!(rows[0]["latency_us_sum"], 0);
    }

    #[test]
    fn the_last_value_of_a_repeated_field_counts_and_oversized_fields_are_ignored() {
        let sink = AnalyticsSink::new(None).unwrap();
        let long = "r".repeat(MAX_FIELD_BYTES + 1);
        sink.record(
            "analytics",
            &event(&[
                ("route", "first"),
                ("route", "second"),
                ("route", &long),
                ("status", "200"),
            ]),
        );
        let rows = sink.snapshot();
        assert_eq!(rows[0]["route"], "second");
        assert_eq!(rows[0]["consumer"], "");
        assert_eq!(rows[0]["count"], 1);
    }

    #[test]
    fn only_the_first_fields_of_an_event_count() {
        let sink = AnalyticsSink::new(None).unwrap();
        let mut fields: Vec<(String, String)> = (0..MAX_FIELDS)
            .map(|i| (format!("f{i}"), "v".to_string()))
            .collect();
        fields.push(("route".into(), "late".into()));
        sink.record("analytics", &fields);
        assert_eq!(sink.snapshot()[0]["route"], "");
    }
}
