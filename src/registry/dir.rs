//! The `schemas/<subject>/<version>.json` folder: schemas reviewed in pull requests.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{RegistryError, SchemaStore, StoredSchema};

pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn read(dir: &Path) -> Result<Vec<StoredSchema>, RegistryError> {
        let err = |what: String| RegistryError::Store(what);
        let subjects = std::fs::read_dir(dir).map_err(|e| {
            err(format!(
                "cannot read the schemas folder {} (config field `schemas.dir`): {e}",
                dir.display()
            ))
        })?;
        let mut out = Vec::new();
        for subject_dir in subjects {
            let subject_dir = subject_dir.map_err(|e| err(e.to_string()))?;
            if !subject_dir
                .file_type()
                .map_err(|e| err(e.to_string()))?
                .is_dir()
            {
                continue; // README and the like
            }
            let subject = subject_dir.file_name().to_string_lossy().into_owned();
            for file in std::fs::read_dir(subject_dir.path()).map_err(|e| err(e.to_string()))? {
                let path = file.map_err(|e| err(e.to_string()))?.path();
                if path.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                let version: u32 = stem.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                    err(format!(
                        "{}: schema files are named <version>.json with a positive integer version",
                        path.display()
                    ))
                })?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| err(format!("{}: {e}", path.display())))?;
                let schema = serde_json::from_str(&text)
                    .map_err(|e| err(format!("{} is not valid JSON: {e}", path.display())))?;
                out.push(StoredSchema {
                    subject: subject.clone(),
                    version,
                    schema,
                    origin: path.display().to_string(),
                    id: None,
                });
            }
        }
        out.sort_by(|a, b| (&a.subject, a.version).cmp(&(&b.subject, b.version)));
        Ok(out)
    }
}

#[async_trait]
impl SchemaStore for DirStore {
    async fn all_schemas(&self) -> Result<Vec<StoredSchema>, RegistryError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || DirStore::read(&dir))
            .await
            .map_err(|e| RegistryError::Store(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_subjects_and_versions_and_names_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a.b")).unwrap();
        std::fs::write(dir.path().join("a.b/1.json"), "{}").unwrap();
        std::fs::write(dir.path().join("a.b/2.json"), r#"{"type":"object"}"#).unwrap();
        std::fs::write(dir.path().join("a.b/notes.md"), "x").unwrap();
        std::fs::write(dir.path().join("README.md"), "x").unwrap();
        let all = DirStore::read(dir.path()).unwrap();
        assert_eq!(
            all.iter().map(|s| s.version).collect::<Vec<_>>(),
            vec![1, 2]
        );
        std::fs::write(dir.path().join("a.b/latest.json"), "{}").unwrap();
        assert!(DirStore::read(dir.path())
            .unwrap_err()
            .to_string()
            .contains("latest.json"));
        assert!(DirStore::read(&dir.path().join("missing"))
            .unwrap_err()
            .to_string()
            .contains("schemas.dir"));
    }
}
