//! Which backend serves which location scheme: one registration line per backend.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::s3::{S3Settings, S3Store, S3_SCHEME};
use super::{CheckpointStore, Location, StoreError, LOCAL_SCHEME};

/// Backends by scheme, held by the engine. Adding a backend is one
/// [`register`](StoreRegistry::register) call (in [`StoreRegistry::builtin`] for the
/// product's own, or on `Engine::stores()` for one a test or an embedder brings).
#[derive(Default)]
pub struct StoreRegistry {
    stores: RwLock<BTreeMap<String, Arc<dyn CheckpointStore>>>,
}

impl StoreRegistry {
    /// The backends built into the product; the S3 one reaches its server as
    /// `s3` and the `AWS_*` environment say.
    pub fn builtin(s3: S3Settings) -> Self {
        let r = Self::default();
        r.register(LOCAL_SCHEME, Arc::new(super::local::LocalStore));
        r.register(S3_SCHEME, Arc::new(S3Store::new(s3)));
        r
    }

    /// Serves `scheme://` locations with `store` (replacing a previous one of the scheme).
    pub fn register(&self, scheme: &str, store: Arc<dyn CheckpointStore>) {
        self.stores
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(scheme.to_ascii_lowercase(), store);
    }

    /// The backend for `at`, or [`StoreError::UnknownScheme`] naming the scheme.
    pub fn resolve(&self, at: &Location) -> Result<Arc<dyn CheckpointStore>, StoreError> {
        let stores = self.stores.read().unwrap_or_else(|p| p.into_inner());
        stores
            .get(at.scheme())
            .cloned()
            .ok_or_else(|| StoreError::UnknownScheme {
                scheme: at.scheme().to_string(),
                served: stores.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// A path as given by a caller (a directory, an archive or a `scheme://` URL): its
    /// location and the backend serving it.
    pub fn resolve_path(
        &self,
        path: &std::path::Path,
    ) -> Result<(Location, Arc<dyn CheckpointStore>), StoreError> {
        let at = Location::from_path(path)?;
        let store = self.resolve(&at)?;
        Ok((at, store))
    }

    /// Runs every backend's [`CheckpointStore::recover_unfinished`]; what they did.
    pub fn recover_unfinished(&self) -> Vec<String> {
        let stores: Vec<_> = {
            let s = self.stores.read().unwrap_or_else(|p| p.into_inner());
            s.values().cloned().collect()
        };
        stores.iter().flat_map(|s| s.recover_unfinished()).collect()
    }

    /// The schemes served, sorted.
    pub fn schemes(&self) -> Vec<String> {
        let stores = self.stores.read().unwrap_or_else(|p| p.into_inner());
        stores.keys().cloned().collect()
    }
}

impl std::fmt::Debug for StoreRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreRegistry")
            .field("schemes", &self.schemes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schemes_are_refused_by_name() {
        let r = StoreRegistry::builtin(S3Settings::default());
        assert!(r.resolve(&Location::local("/x")).is_ok());
        assert!(r
            .resolve(&Location::parse("s3://ckpts/x").expect("url"))
            .is_ok());
        for url in ["gs://ckpts/x", "http://host/x"] {
            let err = r
                .resolve(&Location::parse(url).expect("url"))
                .expect_err("not served");
            let msg = err.to_string();
            let scheme = url.split(':').next().unwrap_or_default();
            assert!(
                msg.contains(&format!("{scheme}://")) && msg.contains("served: file, s3"),
                "{msg}"
            );
        }
    }
}
