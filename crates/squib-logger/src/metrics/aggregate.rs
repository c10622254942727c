//! Summing per-device groups into Firecracker's aggregate group (`block` = all `block_<id>`).
//!
//! Firecracker prints each device's group and an aggregate whose counters are the sum of the
//! devices' deltas (`src/vmm/src/devices/virtio/block/virtio/metrics.rs` `flush_metrics`). We
//! do the same on the JSON of each group, keeping field order: counters add up, latency
//! `min_us` / `max_us` take the smallest non-zero / largest value.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// A JSON value with object fields in their original order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// An unsigned counter or gauge.
    Num(u64),
    /// An object, fields in order.
    Obj(Vec<(String, Node)>),
    /// Anything else (kept from the first group that has it).
    Other(serde_json::Value),
}

impl Node {
    /// Parse the JSON text of one group.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Add `other` into `self`; `key` is the field name of both (for min/max latencies).
    pub(crate) fn merge(&mut self, key: &str, other: &Self) {
        match (self, other) {
            (Self::Num(a), Self::Num(b)) => *a = combine(key, *a, *b),
            (Self::Obj(fields), Self::Obj(others)) => {
                for (name, value) in others {
                    match fields.iter_mut().find(|(n, _)| n == name) {
                        Some((_, mine)) => mine.merge(name, value),
                        None => fields.push((name.clone(), value.clone())),
                    }
                }
            }
            _ => {}
        }
    }
}

fn combine(key: &str, a: u64, b: u64) -> u64 {
    match key {
        "min_us" if a == 0 => b,
        "min_us" if b == 0 => a,
        "min_us" => a.min(b),
        "max_us" => a.max(b),
        _ => a.saturating_add(b),
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Num(n) => serializer.serialize_u64(*n),
            Self::Obj(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Self::Other(value) => value.serialize(serializer),
        }
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a metrics group")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Num(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(u64::try_from(v).map_or(Node::Other(v.into()), Node::Num))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Other(serde_json::Value::from(v)))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Other(v.into()))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Other(v.into()))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Node, E> {
        Ok(Node::Other(serde_json::Value::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<serde_json::Value>()? {
            items.push(item);
        }
        Ok(Node::Other(serde_json::Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut fields = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Node>()? {
            fields.push((k, v));
        }
        Ok(Node::Obj(fields))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_counters_and_keeps_field_order() {
        let mut total =
            Node::parse(br#"{"z":1,"a":2,"agg":{"min_us":0,"max_us":3,"sum_us":4}}"#).unwrap();
        let other =
            Node::parse(br#"{"z":10,"a":20,"new":5,"agg":{"min_us":7,"max_us":9,"sum_us":1}}"#)
                .unwrap();
        total.merge("block", &other);
        let text = serde_json::to_string(&total).unwrap();
        assert_eq!(
            text,
            r#"{"z":11,"a":22,"agg":{"min_us":7,"max_us":9,"sum_us":5},"new":5}"#
        );
    }

    #[test]
    fn min_latency_ignores_zero_samples() {
        assert_eq!(combine("min_us", 4, 0), 4);
        assert_eq!(combine("min_us", 4, 2), 2);
        assert_eq!(combine("max_us", 4, 2), 4);
        assert_eq!(combine("read_bytes", u64::MAX, 2), u64::MAX);
    }

    #[test]
    fn non_numbers_survive_a_round_trip() {
        let node = Node::parse(br#"{"s":"x","b":true,"n":null,"l":[1],"neg":-1,"f":1.5}"#).unwrap();
        let text = serde_json::to_string(&node).unwrap();
        assert_eq!(
            text,
            r#"{"s":"x","b":true,"n":null,"l":[1],"neg":-1,"f":1.5}"#
        );
    }
}
