//! The chain every engine operation goes through: an ordered list of adapters around a
//! final handler, in the shape of axum's `middleware::from_fn`.
//!
//! The first adapter listed sees the request first and the response last. An adapter
//! receives the request and a [`Next`]; it may change the request, call
//! `next.run(req).await`, inspect or change the response, or return an error without
//! calling `next` (short-circuit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Result of an operation.
pub type OpResult<T> = Result<T, EngineError>;

type AdapterFn<Req, Resp> =
    dyn for<'a> Fn(Req, Next<'a, Req, Resp>) -> BoxFuture<'a, OpResult<Resp>> + Send + Sync;
type HandlerFn<Req, Resp> = dyn Fn(Req) -> BoxFuture<'static, OpResult<Resp>> + Send + Sync;

/// One named middleware of a chain.
pub struct Adapter<Req, Resp> {
    name: &'static str,
    f: Arc<AdapterFn<Req, Resp>>,
}

impl<Req, Resp> Clone for Adapter<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            f: Arc::clone(&self.f),
        }
    }
}

impl<Req, Resp> Adapter<Req, Resp> {
    /// Wraps an async function of `(request, next)` as a named adapter.
    pub fn from_fn<F>(name: &'static str, f: F) -> Self
    where
        F: for<'a> Fn(Req, Next<'a, Req, Resp>) -> BoxFuture<'a, OpResult<Resp>>
            + Send
            + Sync
            + 'static,
    {
        Self {
            name,
            f: Arc::new(f),
        }
    }

    /// The adapter's name, as shown by `cedana features` and in logs.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// The final step of a chain (e.g. the CRIU dump).
pub struct Handler<Req, Resp> {
    name: &'static str,
    f: Arc<HandlerFn<Req, Resp>>,
}

impl<Req, Resp> Clone for Handler<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            f: Arc::clone(&self.f),
        }
    }
}

impl<Req, Resp> Handler<Req, Resp> {
    /// Wraps an async function of the request as a named handler.
    pub fn from_fn<F>(name: &'static str, f: F) -> Self
    where
        F: Fn(Req) -> BoxFuture<'static, OpResult<Resp>> + Send + Sync + 'static,
    {
        Self {
            name,
            f: Arc::new(f),
        }
    }
}

/// How long one step of a chain took (`--profile`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTiming {
    /// The adapter's or handler's name.
    pub name: String,
    /// From entering the step until it returned, the steps after it included (ms).
    pub total_ms: u64,
    /// The step's own share: its total less the next step's (ms).
    pub own_ms: u64,
}

/// Each finished step's name and total time, innermost first.
type Clock = Mutex<Vec<(&'static str, Duration)>>;

/// The rest of the chain, handed to an adapter.
pub struct Next<'a, Req, Resp> {
    rest: &'a [Adapter<Req, Resp>],
    handler: &'a Handler<Req, Resp>,
    clock: &'a Clock,
}

impl<'a, Req: Send + 'a, Resp: 'a> Next<'a, Req, Resp> {
    /// Passes the request on to the next adapter, or to the handler after the last one.
    pub fn run(self, req: Req) -> BoxFuture<'a, OpResult<Resp>> {
        let clock = self.clock;
        let (name, step) = match self.rest.split_first() {
            Some((adapter, rest)) => (
                adapter.name,
                (adapter.f)(
                    req,
                    Next {
                        rest,
                        handler: self.handler,
                        clock,
                    },
                ),
            ),
            None => (self.handler.name, (self.handler.f)(req)),
        };
        Box::pin(async move {
            let start = Instant::now();
            let out = step.await;
            clock
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((name, start.elapsed()));
            out
        })
    }
}

/// The steps that ran, in chain order, each with its own share of the time.
fn timings(clock: Clock) -> Vec<StepTiming> {
    let mut finished = clock.into_inner().unwrap_or_else(|p| p.into_inner());
    // Steps finish innermost first; an adapter that did not call `next` has no inner step.
    finished.reverse();
    let ms = |d: Duration| d.as_millis() as u64;
    (0..finished.len())
        .map(|i| {
            let (name, total) = finished[i];
            let inner = finished.get(i + 1).map_or(Duration::ZERO, |s| s.1);
            StepTiming {
                name: name.to_string(),
                total_ms: ms(total),
                own_ms: ms(total.saturating_sub(inner)),
            }
        })
        .collect()
}

/// An ordered list of adapters around a handler.
pub struct Chain<Req, Resp> {
    adapters: Vec<Adapter<Req, Resp>>,
    handler: Handler<Req, Resp>,
}

impl<Req, Resp> Clone for Chain<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            adapters: self.adapters.clone(),
            handler: self.handler.clone(),
        }
    }
}

impl<Req: Send, Resp> Chain<Req, Resp> {
    /// A chain with no adapters yet.
    pub fn new(handler: Handler<Req, Resp>) -> Self {
        Self {
            adapters: Vec::new(),
            handler,
        }
    }

    /// Appends adapters; the first one listed runs first.
    pub fn with(mut self, adapters: impl IntoIterator<Item = Adapter<Req, Resp>>) -> Self {
        self.adapters.extend(adapters);
        self
    }

    /// Inserts adapters just before the adapter named `before`.
    ///
    /// # Panics
    /// When no adapter is named `before`: routes are built from code once, when the
    /// engine is built, so a misspelt anchor is a bug, and putting the adapters anywhere
    /// else would hide it (the engine's tests build every registered route).
    #[track_caller]
    pub fn insert_before(
        mut self,
        before: &str,
        adapters: impl IntoIterator<Item = Adapter<Req, Resp>>,
    ) -> Self {
        let at = self.position(before);
        self.adapters.splice(at..at, adapters);
        self
    }

    /// Removes the adapter named `name`.
    ///
    /// # Panics
    /// When no adapter is named `name` (see [`Chain::insert_before`]).
    #[track_caller]
    pub fn without(mut self, name: &str) -> Self {
        let at = self.position(name);
        self.adapters.remove(at);
        self
    }

    /// Where the adapter named `name` is; panics naming the chain when none is.
    #[track_caller]
    fn position(&self, name: &str) -> usize {
        match self.adapters.iter().position(|a| a.name == name) {
            Some(at) => at,
            None => panic!("no adapter {name:?} in the chain {self:?}"),
        }
    }

    /// Whether an adapter of the chain is named `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.adapters.iter().any(|a| a.name == name)
    }

    /// Replaces the final handler (a plugin taking over an operation for its kind).
    pub fn with_handler(mut self, handler: Handler<Req, Resp>) -> Self {
        self.handler = handler;
        self
    }

    /// Runs a request through the whole chain.
    pub async fn run(&self, req: Req) -> OpResult<Resp> {
        self.run_timed(req).await.0
    }

    /// Runs a request through the whole chain, timing each step.
    pub async fn run_timed(&self, req: Req) -> (OpResult<Resp>, Vec<StepTiming>) {
        let clock = Clock::default();
        let out = Next {
            rest: &self.adapters,
            handler: &self.handler,
            clock: &clock,
        }
        .run(req)
        .await;
        (out, timings(clock))
    }

    /// Adapter names in order, then the handler's.
    pub fn names(&self) -> Vec<&'static str> {
        self.adapters
            .iter()
            .map(|a| a.name)
            .chain([self.handler.name])
            .collect()
    }
}

impl<Req: Send, Resp> fmt::Debug for Chain<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(" -> "))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn push(log: &Arc<Mutex<Vec<String>>>, s: &str) {
        log.lock().expect("log lock").push(s.to_string());
    }

    fn tracing_adapter(name: &'static str, log: Arc<Mutex<Vec<String>>>) -> Adapter<u32, u32> {
        Adapter::from_fn(name, move |req, next| {
            let log = Arc::clone(&log);
            Box::pin(async move {
                push(&log, &format!("{name} in {req}"));
                let resp = next.run(req + 1).await?;
                push(&log, &format!("{name} out {resp}"));
                Ok(resp * 10)
            })
        })
    }

    fn doubling_handler() -> Handler<u32, u32> {
        Handler::from_fn("double", |req| Box::pin(async move { Ok(req * 2) }))
    }

    #[tokio::test]
    async fn adapters_run_in_listed_order_around_the_handler() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let chain = Chain::new(doubling_handler()).with([
            tracing_adapter("a", log.clone()),
            tracing_adapter("b", log.clone()),
        ]);
        // a sees 1, b sees 2, handler doubles 3 -> 6, b -> 60, a -> 600
        assert_eq!(chain.run(1).await.expect("chain ok"), 600);
        let got = log.lock().expect("log lock").clone();
        assert_eq!(got, ["a in 1", "b in 2", "b out 6", "a out 60"]);
        assert_eq!(format!("{chain:?}"), "a -> b -> double");
    }

    /// Sleeps `ms` before and calls on.
    fn slow(name: &'static str, ms: u64) -> Adapter<u32, u32> {
        Adapter::from_fn(name, move |req, next| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                next.run(req).await
            })
        })
    }

    #[tokio::test]
    async fn run_timed_gives_each_steps_own_share() {
        let handler = Handler::from_fn("h", |req: u32| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok(req)
            })
        });
        let chain = Chain::new(handler).with([slow("a", 60), slow("b", 0)]);
        let (out, steps) = chain.run_timed(7).await;
        assert_eq!(out.expect("ok"), 7);
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "h"]);
        assert!(steps[0].own_ms >= 60, "{steps:?}");
        assert!(steps[0].total_ms >= 90, "{steps:?}");
        assert!(
            steps[2].own_ms >= 30 && steps[2].own_ms == steps[2].total_ms,
            "{steps:?}"
        );
        assert!(steps[1].own_ms < 30, "{steps:?}");
        // A short-circuit: the steps after it never ran and are not listed.
        let refuse = Adapter::from_fn("refuse", |_req: u32, _next| {
            Box::pin(async {
                Err(EngineError::InvalidRequest {
                    field: "x",
                    reason: "no".into(),
                })
            })
        });
        let chain = Chain::new(doubling_handler()).with([slow("a", 0), refuse]);
        let (out, steps) = chain.run_timed(1).await;
        assert!(out.is_err());
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "refuse"]);
    }

    #[tokio::test]
    async fn an_adapter_can_short_circuit() {
        let reached = Arc::new(Mutex::new(false));
        let r = Arc::clone(&reached);
        let handler = Handler::from_fn("mark", move |req: u32| {
            *r.lock().expect("lock") = true;
            Box::pin(async move { Ok(req) })
        });
        let refuse = Adapter::from_fn("refuse", |_req: u32, _next| {
            Box::pin(async {
                Err(EngineError::InvalidRequest {
                    field: "x",
                    reason: "no".into(),
                })
            })
        });
        let chain = Chain::new(handler).with([refuse]);
        assert!(chain.run(5).await.is_err());
        assert!(
            !*reached.lock().expect("lock"),
            "handler must not run after a short-circuit"
        );
    }

    #[tokio::test]
    async fn insert_before_places_plugin_middleware() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let chain = Chain::new(doubling_handler())
            .with([
                tracing_adapter("a", log.clone()),
                tracing_adapter("c", log.clone()),
            ])
            .insert_before("c", [tracing_adapter("b", log.clone())]);
        assert_eq!(chain.names(), ["a", "b", "c", "double"]);
        let chain = chain
            .without("a")
            .with_handler(Handler::from_fn("other", |r| {
                Box::pin(async move { Ok(r) })
            }));
        assert_eq!(chain.names(), ["b", "c", "other"]);
    }

    #[test]
    #[should_panic(expected = "no adapter \"misspelt\" in the chain a -> double")]
    fn insert_before_an_unknown_anchor_panics() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let _ = Chain::new(doubling_handler())
            .with([tracing_adapter("a", log.clone())])
            .insert_before("misspelt", [tracing_adapter("b", log)]);
    }

    #[test]
    #[should_panic(expected = "no adapter \"misspelt\"")]
    fn without_an_unknown_name_panics() {
        let _ = Chain::new(doubling_handler()).without("misspelt");
    }
}
