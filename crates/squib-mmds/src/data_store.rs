//! The MMDS data store: one JSON document, replaced by `PUT /mmds`, merged by `PATCH /mmds`
//! (JSON merge patch, RFC 7396), read by `GET /mmds` and by the guest.
//!
//! Every change is computed on a copy and committed only when the result fits the size limit,
//! so a rejected request leaves the store exactly as it was.

use serde_json::{Map, Value};

/// Why a change to the store was refused. The `Display` texts are Firecracker's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MmdsStoreError {
    /// `PATCH` before any `PUT`.
    #[error("The MMDS data store is not initialized.")]
    NotInitialized,
    /// The document would exceed the size limit.
    #[error("The MMDS patch request doesn't fit.")]
    LimitExceeded,
    /// The document is not a JSON object.
    #[error("The MMDS data store must be a JSON object.")]
    NotAnObject,
}

/// The metadata document and its size limit (bytes of its compact JSON form).
#[derive(Debug, Clone)]
pub struct MmdsStore {
    data: Option<Value>,
    size_limit: usize,
}

impl MmdsStore {
    /// An empty, uninitialised store that accepts documents up to `size_limit` bytes.
    #[must_use]
    pub fn new(size_limit: usize) -> Self {
        Self {
            data: None,
            size_limit,
        }
    }

    /// The document (`{}` before the first `PUT`).
    #[must_use]
    pub fn get(&self) -> Value {
        self.data
            .clone()
            .unwrap_or_else(|| Value::Object(Map::new()))
    }

    /// A value inside the document by JSON pointer (`/a/b`), for the guest-facing side.
    #[must_use]
    pub fn get_path(&self, pointer: &str) -> Option<&Value> {
        self.data.as_ref()?.pointer(pointer)
    }

    /// Replace the whole document.
    ///
    /// # Errors
    /// [`MmdsStoreError::NotAnObject`] or [`MmdsStoreError::LimitExceeded`]; the store is
    /// unchanged on error.
    pub fn put(&mut self, value: Value) -> Result<(), MmdsStoreError> {
        if !value.is_object() {
            return Err(MmdsStoreError::NotAnObject);
        }
        self.check_size(&value)?;
        self.data = Some(value);
        Ok(())
    }

    /// Apply a JSON merge patch (RFC 7396) to the document.
    ///
    /// # Errors
    /// [`MmdsStoreError::NotInitialized`] before the first `PUT`,
    /// [`MmdsStoreError::LimitExceeded`] when the result would not fit; the store is unchanged.
    pub fn patch(&mut self, patch: &Value) -> Result<(), MmdsStoreError> {
        let current = self.data.as_ref().ok_or(MmdsStoreError::NotInitialized)?;
        let mut merged = current.clone();
        merge_patch(&mut merged, patch);
        if !merged.is_object() {
            return Err(MmdsStoreError::NotAnObject);
        }
        self.check_size(&merged)?;
        self.data = Some(merged);
        Ok(())
    }

    fn check_size(&self, value: &Value) -> Result<(), MmdsStoreError> {
        // Serialising a `Value` cannot fail; an error would only mean a bug in serde_json.
        let size = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
        if size > self.size_limit {
            return Err(MmdsStoreError::LimitExceeded);
        }
        Ok(())
    }
}

/// RFC 7396: objects merge key by key, `null` deletes a key, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else {
        return;
    };
    for (key, value) in patch_map {
        if value.is_null() {
            target_map.remove(key);
        } else {
            merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn empty_store_reads_as_empty_object_and_refuses_patch() {
        let mut store = MmdsStore::new(1024);
        assert_eq!(store.get(), json!({}));
        assert_eq!(
            store.patch(&json!({"a": 1})),
            Err(MmdsStoreError::NotInitialized)
        );
    }

    #[test]
    fn patch_follows_rfc7396() {
        let mut store = MmdsStore::new(1024);
        store
            .put(json!({"a": "b", "c": {"d": "e", "f": "g"}}))
            .unwrap();
        store
            .patch(&json!({"a": "z", "c": {"f": null}, "n": [1]}))
            .unwrap();
        assert_eq!(store.get(), json!({"a": "z", "c": {"d": "e"}, "n": [1]}));
        assert_eq!(store.get_path("/c/d"), Some(&json!("e")));
    }

    #[test]
    fn oversized_put_or_patch_leaves_store_unchanged() {
        let mut store = MmdsStore::new(20);
        store.put(json!({"k": "v"})).unwrap();
        let big = "x".repeat(32);
        assert_eq!(
            store.put(json!({ "k": big })),
            Err(MmdsStoreError::LimitExceeded)
        );
        assert_eq!(
            store.patch(&json!({ "k": big })),
            Err(MmdsStoreError::LimitExceeded)
        );
        assert_eq!(store.get(), json!({"k": "v"}));
    }

    #[test]
    fn non_object_documents_are_refused() {
        let mut store = MmdsStore::new(1024);
        assert_eq!(store.put(json!([1, 2])), Err(MmdsStoreError::NotAnObject));
        store.put(json!({})).unwrap();
        assert_eq!(store.patch(&json!("s")), Err(MmdsStoreError::NotAnObject));
    }
}
