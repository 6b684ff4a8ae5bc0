//! `cedana-criu-relay`: a container runtime's CRIU (`runc --criu cedana-criu-relay`) that
//! streams images; see `cedana_runtime::criu::relay`. CRIU also runs it as its action
//! script, which it recognises by CRIU's environment, and the engine runs its image
//! streamer in it (`stream-capture`, `stream-serve`; see `streamer::child`).

use cedana_runtime::criu::relay::{self, notify};
use cedana_runtime::streamer::child;

fn main() {
    let action = std::env::var_os(notify::ACTION_ENV).is_some()
        && std::env::var_os(relay::NOTIFY_ENV).is_some();
    if action {
        std::process::exit(notify::run_action_script());
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [role, rest @ ..] if role == child::CAPTURE_ROLE || role == child::SERVE_ROLE => {
            std::process::exit(child::main(role, rest))
        }
        [swrk, fd] if swrk == "swrk" => match fd.parse() {
            Ok(fd) => std::process::exit(relay::serve_swrk(fd)),
            Err(_) => eprintln!("cedana-criu-relay: swrk wants a descriptor number, got {fd:?}"),
        },
        _ => eprintln!(
            "usage: cedana-criu-relay swrk FD | stream-capture ... | stream-serve ...\n\
             A runtime's CRIU (runc --criu cedana-criu-relay): serves CRIU's RPC on FD and \
             streams dumps and restores when {} is set; anything else goes to the real CRIU.\n\
             stream-capture, stream-serve: the engine's image streamer, started by cedana.",
            relay::STREAM_ENV
        ),
    }
    std::process::exit(2);
}
