//! A plugin added from outside the engine: a new kind of target (`toy`) with its own
//! adapter, handler, metadata section and error, registered with one line. Its dump goes
//! through the engine's chain (defaults, storage and commit included) and its error comes
//! back with its own kind and message. No root, no CRIU: the toy's handler writes its
//! "images" itself.

use std::path::Path;

use cedana_config::Config;
use cedana_runtime::engine::{DumpRequest, Engine};
use cedana_runtime::error::{EngineError, ErrorKind};
use cedana_runtime::image::integrity;
use cedana_runtime::image::metadata::CheckpointKind;
use cedana_runtime::plugins::PluginRegistry;

/// Everything the toy plugin is: nothing of it is known to the engine.
mod toy {
    use std::fs;

    use cedana_runtime::adapters::{defaults, storage};
    use cedana_runtime::chain::{Adapter, Chain, Handler, OpResult};
    use cedana_runtime::engine::{DumpCtx, DumpResponse, Env};
    use cedana_runtime::error::{EngineError, ErrorKind, PluginError};
    use cedana_runtime::image::metadata::{CheckpointKind, MetadataSection};
    use cedana_runtime::plugins::{Feature, HealthCheck, Plugin};
    use cedana_runtime::request::Target;
    use serde::{Deserialize, Serialize};

    /// The toy's kind.
    pub const KIND: CheckpointKind = CheckpointKind::named("toy");

    /// What a caller names: a toy, which may refuse to be checkpointed.
    #[derive(Debug, Clone)]
    pub struct ToyTarget {
        /// Its name.
        pub name: String,
        /// Whether it refuses.
        pub refuses: bool,
    }

    impl Target for ToyTarget {
        fn kind(&self) -> CheckpointKind {
            KIND
        }
    }

    /// The toy's own errors.
    #[derive(Debug, thiserror::Error)]
    pub enum ToyError {
        /// The toy said no.
        #[error("toy {0:?} refuses to be checkpointed; ask it nicely")]
        Refused(String),
    }

    impl PluginError for ToyError {
        fn plugin(&self) -> &'static str {
            "toy"
        }

        fn kind(&self) -> ErrorKind {
            ErrorKind::FailedPrecondition
        }
    }

    /// The toy's section of metadata.json.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ToyMeta {
        /// The toy's name.
        pub name: String,
    }

    impl MetadataSection for ToyMeta {
        const KEY: &'static str = "toy";
    }

    /// The toy's adapter: refuses a toy that refuses, else records it.
    fn check_toy() -> Adapter<DumpCtx, DumpResponse> {
        Adapter::from_fn("check_toy", |mut ctx: DumpCtx, next| {
            Box::pin(async move {
                let Some(t) = ctx.req.target::<ToyTarget>().cloned() else {
                    return Err(EngineError::Internal("a toy dump without a toy".into()));
                };
                if t.refuses {
                    return Err(ToyError::Refused(t.name).into());
                }
                ctx.metadata.set_section(&ToyMeta { name: t.name })?;
                next.run(ctx).await
            })
        })
    }

    /// The toy's handler: its "images" are one file.
    async fn dump_toy(ctx: DumpCtx) -> OpResult<DumpResponse> {
        let file = ctx.images_dir.join("toy.img");
        fs::write(&file, b"toy state").map_err(|e| EngineError::io("write toy.img", e))?;
        let metadata = ctx.metadata.clone();
        Ok(ctx.images_written(metadata))
    }

    /// The plugin.
    pub struct ToyPlugin;

    impl Plugin for ToyPlugin {
        fn name(&self) -> &'static str {
            "toy"
        }

        fn features(&self) -> Vec<Feature> {
            vec![Feature {
                plugin: "toy".into(),
                feature: "dump handler".into(),
                detail: "writes toy.img".into(),
            }]
        }

        fn kind(&self) -> Option<CheckpointKind> {
            Some(KIND)
        }

        fn dump_route(&self) -> Option<Chain<DumpCtx, DumpResponse>> {
            // Not a host process tree: none of the host stages, only defaults and the
            // staging dir with its committer, then the toy's own adapter.
            let handler = Handler::from_fn("dump_toy", |ctx| Box::pin(dump_toy(ctx)));
            Some(Chain::new(handler).with([
                defaults::fill_missing_dump_defaults(),
                storage::prepare_dump_storage(),
                check_toy(),
            ]))
        }

        fn health(&self, _env: &Env) -> Vec<HealthCheck> {
            Vec::new()
        }
    }
}

fn config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.checkpoint.dir = dir.to_path_buf();
    config
}

fn toy_dump(name: &str, refuses: bool) -> DumpRequest {
    DumpRequest {
        name: Some(name.into()),
        compression: Some(cedana_runtime::image::compression::Compression::None),
        target: Some(Box::new(toy::ToyTarget {
            name: name.into(),
            refuses,
        })),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_toy_plugin_dumps_through_the_engine_and_fails_with_its_own_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let engine = Engine::with_plugins(
        config(tmp.path()),
        PluginRegistry::builtin().register(toy::ToyPlugin), // the one registration line
    );
    let chains = engine.chains();
    assert!(
        chains.contains(&(
            "dump toy".to_string(),
            "fill_missing_dump_defaults -> prepare_dump_storage -> check_toy -> dump_toy"
                .to_string()
        )),
        "{chains:?}"
    );
    assert!(engine.plugins().names().contains(&"toy"));

    // The dump: routed by the target's kind, committed by the engine's storage adapter.
    let done = engine.dump(toy_dump("teddy", false)).await.expect("dump");
    assert_eq!(done.path, tmp.path().join("teddy"));
    assert_eq!(done.metadata.kind, toy::KIND);
    let on_disk = integrity::read_metadata(&done.path).expect("metadata.json");
    assert_eq!(on_disk.kind.as_str(), "toy");
    assert_eq!(
        on_disk.section::<toy::ToyMeta>().expect("valid section"),
        Some(toy::ToyMeta {
            name: "teddy".into()
        })
    );
    assert!(on_disk.files.contains_key("toy.img"), "{:?}", on_disk.files);

    // The error: the toy's own, with its kind and message, and nothing left behind.
    let err = engine
        .dump(toy_dump("grumpy", true))
        .await
        .expect_err("the toy refuses");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(
        err.to_string(),
        "toy \"grumpy\" refuses to be checkpointed; ask it nicely"
    );
    assert!(
        matches!(err.plugin_error::<toy::ToyError>(), Some(toy::ToyError::Refused(n)) if n == "grumpy"),
        "{err:?}"
    );
    assert!(matches!(&err, EngineError::Plugin(f) if f.plugin() == "toy"));
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("checkpoint dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["teddy"], "a refused dump leaves nothing");
}

#[tokio::test]
async fn without_the_registration_line_the_kind_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let engine = Engine::new(config(tmp.path()));
    let err = engine
        .dump(toy_dump("teddy", false))
        .await
        .expect_err("no toy plugin");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        err.to_string(),
        "invalid kind: no plugin in this build handles toy checkpoints (see `cedana features`)"
    );
    assert_ne!(toy::KIND, CheckpointKind::PROCESS);
}
