//! Ids and names over their limits are refused with the limit, by the CLI before it
//! sends anything and by the daemon for any client; never an "h2 protocol error" (a
//! refusal echoing a >16 KiB id broke the HTTP/2 connection).

use cedana_cli::proto;
use cedana_e2e::*;

fn huge() -> String {
    "j".repeat(17 << 10)
}

/// A short, clear refusal that states the limit.
fn assert_clear(msg: &str, what: &str) {
    assert!(msg.contains(what), "says what is wrong: {msg}");
    assert!(!msg.contains("h2 protocol"), "the transport broke: {msg}");
    assert!(
        msg.len() < 1024,
        "does not echo the value: {} bytes",
        msg.len()
    );
}

#[test]
fn the_cli_refuses_a_huge_job_id_or_name_before_sending_it() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let id = huge();
    for args in [
        vec!["job", "inspect", id.as_str()],
        vec!["job", "kill", id.as_str()],
        vec!["dump", "job", id.as_str()],
        vec!["restore", "job", id.as_str()],
        vec!["checkpoints", id.as_str()],
        vec!["run", "process", "--jid", id.as_str(), "--", "true"],
    ] {
        let r = env.cedana(&args);
        assert_ne!(r.code, 0, "{:?} accepted a 17 KiB job id", &args[..2]);
        assert_clear(&r.stderr, "invalid job id");
        assert!(
            r.stderr.contains("1 to 64"),
            "states the limit: {}",
            r.stderr
        );
    }
    let r = env.cedana(&["checkpoint", "inspect", &id]);
    assert_clear(&r.stderr, "invalid checkpoint id");
    let r = env.cedana(&["dump", "process", "1", "--name", &id]);
    assert_clear(&r.stderr, "invalid checkpoint name");
    assert!(r.stderr.contains("at most 200 bytes"), "{}", r.stderr);
}

#[test]
fn the_daemon_refuses_a_huge_job_id_from_any_client() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    let socket = env.socket();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = cedana_cli::client::connect(&socket).await.expect("connect");
        let id = huge();
        let jid = || proto::JobRef { jid: id.clone() };
        let answers = [
            c.get_job(jid()).await.map(|_| ()),
            c.attach(jid()).await.map(|_| ()),
            c.kill_job(proto::KillRequest {
                jid: id.clone(),
                signal: 15,
                timeout_s: None,
            })
            .await
            .map(|_| ()),
            c.dump(proto::DumpRequest {
                target: Some(proto::Target {
                    target: Some(proto::target::Target::Jid(id.clone())),
                }),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            c.restore(proto::RestoreRequest {
                jid: Some(id.clone()),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ];
        for a in answers {
            let status = a.expect_err("a 17 KiB job id is refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert_clear(status.message(), "invalid job id");
        }
        let status = c
            .delete_checkpoint(proto::CheckpointRef { id: id.clone() })
            .await
            .expect_err("refused");
        assert_clear(status.message(), "invalid checkpoint id");
        // The connection is still good for the next request.
        c.list_jobs(proto::Empty {})
            .await
            .expect("ps still answers");
    });
}
