//! Events the shim publishes to containerd, and the watchers that produce the
//! asynchronous ones: a process's exit (from the reaper, published after its start event)
//! and the container's OOM kills (polled from its cgroup). The task verbs publish their
//! own events through [`TaskService::publish`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::events::task::{TaskExit, TaskOOM};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::Events;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use containerd_shim_protos::ttrpc::MessageHeader;
use log::warn;

use crate::container::Container;
use crate::process::{Process, State};
use crate::service::TaskService;
use crate::stats;

/// The protobuf package of every task event (containerd/events/task.proto).
const EVENTS_PACKAGE: &str = "containerd.events";

/// The type URL containerd decodes an event by: its full protobuf name. Spelt from the
/// package and the message's name rather than asked of protobuf's reflection, whose
/// first use parses the events' file descriptors and every one they import (gogo.proto,
/// descriptor.proto) into a few hundred KiB of heap that every shim would keep.
fn event_type_url<M: Message>() -> String {
    format!("{EVENTS_PACKAGE}.{}", M::NAME)
}

/// How often the OOM watcher looks at memory.events.
const OOM_POLL: Duration = Duration::from_secs(1);

/// A protobuf timestamp of `t`.
pub(crate) fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

impl TaskService {
    /// Publishes `event` on `topic` in the shim's namespace; a failure is only logged.
    pub(crate) async fn publish<M: Message>(&self, topic: &str, event: M) {
        let value = match event.write_to_bytes() {
            Ok(v) => v,
            Err(e) => {
                warn!("publish {topic}: encode {}: {e}", M::NAME);
                return;
            }
        };
        let envelope = Envelope {
            timestamp: Some(timestamp(SystemTime::now())).into(),
            namespace: self.inner.namespace.clone(),
            topic: topic.to_string(),
            event: Some(Any {
                type_url: event_type_url::<M>(),
                value,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let ctx = TtrpcContext {
            mh: MessageHeader::default(),
            metadata: HashMap::new(),
            timeout_nano: 0,
        };
        let req = ForwardRequest {
            envelope: Some(envelope).into(),
            ..Default::default()
        };
        // The publisher's queue: it retries while containerd is unreachable.
        if let Err(e) = self.inner.publisher.forward(&ctx, req).await {
            warn!("publish {topic}: {e}");
        }
    }

    /// Waits for `p`'s exit (from the reaper), records it and publishes it after the
    /// start event.
    pub(crate) fn watch_exit(&self, p: Arc<Process>, pid: i32) {
        let rx = self.inner.reaper.claim(pid);
        let svc = self.clone();
        tokio::spawn(async move {
            let Ok(exit) = rx.await else { return };
            p.set_exited(exit);
            p.wait_started().await;
            if let Some(io) = p.io.lock().await.as_mut() {
                let _ = tokio::time::timeout(Duration::from_secs(2), io.wait_output()).await;
            }
            svc.publish(
                topics::TASK_EXIT_EVENT_TOPIC,
                TaskExit {
                    container_id: p.container_id.clone(),
                    id: p.event_id().to_string(),
                    pid: pid as u32,
                    exit_status: exit.status as u32,
                    exited_at: Some(timestamp(exit.at)).into(),
                    ..Default::default()
                },
            )
            .await;
        });
    }

    /// Publishes an OOM event whenever the container's cgroup counts a new OOM kill.
    pub(crate) fn watch_oom(&self, c: Arc<Container>, pid: i32) {
        let Ok(dir) = stats::oom_dir(pid) else {
            return;
        };
        let svc = self.clone();
        tokio::spawn(async move {
            let mut seen = stats::oom_kills(&dir);
            while c.init.state() != State::Stopped {
                tokio::time::sleep(OOM_POLL).await;
                let now = stats::oom_kills(&dir);
                if now > seen {
                    seen = now;
                    svc.publish(
                        topics::TASK_OOM_EVENT_TOPIC,
                        TaskOOM {
                            container_id: c.id.clone(),
                            ..Default::default()
                        },
                    )
                    .await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use containerd_shim_protos::events::task::*;
    use containerd_shim_protos::protobuf::MessageFull;

    use super::*;

    /// The spelt type URL is the one reflection gives (what the crate's publisher sent).
    #[test]
    fn type_urls_match_the_descriptors() {
        fn check<M: MessageFull>() {
            assert_eq!(event_type_url::<M>(), M::descriptor().full_name());
        }
        check::<TaskCreate>();
        check::<TaskStart>();
        check::<TaskDelete>();
        check::<TaskExit>();
        check::<TaskOOM>();
        check::<TaskExecAdded>();
        check::<TaskExecStarted>();
        check::<TaskPaused>();
        check::<TaskResumed>();
        check::<TaskCheckpointed>();
    }
}
