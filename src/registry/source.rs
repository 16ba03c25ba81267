//! The registry store as the validator cache's source: every live subject version.

use std::sync::Arc;

use async_trait::async_trait;

use super::store::RegistryStore;
use super::{RegistryError, SchemaStore, StoredSchema};

pub struct StoreSource(pub Arc<dyn RegistryStore>);

#[async_trait]
impl SchemaStore for StoreSource {
    async fn all_schemas(&self) -> Result<Vec<StoredSchema>, RegistryError> {
        let live = self
            .0
            .live()
            .await
            .map_err(|e| RegistryError::Store(e.to_string()))?;
        live.into_iter()
            .map(|v| {
                let schema = serde_json::from_str(&v.schema).map_err(|e| {
                    RegistryError::Store(format!("schema id {} is not JSON: {e}", v.id))
                })?;
                Ok(StoredSchema {
                    origin: format!("registry id {}", v.id),
                    subject: v.subject,
                    version: v.version,
                    schema,
                    id: Some(v.id),
                })
            })
            .collect()
    }
}
