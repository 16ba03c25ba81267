//! GitOps bootstrap: `schemas/<subject>/<version>.json` files reviewed in pull requests are
//! registered at start when the registry does not hold them yet, in version order, through
//! the same compatibility check as the API.

use std::sync::Arc;

use super::store::{canonical, RegistryStore, StoreError, VersionRef};
use super::{RegistryError, SchemaWork, StoredSchema};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Bootstrapped {
    pub registered: usize,
    pub already: usize,
    /// Files that disagree with the registry (only when conflicts are warnings).
    pub conflicts: Vec<String>,
}

/// Registers the files the registry lacks. A file whose version number the subject already
/// holds with another schema, or that the registry refuses, is a conflict: an error, or a
/// warning when `fail_on_conflict` is false.
pub async fn bootstrap(
    store: &dyn RegistryStore,
    files: &[StoredSchema],
    fail_on_conflict: bool,
    work: &SchemaWork,
) -> Result<Bootstrapped, RegistryError> {
    let mut out = Bootstrapped::default();
    for f in files {
        // Broken files stop start-up whatever the conflict policy: they are bugs in the repo.
        let invalid = |reason: String| RegistryError::Invalid {
            subject: f.subject.clone(),
            version: f.version,
            origin: f.origin.clone(),
            reason,
        };
        work.compile(Arc::new(f.schema.clone()))
            .await
            .map_err(|e| invalid(e.to_string()))?
            .map_err(invalid)?;
        let text = canonical(&f.schema);
        let conflict = match store
            .version(&f.subject, VersionRef::Number(f.version), true)
            .await
        {
            Ok(v) if v.schema == text => {
                out.already += 1;
                continue;
            }
            Ok(v) => Some(format!(
                "{}: the registry's {} version {} (id {}) is a different schema",
                f.origin, f.subject, f.version, v.id
            )),
            Err(StoreError::SubjectNotFound(_)) | Err(StoreError::VersionNotFound(..)) => {
                let next = match store.versions(&f.subject, true).await {
                    Ok(v) => v.last().copied().unwrap_or(0) + 1,
                    Err(StoreError::SubjectNotFound(_)) => 1,
                    Err(e) => return Err(RegistryError::Store(e.to_string())),
                };
                if next != f.version {
                    // Another replica starting from the same folder may have committed this
                    // very file between the two reads: read the version again before calling
                    // the histories different. (Registering when `next` matched is safe: the
                    // store returns the existing version of an identical schema.)
                    match store
                        .version(&f.subject, VersionRef::Number(f.version), true)
                        .await
                    {
                        Ok(v) if v.schema == text => {
                            out.already += 1;
                            continue;
                        }
                        _ => Some(format!(
                            "{}: the registry's next version of {} is {next}, not {}: its history differs from the folder",
                            f.origin, f.subject, f.version
                        )),
                    }
                } else {
                    match work
                        .register(store, &f.subject, Arc::new(f.schema.clone()), &text)
                        .await
                    {
                        Ok(r) => {
                            if r.existed {
                                out.already += 1;
                            } else {
                                out.registered += 1;
                                tracing::info!(subject = %f.subject, version = r.version, id = r.id, "registered schema file");
                            }
                            None
                        }
                        Err(StoreError::Incompatible(m)) => Some(format!(
                            "{}: incompatible with the registered versions of {}: {}",
                            f.origin,
                            f.subject,
                            m.join("; ")
                        )),
                        Err(e) => return Err(RegistryError::Store(e.to_string())),
                    }
                }
            }
            Err(e) => return Err(RegistryError::Store(e.to_string())),
        };
        if let Some(c) = conflict {
            if fail_on_conflict {
                return Err(RegistryError::Store(format!(
                    "{c} (set registry.on_conflict = \"warn\" to start anyway)"
                )));
            }
            tracing::warn!("schema file conflict: {c}");
            out.conflicts.push(c);
        }
    }
    Ok(out)
}
